"""The C engine (native/engine.c) over a backend it knows only by its ops
table: here a table of Python callbacks standing in for librbd, so the take,
start, complete and serve paths are tested without Ceph (tests/test_rbd_backend.py
runs them on librbd)."""

import errno
import os
import select
import struct
import threading

import pytest
from hypothesis import given, settings, strategies as st

from tcmu_rbd import scsi
from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.memory import MemoryBackend
from tcmu_rbd.ring import EV_CMD, EV_TMR, FAST_TAG, TMR_ABORT_TASK, EngineBackend, Ring
from tcmu_rbd.scsi.fast import store_limits
from tcmu_rbd_lab.emulator import Emulator
from tcmu_rbd_lab.rig import Rig

BS = 512
READV = "int(void *, struct rq *, uint64_t, const struct iovec *, uint32_t, uint64_t)"
WRITEV = "int(void *, struct rq *, uint64_t, const struct iovec *, uint32_t, uint64_t, int)"


def rw16(op, lba, n, b1=0):
    return struct.pack(">BBQIBB", op, b1, lba, n, 0, 0)


class CallbackOps:
    """struct engine_ops calling back into Python: records each call and
    completes it at once (rq_push) with `ret`, or refuses it with `refuse`;
    with `hold`, keeps it in flight until release()."""

    def __init__(self, ret=None, refuse=0, hold=False):
        self.calls = []
        self.ret, self.refuse, self.hold = ret, refuse, hold
        self.held = []
        self._readv = ffi.callback(READV, self._on_readv)
        self._writev = ffi.callback(WRITEV, self._on_writev)
        self.table = ffi.new("struct engine_ops *", {"readv": self._readv, "writev": self._writev})

    def _start(self, kind, q, tag, iov, cnt, off, fua):
        self.calls.append((kind, tag, off, fua, sum(iov[i].iov_len for i in range(cnt))))
        if self.refuse:
            return self.refuse
        if self.hold:
            self.held.append((q, tag))
        else:
            lib.rq_push(q, tag, self.ret if self.ret is not None else 0, 0)
        return 0

    def release(self):
        """Complete what is held, in order (as librbd's callback thread would)."""
        for q, tag in self.held:
            lib.rq_push(q, tag, self.ret if self.ret is not None else 0, 0)
        self.held = []

    def _on_readv(self, dev, q, tag, iov, cnt, off):
        return self._start("read", q, tag, iov, cnt, off, 0)

    def _on_writev(self, dev, q, tag, iov, cnt, off, fua):
        return self._start("write", q, tag, iov, cnt, off, fua)


@pytest.fixture
def emu():
    e = Emulator(cmdr_size=64 * 1024, data_blocks=1024)
    yield e
    e.close()


def engine_for(ring, ops, lun):
    eb = EngineBackend(ops.table, ffi.NULL, capacity=1024)
    eb.attach(ring)
    kinds = ffi.new("uint8_t[]", 65536)
    lim = ffi.new("struct engine_fast *")
    lim.kinds, lim.kind_read, lim.kind_write, lim.enabled = kinds, scsi.READ, scsi.WRITE, 1
    store_limits(lun, lim.lim)
    # lim.kinds is a raw pointer: the array must live as long as the engine may
    # write it, not as long as the caller keeps the third value (a `_` rebound
    # by a loop freed it, and the engine wrote op kinds into whatever reused it)
    eb.kinds = kinds
    return eb, lim, kinds


