"""Inside the benchmark VM (vm_guest.sh, BENCH_MANY=N): N LUNs on one gateway for one
TCMU daemon: how long they take to come up, what they cost in memory and, idle, in
CPU, and that every one of them serves a read over iSCSI.

    python -m tcmu_rbd_lab.bench.many up   --path NAME --out F --luns N --pattern CMDLINE
                                           --target IQN --initiator IQN [--hw-max-sectors S]
                                           [--control K=V]
    python -m tcmu_rbd_lab.bench.many down --luns N --target IQN

`up` creates the images rbd/many0..N-1 (64 MiB) if missing, then the N user:rbd
backstores (8 at a time), one target with N LUNs and an ACL through rtslib in this
one process (targetcli would start once per object: minutes under TCG), logs in, reads 4 KiB from
every LUN's disk, and appends one "many" row to --out.  `down` logs out and removes it
all.  Not here: the jobs and the other rows (guest.py).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tcmu_rbd_lab.bench.guest import _append
from tcmu_rbd_lab.bench.procs import busiest, cpu_seconds, memory_kb, pids_matching, thread_ticks

SIZE = 64 << 20
IDLE_SECONDS = 10
PARALLEL = 8


def _images(n: int) -> None:
    import rados
    import rbd
    with rados.Rados(conffile=os.environ.get("CEPH_CONF", "")) as c, c.open_ioctx("rbd") as io:
        have = set(rbd.RBD().list(io))
        for i in range(n):
            if "many%d" % i not in have:
                rbd.RBD().create(io, "many%d" % i, SIZE)


def _export(n: int, target: str, initiator: str, hw_max_sectors, control) -> None:
    from rtslib_fb import LUN, TPG, FabricModule, MappedLUN, NetworkPortal, NodeACL, Target
    from rtslib_fb import UserBackedStorageObject

    def backstore(i):      # its enable waits for the daemon's ADDED_DEVICE reply
        return UserBackedStorageObject("many%d" % i, config="rbd/rbd/many%d" % i, size=SIZE,
                                       hw_max_sectors=hw_max_sectors, control=control)
    # PARALLEL at once (each waits for its own reply): the daemon, not this script,
    # decides how many it opens at a time
    with ThreadPoolExecutor(PARALLEL) as ex:
        sos = list(ex.map(backstore, range(n)))
    tpg = TPG(Target(FabricModule("iscsi"), target), 1)
    NetworkPortal(tpg, "127.0.0.1", 3260)
    acl = NodeACL(tpg, initiator)
    for i, so in enumerate(sos):
        MappedLUN(acl, i, LUN(tpg, i, so))
    tpg.set_attribute("authentication", "0")
    tpg.enable = True


def _session_disks(target: str) -> list[str]:
    out = []
    for s in glob.glob("/sys/class/iscsi_session/session*"):
        try:
            if open(s + "/targetname").read().strip() != target:
                continue
        except OSError:
            continue
        out += [os.path.basename(b) for b in glob.glob(s + "/device/target*/*/block/*")]
    return sorted(out)


def _read(disk: str) -> None:
    subprocess.run(["dd", "if=/dev/" + disk, "of=/dev/null", "bs=4096", "count=1",
                    "iflag=direct", "status=none"], check=True, timeout=120)


def _role(pid: int, name: str) -> str:
    """python3 -m tcmu_rbd.worker / .spawner / the supervisor: which one a pid is."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return name
    for role in (b"worker", b"spawner"):
        if b"tcmu_rbd." + role in cmd:
            return role.decode()
    return "supervisor" if b"tcmu_rbd" in cmd else name


def _start_cpu(before: dict, after: dict, daemon: set[int], seconds: float) -> dict:
    """Where the whole VM's CPU went while the LUNs came up, % of one CPU per
    'process/thread' label; the daemon's threads are marked 'daemon ' (the harness
    and our workers are all python3)."""
    ours = {k: (_role(k[0], v[0]),) + v[1:] for k, v in after.items() if k[0] in daemon}
    rest = {k: v for k, v in after.items() if k[0] not in daemon}
    rows = [("daemon " + k, v) for k, v in busiest(before, ours, top=8)] + \
        busiest(before, rest, top=8)
    return {k: round(v / seconds * 100, 1) for k, v in sorted(rows, key=lambda kv: -kv[1])}


