/*
 * A LUN's counters, in one fixed struct the daemon reads on scrape: the
 * supervisor makes one region per LUN (a memfd of lm_region_size() bytes,
 * lm_init), hands it to each of the LUN's workers in turn, and its
 * Prometheus collector (tcmu_rbd/metrics.py) reads it through the same
 * declaration (cffi), so the layout is written once.  The worker's loop
 * thread is the only writer: the ring (tr_take, tr_complete) and the
 * engine's drain record into it with relaxed loads and stores (no lock, no
 * read-modify-write bus lock); a reader in another process sees each 64-bit
 * field whole.  Counters only grow, so they carry across a worker restart;
 * the gauges (in_flight, data_in_use) are set again by tr_set_metrics.
 *
 * Belongs here: the layout and its version, which command is which kind,
 * the latency buckets, recording one completion.  Not here: the ring
 * protocol (ring.c), the per-daemon numbers and the exposition
 * (tcmu_rbd/metrics.py).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.  Change the struct: bump LM_VERSION.
 */
#ifndef TCMU_RBD_METRICS_H
#define TCMU_RBD_METRICS_H

#include <stdint.h>

enum { LM_MAGIC = 0x544d5452,       /* "RTMT" little-endian */
       LM_VERSION = 1 };

/* Command kinds (the index into cmds/bytes). */
enum { LM_READ = 0, LM_WRITE = 1, LM_UNMAP = 2, LM_WRITE_SAME = 3,
       LM_COMPARE_AND_WRITE = 4, LM_OTHER = 5, LM_KINDS = 6 };

/* Latency buckets: lm_latency_bounds_us[i] is bucket i's upper bound (a
 * command of exactly that latency is in bucket i); bucket LM_BOUNDS holds
 * the rest.  Per bucket, not cumulative (the collector sums them). */
enum { LM_BOUNDS = 17, LM_BUCKETS = 18 };
extern const uint64_t lm_latency_bounds_us[17];

/* errnos[e] counts backend completions with -e, e < LM_ERRNOS; errnos[0]
 * the ones with a larger e. */
enum { LM_ERRNOS = 134 };

struct lun_metrics {
    uint32_t magic;                 /* LM_MAGIC, LM_VERSION, sizeof: lm_init */
    uint32_t version;
    uint64_t size;
    uint64_t cmds[6];               /* completed commands by kind (LM_KINDS) */
    uint64_t bytes[6];              /* data-area bytes of those that completed GOOD */
    uint64_t latency[2][18];        /* READ, WRITE: completions per bucket */
    uint64_t latency_sum_ns[2];
    uint64_t sense_keys[16];        /* CHECK CONDITION answers by sense key */
    uint64_t busy;                  /* BUSY answers */
    uint64_t other_status;          /* neither GOOD, CHECK CONDITION nor BUSY */
    uint64_t errnos[134];           /* backend completions by errno (LM_ERRNOS) */
    uint64_t in_flight;             /* gauge: commands taken, not completed */
    uint64_t data_in_use;           /* gauge: data-area bytes of those */
    uint64_t data_size;             /* the ring's data area, bytes */
    uint64_t lock_owner;            /* 0 no, 1 this gateway holds the exclusive lock, 2 n/a */
};

/* The size of a region: sizeof rounded up to a page. */
uint64_t lm_region_size(void);
/* Zero a region and write its header. */
void lm_init(struct lun_metrics *m);
/* 0 when a region of size bytes has this build's header, else -EPROTO. */
int  lm_check(const struct lun_metrics *m, uint64_t size);
/* The kind of a command by its CDB (LM_READ ...). */
int  lm_kind(const uint8_t *cdb);
/* CLOCK_MONOTONIC in ns. */
uint64_t lm_now_ns(void);
/* Record one completion: its CDB, data-area bytes, status and sense, taken
 * at t0 (lm_now_ns), completed at now. */
void lm_done(struct lun_metrics *m, const uint8_t *cdb, uint64_t data_len, uint8_t status,
             const uint8_t *sense, uint32_t sense_len, uint64_t t0, uint64_t now);
/* Record a backend completion's ret (< 0: -errno). */
void lm_backend_error(struct lun_metrics *m, int64_t ret);
/* Relaxed store of a gauge, and add to a counter (the only writer's). */
void lm_set(uint64_t *field, uint64_t v);

#endif
