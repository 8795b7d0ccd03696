/* librbd asynchronous I/O and the completion queue; see rbd_aio.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "tcmu_ring.h"
#include "rbd_aio.h"

struct rq {
    int efd;
    pthread_mutex_t lock;
    uint32_t cap, rd, n;
    uint64_t *tags;
    int64_t *rets;
    uint64_t *extra;
};

struct rbd_dev {
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t image;
    uint64_t obj_size;
};

enum { OP_PLAIN, OP_CAW };

struct op {
    struct rq *q;
    uint64_t tag;
    int kind;
    uint64_t off;
    uint64_t len;
    uint64_t obj_size;
    uint64_t mismatch;
    void *buf;          /* compare-and-write / writesame bounce buffer */
};

struct rq *rq_create(uint32_t capacity)
{
    struct rq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->cap = capacity;
    q->tags = calloc(capacity, sizeof(*q->tags));
    q->rets = calloc(capacity, sizeof(*q->rets));
    q->extra = calloc(capacity, sizeof(*q->extra));
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!q->tags || !q->rets || !q->extra || q->efd < 0) {
        rq_destroy(q);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    return q;
}

void rq_destroy(struct rq *q)
{
    if (!q)
        return;
    if (q->efd >= 0)
        close(q->efd);
    free(q->tags);
    free(q->rets);
    free(q->extra);
    free(q);
}

int rq_fd(struct rq *q) { return q->efd; }

