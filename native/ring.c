/*
 * The TCMU ring, handler side; see ring.h.
 *
 * Belongs here: mapping, taking entries (with the checks that keep a hostile
 * or corrupt ring from making us touch memory outside our data area, or
 * answer into memory outside the entry: every field of the mailbox and of an
 * entry is read once, with READ_ONCE, and only the checked local is used),
 * completing out of order, the doorbell.  Not here: the kernel's side
 * (emulator.c), iovec copies (iovec.c), anything about SCSI or I/O.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "tcmu_abi.h"
#include "ring.h"

#define LOCK(r) pthread_mutex_lock((pthread_mutex_t *)(r)->lock)
#define UNLOCK(r) pthread_mutex_unlock((pthread_mutex_t *)(r)->lock)

/* Length of a CDB from its group code (SPC-4 4.2.5); 0 when unknown. */
static uint32_t cdb_length(const uint8_t *cdb, uint32_t avail)
{
    switch (cdb[0] >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    case 3:
        if (cdb[0] == 0x7f) {
            if (avail < 8) return 0;
            return 8u + cdb[7];
        }
        return 0;
    default: /* vendor specific: take what fits, at most 16 */
        return avail < 16 ? avail : 16;
    }
}

void *tr_mmap(int fd, uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int tr_munmap(void *addr, uint64_t size)
{
    return munmap(addr, size) ? -errno : 0;
}

/* Where an entry may start: inside the ring, on an 8-byte boundary. */
static int ring_pos_ok(const struct tr_ring *r, uint32_t pos)
{
    return pos < r->cmdr_size && pos % 8 == 0;
}

/* Take from cmd_tail on; -EPROTO if cmd_head or cmd_tail cannot be where an
 * entry starts (the kernel keeps both there, and zeroes them at a reset). */
static int resync(struct tr_ring *r)
{
    uint32_t head = load_acquire(r->base, MB_HEAD_OFF), tail = load_acquire(r->base, MB_TAIL_OFF);

    if (!ring_pos_ok(r, head) || !ring_pos_ok(r, tail))
        return -EPROTO;
    r->next = tail;
    return 0;
}

/* The per-id tables (65536 entries) are mapped, not calloc'd: only the pages
 * of the ids in use become resident (the kernel hands out the lowest free id),
 * whatever state the heap is in (5.6 MB of tables; a calloc served from reused
 * heap memory clears it, resident at once: opening a ring after librados had
 * started took 0.60 MB of heap with calloc, 0.26 with this, host probe). */
static void *table_new(size_t n, size_t size)
{
    void *p = mmap(NULL, n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

static void table_free(void *p, size_t n, size_t size)
{
    if (p)
        munmap(p, n * size);
}

struct tr_ring *tr_open(void *base, uint64_t size, int fd)
{
    const struct tcmu_mailbox *mb = base;
    struct tr_ring *r;
    uint16_t version;
    uint32_t cmdr_off, cmdr_size;

    if (size < sizeof(*mb)) {
        errno = EPROTO;
        return NULL;
    }
    version = READ_ONCE(mb->version);
    cmdr_off = READ_ONCE(mb->cmdr_off);
    cmdr_size = READ_ONCE(mb->cmdr_size);
    if (version != TCMU_MAILBOX_VERSION || cmdr_off < sizeof(*mb) || cmdr_size < 512 ||
        cmdr_size % 8 || (uint64_t)cmdr_off + cmdr_size > size) {
        errno = EPROTO;
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cmds = table_new(TCMU_IDS, sizeof(*r->cmds));
    r->slots = table_new(TCMU_IDS, sizeof(*r->slots));
    r->tmr_ids = table_new(TCMU_IDS, sizeof(*r->tmr_ids));
    r->lock = malloc(sizeof(pthread_mutex_t));
    if (!r->cmds || !r->slots || !r->tmr_ids || !r->lock) {
        free(r->lock);
        r->lock = NULL;
        tr_close(r);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(r->lock, NULL);
    r->base = base;
    r->size = size;
    r->cmdr_off = cmdr_off;
    r->cmdr_size = cmdr_size;
    r->data_off = (uint64_t)cmdr_off + cmdr_size;
    r->version = version;
    r->flags = READ_ONCE(mb->flags);
    r->fd = fd;
    if (resync(r) < 0) {
        tr_close(r);
        errno = EPROTO;
        return NULL;
    }
    return r;
}

void tr_close(struct tr_ring *r)
{
    if (!r)
        return;
    if (r->cmds)
        for (uint32_t i = 0; i < TCMU_IDS; i++)
            free(r->cmds[i].iov);
    table_free(r->cmds, TCMU_IDS, sizeof(*r->cmds));
    table_free(r->slots, TCMU_IDS, sizeof(*r->slots));
    table_free(r->tmr_ids, TCMU_IDS, sizeof(*r->tmr_ids));
    if (r->lock) {
        pthread_mutex_destroy(r->lock);
        free(r->lock);
    }
    free(r);
}

uint32_t tr_load_head(struct tr_ring *r) { return load_acquire(r->base, MB_HEAD_OFF); }
uint32_t tr_load_tail(struct tr_ring *r) { return load_acquire(r->base, MB_TAIL_OFF); }

void tr_set_metrics(struct tr_ring *r, struct lun_metrics *m)
{
    uint64_t in_use = 0;

    LOCK(r);
    r->metrics = m;
    if (m) {
        for (uint32_t i = 0; i < TCMU_IDS; i++)
            if (r->cmds[i].outstanding)
                in_use += r->cmds[i].data_len;
        lm_set(&m->data_size, r->size - r->data_off);
        lm_set(&m->in_flight, r->outstanding);
        lm_set(&m->data_in_use, in_use);
    }
    UNLOCK(r);
}

/* Forget every outstanding command and resynchronise with the mailbox:
 * after action/reset_ring the kernel has failed them and zeroed head/tail.
 * Returns 0, or -EPROTO for a cmd_head or cmd_tail no entry can start at. */
int tr_forget_all(struct tr_ring *r)
{
    int rc;

    LOCK(r);
    for (uint32_t i = 0; i < TCMU_IDS; i++)
        r->cmds[i].outstanding = 0;
    r->slot_rd = r->slot_n = 0;
    r->outstanding = 0;
    r->dirty = 0;
    if (r->metrics) {
        lm_set(&r->metrics->in_flight, 0);
        lm_set(&r->metrics->data_in_use, 0);
    }
    rc = resync(r);
    UNLOCK(r);
    return rc;
}

/* Copy one CMD entry's CDB and iovecs out of the ring into cmds[id]; the
 * entry (len bytes, at least a struct tcmu_cmd_entry) is in the ring. */
static void take_cmd(struct tr_ring *r, uint32_t off, uint32_t len, uint16_t id)
{
    struct tcmu_cmd_entry *ent = (void *)(r->base + r->cmdr_off + off);
    struct tr_cmd *c = &r->cmds[id];
    uint64_t ent_start = (uint64_t)r->cmdr_off + off, ent_end = ent_start + len;
    uint32_t iov_cnt = READ_ONCE(ent->req.iov_cnt), bidi_cnt = READ_ONCE(ent->req.iov_bidi_cnt);
    uint64_t total = (uint64_t)iov_cnt + bidi_cnt + READ_ONCE(ent->req.iov_dif_cnt);
    uint64_t cdb_off = READ_ONCE(ent->req.cdb_off), cdb_len, avail;

    c->bad = 0;
    c->iov_cnt = c->bidi_cnt = 0;
    c->data_len = 0;
    c->cdb_len = 0;
    memset(c->cdb, 0, sizeof(c->cdb));
    if (REQ_IOV_OFF + 16 * total > len) {
        c->bad = TR_BAD_ENTRY;
        return;
    }
    /* The kernel writes the CDB inside the entry, after the iovecs. */
    if (cdb_off < ent_start + REQ_IOV_OFF + 16 * total || cdb_off >= ent_end) {
        c->bad = TR_BAD_CDB;
        return;
    }
    avail = ent_end - cdb_off;
    if (avail > sizeof(c->cdb))
        avail = sizeof(c->cdb);
    memcpy(c->cdb, r->base + cdb_off, avail);   /* once: the length is the copy's */
    cdb_len = cdb_length(c->cdb, avail);
    if (cdb_len == 0 || cdb_len > avail) {
        /* keep what we can see so the SCSI layer can name the opcode */
        c->cdb_len = avail < 16 ? avail : 16;
        memset(c->cdb + c->cdb_len, 0, sizeof(c->cdb) - c->cdb_len);
        c->bad = TR_BAD_CDB;
        return;
    }
    memset(c->cdb + cdb_len, 0, sizeof(c->cdb) - cdb_len);
    c->cdb_len = (uint8_t)cdb_len;

    if (total > c->iov_cap) {
        struct iovec *n = realloc(c->iov, total * sizeof(*n));
        if (!n) {
            c->bad = TR_BAD_ENTRY;
            return;
        }
        c->iov = n;
        c->iov_cap = (uint32_t)total;
    }
    for (uint32_t i = 0; i < total; i++) {
        uint64_t b = (uint64_t)(uintptr_t)READ_ONCE(ent->req.iov[i].iov_base);
        uint64_t l = READ_ONCE(ent->req.iov[i].iov_len);
        /* Only ever touch our own mapping's data area. */
        if (b < r->data_off || b > r->size || l > r->size - b) {
            c->bad = TR_BAD_IOV;
            return;
        }
        c->iov[i].iov_base = r->base + b;
        c->iov[i].iov_len = l;
        if (i < iov_cnt)
            c->data_len += l;
    }
    c->iov_cnt = iov_cnt;
    c->bidi_cnt = bidi_cnt;
}

/*
 * Take new entries between the consume cursor and cmd_head.  CMD entries
 * become outstanding commands (their slots are queued for out-of-order
 * completion), TMR entries are reported, PAD is skipped, anything else gets
 * UNKNOWN_OP (the kernel fails it): another type, a CMD entry too short for
 * the answer that would go into its slot, a CMD entry whose cmd_id is still
 * outstanding (the first command keeps its record).  Returns the number of
 * events, or -EPROTO if the ring itself is corrupt (cmd_head where no entry
 * can start, an entry that would run past the end of the ring or past
 * cmd_head).
 */
static int take_locked(struct tr_ring *r, struct tr_event *ev, int max)
{
    uint32_t head = load_acquire(r->base, MB_HEAD_OFF);
    int n = 0, corrupt = 0;
    uint64_t now = 0, taken = 0;    /* with metrics: one clock read per take */

    r->tmr_used = 0;
    r->awake = 1;       /* a kick follows: completions until then leave the doorbell to it */
    if (!ring_pos_ok(r, head))
        return -EPROTO;
    while (r->next != head && n < max) {
        uint32_t off = r->next;
        struct tcmu_cmd_entry_hdr *h = (void *)(r->base + r->cmdr_off + off);
        uint32_t len_op = READ_ONCE(h->len_op);
        uint32_t len = tcmu_hdr_get_len(len_op), op = tcmu_hdr_get_op(len_op);
        uint64_t to_head = ((uint64_t)head + r->cmdr_size - off) % r->cmdr_size;
        uint16_t id = READ_ONCE(h->cmd_id);

        if (len < sizeof(*h) || len % 8 || len > r->cmdr_size - off || len > to_head) {
            corrupt = 1;    /* what came before it is still taken (and released) */
            break;
        }
        if (op == TCMU_OP_CMD && len >= sizeof(struct tcmu_cmd_entry) && !r->cmds[id].outstanding) {
            take_cmd(r, off, len, id);
            if (r->metrics) {
                if (!now)
                    now = lm_now_ns();
                r->cmds[id].t0 = now;
                taken += r->cmds[id].data_len;
            }
            r->outstanding++;
            r->cmds[id].outstanding = 1;
            r->slots[(r->slot_rd + r->slot_n) % TCMU_IDS] = off;
            r->slot_n++;
            ev[n].kind = TR_EV_CMD;
            ev[n].cmd_id = id;
            ev[n].tmr_type = 0;
            ev[n].tmr_first = ev[n].tmr_count = 0;
            n++;
        } else if (op == TCMU_OP_TMR) {
            struct tcmu_tmr_entry *t = (void *)h;
            uint32_t cnt = 0;
            if (len >= TMR_IDS_OFF) {
                cnt = READ_ONCE(t->cmd_cnt);
                if (cnt > (len - TMR_IDS_OFF) / 2)
                    cnt = (len - TMR_IDS_OFF) / 2;
            }
            if (r->tmr_used + cnt > TCMU_IDS)
                break;
            ev[n].kind = TR_EV_TMR;
            ev[n].cmd_id = 0;
            ev[n].tmr_type = len >= TMR_IDS_OFF ? READ_ONCE(t->tmr_type) : 0;
            ev[n].tmr_first = r->tmr_used;
            ev[n].tmr_count = cnt;
            for (uint32_t i = 0; i < cnt; i++)
                r->tmr_ids[r->tmr_used++] = READ_ONCE(t->cmd_ids[i]);
            n++;
        } else if (op != TCMU_OP_PAD) {
            h->uflags |= TCMU_UFLAG_UNKNOWN_OP;
        }
        r->next = (off + len) % r->cmdr_size;
    }
    /* Nothing left to complete in front of the cursor: release PAD/TMR space. */
    if (r->slot_n == 0 && load_acquire(r->base, MB_TAIL_OFF) != r->next) {
        store_release(r->base, MB_TAIL_OFF, r->next);
        r->dirty = 1;
    }
    if (r->metrics && now) {
        lm_set(&r->metrics->in_flight, r->outstanding);
        lm_set(&r->metrics->data_in_use, r->metrics->data_in_use + taken);
    }
    return n || !corrupt ? n : -EPROTO;
}

int tr_take(struct tr_ring *r, struct tr_event *ev, int max)
{
    int n;

    LOCK(r);
    n = take_locked(r, ev, max);
    UNLOCK(r);
    return n;
}

/*
 * Complete cmd_id out of order: the response goes into the oldest CMD slot
 * not yet reused (the kernel reaps by the cmd_id it finds there), then
 * cmd_tail moves past it and past any PAD/TMR up to the next such slot.
 * Returns 0, or -ENOENT for an id that is not outstanding (dropped: a second
 * completion would break the ring).
 */
static int complete_locked(struct tr_ring *r, uint16_t cmd_id, uint8_t status,
                           const uint8_t *sense, uint32_t sense_len,
                           uint8_t uflags, uint32_t read_len)
{
    struct tcmu_cmd_entry *ent;
    uint32_t off, tail;

    if (!r->cmds[cmd_id].outstanding || r->slot_n == 0) {
        r->dropped++;
        return -ENOENT;
    }
    off = r->slots[r->slot_rd];
    ent = (void *)(r->base + r->cmdr_off + off);
    ent->hdr.cmd_id = cmd_id;
    ent->hdr.uflags = uflags;
    ent->rsp.scsi_status = status;
    ent->rsp.read_len = (uflags & TCMU_UFLAG_READ_LEN) ? read_len : 0;
    if (status == 0x02) { /* CHECK CONDITION */
        if (sense_len > TCMU_SENSE_BUFFERSIZE)
            sense_len = TCMU_SENSE_BUFFERSIZE;
        if (sense_len)
            memcpy(ent->rsp.sense_buffer, sense, sense_len);
        memset(ent->rsp.sense_buffer + sense_len, 0, TCMU_SENSE_BUFFERSIZE - sense_len);
    }
    if (r->metrics) {
        struct tr_cmd *c = &r->cmds[cmd_id];
        struct lun_metrics *m = r->metrics;
        lm_done(m, c->cdb, c->data_len, status, sense, sense_len, c->t0, lm_now_ns());
        lm_set(&m->in_flight, r->outstanding - 1);
        lm_set(&m->data_in_use, m->data_in_use - c->data_len);
    }
    r->cmds[cmd_id].outstanding = 0;
    r->outstanding--;
    r->slot_rd = (r->slot_rd + 1) % TCMU_IDS;
    r->slot_n--;
    tail = r->slot_n ? r->slots[r->slot_rd] : r->next;
    store_release(r->base, MB_TAIL_OFF, tail);
    r->dirty = 1;
    r->completions++;
    return 0;
}

int tr_complete(struct tr_ring *r, uint16_t cmd_id, uint8_t status,
                const uint8_t *sense, uint32_t sense_len,
                uint8_t uflags, uint32_t read_len)
{
    int rc;

    LOCK(r);
    rc = complete_locked(r, cmd_id, status, sense, sense_len, uflags, read_len);
    UNLOCK(r);
    return rc;
}

/* The 4-byte doorbell write (outside the lock); -errno if it failed. */
static int ring_doorbell(int fd)
{
    uint32_t zero = 0;
    ssize_t w;

    do {
        w = write(fd, &zero, sizeof(zero));
    } while (w < 0 && errno == EINTR);
    return w < 0 ? -errno : 0;
}

/* Under the lock: whether a doorbell is due (the tail moved), counted. */
static int kick_due(struct tr_ring *r)
{
    if (!r->dirty)
        return 0;
    r->dirty = 0;
    r->doorbells++;
    return 1;
}

int tr_complete_good(struct tr_ring *r, uint16_t cmd_id, uint32_t gen)
{
    struct tr_cmd *c = &r->cmds[cmd_id];
    int ring = 0, rc = 0;

    LOCK(r);
    if (c->outstanding && __atomic_load_n(&c->gen, __ATOMIC_RELAXED) == gen &&
        complete_locked(r, cmd_id, 0, NULL, 0, 0, 0) == 0) {
        r->direct++;
        rc = 1;
        if (!r->awake) {        /* the loop sleeps: nobody else will kick */
            if (r->fd < 0)
                rc = 2;
            else
                ring = kick_due(r);
        }
    }
    UNLOCK(r);
    if (ring)
        (void)ring_doorbell(r->fd);    /* a failed one: the loop's next kick fails too */
    return rc;
}

/* One doorbell for a whole burst of completions; the loop is no longer
 * awake (completions from now on ring it themselves).  Returns 1 if the
 * tail had moved (and, with an fd, the 4-byte write was made), 0 if there
 * was nothing to tell, -errno on a failed write. */
int tr_kick(struct tr_ring *r)
{
    int due, rc;

    LOCK(r);
    due = kick_due(r);
    r->awake = 0;
    UNLOCK(r);
    if (!due)
        return 0;
    if (r->fd < 0)
        return 1;
    rc = ring_doorbell(r->fd);
    return rc < 0 ? rc : 1;
}
