/* The memory backend's engine ops; see memory_dev.h. */
#include <errno.h>
#include <string.h>

#include "iovec.h"
#include "memory_dev.h"

/* -EINVAL (refused: no completion follows) for a range outside the mapping. */
static int in_range(const struct mem_dev *m, uint64_t off, uint64_t len)
{
    return off <= m->size && len <= m->size - off;
}

static int mem_readv(void *dev, struct rq *q, uint64_t tag,
                     const struct iovec *iov, uint32_t cnt, uint64_t off)
{
    struct mem_dev *m = dev;
    uint64_t len = iov_total(iov, cnt);

    if (!in_range(m, off, len))
        return -EINVAL;
    iov_from_buf(iov, cnt, 0, m->base + off, len);
    rq_push(q, tag, (int64_t)len, 0);
    return 0;
}

static int mem_writev(void *dev, struct rq *q, uint64_t tag,
                      const struct iovec *iov, uint32_t cnt, uint64_t off, int fua)
{
    struct mem_dev *m = dev;
    uint64_t len = iov_total(iov, cnt), g = m->granularity;

    if (m->read_only)
        return -EROFS;
    if (!in_range(m, off, len))
        return -EINVAL;
    iov_to_buf(iov, cnt, 0, m->base + off, len);
    if (len)    /* every granule it touches is allocated (memory.py's _mark) */
        memset(m->alloc + off / g, 1, (off + len + g - 1) / g - off / g);
    rq_push(q, tag, (int64_t)len, 0);
    return 0;
}

static const struct engine_ops mem_ops = { .readv = mem_readv, .writev = mem_writev };

const struct engine_ops *mem_dev_engine_ops(void) { return &mem_ops; }
