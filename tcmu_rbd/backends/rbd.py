"""A LUN on a Ceph RBD image, through librbd's asynchronous C API.

Reads and writes go between the image and the ring's data area iovecs with no
copy in Python (rbd_aio_readv / rbd_aio_writev, native/rbd_aio.c).  librbd
completes on its own threads into the engine's completion queue, which
signals an eventfd; `poll()` drains it in batches.  The engine sees the image
through rbd_aio.c's ops table (`engine_backend()`) and starts plain READ/WRITE
on it without a Python call.  Allocation lookups (GET LBA STATUS: librbd's
diff-iterate, which is synchronous) run on a thread of rbd_aio.c's and
complete into the same queue.  Each backend has its own rados client, so one
image's connection trouble stays with its LUN.

Belongs here: opening the image with its options, and this backend's calls.
Not here: the completion queue and the fast path (ring.EngineBackend,
native/engine.c), what a command means (scsi/).

The client's options (tcmu_rbd.config.client_options): rbd_cache off (a
completed write is on the OSDs, so FUA and SYNCHRONIZE CACHE need no cache
flush of ours) and rados_osd_op_timeout, so that a dead cluster turns into
BUSY (retried by the initiator) instead of commands that hang.  The config
string's QoS limits (qos_*) are set on the client too: librbd's own limiter
then delays this LUN's I/O inside librbd, off our loop (tcmu_rbd.qos has the
precedence).  A pool's or image's ``rbd config`` can turn the cache back on;
then ``volatile_cache`` is True and native/rbd_aio.c flushes after FUA writes,
and after every write while the LUN's write cache is off (``set_write_cache``).
"""

from __future__ import annotations

import errno
import json
import os

from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.base import Backend
from tcmu_rbd.config import client_options
from tcmu_rbd.ring import EngineBackend

RBD_FEATURE_EXCLUSIVE_LOCK = 1 << 2


def _check(rc: int, what: str, name: str) -> int:
    if rc < 0:
        raise OSError(-rc, "%s of %s: %s" % (what, name, os.strerror(-rc)))
    return rc


class RbdOpenError(Exception):
    """The image could not be opened; the message says why and for what."""


def _opts(pairs):
    """A NULL-terminated char*[] of key, value, ... and the objects keeping it alive."""
    keep = [ffi.new("char[]", s.encode()) for kv in pairs for s in kv]
    arr = ffi.new("const char *[]", keep + [ffi.NULL])
    return arr, keep


