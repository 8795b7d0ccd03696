"""Benchmarks: figures and ratios side by side with the peers, in one run.

    python -m tcmu_rbd.bench engine            emulator -> engine -> memory backend
    python -m tcmu_rbd.bench rbd [--cluster]   emulator -> engine -> rbd backend,
                                               between two fio --ioengine=rbd runs on the
                                               same image (ratio: against their mean)

The emulator plays the kernel in the same thread, so "cmds/s" is what one
core does for both sides; `handler us/cmd` is the CPU spent in the handler
loop alone (what a gateway core spends per command in our process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time

from tcmu_rbd._native import ffi, lib

BS = 512
MAX_XFER = 2048   # blocks: 1 MiB commands need hw_max_sectors=2048


def _cdbs(kind: str, xfer: int, size: int, n: int, seed: int = 1) -> list[bytes]:
    blocks = xfer // BS
    op = 0x88 if kind.endswith("read") else 0x8A
    rng = random.Random(seed)
    last = size // xfer
    out = []
    for i in range(n):
        slot = rng.randrange(last) if kind.startswith("rand") else i % last
        out.append(struct.pack(">BBQIBB", op, 0, slot * blocks, blocks, 0, 0))
    return out


def run_engine_workload(rig, kind: str, xfer: int, qd: int, seconds: float) -> dict:
    """Drive one workload through a Rig; returns figures."""
    e = rig.emu._e
    handler = rig.handler
    lens = ffi.new("uint32_t[1]", [xfer])
    ids = ffi.new("uint16_t[]", 65536)
    cdbs = _cdbs(kind, xfer, rig.backend.size, 8192)
    ncdb = len(cdbs)
    t_submit = [0.0] * 65536
    lat = []
    fd = rig.backend.fileno()
    import select
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
        raise RuntimeError("%s: %d of %d commands did not complete GOOD" % (kind, errors, done))
    lat.sort()
    return {
        "iops": done / wall,
        "mbps": done * xfer / wall / 1e6,
        "lat_mean_us": statistics.fmean(lat) * 1e6 if lat else 0,
        "lat_p99_us": lat[int(len(lat) * 0.99)] * 1e6 if lat else 0,
        "cpu_us_per_cmd": cpu_total / done * 1e6 if done else 0,
        "handler_us_per_cmd": handler_cpu / done * 1e6 if done else 0,
        "commands": done,
    }


WORKLOADS = [("randread", 4096), ("randwrite", 4096), ("write", 1 << 20), ("read", 1 << 20)]


def bench_engine(args) -> list[dict]:
    from tcmu_rbd.backends.memory import MemoryBackend
    from tcmu_rbd.testing.emulator import Emulator
    from tcmu_rbd.testing.rig import Rig

    rows = []
    for kind, xfer in [("randread", 4096), ("randwrite", 4096)]:
        emu = Emulator(cmdr_size=8 << 20, data_blocks=(args.qd * xfer) // 4096 + 64)
        with Rig(MemoryBackend(1 << 30), emulator=emu, max_xfer_blocks=MAX_XFER) as rig:
            r = run_engine_workload(rig, kind, xfer, args.qd, args.seconds)
        rows.append({"path": "engine+memory", "workload": "%s %s QD%d" % (kind, _h(xfer), args.qd), **r})
    return rows


def _h(n: int) -> str:
    return "%dK" % (n // 1024) if n < 1 << 20 else "%dM" % (n >> 20)


def fio_rbd(conf: str, pool: str, image: str, kind: str, xfer: int, qd: int, seconds: float,
            client: str = "admin") -> dict:
    """fio --ioengine=rbd on the same image: the direct-librbd peer (it
    inherits this process's CPU affinity)."""
    cmd = ["fio", "--name=peer", "--ioengine=rbd", "--clientname=" + client, "--pool=" + pool,
           "--rbdname=" + image, "--rw=" + kind, "--bs=%d" % xfer, "--iodepth=%d" % qd,
           "--time_based", "--runtime=%g" % seconds, "--direct=1", "--output-format=json",
           "--numjobs=1", "--group_reporting"]
    env = dict(os.environ, CEPH_CONF=conf)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds * 3 + 60)
    if out.returncode:
        raise RuntimeError("fio failed: " + out.stderr[-2000:])
    job = json.loads(out.stdout)["jobs"][0]
    side = job["read"] if kind.endswith("read") else job["write"]
    usr, sys_ = job["usr_cpu"], job["sys_cpu"]
    ios = side["total_ios"] or 1
    return {"iops": side["iops"], "mbps": side["bw_bytes"] / 1e6,
            "lat_mean_us": side["clat_ns"]["mean"] / 1000,
            "lat_p99_us": side["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000,
            "cpu_us_per_cmd": (usr + sys_) / 100 * seconds / ios * 1e6, "commands": ios}


def _pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (sched_setaffinity on a pid moves one thread)."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def bench_rbd(args) -> list[dict]:
    from tcmu_rbd.backends.rbd import RbdBackend
    from tcmu_rbd.testing.emulator import Emulator
    from tcmu_rbd.testing.rig import Rig

    cluster = None
    if args.cluster:
        from tcmu_rbd.testing.ceph import CephCluster
        cluster = CephCluster().__enter__()
        conf, keyring = cluster.conf_path, cluster.admin_keyring
        cluster.create_image(args.image, args.size << 20)
    else:
        conf, keyring = args.conf, args.keyring
    client_cpus = None
    if cluster is not None and args.pin and os.cpu_count() >= 2:
        # The cluster gets CPU 0, the client under test (fio, or this process
        # with its librbd threads) CPU 1: a gateway does not share cores with
        # the OSDs, and on two cores the OSD would otherwise starve whichever
        # client spends more CPU.  Both paths get the same layout.
        for pid in cluster.pids.values():
            _pin_tree(pid, {0})
        client_cpus = {1}
        os.sched_setaffinity(0, client_cpus)
        print("pinned: ceph daemons on CPU 0, client (fio / tcmu-rbd) on CPU 1")
    try:
        # reads of never-written objects cost nothing: fill the image first
        subprocess.run(["fio", "--name=fill", "--ioengine=rbd", "--clientname=admin",
                        "--pool=" + args.pool, "--rbdname=" + args.image, "--rw=write",
                        "--bs=4M", "--iodepth=8", "--direct=1"], env=dict(os.environ, CEPH_CONF=conf),
                       check=True, capture_output=True, timeout=600)
        rows = []
        for kind, xfer in WORKLOADS:
            qd = args.qd if xfer == 4096 else 8
            label = "%s %s QD%d" % (kind, _h(xfer), qd)
            # The OSD's own speed drifts (memstore random writes slow down for
            # the first seconds): warm up, then measure fio before AND after
            # tcmu-rbd and compare against their mean, as lab.md advises.
            fio_rbd(conf, args.pool, args.image, kind, xfer, qd, args.warmup)
            before = fio_rbd(conf, args.pool, args.image, kind, xfer, qd, args.seconds)
            emu = Emulator(cmdr_size=8 << 20, data_blocks=(qd * xfer) // 4096 + 64)
            b = RbdBackend(args.pool, args.image, conf=conf, keyring=keyring)
            with Rig(b, emulator=emu, max_xfer_blocks=MAX_XFER) as rig:
                ours = run_engine_workload(rig, kind, xfer, qd, args.seconds)
            after = fio_rbd(conf, args.pool, args.image, kind, xfer, qd, args.seconds)
            base = (before["iops"] + after["iops"]) / 2
            rows.append({"path": "fio rbd, before", "workload": label, **before})
            rows.append({"path": "engine+rbd (tcmu-rbd)", "workload": label, **ours,
                         "ratio": ours["iops"] / base if base else 0})
            rows.append({"path": "fio rbd, after", "workload": label, **after})
        return rows
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)


def print_table(rows: list[dict]) -> None:
    cols = [("workload", "%-22s"), ("path", "%-26s"), ("iops", "%10.0f"), ("mbps", "%9.1f"),
            ("lat_mean_us", "%9.0f"), ("lat_p99_us", "%9.0f"), ("cpu_us_per_cmd", "%9.1f"),
            ("handler_us_per_cmd", "%9.1f"), ("ratio", "%6.2f")]
    heads = ["workload", "path", "IOPS", "MB/s", "mean us", "p99 us", "CPU us/c", "hdlr us/c", "ratio"]
    print("  ".join(("%-22s" if i == 0 else "%-26s" if i == 1 else "%9s") % h for i, h in enumerate(heads)))
    for r in rows:
        cells = []
        for key, fmt in cols:
            v = r.get(key)
            cells.append(fmt % v if v is not None else " " * 9)
        print("  ".join(cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd.bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("engine", help="ring emulator -> engine -> memory backend")
    e.add_argument("--seconds", type=float, default=5)
    e.add_argument("--qd", type=int, default=32)
    e.add_argument("--json", help="write the rows here too")
    r = sub.add_parser("rbd", help="engine + rbd backend next to fio --ioengine=rbd")
    r.add_argument("--cluster", action="store_true", help="start a throwaway cluster for the run")
    r.add_argument("--conf", default="/etc/ceph/ceph.conf")
    r.add_argument("--keyring", default=None)
    r.add_argument("--pool", default="rbd")
    r.add_argument("--image", default="bench0")
    r.add_argument("--size", type=int, default=1024, help="MiB (with --cluster)")
    r.add_argument("--seconds", type=float, default=10)
    r.add_argument("--warmup", type=float, default=8, help="seconds of fio before each workload")
    r.add_argument("--qd", type=int, default=32)
    r.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not give the cluster and the client separate CPUs")
    r.add_argument("--json")
    args = ap.parse_args(argv)
    rows = bench_engine(args) if args.what == "engine" else bench_rbd(args)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "host": os.uname().nodename, "cpus": os.cpu_count()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
