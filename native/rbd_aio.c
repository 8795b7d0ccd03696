/*
 * librbd asynchronous I/O; see rbd_aio.h.
 *
 * Belongs here: librbd and librados calls, the per-op bookkeeping they need
 * (bounce buffers, the compare-and-write mismatch offset, the threads that
 * run librbd's synchronous allocation lookup), and the ops table the engine
 * calls.  Not here: the completion queue (engine.c: op_done and the lookup
 * threads only push onto it), any decision about what a command means.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "iovec.h"
#include "engine.h"
#include "rbd_aio.h"

struct rbd_dev {
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t image;
    uint64_t obj_size;
    int cache;          /* librbd caches writes (rbd_cache on in the image's or pool's config) */
    int wce;            /* the LUN reports WCE=1: only FUA and SYNCHRONIZE CACHE need a flush */
    uint64_t size;      /* the image's size now (the header watch keeps it; atomic) */
    uint64_t watch;
    int watching;
    pthread_mutex_t lock;   /* lookups below */
    pthread_cond_t idle;    /* signalled when lookups drops to 0 */
    int lookups;            /* allocation lookup threads using the image */
};

enum { OP_PLAIN, OP_CAW };

struct op {
    struct rq *q;
    uint64_t tag;
    int kind;
    rbd_image_t flush;  /* set: flush this image once the write completed, then report */
    int flushing;       /* the flush above is running */
    int64_t written;    /* the write's return value, reported after the flush */
    uint64_t expect;    /* a read's length: fewer bytes is an error, never GOOD */
    uint64_t off;
    uint64_t len;
    uint64_t obj_size;
    uint64_t mismatch;
    void *buf;          /* compare-and-write / writesame bounce buffer */
};

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
    if (o->flush && ret >= 0) {
        /* the write is in librbd's cache: on the OSDs only after a flush */
        rbd_image_t image = o->flush;
        o->flush = NULL;
        o->flushing = 1;
        o->written = ret;
        if (rbd_aio_create_completion(o, op_done, &c) == 0) {
            if (rbd_aio_flush(image, c) == 0)
                return;
            rbd_aio_release(c);
        }
        ret = -EIO;
    } else if (o->flushing && ret >= 0) {
        ret = o->written;
    }
    /* librbd clips a read at the image's end (it shrank under the LUN) */
    if (o->expect && ret >= 0 && (uint64_t)ret != o->expect)
        ret = -ERANGE;
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

/* A write that must be on the OSDs when it completes (FUA, or the LUN's
 * write cache off) while librbd caches writes: flushed before it is reported. */
static void op_stable(struct op *o, struct rbd_dev *d, int fua)
{
    if (d->cache && (fua || !d->wce))
        o->flush = d->image;
}

/* Whether librbd caches this image's writes: rbd_cache as the image sees it
 * (the client's rbd_cache=false loses to a pool's or image's rbd config). */
static int image_caches(rbd_image_t image)
{
    rbd_config_option_t *opts = NULL;
    int n = 0, rc, cache = 1;   /* unknown: assume the worst */
    while ((rc = rbd_config_image_list(image, opts, &n)) == -ERANGE) {
        free(opts);
        if (!(opts = calloc(n, sizeof(*opts))))
            return cache;
    }
    if (rc >= 0) {
        for (int i = 0; i < n; i++)
            if (strcmp(opts[i].name, "rbd_cache") == 0)
                cache = strcmp(opts[i].value, "true") == 0;
        rbd_config_image_list_cleanup(opts, n);
    }
    free(opts);
    return cache;
}

int rbd_dev_volatile_cache(struct rbd_dev *d) { return d->cache; }

/* librbd's header watch: a resize by anyone (rbd resize) lands here, on a
 * librbd thread of its own (rbd-nbd reads the size there too). */
static void on_header_update(void *arg)
{
    struct rbd_dev *d = arg;
    uint64_t size;
    if (rbd_get_size(d->image, &size) == 0)
        __atomic_store_n(&d->size, size, __ATOMIC_RELEASE);
}

uint64_t rbd_dev_size(struct rbd_dev *d) { return __atomic_load_n(&d->size, __ATOMIC_ACQUIRE); }

