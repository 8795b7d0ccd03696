"""The per-device loop: ring -> scsi -> backend -> ring.

`Handler.process()` takes every new entry from the ring, decodes each CDB with
the pure SCSI core, submits backend I/O directly on the command's data-area
iovecs, completes finished commands out of order, and rings the doorbell once
for the whole burst.

Each submission carries a tag = (generation << 16) | cmd_id.  The generation
changes every time a cmd_id is reused, so a completion that arrives for a
command the ring no longer holds (after a ring reset, or an abort) is
recognised and dropped instead of completing somebody else's command.

The hot path (READ, WRITE) is a straight line: parse, submit, complete.  Rare
multi-step operations (verify, write-and-verify, UNMAP lists, EXTENDED COPY,
GET LBA STATUS, a READ shorter than its Data-In buffer) run as small
generators that yield backend submissions.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import time

from tcmu_rbd import scsi
from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.base import Extents
from tcmu_rbd.ring import (BAD_CDB, EV_CMD, EV_TMR, FAST_TAG, TMR_ABORT_TASK,
                           TMR_ABORT_TASK_SET, TMR_CLEAR_TASK_SET, TMR_LUN_RESET,
                           TMR_LUN_RESET_PRO, Ring)
from tcmu_rbd.scsi.fast import store_limits

log = logging.getLogger("tcmu_rbd.handler")

READ, WRITE, DONE, FLUSH = scsi.READ, scsi.WRITE, scsi.DONE, scsi.FLUSH
GOOD, CHECK_CONDITION = scsi.GOOD, scsi.CHECK_CONDITION
NO_IDS = 65536
SCRATCH = 1 << 20   # per-step buffer for verify/copy (bounded: never the whole op)
LBA_STATUS_WINDOW = 1 << 30   # GET LBA STATUS looks up at most this much per command,
LBA_STATUS_STEP = 128 << 20   # this much per backend lookup (an abort stops it between two),
LBA_STATUS_EXTENTS = 1024     # and at most this many extents per lookup
PIECE = 1 << 30     # zeroes and WRITE SAME go to the backend in pieces of this (aborts)

# Malformed ring entries cannot come from a healthy kernel; answer them
# without touching their data: HARDWARE ERROR / INTERNAL TARGET FAILURE.
_SENSE_INTERNAL = scsi.sense(0x04, 0x44, 0x00)
_SENSE_INVALID_OPCODE = scsi.sense(0x05, 0x20, 0x00)
_SENSE_ABORTED = scsi.sense(0x0B, 0x00, 0x00)
# commands that change the medium: only the exclusive lock's owner runs them
_NEEDS_LOCK = frozenset((WRITE, scsi.WRITE_VERIFY, scsi.UNMAP, scsi.WRITE_SAME,
                         scsi.WRITE_ZEROES, scsi.COMPARE_AND_WRITE, scsi.COPY))
# INQUIRY and MAINTENANCE IN (REPORT TARGET PORT GROUPS): identity refreshed first
_IDENTITY_OPS = (0x12, 0xA3)


def _iov_prefix(iov, cnt, length):
    """A copy of the first `length` bytes' worth of an iovec array:
    (struct iovec[], count)."""
    out = ffi.new("struct iovec[]", max(cnt, 1))
    n = 0
    while length and n < cnt:
        take = min(iov[n].iov_len, length)
        out[n].iov_base = iov[n].iov_base
        out[n].iov_len = take
        length -= take
        n += 1
    return out, n


class Handler:
    def __init__(self, ring: Ring, backend, lun, identity=None, name: str = ""):
        """identity: optional callable run before INQUIRY to refresh lun.serial
        etc. (configfs wwn/vpd_unit_serial is written after the device is
        enabled)."""
        self.ring = ring
        self.lun = lun
        self.name = name
        self._identity = identity
        self._cmds = ring.cmds
        # per cmd_id: the op kind (for the sense of a failed completion); the
        # generation lives in the C record (c.gen), where the engine sees it
        self._kind = ffi.new("uint8_t[]", NO_IDS)
        self._limits = ffi.new("struct engine_fast *")
        self._lun_limits = self._limits.lim     # a view into _limits
        self._limits.kinds = self._kind
        self._limits.kind_read, self._limits.kind_write = READ, WRITE
        self._steps = {}          # cmd_id -> generator of a multi-step op
        self._aborted = set()
        self._cur = None          # the command parse() may ask Data-Out from
        self._running = None      # cmd_id whose multi-step op is submitting
        self._parked = None       # its synchronous completion
        self.stopping = False
        self.stats = {"errors": 0, "aborts": 0, "stale": 0}
        self._shrink_reported = False
        # failover.Failover when the image has an exclusive lock to follow:
        # the gate before medium changes (None: every write may go)
        self.failover = None
        self.set_backend(backend)

    def set_backend(self, backend) -> None:
        """Serve from this backend from now on (start, or reopen on a new
        config once the old one is drained)."""
        self.backend = backend
        backend.on_complete = self._on_complete
        backend.set_write_cache(self.lun.write_cache)
        # A backend the C engine serves (rbd) gets its plain ops tagged with
        # FAST_TAG, so their successes go straight onto the ring in C; the
        # engine also starts plain READ/WRITE itself as it takes the ring.
        engine = self._engine = backend.engine_backend()
        self._fast = FAST_TAG if engine is not None else 0
        self._taker = None
        if engine is not None:
            engine.attach(self.ring)
            self._taker = engine.taker(self.ring, self._limits)

    def engine_parts(self):
        """(struct engine_backend *, struct tr_ring *, struct engine_fast *) as the
        engine would serve this LUN now, or None without an engine: for a loop
        that drives the engine itself (the engine benchmark's engine_drive)."""
        if self._engine is None:
            return None
        self._sync_limits()
        return self._engine.c, self.ring._r, self._limits

    def _sync_limits(self) -> None:
        """What the engine may start: what the plain READ/WRITE rule says for
        the LUN as it is now; nothing while an abort is pending (the handler
        must see the id's next use)."""
        if self._aborted:
            cmds = self._cmds
            self._aborted = {cid for cid in self._aborted if cmds[cid].outstanding}
        # a non-owner's writes go through _start's gate, so the engine starts none
        self._limits.enabled = not self._aborted and (self.failover is None or
                                                      self.failover.owner)
        store_limits(self.lun, self._lun_limits)

    # ------------------------------------------------------------ the loop
    def process(self) -> int:
        """Take and start every new command, deliver backend completions,
        ring the doorbell once.  Returns the number of commands started."""
        ring = self.ring
        taker = self._taker
        started = 0
        while not self.stopping:
            if taker is not None:
                self._sync_limits()
            n = ring.take(taker)
            if not n:
                break
            self._dispatch(n)
            started += n
        if self.backend.fileno() is not None:
            self.backend.poll()
        ring.kick()
        return started

    def _dispatch(self, n: int) -> None:
        """Start the first n commands of ring.events; act on its TMRs."""
        evs = self.ring.events
        for i in range(n):
            ev = evs[i]
            if ev.kind == EV_CMD:
                self._start(ev.cmd_id)
            elif ev.kind == EV_TMR:
                self._tmr(ev)

    def serve(self, uio_fd: int, control_fd: int | None = None, on_control=None,
              idle_timeout: float = 1.0) -> None:
        """Serve until `stopping` is set: wait on the uio fd, the backend's
        completion fd and an optional control fd.  On stop, take no new
        commands but complete everything in flight.  A backend the C engine
        serves (rbd) runs the steady state in C; Python sees only the rest."""
        while not self.stopping:
            backend, engine = self.backend, self._engine
            if engine is None:
                self._serve_python(uio_fd, control_fd, on_control, idle_timeout)
                break
            pump = engine.pump(self.ring, self._limits, backend, uio_fd, control_fd, idle_timeout)
            try:
                # until stopped, or on_control swapped the backend (reopen)
                while not self.stopping and self.backend is backend:
                    if self.failover is not None and self.failover.swap_ready:
                        break
                    self._sync_limits()
                    n, control = pump()
                    if n:
                        self._dispatch(n)
                    if control and on_control is not None:
                        on_control()
                    self.ring.kick()
            finally:
                pump.close()
            if self.failover is not None:
                self.failover.swap(self)
        self.drain()

    def _serve_python(self, uio_fd, control_fd, on_control, idle_timeout) -> None:
        p = select.epoll()
        p.register(uio_fd, select.EPOLLIN)
        bfd = self.backend.fileno()
        if bfd is not None:
            p.register(bfd, select.EPOLLIN)
        if control_fd is not None:
            p.register(control_fd, select.EPOLLIN)
        try:
            while not self.stopping:
                for fd, _ in p.poll(idle_timeout):
                    if fd == uio_fd:
                        try:
                            os.read(uio_fd, 4)
                        except BlockingIOError:
                            pass
                    elif fd == control_fd and on_control is not None:
                        on_control()
                self.process()
        finally:
            p.close()

    def set_write_cache(self, on: bool) -> None:
        """WCE as MODE SENSE reports it, and as the backend keeps its writes."""
        self.lun.write_cache = on
        self.backend.set_write_cache(on)

    def replace_backend(self, backend):
        """Serve from a new backend once every command of the old one has
        completed; returns the old one (for the caller to close)."""
        self.drain()
        old = self.backend
        self.set_backend(backend)
        self.lun.read_only = backend.read_only
        return old

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait for every in-flight command to complete (SIGTERM, stop)."""
        bfd = self.backend.fileno()
        deadline = time.monotonic() + timeout
        while self.ring.outstanding and time.monotonic() < deadline:
            if bfd is not None:
                select.select([bfd], [], [], 0.1)
                self.backend.poll()
            self.ring.kick()
            if bfd is None:
                break
        self.ring.kick()
        return self.ring.outstanding == 0

    # ------------------------------------------------------------ commands
    def _start(self, cid: int) -> None:
        c = self._cmds[cid]
        if c.bad:
            self._fail_bad(cid, c)
            return
        cdb = ffi.buffer(c.cdb, c.cdb_len)[:]
        if cdb[0] in _IDENTITY_OPS and self._identity is not None:
            self._identity(self.lun)
        self._cur = c
        op = scsi.parse(cdb, self.lun, c.data_len, self._data_out)
        self._cur = None
        kind = op[0]
        gen = c.gen = (c.gen + 1) & 0xFFFFFFFF
        tag = (gen << 16) | cid
        self._kind[cid] = kind
        if self._aborted:
            self._aborted.discard(cid)
        if self.failover is not None and kind in _NEEDS_LOCK and not self.failover.may_write():
            self.ring.complete(cid, scsi.BUSY)    # the initiator retries; a takeover runs
            return
        if kind == READ:
            if op[2] == c.data_len:
                self.backend.read(tag | self._fast, c.iov, c.iov_cnt, op[1], op[2])
            else:       # less than the buffer: the rest is not handed out (READ_LEN)
                self._start_steps(cid, self._read_part(c, op))
        elif kind == WRITE:
            self.backend.write(tag | self._fast, c.iov, c.iov_cnt, op[1], op[2], op[3])
        elif kind == DONE:
            self._answer(cid, c, op[1], op[2], op[3])
        elif kind == FLUSH:
            self.backend.flush(tag | self._fast)
        else:
            self._start_other(cid, c, tag, kind, op)

    def _data_out(self, n: int) -> bytes:
        """Data-Out bytes for parse() (parameter lists: small).  Read into a
        buffer of their own size: a buffer kept per LUN would be a page of
        resident memory per KiB of the largest list (a 1 MiB one was 1 MiB of
        every worker's memory)."""
        c = self._cur
        out = bytearray(min(n, c.data_len))
        got = lib.iov_to_buf(c.iov, c.iov_cnt, 0, ffi.from_buffer(out), len(out))
        del out[got:]
        return bytes(out)

    def _answer(self, cid, c, status, sense, data) -> None:
        """Complete an emulated command: its data, then zeroes to the end of
        the Data-In buffer (the data area is reused between commands), and
        the real length with READ_LEN."""
        if data is not None and c.iov_cnt:
            self.ring.complete(cid, status, sense or ffi.NULL, self._put(c, data))
        else:
            if status == GOOD and c.iov_cnt and c.data_len:
                # nothing to return: no stale byte leaves either
                lib.iov_fill(c.iov, c.iov_cnt, 0, 0, c.data_len)
            self.ring.complete(cid, status, sense or ffi.NULL)

    @staticmethod
    def _put(c, data) -> int:
        """data into the Data-In buffer, zeroes after it; the bytes it took."""
        n = lib.iov_from_buf(c.iov, c.iov_cnt, 0, data, len(data))
        if c.data_len > n:
            lib.iov_fill(c.iov, c.iov_cnt, n, 0, c.data_len - n)
        return n

    def _fail_bad(self, cid, c) -> None:
        self.stats["errors"] += 1
        sense = _SENSE_INVALID_OPCODE if c.bad == BAD_CDB else _SENSE_INTERNAL
        log.warning("%s: malformed ring entry for cmd %d (reason %d)", self.name, cid, c.bad)
        self.ring.complete(cid, CHECK_CONDITION, sense)

    def _on_complete(self, tag: int, ret: int, extra: int) -> None:
        cid = tag & 0xFFFF
        c = self._cmds[cid]
        if c.gen != (tag >> 16) & 0xFFFFFFFF or not c.outstanding:
            self.stats["stale"] += 1
            return
        if ret < 0 and self.failover is not None:
            self.failover.io_error(ret)     # blocklisted, lock lost, timed out
        step = self._steps.get(cid)
        if step is not None:
            if self._running == cid:
                self._parked = (ret, extra)
            else:
                self._advance(cid, step, (ret, extra))
            return
        if ret >= 0 and cid not in self._aborted:
            self.ring.complete(cid, GOOD)
            return
        self._finish_error(cid, self._kind[cid], ret, extra)

    def _finish_error(self, cid, kind, ret, extra) -> None:
        if cid in self._aborted:
            self._aborted.discard(cid)
            # the kernel discards an aborted command's status: release the slot
            self.ring.complete(cid, scsi.TASK_ABORTED)
            return
        status, sense = scsi.io_result(kind, ret, extra)
        if status != GOOD:
            self.stats["errors"] += 1
        if ret == -errno.ERANGE and not self._shrink_reported:
            self._shrink_reported = True
            log.error("%s: the image is now %d bytes, smaller than the LUN (%d): commands "
                      "past its end fail (LBA OUT OF RANGE); grow it back with rbd resize",
                      self.name, self.backend.size_now(), self.lun.num_blocks * self.lun.block_size)
        self.ring.complete(cid, status, sense or ffi.NULL)

    # ------------------------------------------------------------ rare ops
    def _start_other(self, cid, c, tag, kind, op) -> None:
        b = self.backend
        if kind == scsi.COMPARE_AND_WRITE:
            b.compare_and_write(tag, op[1], op[2], c.iov, c.iov_cnt)
        else:
            gen = {scsi.WRITE_ZEROES: self._zeroes, scsi.WRITE_SAME: self._write_same,
                   scsi.UNMAP: self._unmap, scsi.VERIFY: self._verify,
                   scsi.WRITE_VERIFY: self._write_verify, scsi.COPY: self._copy,
                   scsi.GET_LBA_STATUS: self._lba_status}.get(kind)
            if gen is None:
                self._answer(cid, c, CHECK_CONDITION, _SENSE_INTERNAL, None)
                return
            self._start_steps(cid, gen(c, op))

    def _start_steps(self, cid, step) -> None:
        self._steps[cid] = step
        self._advance(cid, step, None)

    def _advance(self, cid, step, value) -> None:
        """Run a multi-step op until it has I/O in flight or finishes.  The
        generator yields a callable(tag) that submits one backend op and is
        sent back (ret, extra); it returns (status, sense) or (status, sense,
        read_len) when fewer bytes than the Data-In buffer are data.  A synchronous
        backend completes inside the submit call: that result is parked and
        the loop goes on, so long ops never recurse."""
        tag = (self._cmds[cid].gen << 16) | cid
        self._running = cid
        try:
            while True:
                if cid in self._aborted:
                    step.close()
                    raise StopIteration((scsi.TASK_ABORTED, None))
                submit = next(step) if value is None else step.send(value)
                self._parked = None
                submit(tag)
                if self._parked is None:
                    return
                value, self._parked = self._parked, None
        except StopIteration as done:
            self._steps.pop(cid, None)
            self._aborted.discard(cid)
            res = done.value
            status, sense = res[0], res[1]
            if status != GOOD:
                self.stats["errors"] += 1
            self.ring.complete(cid, status, sense or ffi.NULL, res[2] if len(res) > 2 else -1)
        finally:
            self._running = None

    def _read_part(self, c, op):
        _, off, length, _ = op
        iov, cnt = _iov_prefix(c.iov, c.iov_cnt, length)
        ret, _ = yield (lambda tag: self.backend.read(tag, iov, cnt, off, length))
        if ret < 0:
            return scsi.io_result(READ, ret, 0)
        return GOOD, None, length

    def _unmap(self, c, op):
        # zeroes, not a discard: librbd drops the parts of a discard smaller
        # than its granularity, and LBPRZ promises they read back zero
        for off, length in op[1]:
            res = yield from self._pieces(scsi.UNMAP, off, length, self._zero)
            if res[0] != GOOD:
                return res
        return GOOD, None

    def _zeroes(self, c, op):
        return (yield from self._pieces(scsi.WRITE_ZEROES, op[1], op[2], self._zero))

    def _zero(self, tag, off, n):
        self.backend.write_zeroes(tag, off, n)

    def _write_same(self, c, op):
        return (yield from self._pieces(
            scsi.WRITE_SAME, op[1], op[2],
            lambda t, o, n: self.backend.write_same(t, o, n, c.iov, c.iov_cnt, op[3])))

    def _pieces(self, kind, off, length, submit):
        """A range op (zeroes, WRITE SAME) in pieces of at most PIECE bytes, one
        after the other, so an abort (a TMR) stops it between two instead of
        leaving a FORMAT UNIT of the whole LUN running; submit(tag, off, n)."""
        end = off + length
        while off < end:
            n = min(PIECE, end - off)
            ret, _ = yield (lambda tag, o=off, n=n: submit(tag, o, n))
            if ret < 0:
                return scsi.io_result(kind, ret, 0)
            off += n
        return GOOD, None

    def _verify(self, c, op):
        _, off, length, bytchk = op
        return (yield from self._compare_medium(c, off, length, bytchk, 0, scsi.VERIFY))

    def _chunks(self, length):
        """(position, size, iovec) pieces of at most SCRATCH bytes over a buffer
        of this op's own: with an asynchronous backend several verify/copy
        commands run at once, so they cannot share one."""
        buf = ffi.new("uint8_t[]", min(SCRATCH, length) or 1)
        pos = 0
        while pos < length:
            n = min(SCRATCH, length - pos)
            yield pos, n, buf, ffi.new("struct iovec *", {"iov_base": buf, "iov_len": n})
            pos += n

    def _compare_medium(self, c, off, length, bytchk, skip, kind):
        for pos, n, buf, iov in self._chunks(length):
            ret, _ = yield (lambda tag, o=off + pos: self.backend.read(tag, iov, 1, o, n))
            if ret < 0:
                return scsi.io_result(kind, ret, 0)
            if bytchk:
                d = lib.iov_compare(c.iov, c.iov_cnt, skip + pos, buf, n)
                if d >= 0:
                    return scsi.io_result(kind, -errno.EILSEQ, pos + d)
        return GOOD, None

    def _write_verify(self, c, op):
        _, off, length, _ = op
        ret, _ = yield (lambda tag: self.backend.write(tag, c.iov, c.iov_cnt, off, length, True))
        if ret < 0:
            return scsi.io_result(scsi.WRITE_VERIFY, ret, 0)
        return (yield from self._compare_medium(c, off, length, 1, 0, scsi.WRITE_VERIFY))

    def _copy(self, c, op):
        _, segments, list_id, _ = op
        lun = self.lun
        scsi.record_copy(lun, list_id, scsi.COPY_IN_PROGRESS, 0, 0)
        done = moved = 0
        outcome = scsi.COPY_FAILED      # also when aborted (the generator is closed)
        try:
            for src, dst, length in segments:
                for pos, n, _, iov in self._chunks(length):
                    ret, _ = yield (lambda tag, o=src + pos: self.backend.read(tag, iov, 1, o, n))
                    if ret < 0:
                        return scsi.io_result(scsi.COPY, ret, 0)
                    ret, _ = yield (lambda tag, o=dst + pos: self.backend.write(tag, iov, 1, o, n))
                    if ret < 0:
                        return scsi.io_result(scsi.COPY, ret, 0)
                    moved += n
                done += 1
            outcome = scsi.COPY_COMPLETED
            return GOOD, None
        finally:
            scsi.record_copy(lun, list_id, outcome, done, moved)

    def _lba_status(self, c, op):
        """A bounded lookup (diff-iterate without an object map visits every
        object): at most LBA_STATUS_WINDOW from the LBA, in steps of
        LBA_STATUS_STEP, none after the one that found the descriptors that
        fit.  The answer ends where the lookup did (SBC: the initiator asks
        again from there), always after at least one block."""
        _, offset, alloc_len, _ = op
        bs = self.lun.block_size
        end = offset + max(0, min(self.backend.size - offset, LBA_STATUS_WINDOW))
        want = max(1, (alloc_len - 8) // 16)        # the descriptors that fit
        out = Extents(min(want, LBA_STATUS_EXTENTS))
        extents = []
        pos = scanned = offset                      # scanned: block-aligned (or end)
        while pos < end:
            n = min(pos // bs * bs + LBA_STATUS_STEP, end) - pos
            ret, upto = yield (lambda tag, o=pos, n=n: self.backend.allocated(tag, o, n, out))
            if ret < 0:
                return scsi.io_result(scsi.GET_LBA_STATUS, ret, 0)
            extents += out.items(ret)
            if not pos < upto <= pos + n:
                break                               # no progress: answer what is known
            if upto == pos + n:                     # the whole step
                pos = scanned = upto
                if len(extents) >= want:
                    break
            else:                                   # the list filled: it ends at upto
                pos = upto
                if upto // bs > offset // bs:
                    scanned = upto // bs * bs
                    break
        data = scsi.lba_status_data(self.lun, offset // bs, extents, alloc_len,
                                    scanned_end=-(-scanned // bs))
        return (GOOD, None, self._put(c, data)) if c.iov_cnt else (GOOD, None)

    # ------------------------------------------------------------ TMR
    def _tmr(self, ev) -> None:
        ids = self.ring.tmr_ids(ev)
        self.stats["aborts"] += len(ids)
        if ev.tmr_type in (TMR_ABORT_TASK, TMR_ABORT_TASK_SET, TMR_CLEAR_TASK_SET,
                           TMR_LUN_RESET, TMR_LUN_RESET_PRO):
            # Commands already in librbd cannot be recalled and their buffers
            # stay in use until librbd lets go, so they complete when their
            # I/O does (the kernel discards the status); what is not yet
            # started never starts.
            for cid in ids:
                if self._cmds[cid].outstanding:
                    self._aborted.add(cid)
        log.info("%s: task management %d for %d command(s)", self.name, ev.tmr_type, len(ids))

    def close(self) -> None:
        self.backend.close()
