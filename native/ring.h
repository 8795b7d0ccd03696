/*
 * The TCMU ring, handler side (tr_*): what tcmu_rbd/ring.py drives over the
 * mapping of /dev/uioN (or of the emulator's memfd).  tr_take copies each new
 * entry's CDB and iovecs out of the ring (iovecs checked against our own data
 * area) with an acquire load of cmd_head; tr_complete writes the response into
 * the oldest CMD slot not yet reused (out-of-order completion: the kernel
 * reaps by the cmd_id it finds there) and moves cmd_tail with a release
 * store; tr_kick rings the doorbell once per burst.
 *
 * Threads: the loop thread takes; a command may complete on any thread (a
 * librbd callback completes a plain READ/WRITE straight onto the ring with
 * tr_complete_good, as tcmu-runner does): every call below takes the ring's
 * lock.  The doorbell is batched: from tr_take until the loop's next tr_kick
 * the ring is "awake" and a completion leaves the doorbell to that kick;
 * otherwise (the loop sleeps) the completing thread rings it itself.
 *
 * Belongs here: the ring protocol and the per-cmd_id record of what was
 * taken.  Not here: what a command means (scsi_fast.c, the SCSI core in
 * Python), starting I/O (engine.c), the kernel's side (emulator.c).
 * Layout and protocol: include/uapi/linux/target_core_user.h and
 * drivers/target/target_core_user.c.
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_RING_H
#define TCMU_RBD_RING_H

#include <stdint.h>
#include <sys/uio.h>

#include "metrics.h"

/* Why an entry is malformed (tr_cmd.bad). */
enum { TR_BAD_ENTRY = 1,    /* too short for its iovec count */
       TR_BAD_CDB = 2,      /* CDB outside the entry, or of unknown length */
       TR_BAD_IOV = 3 };    /* an iovec outside the data area */

/* What the handler knows about one outstanding command, indexed by cmd_id. */
struct tr_cmd {
    struct iovec *iov;      /* absolute addresses in our mapping */
    uint32_t iov_cap;
    uint32_t iov_cnt;       /* data vectors (Data-Out, or Data-In) */
    uint32_t bidi_cnt;      /* Data-In vectors of a bidirectional command */
    uint32_t bad;           /* nonzero: the entry was malformed (see TR_BAD_*) */
    uint64_t data_len;      /* sum of the iov_cnt vectors */
    uint32_t gen;           /* the handler's generation for this use of the id */
    uint8_t  cdb[32];       /* copied out of the ring when the entry is taken */
    uint8_t  cdb_len;
    uint8_t  outstanding;
    uint64_t t0;            /* lm_now_ns() when taken (with metrics) */
};

enum { TR_EV_CMD = 1, TR_EV_TMR = 2 };

/* One thing taken from the ring. */
struct tr_event {
    uint8_t  kind;          /* TR_EV_CMD, TR_EV_TMR */
    uint8_t  tmr_type;
    uint16_t cmd_id;
    uint32_t tmr_first;     /* TMR: index of its first id in tr_ring.tmr_ids */
    uint32_t tmr_count;
};

struct tr_ring {
    uint8_t  *base;
    uint64_t size;
    uint32_t cmdr_off;
    uint32_t cmdr_size;
    uint64_t data_off;      /* first byte after the command ring */
    uint16_t version;
    uint16_t flags;         /* mailbox capability flags */
    uint32_t next;          /* consume cursor: the next entry to take */
    uint32_t *slots;        /* FIFO of CMD entry offsets not yet reused for a completion */
    uint32_t slot_rd;
    uint32_t slot_n;
    int      fd;            /* doorbell: 4-byte write(); -1 means the caller rings */
    int      dirty;         /* cmd_tail moved since the last doorbell */
    uint32_t outstanding;
    uint64_t completions;   /* counters, for tests and stats */
    uint64_t doorbells;
    uint64_t dropped;       /* completions for ids that were not outstanding */
    uint16_t *tmr_ids;      /* scratch for the ids carried by TMR entries of one take */
    uint32_t tmr_used;
    struct tr_cmd *cmds;    /* 65536 entries */
    struct lun_metrics *metrics;   /* NULL: none recorded (tr_set_metrics) */
    void     *lock;         /* pthread_mutex_t, over everything above */
    uint8_t  awake;         /* the loop has taken and will kick before it sleeps */
    uint64_t direct;        /* completions made by tr_complete_good (statistics) */
};

struct tr_ring *tr_open(void *base, uint64_t size, int fd);
void tr_close(struct tr_ring *r);
int  tr_take(struct tr_ring *r, struct tr_event *ev, int max);
int  tr_complete(struct tr_ring *r, uint16_t cmd_id, uint8_t status,
                 const uint8_t *sense, uint32_t sense_len,
                 uint8_t uflags, uint32_t read_len);
int  tr_kick(struct tr_ring *r);
/* Complete cmd_id GOOD from any thread, if it is outstanding with the
 * handler's generation gen (else 0: a late completion, left to the caller).
 * Returns 1 when done and the doorbell is rung or left to the awake loop, 2
 * when done but the loop sleeps and there is no doorbell fd (the emulator):
 * the caller must wake the loop so that it kicks. */
int  tr_complete_good(struct tr_ring *r, uint16_t cmd_id, uint32_t gen);
int  tr_forget_all(struct tr_ring *r);
uint32_t tr_load_head(struct tr_ring *r);
/* Record every completion into m from now on (metrics.h), or nothing (NULL);
 * sets m's gauges to the ring's state.  m stays the caller's. */
void tr_set_metrics(struct tr_ring *r, struct lun_metrics *m);
uint32_t tr_load_tail(struct tr_ring *r);

void *tr_mmap(int fd, uint64_t size);
int   tr_munmap(void *addr, uint64_t size);

#endif
