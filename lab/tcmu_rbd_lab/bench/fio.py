"""fio as the load generator of every path: one job definition, one parser.

A target is a block device path (/dev/sdX: iSCSI disks, /dev/nbdN) or "rbd:POOL/IMAGE"
(fio's own librbd engine: the direct-librbd peer).  Several targets run as one fio
job each at the same time and are reported together (the scaling runs).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess

from tcmu_rbd_lab.bench.procs import by_group, cpu_by_thread, cpu_seconds
from tcmu_rbd_lab.bench.workloads import Workload


def command(targets: list[str], w: Workload, seconds: float, ramp: float = 0,
            client: str = "admin") -> list[str]:
    cmd = ["fio", "--output-format=json", "--group_reporting", "--direct=1", "--time_based",
           "--runtime=%g" % seconds, "--ramp_time=%g" % ramp, "--rw=" + w.rw, "--bs=%d" % w.bs,
           "--iodepth=%d" % w.qd, "--numjobs=1", "--randrepeat=0", "--norandommap"]
    for i, t in enumerate(targets):
        cmd.append("--name=t%d" % i)
        if t.startswith("rbd:"):
            pool, image = t[4:].split("/", 1)
            cmd += ["--ioengine=rbd", "--clientname=" + client, "--pool=" + pool,
                    "--rbdname=" + image]
        else:
            cmd += ["--ioengine=libaio", "--filename=" + t]
    return cmd


def parse(report: dict, w: Workload) -> dict:
    """Figures of the (group-reported) job."""
    job = report["jobs"][0]
    side = job["read"] if w.is_read else job["write"]
    clat = side["clat_ns"]
    return {"iops": side["iops"], "mbps": side["bw_bytes"] / 1e6,
            "lat_mean_us": clat["mean"] / 1000,
            "lat_p99_us": clat.get("percentile", {}).get("99.000000", 0) / 1000,
            "commands": side["total_ios"], "errors": job.get("error", 0)}


def run(targets: list[str], w: Workload, seconds: float, ramp: float = 0,
        cpu_pids=None, env: dict | None = None) -> dict:
    """Run fio.  cpu_us_per_cmd is the CPU of whatever runs librbd: with cpu_pids (a
    callable giving the server's pids: the TCMU daemon, rbd-nbd) the server's,
    including kernel work done in its context; else fio's own with all its threads
    (fio --ioengine=rbd; fio's usr_cpu/sys_cpu count only its job thread).  With
    cpu_pids also cpu_us_by_group (the same split by procs.thread_group) and
    cpu_us_by_thread (the busiest thread names)."""
    pids = cpu_pids() if cpu_pids else []
    c0, t0 = cpu_seconds(pids), cpu_by_thread(pids)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command(targets, w, seconds, ramp), capture_output=True, text=True,
                         env=dict(os.environ, **(env or {})),
                         timeout=(seconds + ramp) * 4 + 120)
    if out.returncode:
        raise RuntimeError("fio %s on %s failed: %s" % (w.label, targets, out.stderr[-2000:]))
    # fio may print warnings before the JSON
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.stdout[out.stdout.index("{"):]
    row = parse(json.loads(text), w)
    if row["errors"]:
        raise RuntimeError("fio %s on %s: error %d" % (w.label, targets, row["errors"]))
    used = (cpu_seconds(pids) - c0 if cpu_pids else
            r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    # fio counts no command of the ramp (nor of its start): scale by the measured share
    share = seconds / (seconds + ramp)
    per_cmd = share / max(row["commands"], 1) * 1e6
    row["cpu_us_per_cmd"] = used * per_cmd
    if cpu_pids:
        t1 = cpu_by_thread(pids)
        used_by = {k: (v - t0.get(k, 0.0)) * per_cmd for k, v in t1.items()}
        row["cpu_us_by_group"] = by_group(used_by)
        # the busiest threads by name, so that a group can be checked against them
        row["cpu_us_by_thread"] = dict(sorted(((k, v) for k, v in used_by.items() if v > 0),
                                              key=lambda kv: -kv[1])[:8])
    return row
