"""The full-stack half of the benchmark: one VM boot (tcmu_rbd_lab.vm) runs
vm_guest.sh, which serves one image through every path in turn and writes a row per
result to bench.jsonl in the shared results directory."""

from __future__ import annotations

import json
from pathlib import Path

from tcmu_rbd_lab.bench.workloads import SETS
from tcmu_rbd_lab.vm import VMError, run_in_vm

GUEST = Path(__file__).with_name("vm_guest.sh")
# the TCMU daemons in alternation, A B A B A B: the OSD's speed drifts over a run, and
# each pair of passes next to each other gives one ratio (report.annotate: their median)
PAIRS = 3


def alternation(pairs: int = PAIRS, hosted: int = 0) -> tuple:
    """The passes: tcmu-rbd, tcmu-runner, ...; with ``hosted`` N, tcmu-rbd with
    luns_per_worker = N ("tcmu-rbd:N") beside them in each round."""
    return (("tcmu-rbd",) + ((f"tcmu-rbd:{hosted}",) if hosted > 1 else ())
            + ("tcmu-runner",)) * pairs


DAEMONS = alternation()


def bench_vm(results_dir: Path, *, set_name: str = "full", seconds: float = 10,
             ramp: float = 2, luns: int = 4, daemons=DAEMONS, profile: bool = False,
             config: str = "project", many: int = 0) -> list[dict]:
    """config: the backstores' settings (vm_guest.sh BENCH_CONFIG): project, ceph-iscsi
    or stock; many: that many LUNs on one gateway, once per daemon (bench/many.py)."""
    jobs = len(SETS[set_name]) * (3 + len(daemons))      # fio rbd x2, rbd-nbd, daemons
    jobs += len(daemons) * luns.bit_length()              # scaling: 1, 2, 4... LUNs
    jobs += (2 + 2 * len(daemons)) * profile
    # TCG: ~6 s of fio and Python start per job; ~10 min of boot, Ceph, prefill and
    # rbd-nbd; per daemon pass its start and stop, and per LUN an export, a login and
    # a removal (~1 min each, 4 before the exports were batched: a timeout then)
    timeout = 600 + len(daemons) * (60 + 90 * luns) + jobs * (seconds + ramp + 6) * 2
    timeout += len(set(daemons)) * (120 + 15 * many) if many else 0    # ~25 s a LUN, 8 at once
    env = {"BENCH_SET": set_name, "BENCH_SECONDS": seconds, "BENCH_RAMP": ramp,
           "BENCH_LUNS": luns, "BENCH_DAEMONS": " ".join(daemons), "BENCH_PROFILE": int(profile),
           "BENCH_CONFIG": config, "BENCH_MANY": many}
    res = run_in_vm(GUEST, results_dir, env=env, timeout=timeout, memory="8G", check=False)
    out = Path(results_dir) / "bench.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if res.returncode != 0:
        raise VMError("the benchmark VM failed (exit status %d%s) after %d rows; logs in %s\n%s"
                      % (res.returncode, ", TIMEOUT" if res.timed_out else "", len(rows),
                         results_dir, res.log_tails(15)))
    return rows


def profiles(results_dir: Path) -> str:
    """The perf summaries the guest wrote (BENCH_PROFILE=1), one after the other."""
    return "\n".join(p.read_text() for p in sorted(Path(results_dir).glob("profile-*.txt")))