def test_plain_commands_start_through_the_ops_table_the_rest_are_events(emu):
    ring, ops, lun = emu.ring(), CallbackOps(), scsi.Lun(num_blocks=1000)
    eb, lim, kinds = engine_for(ring, ops, lun)
    r = emu.submit(rw16(0x88, 10, 2), data_in=2 * BS)
    w = emu.submit(struct.pack(">BBIBHB", 0x2A, 0x08, 20, 0, 1, 0), data_out=bytes(BS))  # FUA
    tur = emu.submit(bytes(6))
    past = emu.submit(rw16(0x88, 999, 2), data_in=2 * BS)
    emu.submit_tmr(TMR_ABORT_TASK, [tur])
    n = ring.take(eb.taker(ring, lim))
    assert [(ring.events[i].kind, ring.events[i].cmd_id) for i in range(n)] == \
        [(EV_CMD, tur), (EV_CMD, past), (EV_TMR, 0)]
    gen_r, gen_w = ring.cmd(r).gen, ring.cmd(w).gen
    assert ops.calls == [("read", FAST_TAG | gen_r << 16 | r, 10 * BS, 0, 2 * BS),
                         ("write", FAST_TAG | gen_w << 16 | w, 20 * BS, 1, BS)]
    assert (kinds[r], kinds[w], lim.started) == (scsi.READ, scsi.WRITE, 2)
    # their successes went onto the ring in C: nothing for Python
    assert eb.poll(lambda *a: pytest.fail("delivered to Python: %r" % (a,))) == 0
    for cid in (tur, past):
        ring.complete(cid, 0)
    ring.kick()
    assert {x.cmd_id: x.status for x in emu.reap()} == {r: 0, w: 0, tur: 0, past: 0}
    assert not emu.broken
    eb.close()


def test_failures_and_stale_completions_go_to_python(emu):
    ring, ops, lun = emu.ring(), CallbackOps(ret=-errno.EIO), scsi.Lun(num_blocks=1000)
    eb, lim, _ = engine_for(ring, ops, lun)
    a = emu.submit(rw16(0x88, 0, 1), data_in=BS)
    assert ring.take(eb.taker(ring, lim)) == 0
    stale = FAST_TAG | (ring.cmd(a).gen + 7) << 16 | a
    lib.rq_push(eb.queue, stale, 0, 0)         # success, but for an older use of the id
    got = []
    assert eb.poll(lambda *c: got.append(c)) == 2
    assert got == [(ops.calls[0][1], -errno.EIO, 0), (stale, 0, 0)]
    assert ring.outstanding == 1               # neither completed it
    eb.close()


def test_a_refused_op_is_left_to_the_handler_with_its_generation(emu):
    ring, ops, lun = emu.ring(), CallbackOps(refuse=-errno.ENOMEM), scsi.Lun(num_blocks=1000)
    eb, lim, _ = engine_for(ring, ops, lun)
    a = emu.submit(rw16(0x8A, 0, 1), data_out=bytes(BS))
    gen = ring.cmd(a).gen
    assert ring.take(eb.taker(ring, lim)) == 1 and ring.events[0].cmd_id == a
    assert len(ops.calls) == 1 and ring.cmd(a).gen == gen and lim.started == 0
    eb.close()


@pytest.mark.parametrize("why", ["disabled", "ua", "read-only", "malformed"])
def test_nothing_starts_when_the_engine_or_the_rule_says_no(emu, why):
    ring, ops = emu.ring(), CallbackOps()
    lun = scsi.Lun(num_blocks=1000, read_only=why == "read-only",
                   ua_capacity_changed=why == "ua")
    eb, lim, _ = engine_for(ring, ops, lun)
    lim.enabled = why != "disabled"
    if why == "malformed":       # an iovec over the mailbox: the entry is bad
        body = bytearray(120)
        struct.pack_into("<IIIIQ", body, 0, 1, 0, 0, 0, 128 + emu.head + 112)
        struct.pack_into("<QQ", body, 40, 0, BS)
        body[104:120] = rw16(0x8A, 0, 1)
        emu.write_raw(128 | 1, 77, bytes(body))
    else:
        emu.submit(rw16(0x8A if why == "read-only" else 0x88, 0, 1), data_in=BS)
    assert ring.take(eb.taker(ring, lim)) == 1 and ops.calls == []
    eb.close()


