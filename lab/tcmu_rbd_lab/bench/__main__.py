"""Benchmarks: figures and ratios side by side with the peers, in one run.

    python -m tcmu_rbd_lab.bench engine   emulated ring -> engine -> memory backend, and
                                      1, 2, 4 LUNs at once (one process each)
    python -m tcmu_rbd_lab.bench rbd      emulated ring -> engine -> rbd backend on a
                                      throwaway cluster, next to fio --ioengine=rbd
    python -m tcmu_rbd_lab.bench vm       the full stack in Debian's kernel under QEMU:
                                      fio on the iSCSI disk served by tcmu-rbd and by
                                      tcmu-runner, fio --ioengine=rbd, rbd-nbd; scaling
                                      and memory per LUN
    python -m tcmu_rbd_lab.bench all      all three, one table

Each run prints one table and writes bench.json and bench.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tcmu_rbd_lab.bench import native, report
from tcmu_rbd_lab.bench.workloads import SETS
from tcmu_rbd_lab.vm import REPO

# seconds per job: the engine is steady at once; the OSD is not (rbd warms up first)
DEFAULT_SECONDS = {"engine": 3, "rbd": 8, "vm": 10}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd_lab.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["engine", "rbd", "vm", "all"])
    ap.add_argument("--set", default="full", choices=sorted(SETS),
                    help="workloads: full (the issue's list) or quick (two, to try it out)")
    ap.add_argument("--seconds", type=float, help="per job (default: engine 3, rbd 8, vm 10)")
    ap.add_argument("--warmup", type=float, default=4, help="rbd: seconds of fio before each job")
    ap.add_argument("--ramp", type=float, default=2, help="vm: fio ramp time per job")
    ap.add_argument("--pairs", type=int, default=3,
                    help="vm: passes of tcmu-rbd and tcmu-runner in alternation (A B A B...)")
    ap.add_argument("--config", default="project", choices=["project", "ceph-iscsi", "stock"],
                    help="vm: the backstores' settings: targetcli-rbd's (hw_max_sectors 2048, "
                         "64 MiB data area), ceph-iscsi's (1024, 8 MiB), or targetcli's defaults")
    ap.add_argument("--hosted", type=int, default=0, metavar="N",
                    help="vm: also tcmu-rbd with luns_per_worker = N (several LUNs a worker "
                         "process) in each round, as path tcmu-rbd:N")
    ap.add_argument("--luns", type=int, default=4, help="scaling: up to this many LUNs (1, 2, 4...)")
    ap.add_argument("--many", type=int, default=0,
                    help="vm: after the passes, this many LUNs on one gateway, once per daemon "
                         "(start time, memory, idle CPU, a read from each), e.g. 64")
    ap.add_argument("--out", default=str(REPO / "results" / "bench"),
                    help="directory for bench.json, bench.png (and the VM's logs)")
    ap.add_argument("--profile", action="store_true",
                    help="vm: perf of the whole VM during the scaling job on each path")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="rbd: do not give the cluster and the client separate CPUs")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    workloads = SETS[a.set]
    scaling = [n for n in (1, 2, 4, 8, 16) if n <= a.luns]
    secs = lambda kind: a.seconds or DEFAULT_SECONDS[kind]  # noqa: E731
    rows: list[dict] = []
    t0 = time.monotonic()
    if a.what in ("engine", "all"):
        rows += native.bench_engine(workloads, secs("engine"))
        rows += native.bench_scaling(scaling, secs("engine"))
    if a.what in ("rbd", "all"):
        rows += native.bench_rbd(workloads, secs("rbd"), a.warmup, cluster=True, pin=a.pin)
    profiled = ""
    if a.what in ("vm", "all"):
        from tcmu_rbd_lab.bench.vm import alternation, bench_vm, profiles
        rows += bench_vm(out / "vm", set_name=a.set, seconds=secs("vm"), ramp=a.ramp,
                         luns=a.luns, daemons=alternation(a.pairs, a.hosted), profile=a.profile,
                         config=a.config, many=a.many)
        profiled = profiles(out / "vm")
    rows = report.annotate(rows)
    text = report.table(rows) + ("\n" + profiled if profiled else "")
    print(text)
    meta = {"what": a.what, "set": a.set, "pairs": a.pairs, "config": a.config, "seconds": {k: secs(k) for k in DEFAULT_SECONDS},
            "host": os.uname().nodename, "kernel": os.uname().release, "cpus": os.cpu_count(),
            "wall_seconds": round(time.monotonic() - t0, 1),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report.write_json(rows, str(out / "bench.json"), meta)
    (out / "bench.txt").write_text(text + "\n")
    report.chart(rows, str(out / "bench.png"))
    print("\nwritten: %s, %s, %s" % (out / "bench.txt", out / "bench.json", out / "bench.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
