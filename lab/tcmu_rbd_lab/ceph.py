"""A throwaway single-node Ceph cluster (one mon, one OSD, optionally a mgr) on one
local IPv4 address (127.0.0.1 unless told otherwise).

Here: :class:`CephCluster` (keyrings, mon, OSD and pool ``rbd`` brought up and
torn down, the commands run against it, OSD faults) and the ``up``/``down`` CLI.
Not here: ceph.conf's text, ports, the bluestore block device, the state file and
``down`` itself (ceph_setup.py); the mgr and the service map (ceph_mgr.py); the
in-process client.admin every command after the mon answers goes through
(ceph_admin.py); starting and stopping processes (process.py).

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
    python -m tcmu_rbd_lab.ceph up --dir D [--objectstore bluestore] [--mgr]
                                   [--public-addr IP] [--image POOL/NAME=SIZE]...
    python -m tcmu_rbd_lab.ceph down --dir D
``up`` leaves the daemons running and writes D/cluster.json (pids, loop devices,
ports); ``--image`` creates an image (SIZE as ``rbd create --size`` takes it; one
already there with that size is fine); ``down`` kills exactly the recorded pids and
removes D.
"""

from __future__ import annotations

import atexit
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

import rados

from .ceph_admin import AdminClient
from .ceph_mgr import MGR_ID, mgr_conf, service_dump, service_status, start_mgr, \
    wait_mgr_available
from .ceph_setup import (
    MON_ID, STATE_FILE, CephClusterError, bluestore_block, ceph_conf_text,
    check_public_addr, cli_parser, detach_loop, down, mon_addrs, pick_port_pair,
    up_report, write_keyring, write_state,
)
from .process import Daemon, log_tail

__all__ = ["CephCluster", "CephClusterError", "DEFAULT_IMAGE_FEATURES"]

DEFAULT_IMAGE_FEATURES = ("layering", "exclusive-lock", "object-map", "fast-diff",
                          "deep-flatten")

_live: "weakref.WeakSet[CephCluster]" = weakref.WeakSet()
_live_lock = threading.Lock()