def test_the_queue_signals_its_fd_when_a_thread_pushes(emu):
    ring, ops = emu.ring(), CallbackOps()
    eb, _, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))
    t = threading.Thread(target=lambda: [lib.rq_push(eb.queue, i, -1, 0) for i in range(300)])
    t.start()
    t.join()
    assert select.select([eb.fileno()], [], [], 1)[0] and lib.rq_pending(eb.queue) == 300
    tags, rets, extra = (ffi.new(t + "[100]") for t in ("uint64_t", "int64_t", "uint64_t"))
    assert lib.rq_drain(eb.queue, tags, rets, extra, 100) == 100 and list(tags) == list(range(100))
    assert select.select([eb.fileno()], [], [], 0)[0]      # 200 left: still readable
    got = []
    assert eb.poll(lambda *c: got.append(c[0])) == 200 and got == list(range(100, 300))
    assert not select.select([eb.fileno()], [], [], 0)[0]
    assert lib.rq_drain(eb.queue, tags, rets, extra, 100) == 0     # nothing: nothing to clear
    lib.rq_push(eb.queue, 7, -1, 0)
    assert select.select([eb.fileno()], [], [], 0)[0]      # signalled again after the drains
    eb.close()


def test_a_success_completes_on_the_ring_from_the_completing_thread(emu):
    """librbd's callback thread puts a plain success straight onto the ring:
    no queue, no wake-up of the loop.  The doorbell: left to the loop's kick
    while it is awake (from its take to its kick), rung by the completing
    thread once the loop has kicked (it sleeps)."""
    uio_r, uio_w = os.pipe()
    os.set_blocking(uio_r, False)
    ering = emu.ring()
    ring = Ring(ering.base, ering.size, uio_w, owner=ering)     # a doorbell fd, as a uio's
    ops = CallbackOps(hold=True)
    eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))

    def doorbells():
        try:
            return len(os.read(uio_r, 4096)) // 4
        except BlockingIOError:
            return 0

    def release_on_a_thread():
        t = threading.Thread(target=ops.release)
        t.start()
        t.join()
    try:
        a = emu.submit(rw16(0x88, 0, 1), data_in=BS)
        assert ring.take(eb.taker(ring, lim)) == 0 and ring.outstanding == 1
        release_on_a_thread()           # the loop has not kicked yet: it will
        assert ring.outstanding == 0 and ring.stats["direct"] == 1 and doorbells() == 0
        assert lib.rq_pending(eb.queue) == 0 and not select.select([eb.fileno()], [], [], 0)[0]
        assert ring.kick() and doorbells() == 1
        emu.doorbell()
        assert emu.reap()[0].cmd_id == a
        b = emu.submit(rw16(0x8A, 5, 1), data_out=bytes(BS))
        assert ring.take(eb.taker(ring, lim)) == 0
        assert not ring.kick() and doorbells() == 0     # nothing completed: nothing to ring
        release_on_a_thread()           # the loop sleeps: the thread rings
        assert ring.outstanding == 0 and doorbells() == 1 and ring.stats["direct"] == 2
        emu.doorbell()
        assert emu.reap()[0].cmd_id == b
        # a late success (the id moved on) is not the ring's: Python sees it
        lib.rq_push(eb.queue, FAST_TAG | (ring.cmd(b).gen + 1) << 16 | b, 0, 0)
        assert ring.stats["direct"] == 2 and lib.rq_pending(eb.queue) == 1
        assert not emu.broken
    finally:
        eb.close()
        ring.close()
        os.close(uio_r)
        os.close(uio_w)


def test_without_a_doorbell_fd_the_completing_thread_wakes_the_loop(emu):
    """The emulator's ring has no fd (its doorbell is a call): a success
    completes on the ring and, the loop sleeping, the queue's fd wakes it to
    kick."""
    ring, ops = emu.ring(), CallbackOps(hold=True)
    eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))
    a = emu.submit(rw16(0x88, 0, 1), data_in=BS)
    assert ring.take(eb.taker(ring, lim)) == 0
    assert not ring.kick()
    t = threading.Thread(target=ops.release)
    t.start()
    t.join()
    assert ring.outstanding == 0 and select.select([eb.fileno()], [], [], 1)[0]
    assert eb.poll(lambda *c: pytest.fail("delivered to Python: %r" % (c,))) == 0
    assert ring.kick() and emu.reap()[0].cmd_id == a
    eb.close()