/* librbd silently drops the part of a write past the image's end (and
 * returns success): the range must be inside the image as it is now. */
static int past_end(struct rbd_dev *d, uint64_t off, uint64_t len)
{
    return off + len > rbd_dev_size(d);
}

void rbd_dev_set_wce(struct rbd_dev *d, int wce) { d->wce = wce; }

/* A submission that librbd refused never calls back: undo and report. */
static int op_failed(struct op *o, rbd_completion_t c, int rc)
{
    rbd_aio_release(c);
    free(o->buf);
    free(o);
    return rc;
}

/* librados keeps its last log_max_recent log entries (500 by default, the debug
 * levels' second numbers decide which) in memory, for a dump that a library client
 * never makes by itself: a client has no log file, and assert failures dump only a
 * daemon's.  ~0.25 MB a worker (host probe, 2026-12-07: 3.17 MB private for a client
 * after 4K and 1M I/O instead of 3.41).  Lowered only where ceph.conf, $CEPH_ARGS
 * and the options left librados' default, so that an operator who wants the ring
 * (`ceph daemon <asok> log dump`) sets it. */
static void lower_default(rados_t cluster, const char *key, const char *dflt, const char *to)
{
    char cur[32];
    if (rados_conf_get(cluster, key, cur, sizeof(cur)) == 0 && strcmp(cur, dflt) == 0)
        rados_conf_set(cluster, key, to);
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
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->idle, NULL);
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
    lower_default(d->cluster, "log_max_recent", "500", "1");
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
        if (rbd_stat(d->image, &info, sizeof(info)) == 0) {
            d->obj_size = info.obj_size;
            d->size = info.size;
        }
    }
    d->watching = rbd_update_watch(d->image, &d->watch, on_header_update, d) == 0;
    d->cache = image_caches(d->image);
    return d;
fail:
    rbd_dev_close(d);
    return NULL;
}

