"""The TCMU command ring, handler side.

A `Ring` maps one device's shared area (a /dev/uioN, or the emulator's memfd),
checks the mailbox, takes new entries in batches and completes commands out of
order with one doorbell per burst.  The byte-level work and the memory
ordering (acquire load of cmd_head, release store of cmd_tail) live in
native/tcmu_ring.c; this module is the Python face of it.

After `take()`, `events[0:n]` describe what arrived:
  kind == EV_CMD: a command; its copied CDB and iovecs are in `cmd(cmd_id)`
  kind == EV_TMR: a task management notification; ids in `tmr_ids(event)`
"""

from __future__ import annotations

import errno
import os

from tcmu_rbd._native import ffi, lib

EV_CMD = lib.TR_EV_CMD
EV_TMR = lib.TR_EV_TMR

BAD_ENTRY = 1   # entry too short for its iovec count
BAD_CDB = 2     # CDB outside the entry, or of unknown length
BAD_IOV = 3     # an iovec outside the data area

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

BATCH = 256


class RingError(Exception):
    """The shared area is not a usable TCMU ring (wrong version, corrupt)."""


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
                raise RingError(
                    "not a TCMU ring: mailbox version %d, expected %d (or bad ring bounds)"
                    % (ffi.cast("uint16_t *", base)[0], lib.TCMU_MAILBOX_VERSION))
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
        fast(events, max): a backend's taker that starts plain READ/WRITE
        itself and returns only the rest as events (rq_take_fast)."""
        n = lib.tr_take(self._r, self.events, BATCH) if fast is None else fast(self.events, BATCH)
        return self.checked(n)

    @staticmethod
    def checked(rc: int) -> int:
        """rc of a C call that takes from the ring: -EPROTO means corrupt."""
        if rc == -errno.EPROTO:
            raise RingError("command ring is corrupt (entry runs past the end of the ring)")
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
                "dropped": r.dropped, "outstanding": r.outstanding}

    def forget_all(self) -> None:
        """Drop all state after the kernel reset the ring (action/reset_ring)."""
        lib.tr_forget_all(self._r)

    def close(self) -> None:
        if self._r is not None:
            lib.tr_close(self._r)
            self._r = None
            self.cmds = None

    def __del__(self):
        self.close()


class UioRing(Ring):
    """A Ring over /dev/uioN, mapped with the exact size sysfs reports."""

    def __init__(self, uio: str, sysfs: str = "/sys/class/uio", dev: str = "/dev"):
        self.uio = os.path.basename(uio)
        with open(os.path.join(sysfs, self.uio, "maps", "map0", "size")) as f:
            size = int(f.read().strip(), 0)
        fd = os.open(os.path.join(dev, self.uio), os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        base = lib.tr_mmap(fd, size)
        if base == ffi.NULL:
            err = ffi.errno
            os.close(fd)
            raise OSError(err, "mmap of /dev/%s (%d bytes): %s" % (self.uio, size, os.strerror(err)))
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
