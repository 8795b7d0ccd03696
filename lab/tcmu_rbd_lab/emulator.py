"""The kernel's side of a TCMU device, in userspace, for tests and benchmarks.

`Emulator` (the Python face of native/emulator.c) owns a memfd laid out
exactly like target_core_user's mapping (mailbox, command ring with PAD at
the wrap, data area of fixed-size blocks, cmd_ids 1..65535, iovecs as
offsets).  `submit()` queues a command the way
queue_cmd_ring() does; `doorbell()` reaps completions the way
tcmu_handle_completions() does, and sets `broken` exactly when the kernel
would (an unknown or duplicate cmd_id, a tail that runs away).

`ring()` maps the same memfd a second time and returns the real engine's Ring
over it, so tests drive the production code path, not a copy of it.  That
mapping lies between two PROT_NONE guard pages: a read or write of the engine
outside it is a segfault, not a silent hit on a neighbouring mapping (run
hostile-ring tests in a child process, see tests/test_ring_hostile.py).
`scribble()` is a kernel that keeps rewriting one field while the engine reads.
Fresh Data-In blocks are filled with 0xDB so a test can tell stale bytes from
bytes the handler wrote.
"""

from __future__ import annotations

import errno
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from tcmu_rbd._native import ffi, lib
from tcmu_rbd.ring import CAP_OOOC, CAP_READ_LEN, CAP_TMR, Ring

POISON = 0xDB
DEFAULT_CAPS = CAP_OOOC | CAP_READ_LEN | CAP_TMR


class RingBroken(Exception):
    """The emulated kernel marked the ring broken (what a real kernel does on
    an unknown or duplicate cmd_id): every later command would fail."""


class Full(Exception):
    """No room in the command ring or the data area right now."""


@dataclass
class Result:
    cmd_id: int
    status: int
    sense: bytes
    uflags: int
    read_len: int
    data: bytes | None   # Data-In as an initiator would receive it (READ_LEN honoured)


