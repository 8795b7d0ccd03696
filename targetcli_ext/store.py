"""The configuration several gateways share, kept in one RADOS object.

Belongs here: :class:`SharedConfig`, a plain value (gateways with portal and TPG tag,
targets with their gateways, ACLs, CHAP user names and LUNs, disks with LUN id, unit
serial, owner gateway and backstore settings) with its JSON form and its validation;
:class:`ConfigStore`, the thin RADOS side: read it, change it under a leased exclusive
lock (re-read, change, ``epoch + 1``, ``write_full`` guarded by the object version,
``epoch`` xattr, unlock, notify), the CHAP secrets in the monitors' config-key store,
an image's size; :class:`ConfigWatcher`, a watch on the object that is set up again
after an error.  Not here: what a gateway builds from the configuration, the edits
the verbs make and their description (topology.py), LIO (sync.py).

CHAP secrets are never in the object (every cephx user that may read the pool could
read them): config-key ``tcmu-rbd/chap/<target>/<initiator>[/mutual]``, passed in
the command's input buffer (never in the command JSON, which the monitors log), and
held in :class:`~.spec.Secret`. rados and rbd are imported on first use.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Callable

from .spec import (
    Defaults, ExtError, Portal, Secret, check_chap_user, check_iqn, check_secret,
    parse_image, parse_portal,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_POOL = "rbd"
DEFAULT_OBJECT = "tcmu-rbd.config"
LOCK_NAME = "tcmu-rbd.config"
DEFAULT_LEASE = 10            # s: a writer that dies holds the lock no longer
DEFAULT_LOCK_WAIT = 30        # s: how long a writer waits for the lock
NOTIFY_TIMEOUT_MS = 3000
SECRET_PREFIX = "tcmu-rbd/chap"
MAX_TAG = 65535               # TPG tags and ALUA group ids are 16 bits

#: a disk's cfgstring options and LUN settings; a target's TPG settings (spec.Defaults)
DISK_OPTIONS = ("osd_op_timeout", "conf", "id", "keyring")
DISK_SETTINGS = ("max_data_area_mb", "hw_max_sectors", "cmd_time_out", "qfull_time_out")
TARGET_SETTINGS = ("cmdsn_depth", "immediate_data", "initial_r2t", "max_burst_length",
                   "first_burst_length", "max_recv_data_segment_length",
                   "max_xmit_data_segment_length")
_GATEWAY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_WWN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class SchemaTooNew(ExtError):
    def __init__(self, where: str, version):
        super().__init__(f"{where} has schema version {version}, newer than this "
                         f"targetcli-rbd's ({SCHEMA_VERSION}): upgrade tcmu-rbd on this "
                         f"host before changing or applying it", "schema-newer")


def check_gateway_name(name: str) -> str:
    if not isinstance(name, str) or not _GATEWAY_RE.match(name):
        raise ExtError(f"gateway name {name!r} must be 1-32 letters, digits, '-' or '_' "
                       f"(no dots: it starts this gateway's backstore names)", "bad-gateway")
    return name


# --------------------------------------------------------------------------- the value

@dataclass
class GatewayEntry:
    portal: Portal
    tag: int                                                    # 1..65535


@dataclass
class ChapEntry:
    """CHAP user names of one ACL; the secrets are in config-key."""

    user: str
    mutual_user: str | None = None


@dataclass
class TargetEntry:
    gateways: list[str] = field(default_factory=list)
    acls: list[str] = field(default_factory=list)
    chap: dict[str, ChapEntry] = field(default_factory=dict)
    luns: dict[int, str] = field(default_factory=dict)          # LUN id -> disk
    settings: dict = field(default_factory=dict)                # of TARGET_SETTINGS


@dataclass
class DiskEntry:
    target: str
    lun: int
    wwn: str
    owner: str
    options: dict = field(default_factory=dict)                 # of DISK_OPTIONS
    settings: dict = field(default_factory=dict)                # of DISK_SETTINGS


def _keys(d, allowed, where: str) -> dict:
    """``d`` when it is a JSON object with only ``allowed`` keys (None: any)."""
    if not isinstance(d, dict):
        raise ExtError(f"{where} must be an object", "bad-config")
    extra = sorted(set(d) - set(allowed)) if allowed is not None else ()
    if extra:
        raise ExtError(f"{where}: unknown key(s) {', '.join(extra)}", "bad-config")
    return d


def _int(v, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ExtError(f"{where} must be an integer {lo}..{hi}, not {v!r}", "bad-config")
    return v


def _entry(cls, d, where: str):
    """A dataclass from a JSON object with only its fields (missing: TypeError)."""
    return cls(**_keys(d, [f.name for f in fields(cls)], where))


@dataclass
class SharedConfig:
    gateways: dict[str, GatewayEntry] = field(default_factory=dict)
    targets: dict[str, TargetEntry] = field(default_factory=dict)
    disks: dict[str, DiskEntry] = field(default_factory=dict)
    version: int = SCHEMA_VERSION
    epoch: int = 0
    created: str = ""
    updated: str = ""

    # -- JSON --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gateways"] = {n: {"portal": str(g.portal), "tag": g.tag}
                         for n, g in self.gateways.items()}
        for t in d["targets"].values():
            t["luns"] = {str(n): k for n, k in sorted(t["luns"].items())}
            t["chap"] = {a: {k: v for k, v in c.items() if v is not None}
                         for a, c in t["chap"].items()}
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True).encode()

    def content(self) -> dict:
        """What the configuration says, without its epoch and time stamps."""
        d = self.to_dict()
        for k in ("epoch", "created", "updated"):
            d.pop(k)
        return d

    def copy(self) -> "SharedConfig":
        return copy.deepcopy(self)

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "the shared configuration") \
            -> "SharedConfig":
        if not data or not data.strip():
            return cls()
        try:
            d = json.loads(data)
        except ValueError as e:
            raise ExtError(f"{where} is not valid JSON ({e}): restore it from a backup "
                           f"or remove it", "bad-config") from None
        return cls.from_dict(d, where)

    @classmethod
    def from_dict(cls, d, where: str = "the shared configuration") -> "SharedConfig":
        version = _keys(d, None, where).get("version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise SchemaTooNew(where, version)   # before anything else: it may differ
        _keys(d, [f.name for f in fields(cls)], where)
        _int(version, f"{where}: version", 1, SCHEMA_VERSION)
        try:
            gws = {n: _entry(GatewayEntry, g, f"gateway {n}")
                   for n, g in _keys(d.get("gateways", {}), None, "gateways").items()}
            for g in gws.values():
                g.portal = parse_portal(g.portal)
            tgs = {i: _entry(TargetEntry, t, f"target {i}")
                   for i, t in _keys(d.get("targets", {}), None, "targets").items()}
            for i, t in tgs.items():
                t.chap = {a: _entry(ChapEntry, c, f"target {i}: CHAP of {a}")
                          for a, c in _keys(t.chap, None, f"target {i} chap").items()}
                if not all(str(n).isdigit() for n in _keys(t.luns, None, f"{i} luns")):
                    raise ExtError(f"target {i}: LUN ids must be numbers", "bad-config")
                t.luns = {int(n): k for n, k in t.luns.items()}
            disks = {k: _entry(DiskEntry, v, f"disk {k}")
                     for k, v in _keys(d.get("disks", {}), None, "disks").items()}
        except TypeError as e:
            raise ExtError(f"{where}: {e}", "bad-config") from None
        return cls(gws, tgs, disks, version, d.get("epoch", 0), d.get("created", ""),
                   d.get("updated", "")).check(where)

    # -- validation ------------------------------------------------------------------

    def check(self, where: str = "the shared configuration") -> "SharedConfig":
        """Raise ExtError naming the first inconsistency; return self."""
        try:
            self._check()
        except ExtError as e:
            raise ExtError(f"{where}: {e}", e.code) from None
        return self

    def _check(self) -> None:
        _int(self.epoch, "epoch", 0, 1 << 62)
        tags, portals = {}, {}
        for n, g in self.gateways.items():
            check_gateway_name(n)
            _int(g.tag, f"gateway {n}: tag", 1, MAX_TAG)
            if g.tag in tags:
                raise ExtError(f"gateways {tags[g.tag]} and {n} have the same tag {g.tag}",
                               "tag-taken")
            if g.portal in portals:
                raise ExtError(f"gateways {portals[g.portal]} and {n} have the same portal "
                               f"{g.portal}", "portal-taken")
            tags[g.tag], portals[g.portal] = n, n
        for iqn, t in self.targets.items():
            check_iqn(iqn, "target IQN")
            for gname in t.gateways:
                if gname not in self.gateways:
                    raise ExtError(f"target {iqn} names gateway {gname}, which is not "
                                   f"defined (targetcli-rbd gateway add)", "no-gateway")
            if len(set(t.gateways)) != len(t.gateways):
                raise ExtError(f"target {iqn} names a gateway twice", "bad-config")
            for a in t.acls:
                check_iqn(a, f"initiator of {iqn}")
            if len(set(t.acls)) != len(t.acls):
                raise ExtError(f"target {iqn} lists an initiator twice", "bad-iqn")
            for a, c in t.chap.items():
                if a not in t.acls:
                    raise ExtError(f"target {iqn}: CHAP for {a}, which has no ACL",
                                   "bad-chap")
                check_chap_user(c.user)
                if c.mutual_user is not None:
                    check_chap_user(c.mutual_user, "mutual CHAP user")
            if t.chap and set(t.chap) != set(t.acls):
                missing = sorted(set(t.acls) - set(t.chap))
                raise ExtError(f"target {iqn}: CHAP is a per-target switch in LIO: give "
                               f"credentials for every initiator (missing: "
                               f"{', '.join(missing)})", "chap-mismatch")
            _keys(t.settings, TARGET_SETTINGS, f"target {iqn} settings")
            for n, disk in t.luns.items():
                _int(n, f"target {iqn}: LUN id", 0, 65535)
                d = self.disks.get(disk)
                if d is None or d.target != iqn or d.lun != n:
                    raise ExtError(f"target {iqn}: LUN {n} names disk {disk}, which is not "
                                   f"LUN {n} of this target", "bad-config")
            if t.luns and not t.gateways:
                raise ExtError(f"target {iqn} has LUNs but no gateway", "no-gateway")
        for key, d in self.disks.items():
            ref = parse_image(key, osd_op_timeout=None, check_files=False)
            if ref.spec != key:
                raise ExtError(f"disk {key!r} should be written {ref.spec!r}", "bad-image")
            t = self.targets.get(d.target)
            if t is None or t.luns.get(d.lun) != key:
                raise ExtError(f"disk {key}: not LUN {d.lun} of target {d.target}",
                               "bad-config")
            if not isinstance(d.wwn, str) or not _WWN_RE.match(d.wwn):
                raise ExtError(f"disk {key}: unit serial {d.wwn!r} must be 1-64 letters, "
                               f"digits and . _ : -", "bad-wwn")
            if d.owner not in t.gateways:
                raise ExtError(f"disk {key}: owner {d.owner} is not a gateway of "
                               f"{d.target}", "bad-config")
            _keys(d.options, DISK_OPTIONS, f"disk {key} options")
            _keys(d.settings, DISK_SETTINGS, f"disk {key} settings")
            self.defaults(key).check()
            self.image(key)

    def image(self, disk: str):
        """The spec.ImageRef of a disk, with its cfgstring options."""
        o = self.disks[disk].options
        return parse_image(disk, osd_op_timeout=o.get("osd_op_timeout", 30), conf=o.get(
            "conf"), client_id=o.get("id"), keyring=o.get("keyring"), check_files=False)

    def defaults(self, disk: str) -> Defaults:
        """The spec.Defaults of a disk: its settings and its target's over the defaults."""
        d = self.disks[disk]
        t = self.targets[d.target]
        kw = {**t.settings, **d.settings}
        if "osd_op_timeout" in d.options:
            kw["osd_op_timeout"] = d.options["osd_op_timeout"]
        try:
            return Defaults(**kw)
        except TypeError as e:
            raise ExtError(f"disk {disk}: {e}", "bad-config") from None


