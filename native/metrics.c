/*
 * A LUN's counters; see metrics.h.
 *
 * Belongs here: the region's header, the kind of a command, the latency
 * bucket, recording a completion.  Not here: when they are recorded (ring.c
 * at take and completion, engine.c at drain), reading them (the collector).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"

_Static_assert(sizeof(((struct lun_metrics *)0)->cmds) / 8 == LM_KINDS, "kinds");
_Static_assert(sizeof(((struct lun_metrics *)0)->latency[0]) / 8 == LM_BUCKETS, "buckets");
_Static_assert(sizeof(((struct lun_metrics *)0)->errnos) / 8 == LM_ERRNOS, "errnos");
_Static_assert(LM_BUCKETS == LM_BOUNDS + 1, "one bucket past the last bound");

const uint64_t lm_latency_bounds_us[17] = {
    50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
    100000, 200000, 500000, 1000000, 2000000, 5000000, 10000000,
};

uint64_t lm_region_size(void)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    return (sizeof(struct lun_metrics) + page - 1) / page * page;
}

void lm_init(struct lun_metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->magic = LM_MAGIC;
    m->version = LM_VERSION;
    m->size = sizeof(*m);
    m->lock_owner = 2;
}

int lm_check(const struct lun_metrics *m, uint64_t size)
{
    if (size < sizeof(*m) || m->magic != LM_MAGIC || m->version != LM_VERSION ||
        m->size != sizeof(*m))
        return -EPROTO;
    return 0;
}

int lm_kind(const uint8_t *cdb)
{
    switch (cdb[0]) {
    case 0x08: case 0x28: case 0xa8: case 0x88:     /* READ (6/10/12/16) */
        return LM_READ;
    case 0x0a: case 0x2a: case 0xaa: case 0x8a:     /* WRITE (6/10/12/16) */
    case 0x2e: case 0xae: case 0x8e:                /* WRITE AND VERIFY */
        return LM_WRITE;
    case 0x42:
        return LM_UNMAP;
    case 0x41: case 0x93:                           /* WRITE SAME (10/16) */
        return LM_WRITE_SAME;
    case 0x7f:                                      /* WRITE SAME (32) */
        return cdb[8] == 0x00 && cdb[9] == 0x0d ? LM_WRITE_SAME : LM_OTHER;
    case 0x89:
        return LM_COMPARE_AND_WRITE;
    default:
        return LM_OTHER;
    }
}

uint64_t lm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lm_set(uint64_t *field, uint64_t v)
{
    __atomic_store_n(field, v, __ATOMIC_RELAXED);
}

/* The only writer's increment: no locked read-modify-write. */
static inline void add(uint64_t *field, uint64_t v)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static int bucket(uint64_t ns)
{
    uint64_t us = ns / 1000;
    int i = 0;
    while (i < LM_BOUNDS && us > lm_latency_bounds_us[i])
        i++;
    return i;
}

void lm_done(struct lun_metrics *m, const uint8_t *cdb, uint64_t data_len, uint8_t status,
             const uint8_t *sense, uint32_t sense_len, uint64_t t0, uint64_t now)
{
    int kind = lm_kind(cdb);

    add(&m->cmds[kind], 1);
    if (status == 0x00) {
        add(&m->bytes[kind], data_len);
    } else if (status == 0x02) {
        /* fixed (0x70/0x71): key in byte 2; descriptor (0x72/0x73): byte 1 */
        if (sense && sense_len >= 3 && (sense[0] & 0x7e) == 0x70)
            add(&m->sense_keys[sense[2] & 0x0f], 1);
        else if (sense && sense_len >= 2 && (sense[0] & 0x7e) == 0x72)
            add(&m->sense_keys[sense[1] & 0x0f], 1);
        else
            add(&m->sense_keys[0], 1);
    } else if (status == 0x08) {
        add(&m->busy, 1);
    } else {
        add(&m->other_status, 1);
    }
    if (kind <= LM_WRITE) {
        uint64_t ns = now > t0 ? now - t0 : 0;
        add(&m->latency[kind][bucket(ns)], 1);
        add(&m->latency_sum_ns[kind], ns);
    }
}

void lm_backend_error(struct lun_metrics *m, int64_t ret)
{
    if (ret < 0)
        add(&m->errnos[-ret < LM_ERRNOS ? -ret : 0], 1);
}