uint32_t rq_pending(struct rq *q)
{
    uint32_t n;
    pthread_mutex_lock(&q->lock);
    n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

static void rq_push(struct rq *q, uint64_t tag, int64_t ret, uint64_t extra)
{
    int was_empty;
    pthread_mutex_lock(&q->lock);
    /* Capacity is sized by the caller for every op it can have in flight. */
    if (q->n < q->cap) {
        uint32_t i = (q->rd + q->n) % q->cap;
        q->tags[i] = tag;
        q->rets[i] = ret;
        q->extra[i] = extra;
        q->n++;
    }
    was_empty = q->n == 1;
    pthread_mutex_unlock(&q->lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(q->efd, &one, sizeof(one));
        (void)w;
    }
}

static int drain(struct rq *q, struct tr_ring *r, uint64_t *tags, int64_t *rets, uint64_t *extra, int max)
{
    uint64_t v;
    int n = 0;
    ssize_t rd = read(q->efd, &v, sizeof(v));   /* clear the event first */
    (void)rd;
    pthread_mutex_lock(&q->lock);
    while (q->n && n < max) {
        uint64_t tag = q->tags[q->rd];
        int64_t ret = q->rets[q->rd];
        uint64_t ext = q->extra[q->rd];
        q->rd = (q->rd + 1) % q->cap;
        q->n--;
        if (r && (tag >> 63) && ret >= 0) {
            struct tr_cmd *c = &r->cmds[tag & 0xFFFF];
            if (c->outstanding && c->gen == (uint32_t)(tag >> 16)) {
                tr_complete(r, (uint16_t)(tag & 0xFFFF), 0, NULL, 0, 0, 0);
                continue;
            }
        }
        tags[n] = tag;
        rets[n] = ret;
        extra[n] = ext;
        n++;
    }
    /* more left than the caller took: keep the fd readable */
    if (q->n) {
        uint64_t one = 1;
        ssize_t w = write(q->efd, &one, sizeof(one));
        (void)w;
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

int rq_drain(struct rq *q, uint64_t *tags, int64_t *rets, uint64_t *extra, int max)
{
    return drain(q, NULL, tags, rets, extra, max);
}

int rq_drain_ring(struct rq *q, struct tr_ring *r, uint64_t *tags, int64_t *rets, uint64_t *extra, int max)
{
    return drain(q, r, tags, rets, extra, max);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Start cmd_id in librbd if it is a plain, valid READ/WRITE: 0, else -1. */
static int fast_start(struct rbd_dev *d, struct rq *q, struct tr_ring *r,
                      struct tr_fast *f, uint16_t id)
{
    struct tr_cmd *c = &r->cmds[id];
    const uint8_t *cdb = c->cdb;
    uint64_t lba, n;
    uint32_t gen;
    int write, rc;

    if (c->bad || cdb[1] & 0xE0)
        return -1;
    switch (cdb[0]) {
    case 0x28: case 0x2A:
        if (c->cdb_len < 10)
            return -1;
        lba = be32(cdb + 2);
        n = (uint32_t)cdb[7] << 8 | cdb[8];
        break;
    case 0x88: case 0x8A:
        if (c->cdb_len < 16)
            return -1;
        lba = (uint64_t)be32(cdb + 2) << 32 | be32(cdb + 6);
        n = be32(cdb + 10);
        break;
    default:
        return -1;
    }
    write = cdb[0] & 0x02;
    if (!n || n > f->max_xfer_blocks || n * f->block_size != c->data_len
            || lba > f->num_blocks || n > f->num_blocks - lba || (write && f->read_only))
        return -1;
    gen = c->gen + 1;
    c->gen = gen;   /* before the submission: its completion is checked against it */
    uint64_t tag = 1ULL << 63 | (uint64_t)gen << 16 | id;
    if (write)
        rc = rbd_dev_writev(d, q, tag, c->iov, c->iov_cnt, lba * f->block_size, (cdb[1] >> 3) & 1);
    else
        rc = rbd_dev_readv(d, q, tag, c->iov, c->iov_cnt, lba * f->block_size);
    if (rc < 0) {
        c->gen = gen - 1;   /* the handler starts it again and reports the error */
        return -1;
    }
    f->kinds[id] = write ? f->kind_write : f->kind_read;
    f->started++;
    return 0;
}

int rq_take_fast(struct rbd_dev *d, struct rq *q, struct tr_ring *r, struct tr_fast *f,
                 struct tr_event *ev, int max)
{
    int kept = 0;

    while (kept < max) {
        int base = kept, space = max - kept, n = tr_take(r, ev + base, space), i;
        if (n < 0)
            return kept ? kept : n;
        for (i = 0; i < n; i++) {
            struct tr_event *e = &ev[base + i];
            if (f->enabled && e->kind == TR_EV_CMD && fast_start(d, q, r, f, e->cmd_id) == 0)
                continue;
            ev[kept++] = *e;
        }
        if (n < space)      /* the ring is empty (or every slot is in use) */
            break;
    }
    return kept;
}

int rq_serve(struct rbd_dev *d, struct rq *q, struct tr_ring *r, struct tr_fast *f,
             struct tr_event *ev, int max_ev, uint64_t *tags, int64_t *rets,
             uint64_t *extra, int max_c, struct tr_serve *s)
{
    struct epoll_event pe[4];

    s->events = s->completions = s->control = 0;
    for (;;) {
        int n = rq_take_fast(d, q, r, f, ev, max_ev), c, k, m, i;
        if (n < 0)
            return n;
        c = drain(q, r, tags, rets, extra, max_c);
        k = tr_kick(r);
        if (k < 0)
            return k;
        if (n || c || s->control) {
            s->events = n;
            s->completions = c;
            return 0;
        }
        m = epoll_wait(s->epfd, pe, 4, s->timeout_ms);
        if (m < 0)
            return errno == EINTR ? 0 : -errno;   /* a signal: the handler looks */
        if (m == 0)
            return 0;
        for (i = 0; i < m; i++) {
            if (pe[i].data.fd == s->uio_fd) {
                uint32_t cnt;
                ssize_t rd = read(s->uio_fd, &cnt, sizeof(cnt));   /* the kernel's event count */
                (void)rd;
            } else if (pe[i].data.fd == s->ctl_fd) {
                s->control = 1;
            }
        }
    }
}

/*
 * The offset of the first differing byte, relative to the operation.  librbd
 * has reported it three ways: as an image offset (the documented meaning),
 * as the object's image offset plus the offset within the buffer (Ceph 16),
 * and relative to the operation.  Only one of them lands inside [0, len).
 */
static uint64_t caw_mismatch(const struct op *o)
{
    uint64_t m = o->mismatch, base = o->obj_size ? o->off - o->off % o->obj_size : 0;
    if (m >= o->off && m - o->off < o->len)
        return m - o->off;
    if (m >= base && m - base < o->len)
        return m - base;
    return m < o->len ? m : 0;
}

static void op_done(rbd_completion_t c, void *arg)
{
    struct op *o = arg;
    int64_t ret = rbd_aio_get_return_value(c);
    uint64_t extra = 0;

    rbd_aio_release(c);
    if (o->kind == OP_CAW && ret == -EILSEQ)
        extra = caw_mismatch(o);
    rq_push(o->q, o->tag, ret, extra);
    free(o->buf);
    free(o);
}

static struct op *op_new(struct rq *q, uint64_t tag, rbd_completion_t *c)
{
    struct op *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->q = q;
    o->tag = tag;
    if (rbd_aio_create_completion(o, op_done, c) < 0) {
        free(o);
        return NULL;
    }
    return o;
}

/* A submission that librbd refused never calls back: undo and report. */
static int op_failed(struct op *o, rbd_completion_t c, int rc)
{
    rbd_aio_release(c);
    free(o->buf);
    free(o);
    return rc;
}

struct rbd_dev *rbd_dev_open(const char *conf, const char *client_id,
                             const char *pool, const char *ns,
                             const char *image, const char *snap,
                             const char **opts, char *err, uint32_t errlen)
{
    struct rbd_dev *d = calloc(1, sizeof(*d));
    char name[256];
    int rc;

    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(name, sizeof(name), "client.%s", client_id && *client_id ? client_id : "admin");
    if ((rc = rados_create2(&d->cluster, "ceph", name, 0)) < 0) {
        snprintf(err, errlen, "rados_create2(%s): %s", name, strerror(-rc));
        goto fail;
    }
    if ((rc = rados_conf_read_file(d->cluster, conf && *conf ? conf : NULL)) < 0) {
        snprintf(err, errlen, "cannot read ceph configuration %s: %s",
                 conf && *conf ? conf : "(default search path)", strerror(-rc));
        goto fail;
    }
    rados_conf_parse_env(d->cluster, NULL);
    for (const char **kv = opts; kv && kv[0] && kv[1]; kv += 2) {
        if ((rc = rados_conf_set(d->cluster, kv[0], kv[1])) < 0) {
            snprintf(err, errlen, "cannot set ceph option %s: %s", kv[0], strerror(-rc));
            goto fail;
        }
    }
    if ((rc = rados_connect(d->cluster)) < 0) {
        snprintf(err, errlen, "cannot connect to the ceph cluster as %s: %s", name, strerror(-rc));
        goto fail;
    }
    if ((rc = rados_ioctx_create(d->cluster, pool, &d->ioctx)) < 0) {
        snprintf(err, errlen, "pool '%s': %s", pool, strerror(-rc));
        goto fail;
    }
    if (ns && *ns)
        rados_ioctx_set_namespace(d->ioctx, ns);
    rc = snap && *snap ? rbd_open_read_only(d->ioctx, image, &d->image, snap)
                       : rbd_open(d->ioctx, image, &d->image, NULL);
    if (rc < 0) {
        snprintf(err, errlen, "image '%s/%s%s%s%s%s': %s", pool, ns && *ns ? ns : "",
                 ns && *ns ? "/" : "", image, snap && *snap ? "@" : "", snap && *snap ? snap : "",
                 strerror(-rc));
        d->image = NULL;
        goto fail;
    }
    {
        rbd_image_info_t info;
        if (rbd_stat(d->image, &info, sizeof(info)) == 0)
            d->obj_size = info.obj_size;
    }
    return d;
fail:
    rbd_dev_close(d);
    return NULL;
}

void rbd_dev_close(struct rbd_dev *d)
{
    if (!d)
        return;
    if (d->image)
        rbd_close(d->image);
    if (d->ioctx)
        rados_ioctx_destroy(d->ioctx);
    if (d->cluster)
        rados_shutdown(d->cluster);
    free(d);
}

int rbd_dev_stat(struct rbd_dev *d, uint64_t *size, uint64_t *obj_size, uint64_t *features)
{
    rbd_image_info_t info;
    int rc = rbd_stat(d->image, &info, sizeof(info));
    if (rc < 0)
        return rc;
    *size = info.size;
    *obj_size = info.obj_size;
    return rbd_get_features(d->image, features);
}

int rbd_dev_readv(struct rbd_dev *d, struct rq *q, uint64_t tag,
                  const struct iovec *iov, uint32_t cnt, uint64_t off)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    rc = rbd_aio_readv(d->image, iov, (int)cnt, off, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_writev(struct rbd_dev *d, struct rq *q, uint64_t tag,
                   const struct iovec *iov, uint32_t cnt, uint64_t off, int fua)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    /* rbd_cache is off, so a completed write is on the OSDs: FUA needs nothing more. */
    (void)fua;
    rc = rbd_aio_writev(d->image, iov, (int)cnt, off, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_flush(struct rbd_dev *d, struct rq *q, uint64_t tag)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    rc = rbd_aio_flush(d->image, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_discard(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    rc = rbd_aio_discard(d->image, off, len, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_write_zeroes(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    rc = rbd_aio_write_zeroes(d->image, off, len, c, 0, 0);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_writesame(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      const struct iovec *iov, uint32_t cnt, uint32_t pattern_len)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    int rc;
    if (!o)
        return -ENOMEM;
    o->buf = malloc(pattern_len);
    if (!o->buf)
        return op_failed(o, c, -ENOMEM);
    if (iov_to_buf(iov, cnt, 0, o->buf, pattern_len) != pattern_len)
        return op_failed(o, c, -EINVAL);
    rc = rbd_aio_writesame(d->image, off, len, o->buf, pattern_len, c, 0);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_compare_and_write(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                              const struct iovec *iov, uint32_t cnt)
{
    rbd_completion_t c;
    struct op *o = op_new(q, tag, &c);
    ssize_t rc;
    if (!o)
        return -ENOMEM;
    o->kind = OP_CAW;
    o->off = off;
    o->len = len;
    o->obj_size = d->obj_size;
    o->buf = malloc(2 * len);
    if (!o->buf)
        return op_failed(o, c, -ENOMEM);
    if (iov_to_buf(iov, cnt, 0, o->buf, 2 * len) != 2 * len)
        return op_failed(o, c, -EINVAL);
    rc = rbd_aio_compare_and_write(d->image, off, len, o->buf, (char *)o->buf + len,
                                   c, &o->mismatch, 0);
    return rc < 0 ? op_failed(o, c, (int)rc) : 0;
}

struct extents {
    uint64_t *offs, *lens;
    int n, max;
};

static int extent_cb(uint64_t off, size_t len, int exists, void *arg)
{
    struct extents *x = arg;
    if (!exists)
        return 0;
    /* merge with the previous extent when contiguous */
    if (x->n && x->offs[x->n - 1] + x->lens[x->n - 1] == off) {
        x->lens[x->n - 1] += len;
        return 0;
    }
    if (x->n == x->max)
        return -E2BIG;
    x->offs[x->n] = off;
    x->lens[x->n] = len;
    x->n++;
    return 0;
}

int rbd_dev_allocated(struct rbd_dev *d, uint64_t off, uint64_t len,
                      uint64_t *offs, uint64_t *lens, int max)
{
    struct extents x = { offs, lens, 0, max };
    int rc = rbd_diff_iterate2(d->image, NULL, off, len, 1, 0, extent_cb, &x);
    if (rc < 0 && rc != -E2BIG)
        return rc;
    return x.n;
}
