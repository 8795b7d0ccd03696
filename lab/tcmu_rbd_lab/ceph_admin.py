"""The throwaway cluster's own client: one in-process librados handle, as
client.admin, for the commands the lab sends to the running mon and OSD.

What belongs here: :class:`AdminClient`: connecting (one attempt: the mon wait in
ceph.py retries it), mon commands (JSON in, JSON out; a failure is a
CephClusterError naming the command), cephx keys added to the auth database, pools
(create, ``rbd pool init``), the readiness write, and RBD images (create, and
:meth:`AdminClient.ensure_image` for ``up --image``).

What does NOT: starting daemons, waiting for them and the cluster's life cycle
(ceph.py), keyring files, ceph.conf and the CLI's arguments (ceph_setup.py), the mgr
(ceph_mgr.py), and the ceph/rbd/rados command-line tools (``CephCluster.run``, for
callers that want those).

Why in-process: each ceph/rbd/rados CLI is a Python process importing rados, 1.5-3 s
under QEMU/TCG before it sends anything; here a command is one round trip.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import rados
import rbd

from .ceph_setup import CephClusterError

__all__ = ["AdminClient", "IMAGE_FEATURES", "PROBE"]

#: the object the readiness write writes (and start() removes)
PROBE = "tcmu-rbd-readiness-probe"

#: ``rbd create --image-feature`` names -> librbd feature bits
IMAGE_FEATURES = {
    "layering": rbd.RBD_FEATURE_LAYERING, "striping": rbd.RBD_FEATURE_STRIPINGV2,
    "exclusive-lock": rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
    "object-map": rbd.RBD_FEATURE_OBJECT_MAP, "fast-diff": rbd.RBD_FEATURE_FAST_DIFF,
    "deep-flatten": rbd.RBD_FEATURE_DEEP_FLATTEN,
    "journaling": rbd.RBD_FEATURE_JOURNALING, "data-pool": rbd.RBD_FEATURE_DATA_POOL,
}


def _describe(cmd: Mapping) -> str:
    """A mon command as the ceph CLI would spell it, for error messages."""
    args = " ".join(f"{k}={v}" for k, v in cmd.items() if k not in ("prefix", "format"))
    return f"`ceph {cmd['prefix']}`" + (f" ({args})" if args else "")


class AdminClient:
    """client.admin of the cluster whose ceph.conf is ``conf_path``, connected.

    ``connect_timeout`` bounds the connection (the mon's answer and cephx),
    ``op_timeout`` each OSD operation (image creation, ``rbd pool init``);
    ``report()`` is appended to the message of a command that timed out (the
    cluster's daemon states). Raises rados.Error when the mon does not answer."""

    def __init__(self, conf_path: str, keyring: str, connect_timeout: float,
                 op_timeout: float, report: Callable[[], str] = lambda: ""):
        self._report = report
        # one caller at a time changes the op timeouts and sends with them
        self._lock = threading.Lock()
        self._op_timeout = max(1, int(op_timeout))
        self._timeouts = {"rados_osd_op_timeout": self._op_timeout}
        self._rados = rados.Rados(conffile=conf_path, name="client.admin", conf={
            "keyring": keyring, "client_mount_timeout": str(max(1, int(connect_timeout))),
            "rados_osd_op_timeout": str(self._op_timeout)})
        try:
            self._rados.connect()
        except BaseException:
            self._rados.shutdown()
            raise

    def close(self) -> None:
        self._rados.shutdown()

    def _timeout(self, option: str, seconds: float) -> None:
        """Set rados_mon_op_timeout / rados_osd_op_timeout (both take effect at once)."""
        s = max(1, int(seconds))
        if self._timeouts.get(option) != s:
            self._rados.conf_set(option, str(s))
            self._timeouts[option] = s

    # ----------------------------------------------------------------- mon
    def mon_command(self, cmd: Mapping[str, object], timeout: float,
                    inbuf: bytes = b"") -> bytes:
        """Send ``cmd`` ({"prefix": "osd dump", ...}) to the mon; its output.

        CephClusterError with the mon's message when it fails or does not answer
        within ``timeout`` seconds."""
        with self._lock:
            self._timeout("rados_mon_op_timeout", timeout)
            ret, out, outs = self._rados.mon_command(json.dumps(cmd), inbuf)
        if ret == -errno.ETIMEDOUT:
            raise CephClusterError(f"{_describe(cmd)} timed out after {timeout:.0f}s"
                                   + self._report())
        if ret < 0:
            raise CephClusterError(f"{_describe(cmd)} failed: {os.strerror(-ret)}"
                                   f"{': ' + outs.strip() if outs.strip() else ''}")
        return out

    def mon_json(self, cmd: Mapping[str, object], timeout: float):
        """:meth:`mon_command` with JSON output, parsed."""
        out = self.mon_command({**cmd, "format": "json"}, timeout)
        try:
            return json.loads(out or b"null")
        except ValueError:
            raise CephClusterError(f"{_describe(cmd)} printed no JSON: "
                                   f"{out[:300]!r}") from None

    def auth_add(self, entity: str, keyring: str | os.PathLike,
                 caps: Mapping[str, str], timeout: float) -> None:
        """``ceph auth add ENTITY DAEMON CAP... -i KEYRING``: the key in ``keyring``
        with ``caps`` ({"mon": "allow *", ...}; empty: the keyring's own, as the mon
        refuses both) into the auth database."""
        cmd: dict[str, object] = {"prefix": "auth add", "entity": entity}
        if caps:
            cmd["caps"] = [x for daemon, cap in caps.items() for x in (daemon, cap)]
        self.mon_command(cmd, timeout, inbuf=Path(keyring).read_bytes())

    def osd_up_since(self, osd_id: int, osd_uuid: str, timeout: float) -> int:
        """The OSD map epoch since which ``osd_id`` with ``osd_uuid`` is up (its
        ``up_from``); 0 when it is not up, not there, or ``ceph osd dump`` fails."""
        try:
            osds = self.mon_json({"prefix": "osd dump"}, timeout).get("osds", [])
        except CephClusterError:
            return 0
        return max([int(o.get("up_from", 0)) for o in osds if o.get("osd") == osd_id
                    and o.get("up") and o.get("uuid") == osd_uuid] or [0])

    def create_pool(self, pool: str, pg_num: int, timeout: float) -> None:
        """``ceph osd pool create POOL PG_NUM PG_NUM``."""
        self.mon_command({"prefix": "osd pool create", "pool": pool, "pg_num": pg_num,
                          "pgp_num": pg_num}, timeout)

    # ----------------------------------------------------------------- OSD
    def _ioctx(self, pool: str, namespace: str | None = None) -> rados.Ioctx:
        try:
            io = self._rados.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise CephClusterError(f"pool {pool} does not exist (the cluster has "
                                   f"pool rbd; create others with create_pool)") from None
        if namespace:
            io.set_namespace(namespace)
        return io

    def probe_write(self, pool: str, timeout: float) -> bool:
        """Whether ``pool`` accepts a write (of object :data:`PROBE`) within
        ``timeout`` seconds; true at once when the pool does not exist (yet)."""
        try:
            if not self._rados.pool_exists(pool):
                return True
            with self._ioctx(pool) as io, self._lock:
                # the OSD map a fresh client would get: after an OSD restart, the
                # write timing out before it is "laggy" would never fetch the map
                # naming the new process
                self._timeout("rados_mon_op_timeout", timeout)
                self._rados.wait_for_latest_osdmap()
                self._timeout("rados_osd_op_timeout", timeout)
                try:
                    io.write_full(PROBE, f"probe {time.time()}".encode())
                finally:
                    self._timeout("rados_osd_op_timeout", self._op_timeout)
            return True
        except (rados.Error, CephClusterError):
            return False

    def remove_probe(self, pool: str) -> None:
        """Remove :data:`PROBE` if it is there (errors ignored: best effort)."""
        try:
            with self._ioctx(pool) as io:
                io.remove_object(PROBE)
        except (rados.Error, CephClusterError):
            pass

    def pool_init(self, pool: str) -> None:
        """``rbd pool init POOL``: application rbd, the pool's RBD metadata."""
        with self._ioctx(pool) as io:
            try:
                rbd.RBD().pool_init(io, False)
            except (rbd.Error, rados.Error) as e:
                raise CephClusterError(f"`rbd pool init {pool}` failed: {e}") from None

    # ----------------------------------------------------------------- RBD
    def create_image(self, pool: str, namespace: str | None, name: str, size: int,
                     features: Iterable[str] | None = None,
                     object_size: int | None = None) -> None:
        """``rbd create``: ``features`` are --image-feature names (None: Ceph's
        defaults; empty: layering only); ``object_size`` a power of two."""
        spec = "/".join(p for p in (pool, namespace, name) if p)
        mask = None
        if features is not None:
            unknown = [f for f in features if f not in IMAGE_FEATURES]
            if unknown:
                raise CephClusterError(f"image {spec}: unknown feature(s) "
                                       f"{', '.join(unknown)} (known: "
                                       f"{', '.join(IMAGE_FEATURES)})")
            mask = 0
            for f in list(features) or ["layering"]:
                mask |= IMAGE_FEATURES[f]
        order = None
        if object_size:
            order = int(object_size).bit_length() - 1
            if 1 << order != int(object_size):
                raise CephClusterError(f"image {spec}: object size {object_size} is "
                                       f"not a power of two")
        with self._ioctx(pool, namespace) as io:
            try:
                rbd.RBD().create(io, name, int(size), order=order, old_format=False,
                                 features=mask)
            except rbd.ImageExists:
                raise CephClusterError(f"image {spec} already exists") from None
            except (rbd.Error, rados.Error) as e:
                raise CephClusterError(f"creating image {spec} ({size} bytes) failed: "
                                       f"{e}") from None

    def ensure_image(self, pool: str, namespace: str | None, name: str, size: int
                     ) -> bool:
        """An image of ``size`` bytes with Ceph's default features: created (True),
        or there already with that size (False); CephClusterError for another size."""
        spec = "/".join(p for p in (pool, namespace, name) if p)
        try:
            self.create_image(pool, namespace, name, size)
            return True
        except CephClusterError as e:
            err = e
        try:
            with self._ioctx(pool, namespace) as io, \
                    rbd.Image(io, name, read_only=True) as img:
                have = img.size()
        except (rbd.Error, rados.Error, CephClusterError):
            raise err from None  # not there: why the creation failed
        if have != size:
            raise CephClusterError(
                f"image {spec} exists with {have} bytes, not the {size} asked for: "
                f"ask for its size or remove it (`rbd rm {spec}`)")
        return False
