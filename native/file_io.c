/* The file backend's system calls; see file_io.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/uio.h>

#include "file_io.h"

/* preadv/pwritev over any number of vectors (the syscalls stop at IOV_MAX). */
static int64_t rw_all(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset, int write_)
{
    int64_t total = 0;
    while (cnt) {
        int n = cnt > 1024 ? 1024 : (int)cnt;
        uint64_t want = 0;
        ssize_t r;
        for (int i = 0; i < n; i++)
            want += iov[i].iov_len;
        do {
            r = write_ ? pwritev(fd, iov, n, (off_t)offset) : preadv(fd, iov, n, (off_t)offset);
        } while (r < 0 && errno == EINTR);
        if (r < 0)
            return -errno;
        total += r;
        if ((uint64_t)r != want)
            return total;   /* short: EOF on read */
        offset += want;
        iov += n;
        cnt -= n;
    }
    return total;
}

int64_t file_preadv(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset)
{
    return rw_all(fd, iov, cnt, offset, 0);
}

int64_t file_pwritev(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset)
{
    return rw_all(fd, iov, cnt, offset, 1);
}

int file_punch_hole(int fd, uint64_t offset, uint64_t len)
{
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) ? -errno : 0;
}