class RbdBackend(Backend):
    def __init__(self, pool: str, image: str, namespace: str | None = None,
                 snapshot: str | None = None, conf: str | None = None,
                 client_id: str | None = None, keyring: str | None = None,
                 osd_op_timeout: float | None = 30, qos: tuple[tuple[str, int], ...] = (),
                 extra_options: dict | None = None):
        super().__init__()
        options = client_options(keyring, osd_op_timeout, qos)
        options.update(extra_options or {})     # e.g. a test's admin socket
        arr, keep = _opts((k, str(v)) for k, v in options.items())
        err = ffi.new("char[]", 512)
        enc = lambda s: s.encode() if s else ffi.NULL  # noqa: E731
        d = lib.rbd_dev_open(enc(conf), enc(client_id), pool.encode(), enc(namespace),
                             image.encode(), enc(snapshot), arr, err, 512)
        del keep
        if d == ffi.NULL:
            raise RbdOpenError(ffi.string(err).decode(errors="replace"))
        self._d = d
        try:
            self._engine = EngineBackend(lib.rbd_dev_engine_ops(), d)
        except MemoryError:
            lib.rbd_dev_close(d)
            raise
        self._q = self._engine.queue
        self.pool, self.namespace, self.image, self.snapshot = pool, namespace, image, snapshot
        self.name = "rbd:%s/%s%s%s" % (pool, namespace + "/" if namespace else "", image,
                                       "@" + snapshot if snapshot else "")
        self.read_only = snapshot is not None
        self.features = 0
        self.volatile_cache = bool(lib.rbd_dev_volatile_cache(d))
        self.refresh_size()

    def set_write_cache(self, on: bool) -> None:
        lib.rbd_dev_set_wce(self._d, int(on))

    def size_now(self) -> int:
        return lib.rbd_dev_size(self._d)

    # ------------------------------------------------------------ completions
    def fileno(self):
        return self._engine.fileno()

    def engine_backend(self):
        return self._engine

    def poll(self) -> int:
        return self._engine.poll(self.on_complete)

    def _submitted(self, tag, rc):
        # librbd refused the op outright: it completes now, with that error
        if rc < 0:
            self.on_complete(tag, rc, 0)

    # ------------------------------------------------------------ I/O
    def read(self, tag, iov, cnt, offset, length):
        rc = lib.rbd_dev_readv(self._d, self._q, tag, iov, cnt, offset)
        if rc < 0:
            self.on_complete(tag, rc, 0)

    def write(self, tag, iov, cnt, offset, length, fua=False):
        rc = lib.rbd_dev_writev(self._d, self._q, tag, iov, cnt, offset, fua)
        if rc < 0:
            self.on_complete(tag, rc, 0)

    def flush(self, tag):
        self._submitted(tag, lib.rbd_dev_flush(self._d, self._q, tag))

    def write_zeroes(self, tag, offset, length):
        self._submitted(tag, lib.rbd_dev_write_zeroes(self._d, self._q, tag, offset, length))

    def write_same(self, tag, offset, length, iov, cnt, pattern_len):
        self._submitted(tag, lib.rbd_dev_writesame(self._d, self._q, tag, offset, length,
                                                   iov, cnt, pattern_len))

    def compare_and_write(self, tag, offset, length, iov, cnt):
        self._submitted(tag, lib.rbd_dev_compare_and_write(self._d, self._q, tag, offset,
                                                           length, iov, cnt))

    def allocated(self, tag, offset, length, out):
        # diff-iterate on a thread of rbd_aio.c's, from the object map when
        # fast-diff is valid; its result comes through the completion queue
        self._submitted(tag, lib.rbd_dev_allocated(self._d, self._q, tag, offset, length,
                                                   out.offs, out.lens, out.max))

    # ------------------------------------------------------------ control
    def refresh_size(self) -> int:
        size = ffi.new("uint64_t *")
        obj = ffi.new("uint64_t *")
        feat = ffi.new("uint64_t *")
        rc = lib.rbd_dev_stat(self._d, size, obj, feat)
        if rc < 0:
            raise OSError(-rc, "rbd stat of %s: %s" % (self.name, os.strerror(-rc)))
        self.size = size[0]
        self.granularity = obj[0]
        self.features = feat[0]
        return self.size

    # ------------------------------------------------------------ lock and cluster
    # Synchronous calls for failover.py's takeover thread (never the loop's).
    def has_exclusive_lock_feature(self) -> bool:
        return bool(self.features & RBD_FEATURE_EXCLUSIVE_LOCK) and not self.read_only

    def is_lock_owner(self) -> bool:
        return _check(lib.rbd_dev_is_lock_owner(self._d), "lock owner query", self.name) == 1

    def lock_owner(self) -> str | None:
        """The exclusive lock's owner as librbd names it, or None."""
        buf = ffi.new("char[]", 256)
        rc = _check(lib.rbd_dev_lock_owner(self._d, buf, 256), "lock owners", self.name)
        return ffi.string(buf).decode() if rc else None

    def break_lock(self, owner: str) -> None:
        _check(lib.rbd_dev_lock_break(self._d, owner.encode()), "lock break", self.name)

    def acquire_lock(self) -> None:
        _check(lib.rbd_dev_lock_acquire(self._d), "lock acquire", self.name)

    def release_lock(self) -> None:
        _check(lib.rbd_dev_lock_release(self._d), "lock release", self.name)

    def metadata_get(self, key: str) -> str | None:
        buf = ffi.new("char[]", 4096)
        n = lib.rbd_dev_metadata_get(self._d, key.encode(), buf, 4096)
        if n == -errno.ENOENT:
            return None
        _check(n, "metadata get", self.name)
        return ffi.string(buf).decode(errors="replace")

    def metadata_set(self, key: str, value: str) -> None:
        _check(lib.rbd_dev_metadata_set(self._d, key.encode(), value.encode()),
               "metadata set", self.name)

    def client_addr(self) -> str:
        buf = ffi.new("char[]", 256)
        _check(lib.rbd_dev_client_addr(self._d, buf, 256), "client address", self.name)
        return ffi.string(buf).decode()

    def wait_for_osdmap(self) -> None:
        _check(lib.rbd_dev_wait_for_osdmap(self._d), "OSD map wait", self.name)

    def mon_command(self, cmd: dict) -> tuple[int, str, str]:
        """(rc, output, status message) of a monitor command."""
        out = ffi.new("char[]", 65536)
        st = ffi.new("char[]", 1024)
        rc = lib.rbd_dev_mon_command(self._d, json.dumps(cmd).encode(), out, 65536, st, 1024)
        return rc, ffi.string(out).decode(errors="replace"), ffi.string(st).decode(errors="replace")

    def service_register(self, service: str, daemon: str, metadata: bytes) -> None:
        _check(lib.rbd_dev_service_register(self._d, service.encode(), daemon.encode(), metadata),
               "service map registration", self.name)

    def service_update(self, status: bytes) -> None:
        _check(lib.rbd_dev_service_update(self._d, status), "service map update", self.name)

    def close(self):
        if getattr(self, "_d", None) is not None:
            lib.rbd_dev_close(self._d)     # waits for librbd's in-flight I/O
            self._d = None
            self.poll()                      # deliver what completed meanwhile
            self._engine.close()
            self._q = None


def open_from_config(cfg, default_osd_op_timeout: float = 30) -> RbdBackend:
    """Open the image an RbdConfig (tcmu_rbd.config) names; its qos_* options go
    to librbd on this LUN's own client (the image's and pool's settings, which
    librbd applies over them, are in the image and pool: tcmu_rbd.qos)."""
    return RbdBackend(cfg.pool, cfg.image, namespace=cfg.namespace, snapshot=cfg.snapshot,
                      conf=cfg.conf, client_id=cfg.client_id, keyring=cfg.keyring,
                      osd_op_timeout=cfg.osd_op_timeout or default_osd_op_timeout,
                      qos=cfg.qos)

