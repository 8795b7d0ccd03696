"""The native half of the benchmark (no kernel): the ring emulator plays LIO's side
of a TCMU device in the same thread, driving the real engine and handler.

- engine:  emulator -> engine -> memory backend (the engine's ceiling);
- rbd:     emulator -> engine -> rbd backend on a throwaway cluster, between two runs
           of fio --ioengine=rbd on the same image (the OSD drifts: compare to the mean);
- scaling: 1, 2, 4 LUNs at once, one process each (as the daemon runs them), memory
           backend (the daemon's memory per LUN is measured in the VM).

"cmds/s" is what one core does for both sides; `handler_us_per_cmd` is the CPU
spent in the handler loop alone (what a gateway core spends per command in our
process); `cpu_us_per_cmd` includes the emulated kernel side.
"""

from __future__ import annotations

import os
import random
import select
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


def run_engine_workload(rig, w: Workload, seconds: float) -> dict:
    """Drive one workload through a Rig for `seconds`; returns figures."""
    e = rig.emu._e
    handler = rig.handler
    lens = ffi.new("uint32_t[1]", [w.bs])
    ids = ffi.new("uint16_t[]", 65536)
    cdbs = _cdbs(w, rig.backend.size, 8192)
    ncdb = len(cdbs)
    t_submit = [0.0] * 65536
    lat = []
    fd = rig.backend.fileno()
    qd = w.qd
    inflight = done = i = errors = 0
    handler_cpu = 0.0
    clock = time.perf_counter
    cpu = time.thread_time
    t0, c0 = clock(), time.process_time()
    end = t0 + seconds
    while True:
        now = clock()
        if now >= end and inflight == 0:
            break
        while inflight < qd and now < end:
            cid = lib.emu_submit(e, cdbs[i % ncdb], 16, lens, 1, 0)
            if cid < 0:
                break
            t_submit[cid] = now
            i += 1
            inflight += 1
        h0 = cpu()
        handler.process()
        handler_cpu += cpu() - h0
        n = lib.emu_take_done(e, ids, 65536)
        if n:
            now = clock()
            for k in range(n):
                cid = ids[k]
                if e.cmds[cid].status:       # only GOOD completions count
                    errors += 1
                lat.append(now - t_submit[cid])
            inflight -= n
            done += n
        elif fd is not None:
            select.select([fd], [], [], 0.001)
    wall = clock() - t0
    cpu_total = time.process_time() - c0
    if errors:
        raise RuntimeError("%s: %d of %d commands did not complete GOOD" % (w.label, errors, done))
    lat.sort()
    return {
        "iops": done / wall,
        "mbps": done * w.bs / wall / 1e6,
        "lat_mean_us": statistics.fmean(lat) * 1e6 if lat else 0,
        "lat_p99_us": lat[int(len(lat) * 0.99)] * 1e6 if lat else 0,
        "cpu_us_per_cmd": cpu_total / done * 1e6 if done else 0,
        "handler_us_per_cmd": handler_cpu / done * 1e6 if done else 0,
        "commands": done,
    }


def _memory_rig(w: Workload, size: int):
    from tcmu_rbd.backends.memory import MemoryBackend
    from tcmu_rbd_lab.rig import Rig
    backend = MemoryBackend(size)
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
