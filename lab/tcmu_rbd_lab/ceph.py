"""A throwaway single-node Ceph cluster (one mon, one OSD, no mgr) on 127.0.0.1.

Here: :class:`CephCluster` (keyrings, mon, OSD and pool ``rbd`` brought up and
torn down, the commands run against it, OSD faults) and the ``up``/``down`` CLI.
Not here: ceph.conf's text, ports, the bluestore block device, the state file and
``down`` itself (ceph_setup.py); starting and stopping processes (process.py).

One implementation for the tests, benchmarks, the demo and the VM lab.  Everything
writable lives under ``base_dir`` (default: a fresh directory under /tmp), so it also
runs inside a QEMU/TCG guest whose root filesystem is read-only.

    with CephCluster() as ceph:
        ceph.create_image("img0", 256 << 20)
        subprocess.run(["rbd", "ls"], env=ceph.env())

Objectstores:
  memstore   (default) fast, RAM-backed, sparse.  Data does NOT survive stop_osd()
             (SIGKILL); it would only survive a clean shutdown, which dumps every
             object to disk (slow), so we never do that.
  bluestore  data survives stop_osd()/start_osd().  Its block device needs O_DIRECT:
             a sparse file where base_dir's filesystem has it (ext4/xfs), else a loop
             device over one (tmpfs /tmp in the TCG guest, 9p; needs root).  Force
             one with ``bluestore_block="file"|"loop"``.

CLI (used by the VM harness and the demo):
    python -m tcmu_rbd_lab.ceph up --dir D [--objectstore bluestore]
    python -m tcmu_rbd_lab.ceph down --dir D
``up`` leaves the daemons running and writes D/cluster.json (pids, loop devices,
ports); ``down`` reads it, kills exactly those pids and removes D.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Iterable, Mapping

from .ceph_setup import (
    MON_ID, STATE_FILE, CephClusterError, attach_loop, ceph_conf_text, detach_loop, down,
    pick_port_pair, supports_o_direct, write_state,
)
from .process import Daemon, log_tail

__all__ = ["CephCluster", "CephClusterError", "DEFAULT_IMAGE_FEATURES"]

DEFAULT_IMAGE_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff",
                          "deep-flatten")

_live: "weakref.WeakSet[CephCluster]" = weakref.WeakSet()
_live_lock = threading.Lock()


class CephCluster:
    """One mon (``a``) and one OSD (``0``) on 127.0.0.1 with cephx on; pool ``rbd``.

    Parameters:
      base_dir          where everything goes; created if missing, must be empty or
                        absent. Default: a fresh ``tempfile.mkdtemp()`` under /tmp.
      objectstore       "memstore" (RAM, lost on stop_osd) or "bluestore" (survives).
      osd_memory_bytes  memory the OSD may use for data: memstore's capacity
                        (``memstore device bytes``, sparse, grows as written) or
                        bluestore's ``osd_memory_target`` (at least 896 MiB).
      store_bytes       bluestore block device size (sparse file). Default 8 GiB.
      bluestore_block   "auto" | "file" | "loop" (see module doc).
      timeout           seconds to wait for each daemon / readiness step. TCG is ~10x
                        slower than native: the default 300 s covers it.
      conf_overrides    {section: {option: value}} merged into ceph.conf.
      daemon_args       {"mon"|"osd": [extra argv]} appended when starting a daemon
                        (not for mkfs); used by the failure-path test.
      pg_num            PGs of pool ``rbd``.
      remove_on_stop    remove base_dir in stop() (default True).
      verbose           print progress and the start time to stderr.
      die_with_parent   daemons get SIGKILL when this process dies, even by SIGKILL
                        (PR_SET_PDEATHSIG; only for daemons started from the main
                        thread). The CLI's ``up`` turns it off. Besides, an atexit hook
                        stops every cluster not detached.
    """

    def __init__(self, base_dir: str | os.PathLike | None = None,
                 objectstore: str = "memstore", osd_memory_bytes: int = 4 << 30, *,
                 store_bytes: int = 8 << 30, bluestore_block: str = "auto",
                 timeout: float = 300.0,
                 conf_overrides: Mapping[str, Mapping[str, object]] | None = None,
                 daemon_args: Mapping[str, list[str]] | None = None,
                 pg_num: int = 16, remove_on_stop: bool = True, verbose: bool = True,
                 die_with_parent: bool = True):
        if objectstore not in ("memstore", "bluestore"):
            raise ValueError(f"objectstore must be 'memstore' or 'bluestore', "
                             f"not {objectstore!r}")
        if bluestore_block not in ("auto", "file", "loop"):
            raise ValueError("bluestore_block must be 'auto', 'file' or 'loop'")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.objectstore = objectstore
        self.osd_memory_bytes = int(osd_memory_bytes)
        self.store_bytes = int(store_bytes)
        self.bluestore_block = bluestore_block
        self.timeout = float(timeout)
        self.conf_overrides = {k: dict(v) for k, v in (conf_overrides or {}).items()}
        self.daemon_args = {k: list(v) for k, v in (daemon_args or {}).items()}
        self.pg_num = pg_num
        self.remove_on_stop = remove_on_stop
        self.verbose = verbose
        self.die_with_parent = die_with_parent
        self.fsid = str(uuid.uuid4())
        self.mon_ports: tuple[int, int] | None = None
        self.osd_id: int | None = None
        self.osd_uuid: str | None = None
        self.loop_device: str | None = None
        self.block_mode: str | None = None  # "file" | "loop" for bluestore
        self.start_seconds: float | None = None
        self._mon: Daemon | None = None
        self._osd: Daemon | None = None
        self._started = False
        self._detached = False

    # ------------------------------------------------------------------ paths
    @property
    def conf_path(self) -> str:
        return str(self._dir / "ceph.conf")

    @property
    def admin_keyring(self) -> str:
        return str(self._dir / "keyring" / "ceph.client.admin.keyring")

    @property
    def mon_host(self) -> str:
        assert self.mon_ports
        v2, v1 = self.mon_ports
        return f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]"

    @property
    def state_path(self) -> str:
        return str(self._dir / STATE_FILE)

    @property
    def log_dir(self) -> str:
        return str(self._dir / "log")

    @property
    def pids(self) -> dict[str, int]:
        out = {}
        if self._mon and self._mon.poll() is None:
            out["mon.a"] = self._mon.pid
        if self._osd and self._osd.poll() is None:
            out[f"osd.{self.osd_id}"] = self._osd.pid
        return out

    @property
    def _dir(self) -> Path:
        if self.base_dir is None:
            raise CephClusterError("cluster not started (no base_dir yet)")
        return self.base_dir

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (ceph/rbd/rados CLI, librados users)."""
        env = dict(os.environ)
        env["CEPH_CONF"] = self.conf_path
        # no CEPH_KEYRING: it would override the daemons' own keyrings; the conf's
        # "keyring = <dir>/keyring/$cluster.$name.keyring" finds client.admin's
        for k in ("CEPH_ARGS", "CEPH_KEYRING"):
            env.pop(k, None)
        return env

    def rados_kwargs(self) -> dict:
        """Keyword arguments for ``rados.Rados(**kw)`` as client.admin."""
        return {"conffile": self.conf_path, "rados_id": "admin"}

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> "CephCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[ceph] {msg}", file=sys.stderr, flush=True)

    def start(self) -> "CephCluster":
        if self._started:
            return self
        t0 = time.monotonic()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tcmu-rbd-ceph-"))
        self.base_dir = self.base_dir.resolve() if self.base_dir.exists() else self.base_dir
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if any(p.name != "lost+found" for p in self.base_dir.iterdir()):
            raise CephClusterError(f"{self.base_dir} is not empty: give a fresh directory "
                                   f"(a leftover cluster there? run `python -m "
                                   f"tcmu_rbd_lab.ceph down --dir {self.base_dir}`)")
        self.base_dir = self.base_dir.resolve()
        with _live_lock:
            _live.add(self)
        self._started = True
        try:
            for sub in ("run", "log", "keyring", "mon", "osd", "tmp"):
                (self._dir / sub).mkdir()
            self._start_mon()
            self._log(f"mon up after {time.monotonic() - t0:.1f}s")
            self._create_osd()
            self._start_osd_daemon()
            self._create_pool()
            self.start_seconds = time.monotonic() - t0
            self._write_state()
            self._log(f"cluster ready in {self.start_seconds:.1f}s "
                      f"({self.objectstore}"
                      f"{'/' + self.block_mode if self.block_mode else ''}, "
                      f"mon {self.mon_host}, dir {self.base_dir})")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the daemons (SIGKILL), detach the loop device, remove base_dir."""
        for d in (self._osd, self._mon):
            if d is not None:
                d.kill(signal.SIGKILL)
        self._osd = self._mon = None
        self._detach_loop()
        if self.base_dir is not None and self.remove_on_stop and self._started:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._started = False
        with _live_lock:
            _live.discard(self)

    def detach(self) -> None:
        """Leave the daemons running past interpreter exit (the CLI's ``up``)."""
        self._detached = True
        with _live_lock:
            _live.discard(self)

    # --------------------------------------------------------------- commands
    def run(self, *args: str, timeout: float | None = None, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run ceph/rbd/rados/ceph-authtool... with this cluster's conf as client.admin.

        ``run("rbd", "ls")``; if the first argument is not a program name known to
        need a conf, it is passed as-is. Output is text; raises CephClusterError with
        stderr on failure when check is true.
        """
        argv = list(args)
        if argv and argv[0] in ("ceph", "rbd", "rados"):
            argv[1:1] = ["-c", self.conf_path, "--id", "admin",
                         "--keyring", self.admin_keyring]
            if argv[0] == "ceph":
                argv[1:1] = ["--connect-timeout", str(int(timeout or self.timeout))]
        t = timeout if timeout is not None else self.timeout
        try:
            cp = subprocess.run(argv, env=self.env(), capture_output=True,
                                timeout=t, input=input)
        except subprocess.TimeoutExpired as e:
            raise CephClusterError(f"`{' '.join(argv)}` timed out after {t:.0f}s; "
                                   f"stderr: {(e.stderr or b'').decode(errors='replace')}"
                                   + self._daemon_report()) from None
        res = subprocess.CompletedProcess(cp.args, cp.returncode,
                                          cp.stdout.decode(errors="replace"),
                                          cp.stderr.decode(errors="replace"))
        if check and res.returncode != 0:
            raise CephClusterError(f"`{' '.join(argv)}` failed with exit status "
                                   f"{res.returncode}: {res.stderr.strip()[-2000:]}")
        return res

    def create_image(self, name: str, size: int, pool: str = "rbd",
                     namespace: str | None = None,
                     features: Iterable[str] | None = DEFAULT_IMAGE_FEATURES,
                     object_size: int | None = None) -> str:
        """Create an RBD image of ``size`` bytes; returns its spec pool[/ns]/name.

        features=None gives Ceph's defaults; an empty tuple only layering."""
        spec = f"{pool}/{namespace}/{name}" if namespace else f"{pool}/{name}"
        argv = ["rbd", "create", spec, "--size", f"{int(size)}B"]
        if features is not None:
            feats = list(features) or ["layering"]
            argv += ["--image-feature", ",".join(feats)]
        if object_size:
            argv += ["--object-size", f"{int(object_size)}B"]
        self.run(*argv)
        return spec

    def remove_image(self, name: str, pool: str = "rbd",
                     namespace: str | None = None) -> None:
        spec = f"{pool}/{namespace}/{name}" if namespace else f"{pool}/{name}"
        # snapshots first (a protected snapshot would block removal)
        self.run("rbd", "snap", "purge", spec, check=False)
        self.run("rbd", "rm", "--no-progress", spec)

    def create_namespace(self, pool: str, ns: str) -> None:
        self.run("rbd", "namespace", "create", f"{pool}/{ns}")

    def create_pool(self, pool: str, pg_num: int = 8, rbd_init: bool = True) -> None:
        self.run("ceph", "osd", "pool", "create", pool, str(pg_num), str(pg_num))
        if rbd_init:
            self.run("rbd", "pool", "init", pool)

    def create_client(self, name: str, caps: Mapping[str, str] | None = None) -> str:
        """Create cephx user client.<name> with ``caps`` ({"mon": "profile rbd", "osd":
        "profile rbd pool=rbd"}; None or {} = no caps at all) and return the path of
        its own keyring (also found by ``id=<name>`` alone through the conf's
        ``keyring = .../$cluster.$name.keyring``)."""
        if name.startswith("client."):
            name = name[len("client."):]
        path = self._dir / "keyring" / f"ceph.client.{name}.keyring"
        self.run("ceph-authtool", "--create-keyring", str(path), "--gen-key",
                 "-n", f"client.{name}")
        argv = ["ceph", "auth", "add", f"client.{name}", "-i", str(path)]
        for daemon, cap in (caps or {}).items():
            argv += [daemon, cap]
        self.run(*argv)
        for daemon, cap in (caps or {}).items():
            self.run("ceph-authtool", str(path), "-n", f"client.{name}",
                     "--cap", daemon, cap)
        os.chmod(path, 0o600)
        return str(path)

    # --------------------------------------------------------------- OSD faults
    def stop_osd(self) -> None:
        """SIGKILL the OSD (a crash: memstore loses everything, bluestore keeps
        what was acknowledged)."""
        if self._osd is None:
            return
        self._osd.kill(signal.SIGKILL)
        self._osd = None
        self._write_state()

    def start_osd(self, wait: bool = True) -> None:
        """Restart the OSD on the same store; wait until a ``rados put`` succeeds."""
        if self._osd is not None and self._osd.poll() is None:
            return
        if self.objectstore == "memstore":
            self._log("warning: memstore OSD restarted after SIGKILL: data is gone")
        self._start_osd_daemon(wait=wait)
        self._write_state()

    @property
    def osd_running(self) -> bool:
        return self._osd is not None and self._osd.poll() is None

    # --------------------------------------------------------------- internals
    def _daemon_report(self) -> str:
        out = []
        for d in (self._mon, self._osd):
            if d is not None:
                out.append("\n" + d.describe_failure("state"))
        return "".join(out)

    def _write_conf(self) -> None:
        Path(self.conf_path).write_text(ceph_conf_text(
            self._dir, fsid=self.fsid, mon_host=self.mon_host, objectstore=self.objectstore,
            osd_memory_bytes=self.osd_memory_bytes, store_bytes=self.store_bytes,
            block_mode=self.block_mode, loop_device=self.loop_device,
            overrides=self.conf_overrides))

    def _start_mon(self) -> None:
        d = self._dir
        kr = d / "keyring"
        mon_kr = kr / "mon.keyring"
        for attempt in range(3):
            self.mon_ports = pick_port_pair()
            self._write_conf()
            if attempt == 0:
                self.run("ceph-authtool", "--create-keyring", str(mon_kr), "--gen-key",
                         "-n", "mon.", "--cap", "mon", "allow *")
                self.run("ceph-authtool", "--create-keyring", self.admin_keyring,
                         "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *",
                         "--cap", "osd", "allow *", "--cap", "mds", "allow *",
                         "--cap", "mgr", "allow *")
                self.run("ceph-authtool", str(mon_kr), "--import-keyring",
                         self.admin_keyring)
            monmap = d / "tmp" / "monmap"
            self.run("monmaptool", "--create", "--clobber", "--fsid", self.fsid,
                     "--addv", MON_ID, self.mon_host, str(monmap))
            shutil.rmtree(d / "mon" / f"ceph-{MON_ID}", ignore_errors=True)
            self.run("ceph-mon", "-c", self.conf_path, "--mkfs", "-i", MON_ID,
                     "--monmap", str(monmap), "--keyring", str(mon_kr))
            log = d / "log" / f"ceph-mon.{MON_ID}.log"
            self._mon = Daemon(f"ceph-mon (mon.{MON_ID})",
                               ["ceph-mon", "-f", "-c", self.conf_path, "-i", MON_ID]
                               + self.daemon_args.get("mon", []),
                               log, d / "log" / f"mon.{MON_ID}.stderr", self.env(),
                               self.die_with_parent)
            try:
                self._wait_mon()
                return
            except CephClusterError as e:
                tail = log_tail(log) + log_tail(self._mon.stderr_path)
                if "Address already in use" in tail and attempt < 2:
                    self._log(f"mon port clash on {self.mon_ports}, retrying")
                    self._mon.kill()
                    continue
                raise e

    def _wait_mon(self) -> None:
        deadline = time.monotonic() + self.timeout
        assert self._mon is not None
        time.sleep(0.2)
        while True:
            if self._mon.poll() is not None:
                raise CephClusterError(self._mon.describe_failure("exited during start-up"))
            r = subprocess.run(["ceph", "-c", self.conf_path, "--id", "admin",
                                "--keyring", self.admin_keyring, "--connect-timeout", "2",
                                "mon", "stat"], env=self.env(), capture_output=True,
                               timeout=60)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise CephClusterError(
                    self._mon.describe_failure(
                        f"not answering after {self.timeout:.0f}s (last `ceph mon stat`: "
                        f"{r.stderr.decode(errors='replace').strip()[-500:]})"))
            time.sleep(0.5)

    def _prepare_bluestore_block(self) -> None:
        osd_dir = self._dir / "osd"
        mode = self.bluestore_block
        if mode == "auto":
            mode = "file" if supports_o_direct(osd_dir) else "loop"
        self.block_mode = mode
        if mode == "loop":
            self.loop_device = attach_loop(osd_dir / "block.img", self.store_bytes)
            self._write_state()
        self._write_conf()

    def _detach_loop(self) -> None:
        if self.loop_device:
            detach_loop(self.loop_device)
            self.loop_device = None

    def _create_osd(self) -> None:
        if self.objectstore == "bluestore":
            self._prepare_bluestore_block()
        self.osd_uuid = str(uuid.uuid4())
        out = self.run("ceph", "osd", "new", self.osd_uuid).stdout.strip()
        self.osd_id = int(out.splitlines()[-1])
        osd_dir = self._dir / "osd" / f"ceph-{self.osd_id}"
        osd_dir.mkdir()
        kr = osd_dir / "keyring"
        self.run("ceph-authtool", "--create-keyring", str(kr), "--gen-key",
                 "-n", f"osd.{self.osd_id}")
        self.run("ceph", "auth", "add", f"osd.{self.osd_id}", "osd", "allow *",
                 "mon", "allow profile osd", "-i", str(kr))
        try:
            self.run("ceph-osd", "-c", self.conf_path, "-i", str(self.osd_id), "--mkfs",
                     "--osd-uuid", self.osd_uuid, timeout=self.timeout)
        except CephClusterError as e:
            raise CephClusterError(
                f"ceph-osd --mkfs (osd.{self.osd_id}) failed: {e}\n--- tail of "
                f"osd log ---\n{log_tail(self._dir / 'log' / f'ceph-osd.{self.osd_id}.log')}"
            ) from None

    def _start_osd_daemon(self, wait: bool = True) -> None:
        d = self._dir
        n = self.osd_id
        self._osd = Daemon(f"ceph-osd (osd.{n})",
                           ["ceph-osd", "-f", "-c", self.conf_path, "-i", str(n)]
                           + self.daemon_args.get("osd", []),
                           d / "log" / f"ceph-osd.{n}.log",
                           d / "log" / f"osd.{n}.stderr", self.env(),
                           self.die_with_parent)
        if wait:
            self._wait_osd_up()

    def _check_daemons(self, what: str) -> None:
        for dmn in (self._mon, self._osd):
            if dmn is not None and dmn.poll() is not None:
                raise CephClusterError(dmn.describe_failure(f"exited while {what}"))

    def _wait_osd_up(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self._check_daemons("waiting for the OSD to come up")
            r = self.run("ceph", "osd", "dump", "--format", "json", check=False,
                         timeout=60)
            if r.returncode == 0:
                osds = json.loads(r.stdout).get("osds", [])
                me = [o for o in osds if o.get("osd") == self.osd_id]
                if me and me[0].get("up") and me[0].get("uuid") == self.osd_uuid:
                    # up in the map; after a restart make sure it is the new process
                    if self._probe_write(timeout=10):
                        return
            if time.monotonic() > deadline:
                assert self._osd is not None
                raise CephClusterError(self._osd.describe_failure(
                    f"not up/serving I/O after {self.timeout:.0f}s"))
            time.sleep(0.5)

    def _probe_write(self, timeout: float = 10) -> bool:
        # only meaningful once pool rbd exists
        r = self.run("ceph", "osd", "pool", "ls", check=False, timeout=60)
        if r.returncode != 0 or "rbd" not in r.stdout.split():
            return True
        data = f"probe {time.time()}".encode()
        r = self.run("rados", "-p", "rbd", "--rados-osd-op-timeout", str(int(timeout)),
                     "put", "tcmu-rbd-readiness-probe", "-", input=data, check=False,
                     timeout=timeout + 30)
        return r.returncode == 0

    def _create_pool(self) -> None:
        self.run("ceph", "osd", "pool", "create", "rbd", str(self.pg_num),
                 str(self.pg_num))
        deadline = time.monotonic() + self.timeout
        while not self._probe_write(timeout=10):
            self._check_daemons("waiting for pool rbd to accept writes")
            if time.monotonic() > deadline:
                raise CephClusterError("pool rbd did not accept a `rados put` within "
                                       f"{self.timeout:.0f}s" + self._daemon_report())
            time.sleep(0.5)
        self.run("rados", "-p", "rbd", "rm", "tcmu-rbd-readiness-probe", check=False)
        self.run("rbd", "pool", "init", "rbd")

    def _write_state(self) -> None:
        if self.base_dir is None or not self.base_dir.exists():
            return
        state = {
            "base_dir": str(self.base_dir), "conf": self.conf_path,
            "admin_keyring": self.admin_keyring, "fsid": self.fsid,
            "mon_host": self.mon_host if self.mon_ports else None,
            "objectstore": self.objectstore, "block_mode": self.block_mode,
            "loop_device": self.loop_device, "osd_id": self.osd_id,
            "pids": self.pids, "log_dir": self.log_dir,
            "start_seconds": self.start_seconds,
        }
        write_state(self._dir, state)


@atexit.register
def _cleanup_at_exit() -> None:
    with _live_lock:
        clusters = [c for c in _live if not c._detached]
    for c in clusters:
        try:
            c.stop()
        except Exception:
            pass


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcmu_rbd_lab.ceph",
                                 description="throwaway single-node Ceph cluster")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a cluster in DIR and leave it running")
    up.add_argument("--dir", required=True)
    up.add_argument("--objectstore", choices=["memstore", "bluestore"],
                    default="memstore")
    up.add_argument("--bluestore-block", choices=["auto", "file", "loop"], default="auto")
    up.add_argument("--osd-memory-bytes", type=int, default=4 << 30)
    up.add_argument("--timeout", type=float, default=300.0)
    up.add_argument("--image", action="append", default=[], metavar="NAME=SIZE",
                    help="also create image NAME of SIZE bytes (repeatable)")
    dn = sub.add_parser("down", help="stop the cluster in DIR and remove DIR")
    dn.add_argument("--dir", required=True)
    dn.add_argument("--keep", action="store_true", help="do not remove DIR")
    a = ap.parse_args(argv)
    if a.cmd == "up":
        c = CephCluster(a.dir, objectstore=a.objectstore,
                        osd_memory_bytes=a.osd_memory_bytes, die_with_parent=False,
                        bluestore_block=a.bluestore_block, timeout=a.timeout)
        try:
            c.start()
            for spec in a.image:
                name, _, size = spec.partition("=")
                c.create_image(name, int(size))
        except CephClusterError as e:
            print(f"ceph up failed: {e}", file=sys.stderr)
            return 1
        c.detach()
        c._write_state()
        print(f"conf={c.conf_path}")
        print(f"keyring={c.admin_keyring}")
        print(f"state={c.state_path}")
        for name, pid in c.pids.items():
            print(f"pid.{name}={pid}")
        print(f"pidfile.mon.a={c._dir / 'run' / 'ceph-mon.a.pid'}")
        print(f"pidfile.osd.{c.osd_id}={c._dir / 'run' / f'ceph-osd.{c.osd_id}.pid'}")
        print(f"start_seconds={c.start_seconds:.1f}")
        return 0
    for line in down(a.dir, remove=not a.keep):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