def test_pump_serves_plain_commands_in_c_and_returns_the_rest(emu):
    ring, ops = emu.ring(), CallbackOps()
    eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))

    class Owner:
        def on_complete(self, *c):
            pytest.fail("delivered to Python: %r" % (c,))
    uio_r, uio_w = os.pipe()
    pump = eb.pump(ring, lim, Owner(), uio_r, None, 0.05)
    try:
        ids = [emu.submit(rw16(0x88, i, 1), data_in=BS) for i in range(8)]
        assert pump() == (0, False)            # started, completed, doorbell: all in C
        emu.doorbell()                         # what the doorbell write does to a kernel
        emu.reap()
        assert all(emu.results[c].status == 0 for c in ids) and lim.started == 8
        tur = emu.submit(bytes(6))
        os.write(uio_w, bytes(4))
        assert pump() == (1, False) and ring.events[0].cmd_id == tur
    finally:
        pump.close()
        os.close(uio_r)
        os.close(uio_w)
        eb.close()


def test_pump_gives_memory_back_once_idle_after_commands(emu):
    ring, ops = emu.ring(), CallbackOps()
    eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))
    uio_r, uio_w = os.pipe()
    pump = eb.pump(ring, lim, None, uio_r, None, 0.02)
    try:
        assert pump() == (0, False) and pump.trims == 0      # idle, nothing served: no trim
        emu.submit(rw16(0x88, 0, 1), data_in=BS)
        # served in C, then the timeout: one trim; idle again with nothing new: none
        assert pump() == (0, False) and lim.started == 1 and pump.trims == 1
        assert pump() == (0, False) and pump.trims == 1
    finally:
        pump.close()
        os.close(uio_r)
        os.close(uio_w)
        eb.close()


class EngineMemoryBackend(MemoryBackend):
    """The memory backend served through Python callbacks in the ops table
    (tests that inject failures into the engine's ops: test_metrics.py);
    MemoryBackend(engine=True) is the C one."""

    def __init__(self, size):
        super().__init__(size)
        self._readv = ffi.callback(READV, self._c_readv)
        self._writev = ffi.callback(WRITEV, self._c_writev)
        self._ops = ffi.new("struct engine_ops *", {"readv": self._readv, "writev": self._writev})
        self._engine = EngineBackend(self._ops, ffi.NULL)
        self.fast = 0

    def _c_readv(self, dev, q, tag, iov, cnt, off):
        self.fast += 1
        n = sum(iov[i].iov_len for i in range(cnt))
        lib.rq_push(q, tag, lib.iov_from_buf(iov, cnt, 0, self._ptr + off, n), 0)
        return 0

    def _c_writev(self, dev, q, tag, iov, cnt, off, fua):
        self.fast += 1
        n = sum(iov[i].iov_len for i in range(cnt))
        self._mark(off, n, 1)
        lib.rq_push(q, tag, lib.iov_to_buf(iov, cnt, 0, self._ptr + off, n), 0)
        return 0


def test_the_handler_over_the_engine_served_memory_backend():
    """MemoryBackend(engine=True): plain READ/WRITE start in C (memory_dev.c)
    on the same mapping and allocation map the Python side serves the rest
    from."""
    b = MemoryBackend(8 << 20, engine=True)
    with Rig(b) as rig:
        started = lambda: int(rig.handler._limits.started)      # noqa: E731
        data = os.urandom(64 * BS)
        assert rig.write(0, data).status == scsi.GOOD
        assert rig.read(0, 64).data == data and started() == 2
        assert b._allocated(0, 8 << 20) == [(0, 65536)]          # marked by the C write
        r10 = struct.pack(">BBIBHB", 0x28, 0, 8, 0, 8, 0)
        assert rig.run(r10, data_in=8 * BS).data == data[8 * BS:16 * BS] and started() == 3
        # WRITE SAME, a read past the end: the SCSI core, in Python
        ws = bytes([0x93, 0]) + struct.pack(">QI", 100, 4) + bytes(2)
        assert rig.run(ws, data_out=b"\x5a" * BS).status == scsi.GOOD
        assert rig.read(100, 4).data == b"\x5a" * 4 * BS and started() == 4
        res = rig.read(rig.lun.num_blocks - 1, 2)
        assert res.status == scsi.CHECK_CONDITION and started() == 4
        assert not rig.emu.broken