def up(a) -> None:
    _images(a.luns)
    c0, ticks0 = cpu_seconds(pids_matching(a.pattern)), thread_ticks()
    t0 = time.monotonic()
    _export(a.luns, a.target, a.initiator, a.hw_max_sectors, a.control)
    export_s = time.monotonic() - t0
    # the CPU the daemon (every process it has now) spent bringing the LUNs up
    daemon = pids_matching(a.pattern)
    start_cpu_s = cpu_seconds(daemon) - c0
    start_threads = _start_cpu(ticks0, thread_ticks(), set(daemon), export_s)
    lab = os.environ["LAB_SCRIPTS"]
    # the SCSI scan of many LUNs under TCG outlasts initiator.sh's 90 s default
    subprocess.run([lab + "/initiator.sh", "login", "--target", a.target, "--initiator-name",
                    a.initiator, "--wait", "600"], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_session_disks(a.target)) < a.luns and time.monotonic() < deadline:
        time.sleep(1)
    disks = _session_disks(a.target)
    if len(disks) != a.luns:
        raise SystemExit("%d of %d LUNs appeared as disks" % (len(disks), a.luns))
    t1 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(_read, disks))
    read_s = time.monotonic() - t1
    time.sleep(3)           # idle from here on (our workers give memory back after 1 s)
    pids = pids_matching(a.pattern)
    c0, t0 = cpu_seconds(pids), thread_ticks(pids)
    time.sleep(IDLE_SECONDS)
    idle_pct = (cpu_seconds(pids) - c0) / IDLE_SECONDS * 100
    # where the idle CPU goes: % of a CPU per 'process/thread' label, all LUNs together
    idle_threads = {k: round(v / IDLE_SECONDS * 100, 2)
                    for k, v in busiest(t0, thread_ticks(pids), top=12)}
    per = {p: memory_kb(p) for p in pids}
    mem = list(per.values())
    total = {k: sum(m[k] for m in mem) for k in ("rss_kb", "pss_kb", "private_kb", "ring_kb")}
    _append(a.out, {"section": "many", "path": a.path, "luns": a.luns, "processes": len(pids),
                    "export_s": export_s, "read_all_s": read_s, "start_cpu_s": start_cpu_s,
                    "start_cpu_pct_by_thread": start_threads, "idle_cpu_pct": idle_pct,
                    "idle_cpu_pct_by_thread": idle_threads,
                    **total, "pss_mb_per_lun": total["pss_kb"] / 1024 / a.luns,
                    "per_process": {str(p): {**m, "role": _role(p, "daemon")}
                                    for p, m in per.items()}})


def down(a) -> None:
    from rtslib_fb import FabricModule, Target, UserBackedStorageObject
    subprocess.run([os.environ["LAB_SCRIPTS"] + "/initiator.sh", "logout", "--target",
                    a.target], stdout=subprocess.DEVNULL)
    try:
        Target(FabricModule("iscsi"), a.target, "lookup").delete()
    except Exception as e:      # not there: nothing to delete
        print("target %s: %s" % (a.target, e), file=sys.stderr)
    for i in range(a.luns):
        try:
            UserBackedStorageObject("many%d" % i).delete()
        except Exception as e:
            print("many%d: %s" % (i, e), file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd_lab.bench.many")
    ap.add_argument("what", choices=["up", "down"])
    ap.add_argument("--luns", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--initiator")
    ap.add_argument("--path")
    ap.add_argument("--out")
    ap.add_argument("--pattern", help="command-line pattern of the daemon's processes")
    ap.add_argument("--hw-max-sectors", type=int)
    ap.add_argument("--control", help="e.g. max_data_area_mb=64")
    a = ap.parse_args(argv)
    if a.what == "up":
        if not (a.initiator and a.path and a.out and a.pattern):
            ap.error("up needs --initiator, --path, --out and --pattern")
        up(a)
    else:
        down(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