class CephCluster:
    """One mon (``a``), one OSD (``0``) and with ``mgr=True`` a mgr (``x``) on
    ``public_addr`` with cephx on; pool ``rbd``.

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
      public_addr       the one IPv4 address of this host the daemons bind and the
                        monmap names (CephClusterError at once if it is not local).
      mgr               also run a ceph-mgr loading no Python module (ceph_mgr.py),
                        for the service map: :meth:`service_status`, :meth:`service_dump`.
      daemon_args       {"mon"|"osd"|"mgr": [extra argv]} appended when starting a daemon
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
                 die_with_parent: bool = True, mgr: bool = False,
                 public_addr: str = "127.0.0.1"):
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
        self.mgr = mgr
        self.public_addr = check_public_addr(public_addr)
        self.fsid = str(uuid.uuid4())
        self.mon_ports: tuple[int, int] | None = None
        self.osd_id: int | None = None
        self.osd_uuid: str | None = None
        self.loop_device: str | None = None
        self.block_mode: str | None = None  # "file" | "loop" for bluestore
        self.start_seconds: float | None = None
        self._mon: Daemon | None = None
        self._osd: Daemon | None = None
        self._mgr: Daemon | None = None
        self._admin: AdminClient | None = None
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
        return mon_addrs(self.public_addr, self.mon_ports)

    @property
    def state_path(self) -> str:
        return str(self._dir / STATE_FILE)

    @property
    def log_dir(self) -> str:
        return str(self._dir / "log")

    @property
    def pids(self) -> dict[str, int]:
        return {n: d.pid for n, d in self._daemons().items() if d.poll() is None}

    def _daemons(self) -> dict[str, Daemon]:
        """Name -> Daemon of those started (dead or alive): mon, OSD, mgr."""
        ds = {f"mon.{MON_ID}": self._mon, f"osd.{self.osd_id}": self._osd,
              f"mgr.{MGR_ID}": self._mgr}
        return {n: d for n, d in ds.items() if d is not None}

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

    @property
    def admin(self) -> AdminClient:
        """The connected in-process client.admin (ceph_admin.py), from when the mon
        answers until stop() or detach()."""
        if self._admin is None:
            raise CephClusterError("cluster not started (no admin client): start() it")
        return self._admin

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
            if self.mgr:  # it starts while the OSD does
                self._mgr = start_mgr(self, self.daemon_args.get("mgr"))
            self._create_osd()
            self._start_osd_daemon()
            self._create_pool()
            if self._mgr is not None:
                wait_mgr_available(self, self._mgr, self.timeout)
                self._log(f"mgr available after {time.monotonic() - t0:.1f}s")
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
        for d in reversed(self._daemons().values()):
            d.kill(signal.SIGKILL)
        self._mgr = self._osd = self._mon = None
        self._close_admin()
        self._detach_loop()
        if self.base_dir is not None and self.remove_on_stop and self._started:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._started = False
        with _live_lock:
            _live.discard(self)

    def detach(self) -> None:
        """Leave the daemons running past interpreter exit (the CLI's ``up``)."""
        self._detached = True
        self._close_admin()
        with _live_lock:
            _live.discard(self)

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

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
        self.admin.create_image(pool, namespace, name, size, features, object_size)
        return f"{pool}/{namespace}/{name}" if namespace else f"{pool}/{name}"

    def remove_image(self, name: str, pool: str = "rbd",
                     namespace: str | None = None) -> None:
        spec = f"{pool}/{namespace}/{name}" if namespace else f"{pool}/{name}"
        # snapshots first (a protected snapshot would block removal)
        self.run("rbd", "snap", "purge", spec, check=False)
        self.run("rbd", "rm", "--no-progress", spec)

    def create_namespace(self, pool: str, ns: str) -> None:
        self.run("rbd", "namespace", "create", f"{pool}/{ns}")

    def create_pool(self, pool: str, pg_num: int = 8, rbd_init: bool = True) -> None:
        self.admin.create_pool(pool, pg_num, self.timeout)
        if rbd_init:
            self.admin.pool_init(pool)

    def create_client(self, name: str, caps: Mapping[str, str] | None = None) -> str:
        """Create cephx user client.<name> with ``caps`` ({"mon": "profile rbd", "osd":
        "profile rbd pool=rbd"}; None or {} = no caps at all) and return the path of
        its own keyring (also found by ``id=<name>`` alone through the conf's
        ``keyring = .../$cluster.$name.keyring``)."""
        return self.create_key(f"client.{name.removeprefix('client.')}", caps)

    def create_key(self, entity: str, caps: Mapping[str, str] | None = None) -> str:
        """A new key for ``entity`` (client.x, mgr.x) with ``caps``, in the cluster's
        auth database and in keyring/ceph.<entity>.keyring (mode 0600): its path."""
        path = self._dir / "keyring" / f"ceph.{entity}.keyring"
        # the key alone in the file, the caps in the command: a cap may hold quotes
        # ('allow command "config-key get"'), which a keyring's quoted value cannot
        write_keyring(path, {entity: {}})
        self.admin.auth_add(entity, path, caps or {}, self.timeout)
        return str(path)

    def service_status(self) -> dict:
        """``ceph service status`` (needs ``mgr=True``): {service: {daemon: {"status":
        {key: value}, "status_stamp", "last_beacon"}}}."""
        return service_status(self)

    def service_dump(self) -> dict:
        """``ceph service dump`` (needs ``mgr=True``): the service map, each daemon's
        metadata under ["services"][service]["daemons"][daemon]["metadata"]."""
        return service_dump(self)

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
        """Restart the OSD on the same store; wait until the new process is up and
        pool rbd takes a write."""
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
        return "".join("\n" + d.describe_failure("state") for d in self._daemons().values())

    def _write_conf(self) -> None:
        overrides = mgr_conf() if self.mgr else {}
        for sec, opts in self.conf_overrides.items():
            overrides[sec] = {**overrides.get(sec, {}), **opts}
        Path(self.conf_path).write_text(ceph_conf_text(
            self._dir, fsid=self.fsid, mon_host=self.mon_host, objectstore=self.objectstore,
            osd_memory_bytes=self.osd_memory_bytes, store_bytes=self.store_bytes,
            block_mode=self.block_mode, loop_device=self.loop_device,
            overrides=overrides, public_addr=self.public_addr))

    def _start_mon(self) -> None:
        d = self._dir
        kr = d / "keyring"
        mon_kr = kr / "mon.keyring"
        for attempt in range(3):
            self.mon_ports = pick_port_pair(addr=self.public_addr)
            self._write_conf()
            if attempt == 0:
                admin = {"client.admin": {d: "allow *" for d in ("mon", "osd", "mds",
                                                                  "mgr")}}
                key = write_keyring(self.admin_keyring, admin)
                write_keyring(mon_kr, {"mon.": {"mon": "allow *"}, **admin}, key)
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
        """Until client.admin connects (2 s an attempt, as ``ceph --connect-timeout 2``):
        the client every later command goes through."""
        deadline = time.monotonic() + self.timeout
        assert self._mon is not None
        time.sleep(0.2)
        while True:
            if self._mon.poll() is not None:
                raise CephClusterError(self._mon.describe_failure("exited during start-up"))
            try:
                self._admin = AdminClient(self.conf_path, self.admin_keyring, 2,
                                          self.timeout, self._daemon_report)
                return
            except rados.Error as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise CephClusterError(self._mon.describe_failure(
                    f"not answering after {self.timeout:.0f}s (last connection "
                    f"attempt: {last[-500:]})"))
            time.sleep(0.2)

    def _prepare_bluestore_block(self) -> None:
        self.block_mode, self.loop_device = bluestore_block(
            self._dir / "osd", self.bluestore_block, self.store_bytes)
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
        self.osd_id = int(self.admin.mon_json({"prefix": "osd new", "uuid": self.osd_uuid},
                                              self.timeout)["osdid"])
        osd_dir = self._dir / "osd" / f"ceph-{self.osd_id}"
        osd_dir.mkdir()
        kr = osd_dir / "keyring"
        write_keyring(kr, {f"osd.{self.osd_id}": {}})
        self.admin.auth_add(f"osd.{self.osd_id}", kr,
                            {"osd": "allow *", "mon": "allow profile osd"}, self.timeout)
        try:
            self.run("ceph-osd", "-c", self.conf_path, "-i", str(self.osd_id), "--mkfs",
                     "--osd-uuid", self.osd_uuid, timeout=self.timeout)
        except CephClusterError as e:
            raise CephClusterError(
                f"ceph-osd --mkfs (osd.{self.osd_id}) failed: {e}\n--- tail of "
                f"osd log ---\n{log_tail(self._dir / 'log' / f'ceph-osd.{self.osd_id}.log')}"
            ) from None

    def _start_osd_daemon(self, wait: bool = True) -> None:
        d, n = self._dir, self.osd_id
        # a killed OSD stays up in the map until its successor boots: wait for that
        before = self.admin.osd_up_since(n, self.osd_uuid, 60)
        self._osd = Daemon(f"ceph-osd (osd.{n})",
                           ["ceph-osd", "-f", "-c", self.conf_path, "-i", str(n)]
                           + self.daemon_args.get("osd", []),
                           d / "log" / f"ceph-osd.{n}.log",
                           d / "log" / f"osd.{n}.stderr", self.env(),
                           self.die_with_parent)
        if wait:
            self._wait_osd_up(before)

    def _check_daemons(self, what: str) -> None:
        for dmn in self._daemons().values():
            if dmn.poll() is not None:
                raise CephClusterError(dmn.describe_failure(f"exited while {what}"))

    def _wait_osd_up(self, before: int) -> None:
        """Until the OSD map has it up since after epoch ``before`` and pool rbd (if
        there yet) takes a write."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._check_daemons("waiting for the OSD to come up")
            if self.admin.osd_up_since(self.osd_id, self.osd_uuid, 60) > before and \
                    self.admin.probe_write("rbd", 10):
                return
            if time.monotonic() > deadline:
                assert self._osd is not None
                raise CephClusterError(self._osd.describe_failure(
                    f"not up/serving I/O after {self.timeout:.0f}s"))
            time.sleep(0.2)

    def _create_pool(self) -> None:
        self.admin.create_pool("rbd", self.pg_num, self.timeout)
        deadline = time.monotonic() + self.timeout
        while not self.admin.probe_write("rbd", 10):
            self._check_daemons("waiting for pool rbd to accept writes")
            if time.monotonic() > deadline:
                raise CephClusterError("pool rbd did not accept a write (the readiness "
                                       f"probe) within {self.timeout:.0f}s"
                                       + self._daemon_report())
            time.sleep(0.2)
        self.admin.remove_probe("rbd")
        self.admin.pool_init("rbd")

    def _write_state(self) -> dict:
        if self.base_dir is None or not self.base_dir.exists():
            return {}
        state = {
            "base_dir": str(self.base_dir), "conf": self.conf_path,
            "admin_keyring": self.admin_keyring, "fsid": self.fsid,
            "mon_host": self.mon_host if self.mon_ports else None,
            "public_addr": self.public_addr,
            "objectstore": self.objectstore, "block_mode": self.block_mode,
            "loop_device": self.loop_device, "osd_id": self.osd_id, "mgr": self.mgr,
            "pids": self.pids, "log_dir": self.log_dir,
            "start_seconds": self.start_seconds,
        }
        write_state(self._dir, state)
        return state


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
    a = cli_parser().parse_args(argv)
    if a.cmd == "up":
        try:
            c = CephCluster(a.dir, objectstore=a.objectstore,
                            osd_memory_bytes=a.osd_memory_bytes, die_with_parent=False,
                            bluestore_block=a.bluestore_block, timeout=a.timeout,
                            mgr=a.mgr, public_addr=a.public_addr)
            c.start()
            made = [(img, c.admin.ensure_image(*img)) for img in a.image]
        except CephClusterError as e:
            print(f"ceph up failed: {e}", file=sys.stderr)
            return 1
        c.detach()
        print(up_report(c._write_state()))
        for (pool, ns, name, size), new in made:
            spec = "/".join(p for p in (pool, ns, name) if p)
            print(f"image.{spec}={size} ({'created' if new else 'there already'})")
        return 0
    for line in down(a.dir, remove=not a.keep):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