class Emulator:
    def __init__(self, cmdr_size: int = 1 << 20, data_blocks: int = 4096,
                 block_size: int = 4096, caps: int = DEFAULT_CAPS):
        self._e = lib.emu_create(cmdr_size, data_blocks, block_size, caps)
        if self._e == ffi.NULL:
            raise OSError(ffi.errno, "emulator: " + os.strerror(ffi.errno))
        self.size = self._e.size
        self.block_size = block_size
        self.cmdr_size = cmdr_size
        self._lens = ffi.new("uint32_t[]", 4096)
        self._ids = ffi.new("uint16_t[]", 65536)
        self._want_data = {}      # cmd_id -> Data-In length to capture at reap
        self.results: dict[int, Result] = {}
        self._rings = []
        # The kernel side's state is the kernel's cmdr_lock's: a handler thread's
        # doorbell (Ring.kick) reaps while a test thread submits and reaps.
        self._lock = threading.Lock()

    # -- the handler's view ----------------------------------------------
    def ring(self, length: int | None = None) -> Ring:
        """The production Ring over a second mapping of the same memory,
        between guard pages.  length: map only the first `length` bytes (a
        kernel whose map ends there), default all of it."""
        length = self.size if length is None else length
        base = lib.emu_map_guarded(self._e, length)
        if base == ffi.NULL:
            raise OSError(ffi.errno, "mmap: " + os.strerror(ffi.errno))
        try:
            ring = Ring(base, length, -1, doorbell=self.doorbell, owner=self)
        except Exception:
            lib.emu_unmap_guarded(base, length)
            raise
        self._rings.append((ring, base, length))
        return ring

    # -- kernel side ------------------------------------------------------
    def submit(self, cdb: bytes, data_out: bytes | None = None, data_in: int = 0,
               iov_lens: list[int] | None = None, bidi_lens: list[int] | None = None) -> int:
        """Queue one command.  data_out: bytes the initiator sends; data_in:
        Data-In buffer length.  iov_lens overrides the vector layout (each
        requested vector starts on a block boundary).  Returns the cmd_id."""
        if iov_lens is None:
            total = len(data_out) if data_out is not None else data_in
            iov_lens = [total] if total else []
        bidi_lens = bidi_lens or []
        lens = list(iov_lens) + list(bidi_lens)
        out = ffi.from_buffer("uint8_t[]", data_out) if data_out else ffi.NULL
        with self._lock:
            for i, n in enumerate(lens):
                self._lens[i] = n
            rc = lib.emu_submit(self._e, cdb, len(cdb), self._lens, len(iov_lens), len(bidi_lens),
                                out, len(data_out) if data_out else 0)
            if rc >= 0:
                if bidi_lens:
                    self._want_data[rc] = (sum(bidi_lens), 1)
                elif data_out is None and sum(iov_lens):
                    self._want_data[rc] = (sum(iov_lens), 0)
                else:
                    self._want_data.pop(rc, None)
        if rc == -errno.EAGAIN:
            raise Full("ring or data area full")
        if rc == -errno.EIO:
            raise RingBroken("ring is broken")
        if rc < 0:
            raise OSError(-rc, "emu_submit: " + os.strerror(-rc))
        return rc

    def submit_tmr(self, tmr_type: int, ids: list[int]) -> None:
        arr = ffi.new("uint16_t[]", ids or [0])
        with self._lock:
            rc = lib.emu_submit_tmr(self._e, tmr_type, arr, len(ids))
        if rc == -errno.EAGAIN:
            raise Full("ring full")
        if rc < 0:
            raise OSError(-rc, "emu_submit_tmr: " + os.strerror(-rc))

    def write_raw(self, len_op: int, cmd_id: int, body: bytes) -> None:
        """Put an arbitrary entry on the ring (hostile-ring tests)."""
        with self._lock:
            rc = lib.emu_write_raw(self._e, len_op, cmd_id, body, len(body))
        if rc == -errno.EAGAIN:
            raise Full("ring full")
        if rc < 0:
            raise OSError(-rc, "emu_write_raw: " + os.strerror(-rc))

    def doorbell(self) -> int:
        """What the handler's 4-byte write does: reap up to cmd_tail."""
        with self._lock:
            n = lib.emu_reap(self._e)
        if n < 0:
            raise RingBroken("the handler broke the ring (unknown or duplicate cmd_id, or bad cmd_tail)")
        return n

    def reap(self, capture: bool = True) -> list[Result]:
        """Results of the commands reaped since the last call, oldest first."""
        with self._lock:
            return self._reap_locked(capture)

    def _reap_locked(self, capture: bool) -> list[Result]:
        out = []
        e = self._e
        count = e.done_n
        ids = [e.done_ids[i] for i in range(count)]
        for cmd_id in ids:
            c = e.cmds[cmd_id]
            data = None
            want = self._want_data.pop(cmd_id, None)
            if capture and want:
                length, bidi = want
                buf = ffi.new("uint8_t[]", length)
                got = lib.emu_data_copy(e, cmd_id, 0, buf, length, bidi)
                data = ffi.buffer(buf, got)[:]
            sense = ffi.buffer(c.sense, 96)[:] if c.status == 0x02 else b""
            r = Result(cmd_id, c.status, sense, c.uflags, c.read_len, data)
            self.results[cmd_id] = r
            out.append(r)
        lib.emu_take_done(e, self._ids, count)
        return out

    def is_done(self, cmd_id: int) -> bool:
        """Reaped by a doorbell (its result is ready for reap())."""
        c = self._e.cmds[cmd_id]
        return bool(c.done) and not c.inflight

    def reset_ring(self) -> None:
        """action/reset_ring: fail everything in flight with BUSY, zero head/tail."""
        with self._lock:
            lib.emu_reset_ring(self._e)
            self._want_data.clear()

    @contextmanager
    def scribble(self, off: int, a: int, b: int):
        """While the block runs, a thread stores a and b in turn into the u32
        at mapping offset off (a kernel rewriting a field under the engine)."""
        stop = ffi.new("int *")
        t = threading.Thread(target=lib.emu_scribble, args=(self._e, off, a, b, stop))
        t.start()
        try:
            yield
        finally:
            stop[0] = 1
            t.join()

    @property
    def broken(self) -> bool:
        return bool(self._e.broken)

    @property
    def inflight(self) -> int:
        return self._e.inflight

    @property
    def free_blocks(self) -> int:
        return self._e.free_blocks

    @property
    def ring_free(self) -> int:
        return lib.emu_ring_free(self._e)

    @property
    def head(self) -> int:
        return ffi.cast("uint32_t *", self._e.base + 12)[0]

    @property
    def tail(self) -> int:
        return ffi.cast("uint32_t *", self._e.base + 64)[0]

    def close(self) -> None:
        for ring, base, length in self._rings:
            ring.close()
            lib.emu_unmap_guarded(base, length)
        self._rings = []
        if self._e is not None and self._e != ffi.NULL:
            lib.emu_destroy(self._e)
        self._e = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
