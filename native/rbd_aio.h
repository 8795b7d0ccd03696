/*
 * librbd's asynchronous C API on the ring's data-area iovecs, with no data
 * copied in Python: reads and writes go straight between the image and the
 * iovecs (rbd_aio_readv/writev).  librbd completes on its own threads; each
 * op's completion is pushed onto the engine's completion queue (rq_push).
 * rbd_dev_engine_ops() is this backend as the engine sees it.
 *
 * Belongs here: opening and closing an image with its own rados client, and
 * every librbd call.  Not here: the completion queue and the fast path
 * (engine.c), the SCSI rule (scsi_fast.c), tcmu_rbd/backends/rbd.py's policy
 * (options, errors, size).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_RBD_AIO_H
#define TCMU_RBD_RBD_AIO_H

#include <stdint.h>
#include <sys/uio.h>

#include "engine.h"

struct rbd_dev; /* one open image with its own rados client */

/* opts: NULL-terminated list of key, value, key, value ... set on the rados
 * configuration before connecting (after conf and keyring are read).
 * snap may be NULL; with a snapshot the image is opened read-only. */
struct rbd_dev *rbd_dev_open(const char *conf, const char *client_id,
                             const char *pool, const char *ns,
                             const char *image, const char *snap,
                             const char **opts, char *err, uint32_t errlen);
void rbd_dev_close(struct rbd_dev *d);
int  rbd_dev_stat(struct rbd_dev *d, uint64_t *size, uint64_t *obj_size, uint64_t *features);

/* Each starts one asynchronous op; its completion is pushed onto q with tag
 * (rq_push, from a librbd thread).  0, or -errno when librbd refused it: then
 * no completion follows. */
int rbd_dev_readv(struct rbd_dev *d, struct rq *q, uint64_t tag,
                  const struct iovec *iov, uint32_t cnt, uint64_t off);
int rbd_dev_writev(struct rbd_dev *d, struct rq *q, uint64_t tag,
                   const struct iovec *iov, uint32_t cnt, uint64_t off, int fua);
int rbd_dev_flush(struct rbd_dev *d, struct rq *q, uint64_t tag);
int rbd_dev_write_zeroes(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len);
/* pattern: one block taken from the iovecs (gathered in C) */
int rbd_dev_writesame(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      const struct iovec *iov, uint32_t cnt, uint32_t pattern_len);
/* iovecs hold len bytes to compare followed by len bytes to write */
int rbd_dev_compare_and_write(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                              const struct iovec *iov, uint32_t cnt);
/* librbd's write cache: 1 when it caches this image's writes (a pool's or
 * the image's rbd config turned rbd_cache on; the client turns it off).  Then
 * a write completes only once flushed if it is FUA or the LUN's write cache
 * is off (set_wce 0, the state after open). */
int  rbd_dev_volatile_cache(struct rbd_dev *d);
/* The image's size as the header watch last saw it (a resize or shrink by
 * anyone).  I/O past it is refused with -ERANGE at submission: librbd would
 * drop a write's tail and report success; a read clipped by librbd anyway
 * completes -ERANGE, never short. */
uint64_t rbd_dev_size(struct rbd_dev *d);
void rbd_dev_set_wce(struct rbd_dev *d, int wce);
/* The readv/writev above, for struct engine_backend (dev: a struct rbd_dev). */
const struct engine_ops *rbd_dev_engine_ops(void);

/* Allocated extents in [off, off+len), asynchronously: librbd's diff-iterate
 * runs on a thread of its own (never the loop's) and writes up to max
 * (offset, length) pairs, sorted, merged and clipped to the range, into
 * offs/lens, which stay the caller's and must live until the completion.  It
 * completes onto q with ret = the number of extents (or -errno) and extra =
 * where the list ends: off+len, or the start of an extent that found no room
 * (everything before it is listed).  With fast-diff valid (the features, and
 * flags without OBJECT_MAP_INVALID / FAST_DIFF_INVALID) it answers from the
 * object map, whole objects at a time; else it lists each object.
 * rbd_dev_close waits for running lookups.  0, or -errno: nothing follows. */
int rbd_dev_allocated(struct rbd_dev *d, struct rq *q, uint64_t tag, uint64_t off, uint64_t len,
                      uint64_t *offs, uint64_t *lens, int max);

/* The image's exclusive lock (synchronous; never on the loop thread while
 * I/O waits: tcmu_rbd/failover.py runs them on its takeover thread).
 * lock_owner: 1 and the owner's name in buf, 0 when unlocked, or -errno.
 * lock_acquire takes it in the mode librbd does not hand over on a peer's
 * request; lock_break blocklists the owner (rbd_blocklist_on_break_lock). */
int rbd_dev_is_lock_owner(struct rbd_dev *d);
int rbd_dev_lock_owner(struct rbd_dev *d, char *buf, uint32_t len);
int rbd_dev_lock_break(struct rbd_dev *d, const char *owner);
int rbd_dev_lock_acquire(struct rbd_dev *d);
int rbd_dev_lock_release(struct rbd_dev *d);
/* Image metadata (the failover owner record): get -> length or -errno. */
int rbd_dev_metadata_get(struct rbd_dev *d, const char *key, char *buf, uint32_t len);
int rbd_dev_metadata_set(struct rbd_dev *d, const char *key, const char *value);
/* The image's cluster client, for cluster.c (a rados_t). */
void *rbd_dev_rados(struct rbd_dev *d);

#endif
