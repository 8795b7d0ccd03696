"""The native half of the benchmark (no kernel): the ring emulator plays LIO's side
of a TCMU device in the same thread as the real engine, both in one C loop
(native/engine_drive.c: no Python per command).

- engine:  emulator -> engine -> memory backend (the engine's ceiling);
- rbd:     emulator -> engine -> rbd backend on a throwaway cluster, between two runs
           of fio --ioengine=rbd on the same image (the OSD drifts: compare to the mean);
- scaling: 1, 2, 4 LUNs at once, one process each (as the daemon runs them), memory
           backend (the daemon's memory per LUN is measured in the VM).

"cmds/s" is what one core does for both sides; `cpu_us_per_cmd` is the process's
CPU per command: the engine, the emulated kernel side and (rbd) librbd's threads.
"""

from __future__ import annotations

import os
import random
import statistics
import struct
import subprocess
import time

from tcmu_rbd._native import ffi, lib
from tcmu_rbd_lab.bench import fio
from tcmu_rbd_lab.bench.workloads import SCALING, Workload

BS = 512
MAX_XFER = 2048   # blocks: 1 MiB commands, as hw_max_sectors=2048 in the VM


def _cdbs(w: Workload, size: int, n: int, seed: int = 1) -> list[bytes]:
    blocks = w.bs // BS
    op = 0x88 if w.is_read else 0x8A
    rng = random.Random(seed)
    last = size // w.bs
    out = []
    for i in range(n):
        slot = rng.randrange(last) if w.rw.startswith("rand") else i % last
        out.append(struct.pack(">BBQIBB", op, 0, slot * blocks, blocks, 0, 0))
    return out


