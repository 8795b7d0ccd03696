/*
 * The kernel-side emulator; see emulator.h.  Test and benchmark code only.
 *
 * Belongs here: what target_core_user.c does with the ring and the data
 * area, step for step where it matters (free space, PAD, block allocation,
 * the cmd_tail checks that break the ring), and what a hostile-ring test
 * needs of the kernel's side: the handler's mapping between guard pages, a
 * field rewritten under the handler's reads.  Not here: the handler side
 * (ring.c), whose behaviour this checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "tcmu_abi.h"
#include "emulator.h"

static inline uint32_t make_len_op(uint32_t len, uint32_t op)
{
    return (len & ~(uint32_t)TCMU_OP_MASK) | (op & TCMU_OP_MASK);
}

#define EMU_POISON 0xDB   /* what a fresh Data-In buffer holds: stale data stand-in */

static uint32_t spc_used(uint32_t head, uint32_t tail, uint32_t size)
{
    return head >= tail ? head - tail : size + head - tail;
}

uint32_t emu_ring_free(struct emu *e)
{
    uint32_t head = load_acquire(e->base, MB_HEAD_OFF);
    return e->cmdr_size - spc_used(head, e->last_cleaned, e->cmdr_size) - 1;
}

struct emu *emu_create(uint32_t cmdr_size, uint32_t data_blocks, uint32_t block_size, uint16_t flags)
{
    struct emu *e;
    long page = sysconf(_SC_PAGESIZE);
    struct tcmu_mailbox *mb;

    if (cmdr_size < 1024 || cmdr_size % 8 || !data_blocks || !block_size || block_size % 512) {
        errno = EINVAL;
        return NULL;
    }
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->memfd = -1;
    e->cmds = calloc(TCMU_IDS, sizeof(*e->cmds));
    e->used = calloc(data_blocks, 1);
    e->done_ids = calloc(TCMU_IDS, sizeof(*e->done_ids));
    if (!e->cmds || !e->used || !e->done_ids)
        goto fail;
    e->cmdr_off = sizeof(struct tcmu_mailbox);
    e->cmdr_size = cmdr_size;
    e->data_off = ((uint64_t)e->cmdr_off + cmdr_size + page - 1) / page * page;
    e->block_size = block_size;
    e->nblocks = data_blocks;
    e->free_blocks = data_blocks;
    e->size = e->data_off + (uint64_t)data_blocks * block_size;
    e->next_id = 1;
    e->memfd = memfd_create("tcmu-emulator", MFD_CLOEXEC);
    if (e->memfd < 0 || ftruncate(e->memfd, e->size))
        goto fail;
    e->base = mmap(NULL, e->size, PROT_READ | PROT_WRITE, MAP_SHARED, e->memfd, 0);
    if (e->base == MAP_FAILED) {
        e->base = NULL;
        goto fail;
    }
    mb = (void *)e->base;
    mb->version = TCMU_MAILBOX_VERSION;
    mb->flags = flags;
    mb->cmdr_off = e->cmdr_off;
    mb->cmdr_size = e->cmdr_size;
    return e;
fail:
    emu_destroy(e);
    return NULL;
}

void emu_destroy(struct emu *e)
{
    if (!e)
        return;
    if (e->base)
        munmap(e->base, e->size);
    if (e->memfd >= 0)
        close(e->memfd);
    if (e->cmds)
        for (uint32_t i = 0; i < TCMU_IDS; i++) {
            free(e->cmds[i].blocks);
            free(e->cmds[i].iov_off);
            free(e->cmds[i].iov_len);
        }
    free(e->cmds);
    free(e->used);
    free(e->done_ids);
    free(e);
}

static void emu_free_blocks(struct emu *e, struct emu_cmd *c)
{
    for (uint32_t i = 0; i < c->nblocks; i++)
        e->used[c->blocks[i]] = 0;
    e->free_blocks += c->nblocks;
    c->nblocks = 0;
}

static int emu_alloc_block(struct emu *e, uint32_t *out)
{
    for (uint32_t i = 0; i < e->nblocks; i++) {
        uint32_t b = (e->alloc_cursor + i) % e->nblocks;
        if (!e->used[b]) {
            e->used[b] = 1;
            e->free_blocks--;
            e->alloc_cursor = (b + 1) % e->nblocks;
            *out = b;
            return 0;
        }
    }
    return -EAGAIN;
}

