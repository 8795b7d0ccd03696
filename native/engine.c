/*
 * The engine: completion queue, fast take, serve; see engine.h.
 *
 * Belongs here: the loop that moves plain commands between the ring and a
 * backend through struct engine_ops, and completions back onto the ring.
 * Not here: any backend's calls (rbd_aio.c), the SCSI rule (scsi_fast.c:
 * the engine only asks it), the ring protocol (ring.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "metrics.h"
#include "ring.h"
#include "scsi_fast.h"
#include "engine.h"

const uint64_t engine_fast_tag = 1ULL << 63;

struct rq {
    int efd;
    pthread_mutex_t lock;
    uint32_t cap, rd, n;
    uint64_t lost;      /* completions that found the queue full and no memory to grow */
    int signalled;      /* efd holds a count: written and read only under the lock, so
                         * drain() reads it only then (a read is a system call per wake-up,
                         * and most wake-ups are the ring's, not the queue's) */
    struct tr_ring *ring;   /* rq_attach: plain successes complete onto it in rq_push */
    uint64_t *tags;
    int64_t *rets;
    uint64_t *extra;
};

/* ================================================================ completion queue */

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

/* A counter read under the queue's lock. */
static uint64_t rq_read(struct rq *q, int lost)
{
    uint64_t v;
    pthread_mutex_lock(&q->lock);
    v = lost ? q->lost : q->n;
    pthread_mutex_unlock(&q->lock);
    return v;
}

uint64_t rq_lost(struct rq *q) { return rq_read(q, 1); }

uint32_t rq_pending(struct rq *q) { return (uint32_t)rq_read(q, 0); }

/* Double the capacity, entries in order from 0; -1 when out of memory. */
static int rq_grow(struct rq *q)
{
    uint32_t cap = q->cap * 2;
    uint64_t *tags = malloc(cap * sizeof(*tags)), *extra = malloc(cap * sizeof(*extra));
    int64_t *rets = malloc(cap * sizeof(*rets));
    if (!cap || !tags || !rets || !extra) {
        free(tags);
        free(rets);
        free(extra);
        return -1;
    }
    for (uint32_t k = 0; k < q->n; k++) {
        uint32_t i = (q->rd + k) % q->cap;
        tags[k] = q->tags[i];
        rets[k] = q->rets[i];
        extra[k] = q->extra[i];
    }
    free(q->tags);
    free(q->rets);
    free(q->extra);
    q->tags = tags;
    q->rets = rets;
    q->extra = extra;
    q->rd = 0;
    q->cap = cap;
    return 0;
}

void rq_attach(struct rq *q, struct tr_ring *r)
{
    pthread_mutex_lock(&q->lock);
    q->ring = r;
    pthread_mutex_unlock(&q->lock);
}

/* Make efd readable (once: the loop reads it once). */
static void signal_locked(struct rq *q)
{
    uint64_t one = 1;
    ssize_t w;

    if (q->signalled)
        return;
    w = write(q->efd, &one, sizeof(one));
    q->signalled = w == sizeof(one);
}

/* A plain op's success, straight onto the attached ring from the completing
 * thread (tcmu-runner's way: no queue, no wake-up of the loop thread, which
 * under TCG costs more than the command).  0: not done (no ring, or a late
 * completion for an id that moved on): it goes through the queue.  The
 * queue's lock keeps the ring attached while it is used. */
static int push_direct(struct rq *q, uint64_t tag)
{
    int done = 0;

    pthread_mutex_lock(&q->lock);
    if (q->ring)
        done = tr_complete_good(q->ring, (uint16_t)(tag & 0xFFFF), (uint32_t)(tag >> 16));
    if (done == 2)      /* the loop sleeps and only it can ring: wake it */
        signal_locked(q);
    pthread_mutex_unlock(&q->lock);
    return done;
}

void rq_push(struct rq *q, uint64_t tag, int64_t ret, uint64_t extra)
{
    if ((tag & engine_fast_tag) && ret >= 0 && push_direct(q, tag))
        return;
    pthread_mutex_lock(&q->lock);
    /* Sized for every op in flight; a completion is never dropped: grow
     * (a librbd thread may not wait here for the loop thread). */
    if (q->n == q->cap && rq_grow(q) < 0)
        q->lost++;
    if (q->n < q->cap) {
        uint32_t i = (q->rd + q->n) % q->cap;
        q->tags[i] = tag;
        q->rets[i] = ret;
        q->extra[i] = extra;
        q->n++;
    }
    signal_locked(q);
    pthread_mutex_unlock(&q->lock);
}

