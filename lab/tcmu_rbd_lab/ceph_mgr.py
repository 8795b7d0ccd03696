"""The throwaway cluster's optional ceph-mgr, and the mgr service map read through it.

What belongs here: the mgr's part of ceph.conf (as few Python modules as Pacific
allows), its keyring and caps, starting ``ceph-mgr`` and waiting until ``ceph mgr
stat`` says it is available, and the service map commands (``ceph service status``,
``ceph service dump``) with their JSON parsed.

What does NOT: the cluster's life cycle and the mon/OSD (ceph.py), the rest of
ceph.conf and the state file (ceph_setup.py), processes (process.py), and the
gateway's own service map entries (tcmu_rbd/service_map.py).

Why it starts fast: the mgr imports every Python module it finds in
``mgr_module_path`` (about 4 s natively, ten times that under TCG) even when none is
enabled.  ``mgr_disabled_modules`` listing all of them keeps it from loading any;
``mgr_initial_modules`` empty keeps the mon from enabling restful/iostat/nfs.  The
service map itself (``service status``/``service dump``, daemons registering and
reporting status) is C++ in the mgr (DaemonServer) and needs no module.  What that
costs: Pacific's always-on modules (balancer, crash, devicehealth, orchestrator,
pg_autoscaler, progress, rbd_support, status, telemetry, volumes) are absent, which
the mgr reports as health MGR_MODULE_ERROR (muted here, so ``ceph health`` says
HEALTH_OK), and devicehealth does not create its ``device_health_metrics`` pool.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .ceph_setup import CephClusterError
from .process import Daemon

__all__ = ["MGR_ID", "MGR_CAPS", "MGR_MODULE_PATH", "mgr_conf", "start_mgr",
           "wait_mgr_available", "service_status", "service_dump"]

MGR_ID = "x"
#: the caps of a mgr daemon's key (what ``ceph auth get-or-create mgr.x`` is given
#: in Ceph's manual deployment)
MGR_CAPS = {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"}
MGR_MODULE_PATH = "/usr/share/ceph/mgr"


def _modules(path: str) -> list[str]:
    """The mgr Python modules installed under ``path`` (directories with a module.py)."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(path, n, "module.py")))


def mgr_conf(module_path: str = MGR_MODULE_PATH) -> dict[str, dict[str, object]]:
    """ceph.conf sections for a mgr that loads no Python module: {section: {opt: val}}.

    ``mgr initial modules`` is read by the mon when it creates the first MgrMap, so
    it goes into the conf before the mon's first start."""
    return {
        "mon": {"mgr initial modules": ""},
        "mgr": {"mgr module path": module_path,
                "mgr disabled modules": ",".join(_modules(module_path))},
    }


def start_mgr(cluster, extra_args: list[str] | None = None) -> Daemon:
    """Create mgr.x's key (first start only) and start ``ceph-mgr``; does not wait.

    ``cluster`` is the :class:`~tcmu_rbd_lab.ceph.CephCluster` (its ``admin``,
    ``create_key``, ``base_dir``, ``conf_path``, ``env()``, ``die_with_parent``)."""
    if shutil.which("ceph-mgr") is None:
        raise CephClusterError("ceph-mgr is not installed (Debian package ceph-mgr: "
                               "run scripts/setup)")
    d = Path(cluster.base_dir)
    data = d / "mgr" / f"ceph-{MGR_ID}"
    if not data.exists():
        data.mkdir(parents=True)
        # keyring/ceph.mgr.x.keyring: the conf's "keyring = .../$cluster.$name.keyring"
        cluster.create_key(f"mgr.{MGR_ID}", MGR_CAPS)
        # the always-on modules it does not load (see the module doc); sticky: the
        # check is not raised yet
        cluster.admin.mon_command({"prefix": "health mute", "code": "MGR_MODULE_ERROR",
                                   "sticky": True}, cluster.timeout)
    return Daemon(f"ceph-mgr (mgr.{MGR_ID})",
                  ["ceph-mgr", "-f", "-c", cluster.conf_path, "-i", MGR_ID,
                   "--mgr-data", str(data)] + list(extra_args or []),
                  d / "log" / f"ceph-mgr.{MGR_ID}.log",
                  d / "log" / f"mgr.{MGR_ID}.stderr", cluster.env(),
                  cluster.die_with_parent)


def wait_mgr_available(cluster, mgr: Daemon, timeout: float) -> None:
    """Until ``ceph mgr stat`` (through ``cluster.admin``) names mgr.x active and
    available (CephClusterError with the mgr's log when it exits or ``timeout``
    seconds pass)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if mgr.poll() is not None:
            raise CephClusterError(mgr.describe_failure("exited during start-up"))
        try:
            st = cluster.admin.mon_json({"prefix": "mgr stat"}, 60)
            if st.get("available") and st.get("active_name") == MGR_ID:
                return
            last = json.dumps(st)
        except CephClusterError as e:
            last = str(e)[-500:]
        if time.monotonic() > deadline:
            raise CephClusterError(mgr.describe_failure(
                f"not available after {timeout:.0f}s (last `ceph mgr stat`: {last})"))
        time.sleep(0.2)


def _mgr_json(cluster, *args: str, timeout: float) -> dict:
    # without a mgr, `ceph service ...` would wait for one until the timeout
    if f"mgr.{MGR_ID}" not in cluster.pids:
        raise CephClusterError("the service map needs a running mgr: start the cluster "
                               "with CephCluster(mgr=True) or `ceph up --mgr`")
    r = cluster.run("ceph", *args, "--format", "json", timeout=timeout)
    try:
        out = json.loads(r.stdout or "{}")
    except ValueError:
        raise CephClusterError(f"`ceph {' '.join(args)}` printed no JSON: "
                               f"{r.stdout.strip()[:300]!r}") from None
    if not isinstance(out, dict):
        raise CephClusterError(f"`ceph {' '.join(args)}` printed {type(out).__name__}, "
                               f"not a JSON object")
    return out


def service_status(cluster, timeout: float = 60.0) -> dict:
    """``ceph service status``: {service: {daemon: {"status_stamp", "last_beacon",
    "status": {key: value}}}} (metadata is in :func:`service_dump`)."""
    return _mgr_json(cluster, "service", "status", timeout=timeout)


def service_dump(cluster, timeout: float = 60.0) -> dict:
    """``ceph service dump``: the service map, {"epoch", "modified", "services":
    {service: {"daemons": {"summary": str, daemon: {"gid", "addr", "metadata",
    "start_stamp", ...}}}}}."""
    return _mgr_json(cluster, "service", "dump", timeout=timeout)
