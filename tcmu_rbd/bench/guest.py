"""Inside the benchmark VM (called by vm_guest.sh): runs the jobs on one path and
appends one JSON row per result to --out, which the host reads back.

    python -m tcmu_rbd.bench.guest jobs    --path NAME --out F [--set full] TARGET
    python -m tcmu_rbd.bench.guest scaling --path NAME --out F TARGET...  (all at once)
    python -m tcmu_rbd.bench.guest memory  --path NAME --out F --luns N --pattern CMDLINE
    python -m tcmu_rbd.bench.guest settings --path NAME --out F KEY=VALUE...
"""

from __future__ import annotations

import argparse
import json
import sys

from tcmu_rbd.bench import fio
from tcmu_rbd.bench.procs import memory_kb, pids_matching
from tcmu_rbd.bench.workloads import SCALING, SETS


def _append(out: str, row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _cpu(pattern: str | None):
    return (lambda: pids_matching(pattern)) if pattern else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd.bench.guest")
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("jobs", "scaling", "memory", "settings"):
        p = sub.add_parser(name)
        p.add_argument("--path", required=True, help="what serves the target (a table row)")
        p.add_argument("--out", required=True, help="JSON lines file to append to")
        if name in ("jobs", "scaling"):
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
    else:
        _append(a.out, {"section": "settings", "path": a.path,
                        **dict(kv.split("=", 1) for kv in a.pairs)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