/*
 * Reserve room for an entry of `size` bytes at cmd_head, as queue_cmd_ring()
 * does: check free space (counting the PAD a wrap costs), write the PAD to the
 * end of the ring if the entry does not fit before it, and return the entry's
 * zeroed ring offset; -EAGAIN when the ring is full.  The caller fills the
 * entry and publishes it with emu_publish().
 */
static int64_t emu_reserve(struct emu *e, uint32_t size)
{
    uint32_t head = load_acquire(e->base, MB_HEAD_OFF);
    uint32_t to_end = e->cmdr_size - head;
    uint32_t needed = size + (to_end < size ? to_end : 0);
    uint32_t free_ = e->cmdr_size - spc_used(head, e->last_cleaned, e->cmdr_size) - 1;

    if (size > e->cmdr_size / 2 || needed > free_)
        return -EAGAIN;
    if (to_end < size) {
        struct tcmu_cmd_entry_hdr *h = (void *)(e->base + e->cmdr_off + head);
        h->len_op = make_len_op(to_end, TCMU_OP_PAD);
        h->cmd_id = 0;
        h->kflags = h->uflags = 0;
        head = 0;
    }
    memset(e->base + e->cmdr_off + head, 0, size);
    return head;
}

static void emu_publish(struct emu *e, uint32_t head, uint32_t size)
{
    store_release(e->base, MB_HEAD_OFF, (head + size) % e->cmdr_size);
}

static int emu_new_id(struct emu *e, uint16_t *out)
{
    for (uint32_t i = 0; i < 65535; i++) {
        uint16_t id = e->next_id;
        e->next_id = e->next_id == 65535 ? 1 : e->next_id + 1;
        if (!e->cmds[id].inflight) {
            *out = id;
            return 0;
        }
    }
    return -EAGAIN;
}

