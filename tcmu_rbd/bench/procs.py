"""CPU time and memory of running processes, from /proc (the daemons under test)."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def pids_matching(pattern: str) -> list[int]:
    """Processes whose command line contains `pattern` (like pgrep -f), not ourselves."""
    me, found = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmd and "tcmu_rbd.bench" not in cmd:
            found.append(int(d))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of these processes (all their threads), so far."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue          # exited: its time is lost, which the caller sees as less CPU
        total += int(fields[11]) + int(fields[12])    # utime, stime
    return total / _TICK


def memory_kb(pid: int) -> dict:
    """Resident (Rss), proportional (Pss: shared pages split among their users) and
    private memory of one process, in KiB, without its mappings of /dev/uioN: those
    are the kernel's TCMU ring and data area (up to max_data_area_mb per LUN), which
    every TCMU daemon maps alike; they are reported apart as ring_kb (Rss)."""
    out = {"rss_kb": 0, "pss_kb": 0, "private_kb": 0, "ring_kb": 0}
    ring = False
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if " " in key:                      # a mapping's header line
                    parts = line.split()
                    ring = len(parts) >= 6 and parts[5].startswith("/dev/uio")
                    continue
                if key not in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    continue
                kb = int(rest.split()[0])
                if ring:
                    if key == "Rss":
                        out["ring_kb"] += kb
                elif key == "Rss":
                    out["rss_kb"] += kb
                elif key == "Pss":
                    out["pss_kb"] += kb
                else:
                    out["private_kb"] += kb
    except OSError:
        pass
    return out
