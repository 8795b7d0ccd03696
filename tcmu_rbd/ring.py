"""The engine's Python face: the TCMU command ring (handler side) and the C
engine that serves it for an asynchronous backend.

A `Ring` maps one device's shared area (a /dev/uioN, or the emulator's memfd),
checks the mailbox, takes new entries in batches and completes commands out of
order with one doorbell per burst.  The byte-level work, the memory
ordering (acquire load of cmd_head, release store of cmd_tail) and the lock
that lets a librbd thread complete onto the ring live in native/ring.c.

After `take()`, `events[0:n]` describe what arrived:
  kind == EV_CMD: a command; its copied CDB and iovecs are in `cmd(cmd_id)`
  kind == EV_TMR: a task management notification; ids in `tmr_ids(event)`

An `EngineBackend` is a backend as native/engine.c sees it: its ops table
(struct engine_ops), its device and the completion queue its ops complete
into.  Through it the engine starts plain READ/WRITE as they are taken
(`taker`), puts their successful completions straight onto the ring, and runs
the handler loop's steady state in C (`pump`).

Belongs here: everything Python does with the ring and the engine.  Not here:
what a command means (scsi/), which backend call a command becomes
(handler.py), any backend's own calls (backends/), the kernel's side
(lab/tcmu_rbd_lab/emulator.py).
"""

from __future__ import annotations

import errno
import os
import select

from tcmu_rbd._native import ffi, lib

EV_CMD = lib.TR_EV_CMD
EV_TMR = lib.TR_EV_TMR

BAD_ENTRY = lib.TR_BAD_ENTRY   # entry too short for its iovec count
BAD_CDB = lib.TR_BAD_CDB       # CDB outside the entry, or of unknown length
BAD_IOV = lib.TR_BAD_IOV       # an iovec outside the data area

CAP_OOOC = lib.TCMU_MAILBOX_FLAG_CAP_OOOC
CAP_READ_LEN = lib.TCMU_MAILBOX_FLAG_CAP_READ_LEN
CAP_TMR = lib.TCMU_MAILBOX_FLAG_CAP_TMR
CAP_KEEP_BUF = lib.TCMU_MAILBOX_FLAG_CAP_KEEP_BUF
UFLAG_UNKNOWN_OP = lib.TCMU_UFLAG_UNKNOWN_OP
UFLAG_READ_LEN = lib.TCMU_UFLAG_READ_LEN

TMR_ABORT_TASK = 1
TMR_ABORT_TASK_SET = 2
TMR_CLEAR_ACA = 3
TMR_CLEAR_TASK_SET = 4
TMR_LUN_RESET = 5
TMR_TARGET_WARM_RESET = 6
TMR_TARGET_COLD_RESET = 7
TMR_LUN_RESET_PRO = 128

BATCH = 256     # ring events per take
DRAIN = 256     # completions per drain
FAST_TAG = lib.engine_fast_tag   # a plain op's tag bit: its success goes onto the ring in C


class RingError(Exception):
    """The shared area is not a usable TCMU ring (wrong version, corrupt)."""


def _mailbox(base, size: int) -> str:
    """What the mailbox says, for a RingError."""
    if size < 128:
        return "a %d-byte mapping is shorter than the mailbox" % size
    mb = ffi.cast("uint32_t *", base)
    return ("mailbox version %d, expected %d; cmdr_off %d, cmdr_size %d, cmd_head %d, "
            "cmd_tail %d in a %d-byte mapping"
            % (mb[0] & 0xFFFF, lib.TCMU_MAILBOX_VERSION, mb[1], mb[2], mb[3], mb[16], size))


