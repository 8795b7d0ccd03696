/*
 * The kernel's side of a TCMU device, in userspace (emu_*): a faithful model
 * of drivers/target/target_core_user.c for tests and benchmarks only
 * (lab/tcmu_rbd_lab/emulator.py is its Python face).  A memfd laid out like
 * the kernel's mapping: mailbox, command ring with PAD at the wrap, a data
 * area of fixed-size blocks; commands queued as queue_cmd_ring() does,
 * completions reaped as tcmu_handle_completions() does, and `broken` set
 * exactly when the kernel would set TCMU_DEV_BIT_BROKEN.
 *
 * Hostile-ring tests also get the handler's view of the mapping between
 * PROT_NONE guard pages (emu_map_guarded: a touch outside it faults) and a
 * kernel that rewrites a field while the handler reads it (emu_scribble).
 *
 * Belongs here: the producer side of the ring.  Not here: anything the
 * handler runs on a gateway (ring.c is the consumer side); nothing in
 * tcmu_rbd/ calls emu_*.
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_EMULATOR_H
#define TCMU_RBD_EMULATOR_H

#include <stdint.h>

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
                const uint32_t *iov_lens, uint32_t iov_cnt, uint32_t bidi_cnt,
                const uint8_t *data_out, uint64_t data_out_len);
int  emu_submit_tmr(struct emu *e, uint8_t tmr_type, const uint16_t *ids, uint32_t n);
int  emu_write_raw(struct emu *e, uint32_t len_op, uint16_t cmd_id, const uint8_t *body, uint32_t body_len);
int  emu_reap(struct emu *e);
int  emu_take_done(struct emu *e, uint16_t *out, int max);
uint64_t emu_data_copy(struct emu *e, uint16_t cmd_id, int to_cmd, uint8_t *buf, uint64_t len, uint32_t first_iov);
void emu_reset_ring(struct emu *e);
uint32_t emu_ring_free(struct emu *e);
void *emu_map_guarded(struct emu *e, uint64_t len);
int  emu_unmap_guarded(void *base, uint64_t len);
void emu_scribble(struct emu *e, uint64_t off, uint32_t a, uint32_t b, const int *stop);

#endif