static int drain(struct rq *q, struct tr_ring *r, uint64_t *tags, int64_t *rets, uint64_t *extra, int max)
{
    int n = 0;

    pthread_mutex_lock(&q->lock);
    if (q->signalled) {     /* clear the event first */
        uint64_t v;
        ssize_t rd = read(q->efd, &v, sizeof(v));
        (void)rd;
        q->signalled = 0;
    }
    while (q->n && n < max) {
        uint64_t tag = q->tags[q->rd];
        int64_t ret = q->rets[q->rd];
        uint64_t ext = q->extra[q->rd];
        q->rd = (q->rd + 1) % q->cap;
        q->n--;
        if (r && r->metrics && ret < 0)
            lm_backend_error(r->metrics, ret);
        /* a plain success queued before rq_attach: the same rule as rq_push's */
        if (r && (tag & engine_fast_tag) && ret >= 0 &&
            tr_complete_good(r, (uint16_t)(tag & 0xFFFF), (uint32_t)(tag >> 16)) > 0)
            continue;
        tags[n] = tag;
        rets[n] = ret;
        extra[n] = ext;
        n++;
    }
    if (q->n)               /* more left than the caller took: keep the fd readable */
        signal_locked(q);
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

/* ================================================================ take and start */

/* Start cmd_id through the backend's ops if the rule says it is plain: 0, else -1. */
static int fast_start(const struct engine_backend *b, struct tr_ring *r,
                      struct engine_fast *f, uint16_t id)
{
    struct tr_cmd *c = &r->cmds[id];
    struct scsi_fast_io io;
    uint64_t tag;
    uint32_t gen;
    int dir, rc;

    if (c->bad)
        return -1;
    dir = scsi_fast_decide(c->cdb, c->cdb_len, c->data_len, &f->lim, &io);
    if (dir == SCSI_FAST_NO)
        return -1;
    gen = c->gen + 1;
    /* before the submission: its completion, on another thread, is checked against it */
    __atomic_store_n(&c->gen, gen, __ATOMIC_RELAXED);
    tag = engine_fast_tag | (uint64_t)gen << 16 | id;
    if (dir == SCSI_FAST_WRITE)
        rc = b->ops->writev(b->dev, b->q, tag, c->iov, c->iov_cnt, io.offset, io.fua);
    else
        rc = b->ops->readv(b->dev, b->q, tag, c->iov, c->iov_cnt, io.offset);
    if (rc < 0) {
        __atomic_store_n(&c->gen, gen - 1, __ATOMIC_RELAXED);   /* the handler starts it again */
        return -1;
    }
    f->kinds[id] = dir == SCSI_FAST_WRITE ? f->kind_write : f->kind_read;
    f->started++;
    return 0;
}

int engine_take_fast(const struct engine_backend *b, struct tr_ring *r, struct engine_fast *f,
                     struct tr_event *ev, int max)
{
    int kept = 0;

    while (kept < max) {
        int base = kept, space = max - kept, n = tr_take(r, ev + base, space), i;
        if (n < 0)
            return kept ? kept : n;
        for (i = 0; i < n; i++) {
            struct tr_event *e = &ev[base + i];
            if (f->enabled && e->kind == TR_EV_CMD && fast_start(b, r, f, e->cmd_id) == 0)
                continue;
            ev[kept++] = *e;
        }
        if (n < space)      /* the ring is empty (or every slot is in use) */
            break;
    }
    return kept;
}

/* ================================================================ serve */

int engine_serve(const struct engine_backend *b, struct tr_ring *r, struct engine_fast *f,
                 struct tr_event *ev, int max_ev, uint64_t *tags, int64_t *rets,
                 uint64_t *extra, int max_c, struct engine_serve_state *s)
{
    struct epoll_event pe[4];

    s->events = s->completions = s->control = 0;
    for (;;) {
        int n = engine_take_fast(b, r, f, ev, max_ev), c, k, m, i;
        if (n < 0)
            return n;
        c = drain(b->q, r, tags, rets, extra, max_c);
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
        if (m == 0) {           /* idle */
            if (f->started != s->trimmed_at) {
                s->trimmed_at = f->started;
                s->trims++;
                malloc_trim(0);
            }
            return 0;
        }
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
