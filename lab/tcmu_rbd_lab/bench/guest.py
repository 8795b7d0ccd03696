"""Inside the benchmark VM (called by vm_guest.sh): runs the jobs on one path and
appends one JSON row per result to --out, which the host reads back.

    python -m tcmu_rbd_lab.bench.guest jobs    --path NAME --out F [--set full] TARGET
    python -m tcmu_rbd_lab.bench.guest scaling --path NAME --out F TARGET...  (all at once)
    python -m tcmu_rbd_lab.bench.guest memory  --path NAME --out F --luns N --pattern CMDLINE
    python -m tcmu_rbd_lab.bench.guest settings --path NAME --out F KEY=VALUE...
    python -m tcmu_rbd_lab.bench.guest profile --path NAME --out F TARGET...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tcmu_rbd_lab.bench import fio
from tcmu_rbd_lab.bench.procs import busiest, cpu_split, memory_kb, pids_matching, thread_ticks
from tcmu_rbd_lab.bench.workloads import SCALING, SETS


def _append(out: str, row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _cpu(pattern: str | None):
    return (lambda: pids_matching(pattern)) if pattern else None


def profile(targets: list[str], seconds: float, out: str, title: str) -> None:
    """Where the whole VM's CPU goes while the scaling job runs on the targets, by
    process and thread, from the kernel's tick accounting (perf's samples under TCG
    land in the idle task)."""
    load = subprocess.Popen(fio.command(targets, SCALING, seconds + 6), stdout=subprocess.DEVNULL)
    try:
        time.sleep(3)
        t0, s0 = thread_ticks(), cpu_split()
        time.sleep(seconds)
        t1, s1 = thread_ticks(), cpu_split()
    finally:
        load.wait()
    split = {k: s1[k] - s0[k] for k in s0}
    total = sum(split.values()) or 1
    with open(out, "w") as f:
        f.write("# %s: %s on %d target(s), %gs, %% of all CPUs of the VM\n"
                % (title, SCALING.label, len(targets), seconds))
        f.write("  " + "  ".join("%s %.0f%%" % (k, v * 100 / total) for k, v in split.items()
                                 if v) + "\n")
        cpus = os.cpu_count() or 1
        for label, secs in busiest(t0, t1):
            share = secs / (seconds * cpus) * 100
            if share >= 1:
                f.write("  %5.1f%%  %s\n" % (share, label))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd_lab.bench.guest")
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("jobs", "scaling", "memory", "settings", "profile"):
        p = sub.add_parser(name)
        p.add_argument("--path", required=True, help="what serves the target (a table row)")
        p.add_argument("--out", required=True, help="JSON lines file to append to")
        if name in ("jobs", "scaling", "profile"):
            p.add_argument("--seconds", type=float, default=10)
            p.add_argument("--ramp", type=float, default=2)
            p.add_argument("--cpu-of", help="command-line pattern of the server's processes")
            p.add_argument("targets", nargs="+", help="/dev/sdX, /dev/nbdN or rbd:POOL/IMAGE")
    sub.choices["jobs"].add_argument("--set", default="full", choices=sorted(SETS))
    sub.choices["memory"].add_argument("--luns", type=int, required=True)
    sub.choices["memory"].add_argument("--pattern", required=True)
    sub.choices["settings"].add_argument("pairs", nargs="*")
    a = ap.parse_args(argv)

    if a.what == "jobs":
        for w in SETS[a.set]:
            row = fio.run(a.targets, w, a.seconds, a.ramp, cpu_pids=_cpu(a.cpu_of))
            _append(a.out, {"section": "vm", "path": a.path, "workload": w.label, **row})
    elif a.what == "scaling":
        row = fio.run(a.targets, SCALING, a.seconds, a.ramp, cpu_pids=_cpu(a.cpu_of))
        _append(a.out, {"section": "vm scaling", "path": a.path, "luns": len(a.targets),
                        "workload": "%s per LUN" % SCALING.label, **row})
    elif a.what == "memory":
        procs = {pid: memory_kb(pid) for pid in pids_matching(a.pattern)}
        if not procs:
            raise SystemExit("no process matches %r" % a.pattern)
        total = {k: sum(m[k] for m in procs.values()) for k in ("rss_kb", "pss_kb", "private_kb", "ring_kb")}
        _append(a.out, {"section": "memory", "path": a.path, "luns": a.luns,
                        "processes": len(procs), **total,
                        "per_process": {str(p): m for p, m in procs.items()}})
    elif a.what == "profile":
        profile(a.targets, a.seconds, a.out, a.path)
    else:
        _append(a.out, {"section": "settings", "path": a.path,
                        **dict(kv.split("=", 1) for kv in a.pairs)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
