/*
 * The TCMU ring in C: the parts that need memory ordering or must not cost a
 * Python call per byte.  Two sides over the same layout:
 *   tr_*  the handler (consumer) side, used by tcmu_rbd.ring against /dev/uioN
 *   emu_* the kernel (producer) side, a faithful userspace model of
 *         drivers/target/target_core_user.c used by tests and benchmarks.
 *   iov_* helpers over struct iovec arrays (data area access without copies
 *         through Python).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_RING_H
#define TCMU_RBD_RING_H

#include <stdint.h>
#include <sys/uio.h>

/* ---------------------------------------------------------------- handler */

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
};

struct tr_ring *tr_open(void *base, uint64_t size, int fd);
void tr_close(struct tr_ring *r);
int  tr_take(struct tr_ring *r, struct tr_event *ev, int max);
int  tr_complete(struct tr_ring *r, uint16_t cmd_id, uint8_t status,
                 const uint8_t *sense, uint32_t sense_len,
                 uint8_t uflags, uint32_t read_len);
int  tr_kick(struct tr_ring *r);
void tr_forget_all(struct tr_ring *r);
uint32_t tr_load_head(struct tr_ring *r);
uint32_t tr_load_tail(struct tr_ring *r);

void *tr_mmap(int fd, uint64_t size);
int   tr_munmap(void *addr, uint64_t size);

/* ---------------------------------------------------------------- emulator */

struct emu_cmd {
    uint32_t entry_off;     /* ring offset of its entry */
    uint32_t nblocks;       /* data blocks it holds */
    uint32_t *blocks;
    uint32_t blocks_cap;
    uint32_t iov_cnt;       /* data vectors; bidi vectors follow */
    uint32_t iov_total;
    uint64_t *iov_off;      /* the vectors as written into the entry */
    uint32_t *iov_len;
    uint32_t iov_cap;
    uint64_t data_len;
    uint8_t  inflight;
    uint8_t  done;          /* reaped, result below is valid */
    uint8_t  status;
    uint8_t  uflags;
    uint32_t read_len;
    uint8_t  sense[96];
};

struct emu {
    uint8_t  *base;
    uint64_t size;
    int      memfd;
    uint32_t cmdr_off;
    uint32_t cmdr_size;
    uint64_t data_off;
    uint32_t block_size;
    uint32_t nblocks;
    uint8_t  *used;         /* one byte per data block */
    uint32_t free_blocks;
    uint32_t alloc_cursor;
    uint32_t last_cleaned;
    uint16_t next_id;
    uint32_t inflight;
    int      broken;        /* set exactly when target_core_user would set TCMU_DEV_BIT_BROKEN */
    uint64_t reaped;
    uint16_t *done_ids;     /* ids reaped since emu_take_done */
    uint32_t done_n;
    struct emu_cmd *cmds;   /* 65536 */
};

struct emu *emu_create(uint32_t cmdr_size, uint32_t data_blocks, uint32_t block_size, uint16_t flags);
void emu_destroy(struct emu *e);
int  emu_submit(struct emu *e, const uint8_t *cdb, uint32_t cdb_len,
                const uint32_t *iov_lens, uint32_t iov_cnt, uint32_t bidi_cnt);
int  emu_submit_tmr(struct emu *e, uint8_t tmr_type, const uint16_t *ids, uint32_t n);
int  emu_write_raw(struct emu *e, uint32_t len_op, uint16_t cmd_id, const uint8_t *body, uint32_t body_len);
int  emu_reap(struct emu *e);
int  emu_take_done(struct emu *e, uint16_t *out, int max);
uint64_t emu_data_copy(struct emu *e, uint16_t cmd_id, int to_cmd, uint8_t *buf, uint64_t len, uint32_t first_iov);
void emu_reset_ring(struct emu *e);
uint32_t emu_ring_free(struct emu *e);

/* ---------------------------------------------------------------- iovec */

uint64_t iov_from_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *src, uint64_t len);
uint64_t iov_to_buf(const struct iovec *iov, uint32_t cnt, uint64_t skip, void *dst, uint64_t len);
uint64_t iov_fill(const struct iovec *iov, uint32_t cnt, uint64_t skip, int c, uint64_t len);
int64_t  iov_compare(const struct iovec *iov, uint32_t cnt, uint64_t skip, const void *buf, uint64_t len);
int64_t  iov_first_nonzero(const struct iovec *iov, uint32_t cnt, uint64_t skip, uint64_t len);
int64_t  tr_preadv(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset);
int64_t  tr_pwritev(int fd, const struct iovec *iov, uint32_t cnt, uint64_t offset);
int      tr_punch_hole(int fd, uint64_t offset, uint64_t len);

#endif