class Ring:
    """The handler side of one device's command ring."""

    def __init__(self, base, size: int, fd: int = -1, doorbell=None, owner=None):
        """base: a cffi pointer to the mapping of `size` bytes.  fd: the uio fd
        (doorbell = 4-byte write), or -1 with `doorbell` a callable (emulator).
        owner: kept alive as long as the ring (the mapping's owner)."""
        self._r = lib.tr_open(base, size, fd)
        if self._r == ffi.NULL:
            err = ffi.errno
            if err == errno.EPROTO:
                raise RingError("not a TCMU ring: " + _mailbox(base, size))
            raise OSError(err, os.strerror(err))
        self.base = base
        self.size = size
        self.fd = fd
        self._doorbell = doorbell
        self._owner = owner
        self.flags = self._r.flags
        self.events = ffi.new("struct tr_event[]", BATCH)
        self.cmds = self._r.cmds

    # -- capabilities -----------------------------------------------------
    @property
    def read_len_supported(self) -> bool:
        return bool(self.flags & CAP_READ_LEN)

    @property
    def tmr_supported(self) -> bool:
        return bool(self.flags & CAP_TMR)

    @property
    def ooo_supported(self) -> bool:
        return bool(self.flags & CAP_OOOC)

    # -- the hot path -----------------------------------------------------
    def take(self, fast=None) -> int:
        """Take up to BATCH new entries; returns how many events arrived.
        fast(events, max): the engine's taker (EngineBackend.taker), which
        starts plain READ/WRITE itself and returns only the rest as events."""
        n = lib.tr_take(self._r, self.events, BATCH) if fast is None else fast(self.events, BATCH)
        return self.checked(n)

    @staticmethod
    def checked(rc: int) -> int:
        """rc of a C call that takes from the ring: -EPROTO means corrupt."""
        if rc == -errno.EPROTO:
            raise RingError("command ring is corrupt (cmd_head where no entry starts, or an "
                            "entry that runs past the end of the ring or past cmd_head)")
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        return rc

    def complete(self, cmd_id: int, status: int, sense=ffi.NULL, read_len: int = -1,
                 uflags: int = 0) -> bool:
        """Complete cmd_id.  read_len >= 0 reports the real Data-In length
        (when the kernel supports READ_LEN).  Returns False if the id was not
        outstanding (a late or second completion, dropped on purpose)."""
        if read_len >= 0 and self.flags & CAP_READ_LEN:
            uflags |= UFLAG_READ_LEN
        else:
            read_len = 0
        slen = 0 if sense == ffi.NULL else len(sense)
        return lib.tr_complete(self._r, cmd_id, status, sense, slen, uflags, read_len) == 0

    def kick(self) -> bool:
        """Ring the doorbell once if anything completed since the last kick."""
        rc = lib.tr_kick(self._r)
        if rc < 0:
            raise OSError(-rc, "doorbell write failed: " + os.strerror(-rc))
        if rc and self._doorbell is not None:
            self._doorbell()
        return rc > 0

    # -- the rest ---------------------------------------------------------
    def cmd(self, cmd_id: int):
        """The C record of an outstanding command (cdb, iov, data_len, bad)."""
        return self.cmds + cmd_id

    def cdb(self, cmd_id: int) -> bytes:
        c = self.cmds[cmd_id]
        return ffi.buffer(c.cdb, c.cdb_len)[:]

    def tmr_ids(self, ev) -> list[int]:
        return [self._r.tmr_ids[ev.tmr_first + i] for i in range(ev.tmr_count)]

    @property
    def outstanding(self) -> int:
        return self._r.outstanding

    @property
    def stats(self) -> dict:
        r = self._r
        return {"completions": r.completions, "doorbells": r.doorbells,
                "dropped": r.dropped, "outstanding": r.outstanding, "direct": r.direct}

    def set_metrics(self, region) -> None:
        """Record every completion into region (a metrics.LunRegion, kept
        alive as long as the ring) from now on; None: record nothing."""
        self._metrics = region
        lib.tr_set_metrics(self._r, ffi.NULL if region is None else region.m)

    def forget_all(self) -> None:
        """Drop all state after the kernel reset the ring (action/reset_ring);
        RingError if cmd_head or cmd_tail is then where no entry can start."""
        if lib.tr_forget_all(self._r) < 0:
            raise RingError("not a TCMU ring after the reset: " + _mailbox(self.base, self.size))

    def close(self) -> None:
        if getattr(self, "_r", None) is not None:     # (also when __init__ failed)
            lib.tr_close(self._r)
            self._r = None
            self.cmds = None

    def __del__(self):
        self.close()


