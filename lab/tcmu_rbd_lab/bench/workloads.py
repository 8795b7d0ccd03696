"""The jobs every path runs: one definition for the native and the VM benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    rw: str      # fio's --rw: randread, randwrite, read, write
    bs: int      # bytes per command
    qd: int      # commands in flight

    @property
    def label(self) -> str:
        return "%s %s QD%d" % (self.rw, size_label(self.bs), self.qd)

    @property
    def is_read(self) -> bool:
        return self.rw.endswith("read")


def size_label(n: int) -> str:
    return "%dK" % (n // 1024) if n < 1 << 20 else "%dM" % (n >> 20)


FULL = [Workload("randread", 4096, qd) for qd in (1, 32, 128)] \
    + [Workload("randwrite", 4096, qd) for qd in (1, 32, 128)] \
    + [Workload(rw, bs, 8) for bs in (64 << 10, 1 << 20) for rw in ("read", "write")]
# a few seconds per path: proves the whole benchmark runs (tests, CI)
QUICK = [Workload("randread", 4096, 32), Workload("write", 1 << 20, 8)]
# the scaling runs: this job on every LUN at once
SCALING = Workload("randread", 4096, 32)
SETS = {"full": FULL, "quick": QUICK}
