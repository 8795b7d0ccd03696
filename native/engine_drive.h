/*
 * The engine benchmark's loop (lab only): the emulated kernel (emulator.c)
 * and the engine (engine.c) in one C loop on one thread, so that what is
 * measured is the engine and the ring, not a Python driver.  Each pass:
 * submit until qd commands are in flight, take and start them
 * (engine_take_fast), complete (rq_drain_ring), ring the doorbell (tr_kick),
 * reap (emu_reap) -- what LIO and a worker's engine_serve do on a gateway --
 * and, when nothing came back and nothing more may be submitted, wait up to
 * 1 ms on the queue's fd (an asynchronous backend: rbd).
 *
 * Belongs here: that loop and its counts.  Not here: the ring's or the
 * engine's rules (it only calls them), the workloads (bench/native.py).
 * The declarations below are also fed to cffi's cdef (see build_native.py),
 * so they stay plain C with no macros.
 */
#ifndef TCMU_RBD_ENGINE_DRIVE_H
#define TCMU_RBD_ENGINE_DRIVE_H

#include <stdint.h>

#include "emulator.h"
#include "engine.h"

struct drive_stats {
    uint64_t done;          /* commands completed */
    uint64_t errors;        /* completed with a status other than GOOD, or failed
                             * ops (the run stops: only the handler answers them) */
    uint64_t not_fast;      /* taken but not started by the engine: the run stops */
    uint64_t passes;
    uint64_t lat_ns_sum;
    uint64_t *lat_us;       /* histogram, 1 us buckets; the last one holds the rest */
    uint32_t lat_buckets;
};

/* cdbs: ncdb CDBs of 16 bytes, used in turn, each with a data_len buffer.
 * Runs for `seconds`, then until nothing is in flight.  0, or -errno: a
 * ring the emulator calls broken or a take that failed (-EPROTO), a command
 * the engine did not start (-ENOTSUP), an op that failed (-EIO). */
int engine_drive(struct emu *e, const struct engine_backend *b, struct tr_ring *r,
                 struct engine_fast *f, const uint8_t *cdbs, uint32_t ncdb,
                 uint32_t data_len, uint32_t qd, double seconds, struct drive_stats *st);

#endif