class UioRing(Ring):
    """A Ring over a uio node (/dev/uioN), mapped with the size the kernel
    gives its map (lio.TcmuDevice: ``UioRing(dev.node, dev.map_size())``)."""

    def __init__(self, node: str, size: int):
        self.node = node
        fd = os.open(node, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        base = lib.tr_mmap(fd, size)
        if base == ffi.NULL:
            err = ffi.errno
            os.close(fd)
            raise OSError(err, "mmap of %s (%d bytes): %s" % (node, size, os.strerror(err)))
        try:
            super().__init__(base, size, fd)
        except Exception:
            lib.tr_munmap(base, size)
            os.close(fd)
            raise

    def close(self) -> None:
        base, size, fd = getattr(self, "base", None), getattr(self, "size", 0), getattr(self, "fd", -1)
        super().close()
        if base is not None and base != ffi.NULL:
            lib.tr_munmap(base, size)
            self.base = None
        if fd >= 0:
            os.close(fd)
            self.fd = -1


class EngineBackend:
    """A backend as the C engine sees it (struct engine_backend): `ops` (a
    struct engine_ops *) called with `dev`, and the completion queue `queue`
    (rq_*) those calls, and the backend's other asynchronous ops, complete
    into from any thread.  The queue signals `fileno()`."""

    def __init__(self, ops, dev, capacity: int = 256):
        """capacity: the queue's first size; it doubles when full (a completion is
        never dropped).  Small: the queue is a ring its writes walk round, so
        every page of it becomes resident in time (65536 entries: 1.5 MB a LUN),
        and only what is in flight at once needs room."""
        self.queue = lib.rq_create(capacity)
        if self.queue == ffi.NULL:
            raise MemoryError("engine completion queue")
        self.c = ffi.new("struct engine_backend *", {"ops": ops, "dev": dev, "q": self.queue})
        self._fd = lib.rq_fd(self.queue)
        self._ring = ffi.NULL   # with a ring, plain successes complete in C
        self._tags = ffi.new("uint64_t[]", DRAIN)
        self._rets = ffi.new("int64_t[]", DRAIN)
        self._extra = ffi.new("uint64_t[]", DRAIN)

    def fileno(self) -> int:
        return self._fd

    def attach(self, ring: Ring) -> None:
        """From now on a successful op tagged FAST_TAG completes on ring in C,
        on the thread that completes it (rq_attach)."""
        self._ring = ring._r
        lib.rq_attach(self.queue, ring._r)

    def poll(self, on_complete) -> int:
        """Deliver every queued completion C did not put on the ring itself
        to on_complete(tag, ret, extra); returns how many."""
        total = 0
        while True:
            n = lib.rq_drain_ring(self.queue, self._ring, self._tags, self._rets, self._extra, DRAIN)
            self._deliver(n, on_complete)
            total += n
            if n < DRAIN:
                return total

    def _deliver(self, n: int, on_complete) -> None:
        tags, rets, extra = self._tags, self._rets, self._extra
        for i in range(n):
            on_complete(tags[i], rets[i], extra[i])

    def taker(self, ring: Ring, limits):
        """For Ring.take: takes new entries, starts the plain READ/WRITE among
        them through ops (engine_take_fast) within limits (a struct
        engine_fast the handler keeps current) and returns the other events."""
        b, r, take = self.c, ring._r, lib.engine_take_fast
        return lambda events, n: take(b, r, limits, events, n)

    def pump(self, ring: Ring, limits, backend, uio_fd: int, control_fd: int | None,
             timeout: float) -> "Pump":
        return Pump(self, ring, limits, backend, uio_fd, control_fd, timeout)

    def close(self) -> None:
        """After the backend let go of every op (none can complete any more)."""
        if self.queue is not None:
            lib.rq_attach(self.queue, ffi.NULL)
            lib.rq_destroy(self.queue)
            self.queue = None


class Pump:
    """engine_serve: waits on the ring, the backend's completions and the
    control fd, starts plain READ/WRITE and completes their successes in C; a
    call returns when the handler has something to do (and after a signal or
    the timeout)."""

    def __init__(self, engine: EngineBackend, ring: Ring, limits, backend, uio_fd: int,
                 control_fd: int | None, timeout: float):
        self._engine, self._ring, self._limits, self._backend = engine, ring, limits, backend
        self._ep = select.epoll()
        for fd in (uio_fd, engine.fileno(), control_fd):
            if fd is not None:
                self._ep.register(fd, select.EPOLLIN)
        s = self._s = ffi.new("struct engine_serve_state *")
        s.epfd, s.uio_fd = self._ep.fileno(), uio_fd
        s.ctl_fd = -1 if control_fd is None else control_fd
        s.timeout_ms = int(timeout * 1000)

    def __call__(self) -> tuple[int, bool]:
        """(ring events for the handler in ring.events, control fd readable)."""
        e, ring, s = self._engine, self._ring, self._s
        ring.checked(lib.engine_serve(e.c, ring._r, self._limits, ring.events, BATCH,
                                      e._tags, e._rets, e._extra, DRAIN, s))
        if s.completions:
            e._deliver(s.completions, self._backend.on_complete)
        return s.events, bool(s.control)

    @property
    def trims(self) -> int:
        """Idle timeouts that gave free heap memory back (after commands started)."""
        return self._s.trims

    def close(self) -> None:
        self._ep.close()