void rbd_dev_close(struct rbd_dev *d)
{
    if (!d)
        return;
    /* a lookup thread still uses the image: it lets go once its result is queued */
    pthread_mutex_lock(&d->lock);
    while (d->lookups)
        pthread_cond_wait(&d->idle, &d->lock);
    pthread_mutex_unlock(&d->lock);
    if (d->watching)
        rbd_update_unwatch(d->image, d->watch);
    if (d->image)
        rbd_close(d->image);
    if (d->ioctx)
        rados_ioctx_destroy(d->ioctx);
    if (d->cluster)
        rados_shutdown(d->cluster);
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

int rbd_dev_stat(struct rbd_dev *d, uint64_t *size, uint64_t *obj_size, uint64_t *features)
{
    rbd_image_info_t info;
    int rc = rbd_stat(d->image, &info, sizeof(info));
    if (rc < 0)
        return rc;
    *size = info.size;
    /* the header watch may not have told us yet (a RECONFIG after rbd resize) */
    __atomic_store_n(&d->size, info.size, __ATOMIC_RELEASE);
    *obj_size = info.obj_size;
    return rbd_get_features(d->image, features);
}

int rbd_dev_readv(struct rbd_dev *d, struct rq *q, uint64_t tag,
                  const struct iovec *iov, uint32_t cnt, uint64_t off)
{
    rbd_completion_t c;
    struct op *o;
    int rc;
    uint64_t len = iov_total(iov, cnt);
    if (past_end(d, off, len))
        return -ERANGE;
    if (!(o = op_new(q, tag, &c)))
        return -ENOMEM;
    o->expect = len;
    rc = rbd_aio_readv(d->image, iov, (int)cnt, off, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_writev(struct rbd_dev *d, struct rq *q, uint64_t tag,
                   const struct iovec *iov, uint32_t cnt, uint64_t off, int fua)
{
    rbd_completion_t c;
    struct op *o;
    int rc;
    if (past_end(d, off, iov_total(iov, cnt)))
        return -ERANGE;
    if (!(o = op_new(q, tag, &c)))
        return -ENOMEM;
    op_stable(o, d, fua);
    rc = rbd_aio_writev(d->image, iov, (int)cnt, off, c);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

/* The engine's view of an image: the fast path's READ/WRITE. */
static int ops_readv(void *dev, struct rq *q, uint64_t tag,
                     const struct iovec *iov, uint32_t cnt, uint64_t off)
{
    return rbd_dev_readv(dev, q, tag, iov, cnt, off);
}

static int ops_writev(void *dev, struct rq *q, uint64_t tag,
                      const struct iovec *iov, uint32_t cnt, uint64_t off, int fua)
{
    return rbd_dev_writev(dev, q, tag, iov, cnt, off, fua);
}

static const struct engine_ops rbd_ops = { .readv = ops_readv, .writev = ops_writev };

const struct engine_ops *rbd_dev_engine_ops(void) { return &rbd_ops; }

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

int rbd_dev_write_zeroes(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len)
{
    rbd_completion_t c;
    struct op *o;
    int rc;
    if (past_end(d, off, len))
        return -ERANGE;
    if (!(o = op_new(q, tag, &c)))
        return -ENOMEM;
    /* exact at any offset and length (partial discards: zeroed), and whole
     * objects are still deallocated; a plain discard drops pieces smaller
     * than rbd_discard_granularity_bytes */
    op_stable(o, d, 0);
    rc = rbd_aio_write_zeroes(d->image, off, len, c, 0, 0);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_writesame(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      const struct iovec *iov, uint32_t cnt, uint32_t pattern_len)
{
    rbd_completion_t c;
    struct op *o;
    int rc;
    if (past_end(d, off, len))
        return -ERANGE;
    if (!(o = op_new(q, tag, &c)))
        return -ENOMEM;
    o->buf = malloc(pattern_len);
    if (!o->buf)
        return op_failed(o, c, -ENOMEM);
    if (iov_to_buf(iov, cnt, 0, o->buf, pattern_len) != pattern_len)
        return op_failed(o, c, -EINVAL);
    op_stable(o, d, 0);
    rc = rbd_aio_writesame(d->image, off, len, o->buf, pattern_len, c, 0);
    return rc < 0 ? op_failed(o, c, rc) : 0;
}

int rbd_dev_compare_and_write(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                              const struct iovec *iov, uint32_t cnt)
{
    rbd_completion_t c;
    struct op *o;
    ssize_t rc;
    if (past_end(d, off, len))
        return -ERANGE;
    if (!(o = op_new(q, tag, &c)))
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
    op_stable(o, d, 0);
    rc = rbd_aio_compare_and_write(d->image, off, len, o->buf, (char *)o->buf + len,
                                   c, &o->mismatch, 0);
    return rc < 0 ? op_failed(o, c, (int)rc) : 0;
}

/* ------------------------------------------------------------ allocation lookup */

/* rbd_diff_iterate2 is synchronous (one list-snaps per object without an
 * object map): each lookup runs on a detached thread of its own, which pushes
 * its result onto the completion queue like any librbd completion. */
struct lookup {
    struct rbd_dev *d;
    struct rq *q;
    uint64_t tag;
    uint64_t lo, hi;        /* the range asked: extents are clipped to it */
    uint64_t *offs, *lens;  /* the caller's arrays, max entries */
    int n, max;
    int full;               /* an extent found no room: the list ends at stop */
    uint64_t stop;          /* where the list ends: hi, or that extent's start */
};

static int extent_cb(uint64_t off, size_t len, int exists, void *arg)
{
    struct lookup *l = arg;
    uint64_t end = off + len;
    if (l->full)            /* librbd may still report objects it had asked for */
        return -E2BIG;
    if (!exists)
        return 0;
    if (off < l->lo)
        off = l->lo;
    if (end > l->hi)
        end = l->hi;
    if (off >= end)
        return 0;
    /* librbd reports in ascending order: merge with the previous extent */
    if (l->n && l->offs[l->n - 1] + l->lens[l->n - 1] >= off) {
        uint64_t prev_end = l->offs[l->n - 1] + l->lens[l->n - 1];
        if (end > prev_end)
            l->lens[l->n - 1] = end - l->offs[l->n - 1];
        return 0;
    }
    if (l->n == l->max) {
        l->full = 1;
        l->stop = off;
        return -E2BIG;
    }
    l->offs[l->n] = off;
    l->lens[l->n] = end - off;
    l->n++;
    return 0;
}

/* Whether the object map answers (fast-diff on and valid): diff-iterate then
 * reports whole objects without a rados op per object.  Otherwise it lists
 * every object, exactly. */
static int fast_diff_valid(rbd_image_t image)
{
    uint64_t features = 0, flags = 0;
    if (rbd_get_features(image, &features) < 0 || !(features & RBD_FEATURE_FAST_DIFF))
        return 0;
    if (rbd_get_flags(image, &flags) < 0)
        return 0;
    return !(flags & (RBD_FLAG_OBJECT_MAP_INVALID | RBD_FLAG_FAST_DIFF_INVALID));
}

/* A lookup thread let go of the image (or never started). */
static void lookup_end(struct rbd_dev *d)
{
    pthread_mutex_lock(&d->lock);
    if (--d->lookups == 0)
        pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);   /* d may be closed from here on */
}

static void *lookup_run(void *arg)
{
    struct lookup *l = arg;
    struct rbd_dev *d = l->d;
    int whole = fast_diff_valid(d->image);
    int rc = rbd_diff_iterate2(d->image, NULL, l->lo, l->hi - l->lo, 1, whole, extent_cb, l);
    rq_push(l->q, l->tag, rc < 0 && rc != -E2BIG ? rc : l->n, l->stop);
    free(l);
    lookup_end(d);
    return NULL;
}

int rbd_dev_allocated(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      uint64_t *offs, uint64_t *lens, int max)
{
    struct lookup *l;
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int rc;
    if (max < 1)
        return -EINVAL;
    if (past_end(d, off, len))
        return -ERANGE;
    if (!(l = malloc(sizeof(*l))))
        return -ENOMEM;
    *l = (struct lookup){ .d = d, .q = q, .tag = tag, .lo = off, .hi = off + len,
                          .offs = offs, .lens = lens, .max = max, .stop = off + len };
    pthread_mutex_lock(&d->lock);
    d->lookups++;
    pthread_mutex_unlock(&d->lock);
    if ((rc = pthread_attr_init(&attr)) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* signals stay with the loop thread (its epoll wait sees EINTR), as
         * librbd's own threads leave them */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = pthread_create(&t, &attr, lookup_run, l);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (rc == 0)
        return 0;
    free(l);
    lookup_end(d);
    return -rc;
}

/* ------------------------------------------------------------ exclusive lock */

int rbd_dev_is_lock_owner(struct rbd_dev *d)
{
    int owner = 0, rc = rbd_is_exclusive_lock_owner(d->image, &owner);
    return rc < 0 ? rc : owner != 0;
}

int rbd_dev_lock_owner(struct rbd_dev *d, char *buf, uint32_t len)
{
    rbd_lock_mode_t mode;
    char *owners[4];
    size_t n = 4;
    int rc = rbd_lock_get_owners(d->image, &mode, owners, &n);
    if (rc == -ENOENT || (rc == 0 && n == 0))
        return 0;
    if (rc < 0)
        return rc;
    snprintf(buf, len, "%s", owners[0]);
    rbd_lock_get_owners_cleanup(owners, n);
    return 1;
}

int rbd_dev_lock_break(struct rbd_dev *d, const char *owner)
{
    return rbd_lock_break(d->image, RBD_LOCK_MODE_EXCLUSIVE, owner);
}

int rbd_dev_lock_acquire(struct rbd_dev *d)
{
    return rbd_lock_acquire(d->image, RBD_LOCK_MODE_EXCLUSIVE);
}

int rbd_dev_lock_release(struct rbd_dev *d)
{
    return rbd_lock_release(d->image);
}

int rbd_dev_metadata_get(struct rbd_dev *d, const char *key, char *buf, uint32_t len)
{
    size_t n = len;
    int rc = rbd_metadata_get(d->image, key, buf, &n);
    return rc < 0 ? rc : (int)n;
}

int rbd_dev_metadata_set(struct rbd_dev *d, const char *key, const char *value)
{
    return rbd_metadata_set(d->image, key, value);
}

void *rbd_dev_rados(struct rbd_dev *d)
{
    return d->cluster;
}