def secret_key(target: str, initiator: str, mutual: bool = False) -> str:
    """The config-key name of an ACL's CHAP secret."""
    return f"{SECRET_PREFIX}/{target}/{initiator}" + ("/mutual" if mutual else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- RADOS

def connect(conf: str | None = None, client_id: str | None = None,
            keyring: str | None = None, timeout: float = 20.0):
    """A connected rados.Rados as ``client.<id>`` (default admin), as the daemon
    connects: conf (None: librados' search), keyring, bounded timeouts."""
    import rados
    if client_id and client_id.startswith("client."):
        client_id = client_id[7:]
    cluster = rados.Rados(rados_id=client_id or "admin")
    try:
        cluster.conf_read_file(conf)
        if keyring:
            cluster.conf_set("keyring", keyring)
        for k in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
            cluster.conf_set(k, str(int(timeout)))
        cluster.connect(timeout=int(timeout))
    except rados.Error as e:
        cluster.shutdown()
        raise ExtError(f"cannot connect to the Ceph cluster as client.{client_id or 'admin'}"
                       f" ({e}): check --conf/--id/--keyring", "cluster") from None
    return cluster


@dataclass(frozen=True)
class Update:
    before: SharedConfig
    after: SharedConfig
    written: bool


class ConfigStore:
    """The shared configuration object ``pool/obj`` (and the CHAP secrets)."""

    def __init__(self, cluster, pool: str = DEFAULT_POOL, obj: str = DEFAULT_OBJECT, *,
                 lease: int = DEFAULT_LEASE, lock_wait: float = DEFAULT_LOCK_WAIT,
                 owns_cluster: bool = False):
        import rados
        self.rados, self.cluster, self.pool, self.obj = rados, cluster, pool, obj
        self.lease, self.lock_wait, self._owns = int(lease), float(lock_wait), owns_cluster
        self.where = f"the shared configuration {pool}/{obj}"
        try:
            self.ioctx = cluster.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise ExtError(f"pool {pool} does not exist (--config-pool)", "no-pool") from None

    @classmethod
    def open(cls, pool: str | None = None, obj: str | None = None, *, conf=None,
             client_id=None, keyring=None, **kw) -> "ConfigStore":
        return cls(connect(conf, client_id, keyring), pool or DEFAULT_POOL,
                   obj or DEFAULT_OBJECT, owns_cluster=True, **kw)

    def close(self) -> None:
        self.ioctx.close()
        if self._owns:
            self.cluster.shutdown()

    def _error(self, what: str, e) -> ExtError:
        return ExtError(f"{what} {self.where} failed: {e}", "cluster")

    # -- reading -----------------------------------------------------------------------
    def _read_raw(self) -> tuple[bytes, int | None]:
        try:
            size, _ = self.ioctx.stat(self.obj)
            data = self.ioctx.read(self.obj, size + 65536) if size else b""
            return data, self.ioctx.get_last_version()
        except self.rados.ObjectNotFound:
            return b"", None
        except self.rados.Error as e:
            raise self._error("reading", e) from None

    def read(self) -> SharedConfig:
        """The configuration (empty when the object does not exist yet)."""
        return SharedConfig.from_json(self._read_raw()[0], self.where)

    def epoch(self) -> int:
        """The ``epoch`` xattr (0 before the first write)."""
        try:
            return int(self.ioctx.get_xattr(self.obj, "epoch").decode() or 0)
        except (self.rados.ObjectNotFound, self.rados.NoData, ValueError):
            return 0

    # -- writing -----------------------------------------------------------------------

    def _lock(self) -> str:
        cookie = uuid.uuid4().hex
        desc = f"tcmu-rbd writer on {socket.gethostname()} pid {os.getpid()}"
        deadline, delay = time.monotonic() + self.lock_wait, 0.02
        while True:
            try:
                self.ioctx.lock_exclusive(self.obj, LOCK_NAME, cookie, desc=desc,
                                          duration=self.lease)
                return cookie
            except self.rados.ObjectBusy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExtError(
                        f"{self.where} is locked by another writer for more than "
                        f"{self.lock_wait:.0f} s (a writer that died holds it only for "
                        f"its lease, {self.lease} s by default): retry; `rados -p "
                        f"{self.pool} lock info {self.obj} {LOCK_NAME}` shows the holder",
                        "config-locked") from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.25)
            except self.rados.Error as e:
                raise self._error("locking", e) from None

    def _unlock(self, cookie: str) -> None:
        try:
            self.ioctx.unlock(self.obj, LOCK_NAME, cookie)
        except self.rados.ObjectNotFound:   # the lease ran out: nothing to release
            log.warning("the lock on %s had expired before it was released", self.where)
        except self.rados.Error as e:
            log.warning("releasing the lock on %s: %s", self.where, e)

    def update(self, change: Callable[[SharedConfig], SharedConfig | None], *,
               force: bool = False, dry_run: bool = False) -> Update:
        """Apply ``change`` (it edits the configuration it is given; what it returns
        is used when it is a SharedConfig) under the lock, and write the result when it differs (or ``force``):
        epoch + 1, the ``epoch`` xattr, then a notify to the watchers. A dry run
        reads and changes a copy, and writes nothing."""
        if dry_run:   # no lock: locking would create the object
            before = self.read()
            return Update(before, _changed(before, change).check(), False)
        for attempt in range(3):
            cookie = self._lock()
            try:
                raw, version = self._read_raw()
                before = SharedConfig.from_json(raw, self.where)
                after = _changed(before, change).check()
                if after.content() == before.content() and not force:
                    return Update(before, after, False)
                after.version, after.epoch = SCHEMA_VERSION, before.epoch + 1
                after.updated = _now()
                after.created = before.created or after.updated
                if not self._write(after, version):
                    log.warning("%s changed while this writer held an expired lease: "
                                "trying again", self.where)
                    continue
            finally:
                self._unlock(cookie)
            self.notify(after.epoch)
            return Update(before, after, True)
        raise ExtError(f"{self.where} kept changing under this writer (its lock lease, "
                       f"{self.lease} s, ran out each time): retry", "config-busy")

    def _write(self, cfg: SharedConfig, version: int | None) -> bool:
        """Write ``cfg``; False when the object changed since it was read at
        ``version`` (our lease had run out and another writer wrote)."""
        with self.rados.WriteOpCtx() as op:
            if version is not None:
                op.assert_version(version)   # nobody wrote since we read it
            op.write_full(cfg.to_json())
            op.set_xattr("epoch", str(cfg.epoch).encode())
            try:
                self.ioctx.operate_write_op(op, self.obj)
                return True
            except self.rados.OSError as e:
                if e.errno in (errno.ERANGE, errno.EOVERFLOW):
                    return False
                raise self._error("writing", e) from None
            except self.rados.Error as e:
                raise self._error("writing", e) from None

    def notify(self, epoch: int | None = None) -> None:
        """Tell the watchers (every gateway's sync) to re-read. A gateway that died
        does not answer: a warning, not an error (its sync re-reads when it starts)."""
        try:
            self.ioctx.notify(self.obj, f"epoch {epoch if epoch is not None else ''}",
                              NOTIFY_TIMEOUT_MS)
        except self.rados.Error as e:
            log.warning("notify on %s: %s (a gateway's sync may be down; it re-reads "
                        "when it starts)", self.where, e)

    # -- CHAP secrets (config-key) ------------------------------------------------------

    def _mon(self, prefix: str, key: str, inbuf: bytes = b"", ok=(0,)) -> bytes | None:
        """A config-key command; None when the key does not exist."""
        ret, out, status = self.cluster.mon_command(
            json.dumps({"prefix": prefix, "key": key}), inbuf)
        if ret == -errno.EACCES:
            raise ExtError(f"`{prefix}` on {key} was refused: give this cephx user mon "
                           f"'allow command \"{prefix}\" with key prefix tcmu-rbd/' (see "
                           f"README: Several gateways)", "permission")
        if ret not in ok:
            raise ExtError(f"`{prefix}` on {key} failed: {status or ret}", "cluster")
        return None if ret == -errno.ENOENT else out

    def set_secret(self, key: str, secret: Secret) -> None:
        # in the input buffer: the monitors log the command's JSON, not its input
        self._mon("config-key set", key, check_secret(secret.reveal(), "CHAP secret").encode())

    def get_secret(self, key: str) -> Secret | None:
        out = self._mon("config-key get", key, ok=(0, -errno.ENOENT))
        return None if out is None else Secret(out.decode(), f"config-key {key}")

    def remove_secret(self, key: str) -> None:
        self._mon("config-key rm", key, ok=(0, -errno.ENOENT))

    # -- images --------------------------------------------------------------------------

    def image_size(self, spec: str) -> int:
        """The size of ``pool[/ns]/image[@snap]`` (opened read-only: no lock taken)."""
        import rbd
        c = parse_image(spec, osd_op_timeout=None, check_files=False).cfg
        try:
            with self.cluster.open_ioctx(c.pool) as io:
                if c.namespace:
                    io.set_namespace(c.namespace)
                with rbd.Image(io, c.image, snapshot=c.snapshot, read_only=True) as img:
                    return img.size()
        except (self.rados.ObjectNotFound, rbd.ImageNotFound):
            raise ExtError(f"image {spec} does not exist (rbd create {spec} --size ...)",
                           "image-missing") from None
        except (self.rados.Error, rbd.Error) as e:
            raise ExtError(f"cannot open image {spec}: {e}", "cluster") from None


