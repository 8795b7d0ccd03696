/* iovec helpers; see iovec.h.  Pure memory work: no I/O, no ring. */
#include <string.h>

#include "iovec.h"

uint64_t iov_total(const struct iovec *iov, uint32_t cnt)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

uint64_t iov_from_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *src, uint64_t len)
{
    uint64_t done = 0;
    for (uint32_t i = 0; i < cnt && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        if (skip >= l) { skip -= l; continue; }
        l -= skip;
        if (l > len - done) l = len - done;
        memcpy((uint8_t *)iov[i].iov_base + skip, (const uint8_t *)src + done, l);
        done += l;
        skip = 0;
    }
    return done;
}

uint64_t iov_to_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, void *dst, uint64_t len)
{
    uint64_t done = 0;
    for (uint32_t i = 0; i < cnt && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        if (skip >= l) { skip -= l; continue; }
        l -= skip;
        if (l > len - done) l = len - done;
        memcpy((uint8_t *)dst + done, (const uint8_t *)iov[i].iov_base + skip, l);
        done += l;
        skip = 0;
    }
    return done;
}

uint64_t iov_fill(const struct iovec *iov, uint32_t cnt, uint64_t skip, int c, uint64_t len)
{
    uint64_t done = 0;
    for (uint32_t i = 0; i < cnt && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        if (skip >= l) { skip -= l; continue; }
        l -= skip;
        if (l > len - done) l = len - done;
        memset((uint8_t *)iov[i].iov_base + skip, c, l);
        done += l;
        skip = 0;
    }
    return done;
}

int64_t iov_compare(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *buf, uint64_t len)
{
    uint64_t done = 0;
    for (uint32_t i = 0; i < cnt && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        const uint8_t *p, *q;
        if (skip >= l) { skip -= l; continue; }
        l -= skip;
        if (l > len - done) l = len - done;
        p = (const uint8_t *)iov[i].iov_base + skip;
        q = (const uint8_t *)buf + done;
        if (memcmp(p, q, l))
            for (uint64_t k = 0; k < l; k++)
                if (p[k] != q[k])
                    return (int64_t)(done + k);
        done += l;
        skip = 0;
    }
    return -1;
}

int64_t iov_first_nonzero(const struct iovec *iov, uint32_t cnt, uint64_t skip, uint64_t len)
{
    uint64_t done = 0;
    for (uint32_t i = 0; i < cnt && done < len; i++) {
        uint64_t l = iov[i].iov_len;
        const uint8_t *p;
        if (skip >= l) { skip -= l; continue; }
        l -= skip;
        if (l > len - done) l = len - done;
        p = (const uint8_t *)iov[i].iov_base + skip;
        for (uint64_t k = 0; k < l; k++)
            if (p[k])
                return (int64_t)(done + k);
        done += l;
        skip = 0;
    }
    return -1;
}
