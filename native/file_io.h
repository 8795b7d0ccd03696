/*
 * The file backend's I/O in C (tcmu_rbd/backends/file.py): preadv/pwritev
 * straight between a file and a command's iovecs, over any number of
 * vectors, and punching holes.  Synchronous.
 *
 * Belongs here: the system calls on the backing file.  Not here: copies
 * between memory buffers (iovec.c), librbd (rbd_aio.c).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_FILE_IO_H
#define TCMU_RBD_FILE_IO_H

#include <stdint.h>
#include <sys/uio.h>

/* Bytes moved (short only at EOF on a read), or -errno. */
int64_t file_preadv(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset);
int64_t file_pwritev(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset);
/* Deallocate a range of a sparse file; it then reads as zeroes.  0 or -errno. */
int     file_punch_hole(int fd, uint64_t offset, uint64_t len);

#endif
