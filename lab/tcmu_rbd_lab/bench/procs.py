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
        if pattern in cmd and "tcmu_rbd_lab.bench" not in cmd:
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


def _kind(parts: list[str]) -> str:
    """What a mapping of smaps is: heap, stack, anon (threads' stacks and arenas,
    Python's object arenas), file (libraries' pages, their copied data)."""
    name = parts[5] if len(parts) >= 6 else ""
    if name == "[heap]":
        return "heap"
    if name.startswith("[stack"):
        return "stack"
    return "file" if name.startswith("/") else "anon"


def memory_kb(pid: int) -> dict:
    """Resident (Rss), proportional (Pss: shared pages split among their users) and
    private memory of one process, in KiB, without its mappings of /dev/uioN: those
    are the kernel's TCMU ring and data area (up to max_data_area_mb per LUN), which
    every TCMU daemon maps alike; they are reported apart as ring_kb (Rss).
    private_by_kind splits the private memory by kind of mapping (_kind)."""
    out = {"rss_kb": 0, "pss_kb": 0, "private_kb": 0, "ring_kb": 0,
           "private_by_kind": {"heap": 0, "anon": 0, "stack": 0, "file": 0}}
    ring, kind = False, "anon"
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if " " in key:                      # a mapping's header line
                    parts = line.split()
                    ring = len(parts) >= 6 and parts[5].startswith("/dev/uio")
                    kind = _kind(parts)
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
                    out["private_by_kind"][kind] += kb
    except OSError:
        pass
    return out


def thread_ticks(pids: list[int] | None = None) -> dict:
    """{(pid, tid): (process name, thread name, utime + stime ticks)} of every thread
    of these processes, or of the whole machine (kernel threads included)."""
    out = {}
    for d in os.listdir("/proc") if pids is None else map(str, pids):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % d) as f:
                pname = f.read().strip()
            tids = os.listdir("/proc/%s/task" % d)
        except OSError:
            continue
        for t in tids:
            try:
                with open("/proc/%s/task/%s/stat" % (d, t)) as f:
                    head, _, rest = f.read().rpartition(")")
            except OSError:
                continue
            fields = rest.split()
            out[(int(d), int(t))] = (pname, head.partition("(")[2],
                                     int(fields[11]) + int(fields[12]))
    return out


# Where a TCMU daemon's CPU goes, by thread name: librados/librbd name their threads
# (msgr-worker-N: the messenger; io_context_pool, tp_librbd, fn_*, ms_*, safe_timer...:
# librbd's and librados' own work); a thread named like its process is the daemon's
# own (our handler loop, tcmu-runner's command threads; Python names none of ours).
GROUPS = ("loop", "msgr", "librbd")


def thread_group(process: str, thread: str) -> str:
    """(thread names as cpu_by_thread labels them: without a trailing number)"""
    if thread.startswith("msgr-worker"):
        return "msgr"
    if thread == process or thread.startswith(("python", "tcmu")):
        return "loop"
    return "librbd"


def thread_label(process: str, thread: str) -> str:
    """'process/thread', without the trailing number that tells a pool's threads
    apart (msgr-worker-0, -1...: one label)."""
    return "%s/%s" % (process, thread.rstrip("0123456789").rstrip("-_/:") or thread)


def cpu_by_thread(pids: list[int]) -> dict:
    """CPU seconds so far of these processes' threads, by thread_label()."""
    out: dict[str, float] = {}
    for pname, tname, ticks in thread_ticks(pids).values():
        label = thread_label(pname, tname)
        out[label] = out.get(label, 0.0) + ticks / _TICK
    return out


def by_group(threads: dict) -> dict:
    """cpu_by_thread's figures summed by thread_group()."""
    out = dict.fromkeys(GROUPS, 0.0)
    for label, secs in threads.items():
        pname, _, tname = label.partition("/")
        out[thread_group(pname, tname)] += secs
    return out


def cpu_split() -> dict:
    """Machine-wide CPU ticks by kind, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq"), v))


def busiest(before: dict, after: dict, top: int = 25) -> list[tuple[str, float]]:
    """CPU seconds per 'process/thread' between two thread_ticks() readings; thread
    names that differ only in a trailing number are summed (msgr-worker-0, -1...)."""
    acc: dict[str, float] = {}
    for key, (pname, tname, ticks) in after.items():
        used = ticks - before.get(key, (0, 0, 0))[2]
        if used > 0:
            label = thread_label(pname, tname)
            acc[label] = acc.get(label, 0) + used / _TICK
    return sorted(acc.items(), key=lambda kv: -kv[1])[:top]
