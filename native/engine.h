/*
 * The engine: the handler loop's steady state in C, for a backend that
 * completes asynchronously.  Three parts:
 *   rq_*           the completion queue: a backend's ops complete into it
 *                  from any thread (rq_push, under a mutex); a plain op's
 *                  success goes straight onto the attached ring instead
 *                  (rq_attach); the rest is announced
 *                  on an eventfd (one write per empty -> non-empty
 *                  transition), and drained in batches without a Python call
 *                  per completion;
 *   engine_take_fast  takes new ring entries and starts the plain READ/WRITE
 *                  among them (scsi_fast_decide) through the backend's ops;
 *   engine_serve   take, start, complete, doorbell, wait: until the handler
 *                  has something to do.
 *
 * Belongs here: moving commands between the ring and a backend's ops.  Not
 * here: any backend (librbd is rbd_aio.c; the engine sees only struct
 * engine_ops), the SCSI rule (scsi_fast.c), the ring protocol (ring.c).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_ENGINE_H
#define TCMU_RBD_ENGINE_H

#include <stdint.h>
#include <sys/uio.h>

#include "ring.h"
#include "scsi_fast.h"

struct rq;      /* completion queue */

struct rq *rq_create(uint32_t capacity);
void rq_destroy(struct rq *q);
int  rq_fd(struct rq *q);
uint32_t rq_pending(struct rq *q);
/* A backend's op completed: tag as submitted, ret (>= 0 ok, -errno), and
 * for compare-and-write mismatches (-EILSEQ) the offset of the first
 * differing byte relative to the start of the op.  Thread-safe; capacity is
 * sized by the caller for every op it can have in flight, and a full queue
 * grows rather than drop a completion (rq_lost counts the ones that found no
 * memory for that: then the command never completes, and the kernel's
 * timeout or the initiator's abort ends it). */
void rq_push(struct rq *q, uint64_t tag, int64_t ret, uint64_t extra);
/* From now on a plain op's success (engine_fast_tag, ret >= 0) pushed onto q
 * completes GOOD on r at once, on the pushing thread (tr_complete_good),
 * when that cmd_id is still outstanding with that generation; the rest is
 * queued as before.  NULL detaches (before r is closed). */
void rq_attach(struct rq *q, struct tr_ring *r);
uint64_t rq_lost(struct rq *q);
/* The tag bit of a plain op (READ/WRITE/FLUSH): tag = engine_fast_tag |
 * gen<<16 | cmd_id.  (tcmu_rbd.ring.FAST_TAG reads it from here.) */
extern const uint64_t engine_fast_tag;

/* Take up to max completions into tags/rets/extra. */
int  rq_drain(struct rq *q, uint64_t *tags, int64_t *rets, uint64_t *extra, int max);
/* The same, but a successful completion of a plain op (engine_fast_tag set)
 * goes straight onto the ring as GOOD when that cmd_id is still outstanding
 * with that generation; only the rest is returned.  Saves a Python call per
 * completion. */
int  rq_drain_ring(struct rq *q, struct tr_ring *r, uint64_t *tags, int64_t *rets, uint64_t *extra, int max);

/* A backend as the engine sees it, in the spirit of tcmu-runner's handler
 * ops: only what the fast path starts.  Each call starts one asynchronous op
 * on the command's iovecs and returns 0 (its completion is then pushed onto
 * q with rq_push, from any thread) or -errno (refused: it never completes;
 * the engine leaves the command to the handler, which starts it again and
 * reports the error).  FLUSH and the rest are started by the handler. */
struct engine_ops {
    int (*readv)(void *dev, struct rq *q, uint64_t tag,
                 const struct iovec *iov, uint32_t cnt, uint64_t off);
    int (*writev)(void *dev, struct rq *q, uint64_t tag,
                  const struct iovec *iov, uint32_t cnt, uint64_t off, int fua);
};

/* One backend instance: its ops, its device, the queue its ops complete into. */
struct engine_backend {
    const struct engine_ops *ops;
    void *dev;
    struct rq *q;
};

/* What the engine may start, kept current by the handler. */
struct engine_fast {
    struct scsi_fast_limits lim;   /* the LUN, for scsi_fast_decide */
    uint8_t  enabled;       /* 0 while an abort is pending: the handler must see the id's next use */
    uint8_t  kind_read;     /* the handler's op kinds, written into kinds[id] */
    uint8_t  kind_write;
    uint8_t  *kinds;        /* 65536: the op kind per cmd_id (error sense) */
    uint64_t started;       /* commands started here (statistics) */
};

/* Take new ring entries (tr_take); plain, valid READ/WRITE(10/16) go to the
 * backend tagged engine_fast_tag | gen<<16 | cmd_id (completed by rq_push
 * onto the attached ring, else by rq_drain_ring); the rest (other commands, TMRs, whatever the backend
 * refused) are returned in ev, in ring order, for the handler.  Returns the
 * number of events, or tr_take's -EPROTO. */
int engine_take_fast(const struct engine_backend *b, struct tr_ring *r, struct engine_fast *f,
                     struct tr_event *ev, int max);

/* The handler loop's steady state: take and start (engine_take_fast),
 * complete (rq_drain_ring), ring the doorbell, and wait on the epoll set
 * (the uio fd, rq_fd(b->q), an optional control fd) until there is
 * something for the handler: ring events in ev, completions in
 * tags/rets/extra, the control fd readable, a signal, or the timeout.
 * A timeout after commands were started gives the allocator's free memory back
 * to the kernel (malloc_trim): the buffers of a burst of large I/O otherwise stay
 * resident in every idle LUN's worker.
 * Returns 0, or -EPROTO (a corrupt ring), or another -errno (the doorbell or
 * epoll failed). */
struct engine_serve_state {
    int epfd;
    int uio_fd;
    int ctl_fd;             /* -1: none */
    int timeout_ms;
    int events;             /* out */
    int completions;        /* out */
    int control;            /* out */
    uint64_t trimmed_at;    /* f->started at the last trim */
    uint64_t trims;         /* out: how many (statistics, tests) */
};
int engine_serve(const struct engine_backend *b, struct tr_ring *r, struct engine_fast *f,
                 struct tr_event *ev, int max_ev, uint64_t *tags, int64_t *rets,
                 uint64_t *extra, int max_c, struct engine_serve_state *s);

#endif
