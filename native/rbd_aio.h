/*
 * librbd's asynchronous C API for the handler loop, with no data copied in
 * Python: reads and writes go straight between the image and the ring's data
 * area iovecs.  librbd completes on its own threads; completions are queued
 * here under a mutex and announced on an eventfd (one write per empty ->
 * non-empty transition), so the Python loop takes them in batches without
 * taking the GIL per completion.
 */
#ifndef TCMU_RBD_RBD_AIO_H
#define TCMU_RBD_RBD_AIO_H

#include <stdint.h>
#include <sys/uio.h>

struct rq;      /* completion queue */
struct rbd_dev; /* one open image with its own rados client */

struct rq *rq_create(uint32_t capacity);
void rq_destroy(struct rq *q);
int  rq_fd(struct rq *q);
uint32_t rq_pending(struct rq *q);
/* Take up to max completions: tag, return value (>= 0 ok, -errno), and for
 * compare-and-write mismatches (-EILSEQ) the offset of the first differing
 * byte relative to the start of the operation. */
int  rq_drain(struct rq *q, uint64_t *tags, int64_t *rets, uint64_t *extra, int max);
/* The same, but a successful completion whose tag has bit 63 set (a plain
 * READ/WRITE/FLUSH, tag = 1<<63 | gen<<16 | cmd_id) goes straight onto the
 * ring as GOOD when that cmd_id is still outstanding with that generation;
 * only the rest is returned.  Saves a Python call per completion. */
int  rq_drain_ring(struct rq *q, struct tr_ring *r, uint64_t *tags, int64_t *rets, uint64_t *extra, int max);

/* The handler's limits for the commands it lets rq_take_fast() start: the
 * same checks as the SCSI core's READ/WRITE fast path (tcmu_rbd/scsi/cdb.py);
 * anything else, or enabled == 0, goes to the handler. */
struct tr_fast {
    uint64_t num_blocks;
    uint32_t block_size;
    uint32_t max_xfer_blocks;
    uint8_t  enabled;       /* 0 while a unit attention or an abort is pending */
    uint8_t  read_only;
    uint8_t  kind_read;     /* the handler's op kinds, written into kinds[id] */
    uint8_t  kind_write;
    uint8_t  *kinds;        /* 65536: the op kind per cmd_id (error sense) */
    uint64_t started;       /* commands started here (statistics) */
};
/* Take new ring entries (tr_take); plain, valid READ/WRITE(10/16) go straight
 * to librbd tagged 1<<63 | gen<<16 | cmd_id (completed by rq_drain_ring); the
 * rest (other commands, TMRs, whatever librbd refused) are returned in ev, in
 * ring order, for the handler.  Returns the number of events, or tr_take's
 * -EPROTO. */
int rq_take_fast(struct rbd_dev *d, struct rq *q, struct tr_ring *r, struct tr_fast *f,
                 struct tr_event *ev, int max);

/* The handler loop's steady state in C: take and start (rq_take_fast),
 * complete (rq_drain_ring), ring the doorbell, and wait on the epoll set
 * (the uio fd, rq_fd(q), an optional control fd) until there is something
 * for the handler: ring events in ev, completions in tags/rets/extra, the
 * control fd readable, a signal, or the timeout.  Returns 0, or -EPROTO (a
 * corrupt ring), or another -errno (the doorbell or epoll failed). */
struct tr_serve {
    int epfd;
    int uio_fd;
    int ctl_fd;             /* -1: none */
    int timeout_ms;
    int events;             /* out */
    int completions;        /* out */
    int control;            /* out */
};
int rq_serve(struct rbd_dev *d, struct rq *q, struct tr_ring *r, struct tr_fast *f,
             struct tr_event *ev, int max_ev, uint64_t *tags, int64_t *rets,
             uint64_t *extra, int max_c, struct tr_serve *s);

/* opts: NULL-terminated list of key, value, key, value ... set on the rados
 * configuration before connecting (after conf and keyring are read).
 * snap may be NULL; with a snapshot the image is opened read-only. */
struct rbd_dev *rbd_dev_open(const char *conf, const char *client_id,
                             const char *pool, const char *ns,
                             const char *image, const char *snap,
                             const char **opts, char *err, uint32_t errlen);
void rbd_dev_close(struct rbd_dev *d);
int  rbd_dev_stat(struct rbd_dev *d, uint64_t *size, uint64_t *obj_size, uint64_t *features);

int rbd_dev_readv(struct rbd_dev *d, struct rq *q, uint64_t tag,
                  const struct iovec *iov, uint32_t cnt, uint64_t off);
int rbd_dev_writev(struct rbd_dev *d, struct rq *q, uint64_t tag,
                   const struct iovec *iov, uint32_t cnt, uint64_t off, int fua);
int rbd_dev_flush(struct rbd_dev *d, struct rq *q, uint64_t tag);
int rbd_dev_discard(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len);
int rbd_dev_write_zeroes(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len);
/* pattern: one block taken from the iovecs (gathered in C) */
int rbd_dev_writesame(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      const struct iovec *iov, uint32_t cnt, uint32_t pattern_len);
/* iovecs hold len bytes to compare followed by len bytes to write */
int rbd_dev_compare_and_write(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                              const struct iovec *iov, uint32_t cnt);
/* Allocated extents in [off, off+len): up to max (offset, length) pairs.
 * Synchronous (diff-iterate, object map when the image has one). */
int rbd_dev_allocated(struct rbd_dev *d, uint64_t off, uint64_t len,
                      uint64_t *offs, uint64_t *lens, int max);

#endif
