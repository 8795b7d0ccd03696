/* The engine benchmark's loop; see engine_drive.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <time.h>

#include "ring.h"
#include "engine_drive.h"

#define BATCH 256

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int engine_drive(struct emu *e, const struct engine_backend *b, struct tr_ring *r,
                 struct engine_fast *f, const uint8_t *cdbs, uint32_t ncdb,
                 uint32_t data_len, uint32_t qd, double seconds, struct drive_stats *st)
{
    static uint64_t t_sub[65536];
    struct tr_event ev[BATCH];
    uint64_t tags[BATCH], extra[BATCH];
    int64_t rets[BATCH];
    uint16_t ids[BATCH];
    uint64_t now = now_ns(), end = now + (uint64_t)(seconds * 1e9), i = 0;
    uint32_t inflight = 0;

    while (now < end || inflight) {
        int n, k, got, blocked = now >= end || inflight >= qd;

        while (!blocked) {
            int cid = emu_submit(e, cdbs + (i % ncdb) * 16, 16, &data_len, 1, 0, NULL, 0);
            if (cid < 0) {
                blocked = 1;    /* the ring or the data area is full: complete some first */
                break;
            }
            t_sub[cid] = now;
            i++;
            blocked = ++inflight >= qd;
        }
        n = engine_take_fast(b, r, f, ev, BATCH);
        if (n < 0)
            return n;
        if (n) {
            st->not_fast += n;
            return -ENOTSUP;
        }
        if ((k = rq_drain_ring(b->q, r, tags, rets, extra, BATCH)) > 0) {
            st->errors += k;    /* a failed op: the handler's to answer, not this loop's */
            return -EIO;
        }
        if ((k = tr_kick(r)) < 0)
            return k;
        if (emu_reap(e) < 0)
            return -EPROTO;
        now = now_ns();
        got = 0;
        while ((n = emu_take_done(e, ids, BATCH)) > 0) {
            got += n;
            for (int j = 0; j < n; j++) {
                uint64_t lat = now - t_sub[ids[j]], us = lat / 1000;
                st->lat_ns_sum += lat;
                st->lat_us[us < st->lat_buckets ? us : st->lat_buckets - 1]++;
                st->errors += e->cmds[ids[j]].status != 0;
            }
            inflight -= n;
            st->done += n;
        }
        st->passes++;
        if (!got && inflight && blocked) {
            /* an asynchronous backend (rbd): wait for its completions, which
             * signal the queue's fd once the kick has told them the loop sleeps */
            struct pollfd p = { .fd = rq_fd(b->q), .events = POLLIN };
            (void)poll(&p, 1, 1);
            now = now_ns();
        }
    }
    return 0;
}