/* Data blocks for one requested vector, appended to c->blocks. */
static int emu_grow_blocks(struct emu_cmd *c, uint32_t more)
{
    if (c->nblocks + more > c->blocks_cap) {
        uint32_t cap = (c->nblocks + more) * 2;
        uint32_t *n = realloc(c->blocks, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        c->blocks = n;
        c->blocks_cap = cap;
    }
    return 0;
}

/*
 * Queue a command like queue_cmd_ring(): data blocks first (each requested
 * vector starts on a block boundary; vectors split where blocks are not
 * contiguous, as the kernel's iovecs do), then an entry of the kernel's size
 * with the CDB after the iovecs, PAD at the wrap, and a release store of
 * cmd_head.  iov_lens: iov_cnt Data-Out/Data-In lengths then bidi_cnt Data-In
 * lengths.  data_out (may be NULL) fills the Data-Out vectors before the
 * entry is published.  Returns the cmd_id, or -EAGAIN when the ring or the
 * data area is full (the kernel would queue the command until space frees up).
 */
int emu_submit(struct emu *e, const uint8_t *cdb, uint32_t cdb_len,
               const uint32_t *iov_lens, uint32_t iov_cnt, uint32_t bidi_cnt,
               const uint8_t *data_out, uint64_t data_out_len)
{
    struct emu_cmd *c;
    struct tcmu_cmd_entry *ent;
    uint32_t head, nvec[2] = {0, 0}, base_size, size, blocks_needed = 0;
    int64_t reserved;
    uint16_t id;
    int rc;

    if (e->broken)
        return -EIO;
    if (!cdb_len || cdb_len > 32 || iov_cnt + bidi_cnt > 4096)
        return -EINVAL;
    for (uint32_t i = 0; i < iov_cnt + bidi_cnt; i++)
        blocks_needed += (iov_lens[i] + e->block_size - 1) / e->block_size;
    if (blocks_needed > e->free_blocks)
        return -EAGAIN;
    if ((rc = emu_new_id(e, &id)))
        return rc;
    c = &e->cmds[id];
    c->nblocks = 0;
    if (emu_grow_blocks(c, blocks_needed))
        return -ENOMEM;
    /* Allocate blocks and count the vectors they make. */
    for (uint32_t i = 0; i < iov_cnt + bidi_cnt; i++) {
        uint32_t nb = (iov_lens[i] + e->block_size - 1) / e->block_size;
        for (uint32_t k = 0; k < nb; k++) {
            uint32_t b;
            if (emu_alloc_block(e, &b)) {
                emu_free_blocks(e, c);
                return -EAGAIN;
            }
            c->blocks[c->nblocks++] = b;
            if (k == 0 || b != c->blocks[c->nblocks - 2] + 1)
                nvec[i < iov_cnt ? 0 : 1]++;
        }
    }
    if (nvec[0] + nvec[1] > c->iov_cap) {
        uint32_t cap = nvec[0] + nvec[1];
        uint64_t *o = realloc(c->iov_off, cap * sizeof(*o));
        uint32_t *l = o ? realloc(c->iov_len, cap * sizeof(*l)) : NULL;
        if (o) c->iov_off = o;
        if (!o || !l) {
            emu_free_blocks(e, c);
            return -ENOMEM;
        }
        c->iov_len = l;
        c->iov_cap = cap;
    }
    base_size = REQ_IOV_OFF + 16 * (nvec[0] + nvec[1]);
    if (base_size < sizeof(struct tcmu_cmd_entry))
        base_size = sizeof(struct tcmu_cmd_entry);
    base_size = (base_size + 7) & ~7u;
    size = base_size + ((cdb_len + 7) & ~7u);
    if ((reserved = emu_reserve(e, size)) < 0) {
        emu_free_blocks(e, c);
        return -EAGAIN;
    }
    head = (uint32_t)reserved;
    ent = (void *)(e->base + e->cmdr_off + head);
    ent->hdr.len_op = make_len_op(size, TCMU_OP_CMD);
    ent->hdr.cmd_id = id;
    ent->req.iov_cnt = nvec[0];
    ent->req.iov_bidi_cnt = nvec[1];
    ent->req.iov_dif_cnt = 0;
    ent->req.cdb_off = (uint64_t)e->cmdr_off + head + base_size;
    {
        uint32_t blk = 0, v = 0;
        for (uint32_t i = 0; i < iov_cnt + bidi_cnt; i++) {
            uint32_t left = iov_lens[i];
            uint32_t nb = (left + e->block_size - 1) / e->block_size;
            for (uint32_t k = 0; k < nb; k++, blk++) {
                uint32_t chunk = left < e->block_size ? left : e->block_size;
                uint64_t addr = e->data_off + (uint64_t)c->blocks[blk] * e->block_size;
                if (i >= iov_cnt || bidi_cnt == 0)
                    memset(e->base + addr, EMU_POISON, e->block_size);
                if (k == 0 || c->blocks[blk] != c->blocks[blk - 1] + 1) {
                    ent->req.iov[v].iov_base = (void *)(uintptr_t)addr;
                    ent->req.iov[v].iov_len = chunk;
                    c->iov_off[v] = addr;
                    c->iov_len[v] = chunk;
                    v++;
                } else {
                    ent->req.iov[v - 1].iov_len += chunk;
                    c->iov_len[v - 1] += chunk;
                }
                left -= chunk;
            }
        }
    }
    memcpy(e->base + ent->req.cdb_off, cdb, cdb_len);
    c->entry_off = head;
    c->iov_cnt = nvec[0];
    c->iov_total = nvec[0] + nvec[1];
    c->data_len = 0;
    for (uint32_t i = 0; i < iov_cnt; i++)
        c->data_len += iov_lens[i];
    c->inflight = 1;
    c->done = 0;
    c->status = 0;
    c->uflags = 0;
    c->read_len = 0;
    /* Data-Out is in place before the entry is visible, as the kernel
     * scatters it before it moves cmd_head: a handler on another thread may
     * take the command the moment it is published. */
    if (data_out && data_out_len)
        emu_data_copy(e, id, 1, (uint8_t *)data_out, data_out_len, 0);
    e->inflight++;
    emu_publish(e, head, size);
    return id;
}

int emu_submit_tmr(struct emu *e, uint8_t tmr_type, const uint16_t *ids, uint32_t n)
{
    struct tcmu_tmr_entry *t;
    uint32_t size = (TMR_IDS_OFF + 2 * n + 7) & ~7u;
    int64_t head;

    if (e->broken)
        return -EIO;
    if ((head = emu_reserve(e, size)) < 0)
        return -EAGAIN;
    t = (void *)(e->base + e->cmdr_off + head);
    t->hdr.len_op = make_len_op(size, TCMU_OP_TMR);
    t->tmr_type = tmr_type;
    t->cmd_cnt = n;
    memcpy(t->cmd_ids, ids, 2 * n);
    emu_publish(e, (uint32_t)head, size);
    return 0;
}

/* Write an arbitrary entry (for hostile-ring tests).  A non-PAD/TMR entry's cmd_id is
 * registered as in flight with no data so that reaping it is legal. */
int emu_write_raw(struct emu *e, uint32_t len_op, uint16_t cmd_id, const uint8_t *body, uint32_t body_len)
{
    uint32_t size = tcmu_hdr_get_len(len_op);
    struct tcmu_cmd_entry_hdr *h;
    int64_t head;

    if (size < 8 || size % 8 || body_len > size - 8)
        return -EINVAL;
    if ((head = emu_reserve(e, size)) < 0)
        return -EAGAIN;
    h = (void *)(e->base + e->cmdr_off + head);
    h->len_op = len_op;
    h->cmd_id = cmd_id;
    memcpy((uint8_t *)h + 8, body, body_len);
    if (tcmu_hdr_get_op(len_op) != TCMU_OP_PAD && tcmu_hdr_get_op(len_op) != TCMU_OP_TMR &&
        !e->cmds[cmd_id].inflight) {
        e->cmds[cmd_id].iov_cnt = e->cmds[cmd_id].iov_total = 0;
        e->cmds[cmd_id].inflight = 1;
        e->cmds[cmd_id].done = 0;
        e->cmds[cmd_id].nblocks = 0;
        e->cmds[cmd_id].entry_off = head;
        e->inflight++;
    }
    emu_publish(e, (uint32_t)head, size);
    return 0;
}

/*
 * The doorbell: reap completions from last_cleaned up to cmd_tail, as
 * tcmu_handle_completions() does.  PAD and TMR entries are skipped; a CMD
 * entry whose cmd_id is not in flight breaks the ring.  Returns the number
 * reaped, or -EPROTO once the ring is broken.
 */
int emu_reap(struct emu *e)
{
    uint32_t tail = load_acquire(e->base, MB_TAIL_OFF);
    uint32_t head = load_acquire(e->base, MB_HEAD_OFF);
    int n = 0;

    if (e->broken)
        return -EPROTO;
    /* cmd_tail may only move within [last_cleaned, head] */
    if (tail >= e->cmdr_size || tail % 8 ||
        spc_used(tail, e->last_cleaned, e->cmdr_size) > spc_used(head, e->last_cleaned, e->cmdr_size)) {
        e->broken = 1;
        return -EPROTO;
    }
    while (e->last_cleaned != tail) {
        struct tcmu_cmd_entry *ent = (void *)(e->base + e->cmdr_off + e->last_cleaned);
        uint32_t len = tcmu_hdr_get_len(ent->hdr.len_op);
        uint32_t op = tcmu_hdr_get_op(ent->hdr.len_op);
        struct emu_cmd *c;

        if (len < 8 || len > e->cmdr_size - e->last_cleaned) {
            e->broken = 1;
            return -EPROTO;
        }
        if (op != TCMU_OP_PAD && op != TCMU_OP_TMR) {
            c = &e->cmds[ent->hdr.cmd_id];
            if (!c->inflight) {
                e->broken = 1;
                return -EPROTO;
            }
            c->uflags = ent->hdr.uflags;
            if (c->uflags & TCMU_UFLAG_UNKNOWN_OP) {
                c->status = 0x02;
            } else {
                c->status = ent->rsp.scsi_status;
                c->read_len = ent->rsp.read_len;
                if (c->status == 0x02)
                    memcpy(c->sense, ent->rsp.sense_buffer, sizeof(c->sense));
            }
            c->inflight = 0;
            c->done = 1;
            e->inflight--;
            if (e->done_n < TCMU_IDS)
                e->done_ids[e->done_n++] = ent->hdr.cmd_id;
            n++;
        }
        e->last_cleaned = (e->last_cleaned + len) % e->cmdr_size;
    }
    e->reaped += n;
    return n;
}

/* Ids reaped since the last call, oldest first; their blocks are freed here
 * (after the caller had the chance to read Data-In with emu_data_copy). */
int emu_take_done(struct emu *e, uint16_t *out, int max)
{
    uint32_t n = e->done_n < (uint32_t)max ? e->done_n : (uint32_t)max;
    for (uint32_t i = 0; i < n; i++) {
        out[i] = e->done_ids[i];
        emu_free_blocks(e, &e->cmds[out[i]]);
    }
    memmove(e->done_ids, e->done_ids + n, (e->done_n - n) * sizeof(*e->done_ids));
    e->done_n -= n;
    return (int)n;
}

/*
 * Copy between buf and a command's data blocks: to_cmd=1 fills Data-Out
 * before the command is seen, to_cmd=0 reads Data-In after it was reaped.
 * first_iov selects the data (0) or the bidi Data-In (1) vectors.  Reading
 * honours READ_LEN like gather_data_area(): only read_len bytes are
 * transferred, so callers see exactly what an initiator would.
 */
uint64_t emu_data_copy(struct emu *e, uint16_t cmd_id, int to_cmd, uint8_t *buf, uint64_t len, uint32_t first_iov)
{
    struct emu_cmd *c = &e->cmds[cmd_id];
    uint32_t v0 = first_iov ? c->iov_cnt : 0, v1 = first_iov ? c->iov_total : c->iov_cnt;
    uint64_t done = 0;

    if (!first_iov && !to_cmd && (c->uflags & TCMU_UFLAG_READ_LEN) && c->read_len && c->read_len < len)
        len = c->read_len;
    for (uint32_t v = v0; v < v1 && done < len; v++) {
        uint64_t chunk = len - done < c->iov_len[v] ? len - done : c->iov_len[v];
        uint8_t *p = e->base + c->iov_off[v];
        if (to_cmd)
            memcpy(p, buf + done, chunk);
        else
            memcpy(buf + done, p, chunk);
        done += chunk;
    }
    return done;
}

/* action/reset_ring: fail everything in flight (BUSY) and zero head/tail. */
void emu_reset_ring(struct emu *e)
{
    for (uint32_t i = 0; i < TCMU_IDS; i++) {
        struct emu_cmd *c = &e->cmds[i];
        if (c->inflight) {
            c->inflight = 0;
            c->done = 1;
            c->status = 0x08; /* BUSY */
            emu_free_blocks(e, c);
        }
    }
    e->inflight = 0;
    e->done_n = 0;
    e->last_cleaned = 0;
    store_release(e->base, MB_TAIL_OFF, 0);
    store_release(e->base, MB_HEAD_OFF, 0);
    e->broken = 0;
}

/*
 * The handler's view of the first len bytes of the mapping, as a test gives
 * it to the engine: the memfd mapped between two PROT_NONE guard pages, so
 * any touch outside [base, base + len) faults instead of landing in whatever
 * happens to be mapped next to it (to the page: when len is not a multiple
 * of the page size, the rest of its last page is the memfd's).
 */
void *emu_map_guarded(struct emu *e, uint64_t len)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), span = (len + page - 1) / page * page;
    uint8_t *g, *m;

    if (!len || len > e->size) {
        errno = EINVAL;
        return NULL;
    }
    g = mmap(NULL, span + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g == MAP_FAILED)
        return NULL;
    m = mmap(g + page, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, e->memfd, 0);
    if (m == MAP_FAILED) {
        int err = errno;
        munmap(g, span + 2 * page);
        errno = err;
        return NULL;
    }
    return m;
}

int emu_unmap_guarded(void *base, uint64_t len)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), span = (len + page - 1) / page * page;
    return munmap((uint8_t *)base - page, span + 2 * page) ? -errno : 0;
}

/*
 * A kernel that keeps rewriting a field while the handler reads it: store a
 * and b in turn into the u32 at mapping offset off until *stop (called from
 * a thread of its own; cffi releases the GIL).
 */
void emu_scribble(struct emu *e, uint64_t off, uint32_t a, uint32_t b, const int *stop)
{
    uint32_t *p = (uint32_t *)(e->base + off);

    if (off % 4 || off + 4 > e->size)
        return;
    for (uint32_t i = 0; !__atomic_load_n(stop, __ATOMIC_RELAXED); i++)
        if (i % 32 == 0)        /* each value stays for a while: both are seen */
            __atomic_store_n(p, i & 32 ? b : a, __ATOMIC_RELAXED);
}