def _changed(cfg: SharedConfig, change) -> SharedConfig:
    new = cfg.copy()
    r = change(new)
    return r if isinstance(r, SharedConfig) else new


class ConfigWatcher:
    """A watch on the configuration object. :meth:`start` watches (before the first
    read, so that no change is missed); :meth:`wait` returns True as soon as a writer
    notifies, or when the watch had to be set up again (after a watch error, or once
    a missing object exists: notifies may have been missed), False on timeout."""

    def __init__(self, store: ConfigStore, timeout: int = 30):
        self.store, self.timeout = store, timeout   # timeout: the OSD drops a dead watcher
        self._event, self._broken = threading.Event(), threading.Event()
        self._watch = None
        self.watches = 0                            # how often it was set up

    def _notified(self, notify_id, notifier_id, watch_id, data) -> None:  # librados' thread
        self._event.set()

    def _failed(self, *args) -> None:   # librados' thread: (err) or (watch id, err)
        err = args[-1]
        log.warning("the watch on %s failed (%s): watching again", self.store.where, err)
        self._broken.set()
        self._event.set()

    watching = property(lambda self: self._watch is not None and not self._broken.is_set())

    def _ensure(self) -> bool:
        """Set the watch up if needed; True when it was (re)established now."""
        r = self.store.rados
        if self.watching:
            try:
                self._watch.check()
                return False
            except r.Error:
                pass
        self.close()
        self._broken.clear()
        try:
            self._watch = self.store.ioctx.watch(self.store.obj, self._notified,
                                                 self._failed, self.timeout)
        except r.Error as e:
            if not isinstance(e, r.ObjectNotFound):
                log.warning("cannot watch %s: %s (retrying)", self.store.where, e)
            return False
        self.watches += 1
        return True

    def start(self) -> bool:
        self._ensure()
        return self.watching

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._ensure():
            left = deadline - time.monotonic()
            # not watching: try again every second
            if self._event.wait(max(0, left if self.watching else min(left, 1.0))):
                self._event.clear()
                if not self._broken.is_set():
                    return True
            elif time.monotonic() >= deadline:
                return False
        return True

    def close(self) -> None:
        w, self._watch = self._watch, None
        if w is not None:
            try:
                w.close()
            except self.store.rados.Error:
                pass