def _emulator(w: Workload):
    from tcmu_rbd_lab.emulator import Emulator
    return Emulator(cmdr_size=8 << 20, data_blocks=(w.qd * w.bs) // 4096 + 64)


LAT_BUCKETS = 1 << 20     # 1 us each: latencies up to ~1 s


def run_engine_workload(rig, w: Workload, seconds: float) -> dict:
    """Drive one workload through a Rig's engine for `seconds` (engine_drive: the
    emulated kernel and the engine in one C loop); returns figures.  The Rig's
    backend must be engine-served (MemoryBackend(engine=True), RbdBackend)."""
    parts = rig.handler.engine_parts()
    if parts is None:
        raise ValueError("%s is not served by the engine" % rig.backend.name)
    cdbs = b"".join(_cdbs(w, rig.backend.size, 8192))
    hist = ffi.new("uint64_t[]", LAT_BUCKETS)
    st = ffi.new("struct drive_stats *", {"lat_us": hist, "lat_buckets": LAT_BUCKETS})
    t0, c0 = time.perf_counter(), time.process_time()
    rc = lib.engine_drive(rig.emu._e, *parts, cdbs, len(cdbs) // 16, w.bs, w.qd, seconds, st)
    wall, cpu_total = time.perf_counter() - t0, time.process_time() - c0
    done = st.done
    if rc < 0:
        raise RuntimeError("%s: the engine loop stopped: %s (%d done, %d failed, %d not "
                           "started by the engine)" % (w.label, os.strerror(-rc), done,
                                                       st.errors, st.not_fast))
    if st.errors:
        raise RuntimeError("%s: %d of %d commands did not complete GOOD" % (w.label, st.errors, done))
    p99, seen = 0, 0
    for us in range(LAT_BUCKETS):       # the first bucket at or past 99 % of the commands
        seen += hist[us]
        if seen * 100 >= done * 99:
            p99 = us + 1          # its upper edge
            break
    return {
        "iops": done / wall,
        "mbps": done * w.bs / wall / 1e6,
        "lat_mean_us": st.lat_ns_sum / done / 1e3 if done else 0,
        "lat_p99_us": p99,
        "cpu_us_per_cmd": cpu_total / done * 1e6 if done else 0,
        "commands": done,
    }


def _memory_rig(w: Workload, size: int):
    from tcmu_rbd.backends.memory import MemoryBackend
    from tcmu_rbd_lab.rig import Rig
    backend = MemoryBackend(size, engine=True)
    backend.populate()       # first-touch page faults are not the engine's cost
    # with the counters the daemon's workers keep (tcmu_rbd/metrics.py)
    return Rig(backend, emulator=_emulator(w), max_xfer_blocks=MAX_XFER, metrics=True)


def bench_engine(workloads: list[Workload], seconds: float) -> list[dict]:
    rows = []
    for w in workloads:
        with _memory_rig(w, 256 << 20) as rig:
            r = run_engine_workload(rig, w, seconds)
        rows.append({"section": "engine", "path": "engine+memory", "workload": w.label, **r})
    return rows


def _scaling_child(w: Workload, seconds: float, barrier, conn) -> None:
    try:
        with _memory_rig(w, 256 << 20) as rig:
            barrier.wait(60)
            r = run_engine_workload(rig, w, seconds)
        conn.send(r)
    except BaseException as e:   # the parent reports it
        conn.send({"error": "%s: %s" % (type(e).__name__, e)})
    finally:
        conn.close()


def bench_scaling(luns: list[int], seconds: float, w: Workload = SCALING) -> list[dict]:
    """N LUNs at once, one process each (the daemon's model), memory backend."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    rows = []
    for n in luns:
        barrier = ctx.Barrier(n)
        pipes, procs = [], []
        for _ in range(n):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_scaling_child, args=(w, seconds, barrier, child))
            p.start()
            child.close()
            pipes.append(parent)
            procs.append(p)
        results = [c.recv() for c in pipes]
        for p in procs:
            p.join(30)
        bad = [r["error"] for r in results if "error" in r]
        if bad:
            raise RuntimeError("scaling with %d LUNs: %s" % (n, "; ".join(bad)))
        rows.append({
            "section": "native scaling", "path": "engine+memory", "luns": n,
            "workload": "%s per LUN" % w.label,
            "iops": sum(r["iops"] for r in results), "mbps": sum(r["mbps"] for r in results),
            "lat_mean_us": statistics.fmean(r["lat_mean_us"] for r in results),
            "lat_p99_us": max(r["lat_p99_us"] for r in results),
            "cpu_us_per_cmd": statistics.fmean(r["cpu_us_per_cmd"] for r in results),
            "commands": sum(r["commands"] for r in results),
        })
    return rows


def _pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (sched_setaffinity on a pid moves one thread)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def bench_rbd(workloads: list[Workload], seconds: float, warmup: float, *, cluster: bool,
              conf: str = "/etc/ceph/ceph.conf", keyring: str | None = None,
              pool: str = "rbd", image: str = "bench0", size_mb: int = 1024,
              pin: bool = True) -> list[dict]:
    from tcmu_rbd.backends.rbd import RbdBackend
    from tcmu_rbd_lab.rig import Rig

    c = None
    if cluster:
        from tcmu_rbd_lab.ceph import CephCluster
        c = CephCluster().__enter__()
        conf, keyring = c.conf_path, c.admin_keyring
        c.create_image(image, size_mb << 20)
    affinity = os.sched_getaffinity(0)
    if c is not None and pin and os.cpu_count() >= 2:
        # The cluster gets CPU 0, the client under test (fio, or this process
        # with its librbd threads) CPU 1: a gateway does not share cores with
        # the OSDs, and on two cores the OSD would otherwise starve whichever
        # client spends more CPU.  Both paths get the same layout.
        for pid in c.pids.values():
            _pin_tree(pid, {0})
        os.sched_setaffinity(0, {1})
        print("pinned: ceph daemons on CPU 0, client (fio / tcmu-rbd) on CPU 1", flush=True)
    env = {"CEPH_CONF": conf}
    target = ["rbd:%s/%s" % (pool, image)]
    try:
        # reads of never-written objects cost nothing: fill the image first
        subprocess.run(["fio", "--name=fill", "--ioengine=rbd", "--clientname=admin",
                        "--pool=" + pool, "--rbdname=" + image, "--rw=write",
                        "--bs=4M", "--iodepth=8", "--direct=1"], env=dict(os.environ, **env),
                       check=True, capture_output=True, timeout=600)
        rows = []
        for w in workloads:
            if warmup:
                fio.run(target, w, warmup, env=env)
            before = fio.run(target, w, seconds, env=env)
            b = RbdBackend(pool, image, conf=conf, keyring=keyring)
            with Rig(b, emulator=_emulator(w), max_xfer_blocks=MAX_XFER) as rig:
                ours = run_engine_workload(rig, w, seconds)
            after = fio.run(target, w, seconds, env=env)
            rows += [{"section": "native", "path": "fio rbd (before)", "workload": w.label, **before},
                     {"section": "native", "path": "engine+rbd", "workload": w.label, **ours},
                     {"section": "native", "path": "fio rbd (after)", "workload": w.label, **after}]
        return rows
    finally:
        os.sched_setaffinity(0, affinity)
        if c is not None:
            c.__exit__(None, None, None)