def test_the_engine_memory_ops_refuse_what_they_cannot_do():
    """A write to a read-only one, a range past the mapping: refused (no
    completion follows), so the handler answers them."""
    for ro, off, ok in ((True, 0, False), (False, 8 << 20, False), (False, (8 << 20) - BS, True)):
        b = MemoryBackend(8 << 20, read_only=ro, engine=True)
        eng = b.engine_backend()
        buf = ffi.new("uint8_t[]", BS)
        iov = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": BS})
        rc = eng.c.ops.writev(eng.c.dev, eng.queue, 1, iov, 1, off, 0)
        assert (rc == 0) == ok and lib.rq_pending(eng.queue) == int(ok), (ro, off)
        b.close()


def test_engine_drive_runs_a_workload_through_the_engine_in_c():
    from tcmu_rbd_lab.bench.native import _memory_rig, run_engine_workload
    from tcmu_rbd_lab.bench.workloads import Workload
    for w in (Workload("randwrite", 4096, 32), Workload("read", 65536, 8)):
        with _memory_rig(w, 16 << 20) as rig:
            r = run_engine_workload(rig, w, 0.2)
            assert r["commands"] == int(rig.handler._limits.started) > 100
            assert r["lat_p99_us"] >= 0 and not rig.emu.broken and rig.emu.inflight == 0
    with Rig(MemoryBackend(1 << 20)) as rig, pytest.raises(ValueError, match="not served"):
        run_engine_workload(rig, Workload("randread", 4096, 1), 0.1)


def test_a_full_completion_queue_grows_and_keeps_the_order():
    q = lib.rq_create(4)
    tags, rets, extra = ffi.new("uint64_t[64]"), ffi.new("int64_t[64]"), ffi.new("uint64_t[64]")
    try:
        for i in range(3):
            lib.rq_push(q, i, i, 0)
        assert lib.rq_drain(q, tags, rets, extra, 2) == 2          # the ring wraps next
        for i in range(3, 40):                                      # 4, 8, 16, 32, 64
            lib.rq_push(q, i, -i, i)
        assert lib.rq_pending(q) == 38 and lib.rq_lost(q) == 0
        n = lib.rq_drain(q, tags, rets, extra, 64)
        assert [tags[k] for k in range(n)] == list(range(2, 40))
        assert [rets[k] for k in range(1, n)] == [-i for i in range(3, 40)]
    finally:
        lib.rq_destroy(q)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([512, 4096, 65536, 3 * 4096]), st.data())
def test_a_c_write_marks_the_granules_as_a_python_one_does(granularity, data):
    """The allocation rule is written twice (memory.py's _mark, memory_dev.c's
    mem_writev): a write allocates every granule it touches.  Same writes, same map."""
    size = 16 * granularity + 4096
    c, py = (MemoryBackend(size, granularity=granularity, engine=e) for e in (True, False))
    eng = c.engine_backend()
    done = []
    py.on_complete = lambda tag, ret, extra: done.append(ret)
    for _ in range(data.draw(st.integers(1, 4))):
        off = data.draw(st.integers(0, size))
        n = data.draw(st.integers(0, size - off))
        buf = ffi.new("uint8_t[]", max(n, 1))
        iov = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": n})
        assert eng.c.ops.writev(eng.c.dev, eng.queue, 1, iov, 1, off, 0) == 0
        py.write(1, iov, 1, off, n)
        assert done.pop() == n
    assert bytes(c._alloc) == bytes(py._alloc)
    c.close()
    py.close()
