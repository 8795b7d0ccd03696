"""The handler loop end to end: emulated kernel -> real ring -> handler ->
memory and sparse-file backends, and what an initiator gets back."""

import errno
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_rbd import scsi
from tcmu_rbd.backends.base import Backend
from tcmu_rbd.backends.file import FileBackend
from tcmu_rbd.backends.memory import MemoryBackend
from tcmu_rbd_lab.emulator import POISON, Emulator
from tcmu_rbd_lab.rig import Rig

MiB = 1 << 20
BS = 512


def sense_key(res):
    assert res.status == scsi.CHECK_CONDITION, res
    return res.sense[2] & 0x0F, res.sense[12], res.sense[13]


@pytest.fixture(params=["memory", "file"])
def rig(request, tmp_path):
    if request.param == "memory":
        b = MemoryBackend(64 * MiB)
    else:
        b = FileBackend(str(tmp_path / "lun.img"), size=64 * MiB, create=True)
    r = Rig(b)
    yield r
    r.close()


def test_random_writes_read_back(rig):
    rng = random.Random(7)
    shadow = bytearray(rig.backend.size)
    nblocks = rig.backend.size // BS
    pending = []
    for i in range(400):
        blocks = rng.choice([1, 8, 16, 64, 128, 255, 1024])
        lba = rng.randrange(0, nblocks - blocks)
        data = rng.randbytes(blocks * BS)
        shadow[lba * BS:(lba + blocks) * BS] = data
        pending.append(rig.submit(rig.write16(lba, blocks), data_out=data))
        if len(pending) >= 128:          # queue depth 128
            rig.pump()
            pending = [p for p in pending if not rig.emu.is_done(p)]
            for r in rig.emu.reap():
                assert r.status == scsi.GOOD
    rig.pump()
    for r in rig.emu.reap():
        assert r.status == scsi.GOOD
    for lba in range(0, nblocks, 1024):          # max transfer: 1024 blocks
        res = rig.read(lba, 1024)
        assert res.status == scsi.GOOD
        assert res.data == bytes(shadow[lba * BS:(lba + 1024) * BS])
    assert not rig.emu.broken


def test_read_out_of_range_is_rejected_without_data(rig):
    last = rig.backend.size // BS
    res = rig.read(last - 1, 2)
    assert sense_key(res) == (0x05, 0x21, 0x00)
    assert rig.read(last - 1, 1).status == scsi.GOOD


def test_emulated_answers_zero_the_rest_of_the_buffer(rig):
    # INQUIRY into a 4096-byte buffer: the bytes after the answer are zero,
    # never the previous command's data, and READ_LEN carries the real length
    res = rig.run(bytes([0x12, 0, 0, 0x10, 0x00, 0]), data_in=4096)
    assert res.status == scsi.GOOD
    assert res.data[8:16] == b"LIO-ORG "
    assert bytes([POISON]) not in res.data
    if res.read_len:
        assert len(res.data) == res.read_len < 4096
    else:
        assert res.data[res.data.rindex(b"TCMU device") + 16:] == bytes(len(res.data) - res.data.rindex(b"TCMU device") - 16)


def test_read_capacity_and_resize_unit_attention(rig):
    res = rig.run(bytes([0x9E, 0x10]) + bytes(8) + struct.pack(">I", 32) + bytes(2), data_in=32)
    last, bs = struct.unpack(">QI", res.data[:12])
    assert (last + 1) * bs == rig.backend.size and bs == BS
    rig.lun.resize(rig.lun.num_blocks - 8)
    res = rig.run(bytes(6))                                    # TEST UNIT READY
    assert sense_key(res) == (0x06, 0x2A, 0x09)
    assert rig.run(bytes(6)).status == scsi.GOOD               # once only


def test_compare_and_write(rig):
    block = os.urandom(BS)
    assert rig.write(100, block).status == scsi.GOOD
    new = os.urandom(BS)
    caw = bytes([0x89, 0]) + struct.pack(">Q", 100) + bytes(3) + bytes([1, 0, 0])
    res = rig.run(caw, data_out=block + new)
    assert res.status == scsi.GOOD
    assert rig.read(100, 1).data == new
    wrong = bytearray(new)
    wrong[77] ^= 0xFF
    res = rig.run(caw, data_out=bytes(wrong) + os.urandom(BS))
    assert sense_key(res) == (0x0E, 0x1D, 0x00)
    assert res.sense[0] == 0xF0 and struct.unpack(">I", res.sense[3:7])[0] == 77
    assert rig.read(100, 1).data == new                        # nothing written


def test_unmap_then_lba_status_and_zeroes(rig):
    g = max(rig.backend.granularity, 65536) // BS
    data = os.urandom(4 * g * BS)
    assert rig.write(4 * g, data).status == scsi.GOOD
    # UNMAP the middle two granules
    desc = struct.pack(">QI4x", 5 * g, 2 * g)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    res = rig.run(bytes([0x42, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", len(params)) + bytes(1),
                  data_out=params)
    assert res.status == scsi.GOOD
    assert rig.read(5 * g, 2 * g).data == bytes(2 * g * BS)
    assert rig.read(4 * g, g).data == data[:g * BS]
    # GET LBA STATUS from the start of the unmapped range: deallocated
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", 5 * g, 4096) + bytes(2), data_in=4096)
    assert res.status == scsi.GOOD
    lba, count, prov = struct.unpack(">QIB", res.data[8:21])
    assert lba == 5 * g and prov == 1 and count >= 2 * g
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", 4 * g, 4096) + bytes(2), data_in=4096)
    lba, count, prov = struct.unpack(">QIB", res.data[8:21])
    assert (lba, prov) == (4 * g, 0) and count == g


def test_lba_status_looks_up_a_bounded_window_and_says_where_it_stopped(rig, monkeypatch):
    from tcmu_rbd import handler
    monkeypatch.setattr(handler, "LBA_STATUS_WINDOW", 1 * MiB)
    asked = []
    allocated = rig.backend.allocated
    monkeypatch.setattr(rig.backend, "allocated",
                        lambda tag, off, n, out: asked.append((off, n)) or allocated(tag, off, n, out))
    g = max(rig.backend.granularity, 65536) // BS              # 128 blocks
    assert rig.write(2048, os.urandom(g * BS)).status == scsi.GOOD
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", 1000, 4096) + bytes(2), data_in=4096)
    assert res.status == scsi.GOOD and asked == [(1000 * BS, 1 * MiB)]
    descs = [struct.unpack_from(">QIB", res.data, 8 + 16 * i)
             for i in range((struct.unpack_from(">I", res.data)[0] - 4) // 16)]
    assert descs == [(1000, 1048, 1), (2048, g, 0), (2048 + g, 3048 - 2048 - g, 1)]
    # the initiator asks again from where the answer stopped
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", 3048, 4096) + bytes(2), data_in=4096)
    assert struct.unpack_from(">QIB", res.data, 8) == (3048, 2048, 1)


def test_write_same_and_write_same_unmap(rig):
    pattern = bytes(range(256)) * 2
    cdb = bytes([0x93, 0]) + struct.pack(">QI", 1000, 64) + bytes(2)
    assert rig.run(cdb, data_out=pattern).status == scsi.GOOD
    assert rig.read(1000, 64).data == pattern * 64
    # WRITE SAME(16) with UNMAP and a zero block: the range reads zero after
    cdb = bytes([0x93, 0x08]) + struct.pack(">QI", 1000, 64) + bytes(2)
    assert rig.run(cdb, data_out=bytes(BS)).status == scsi.GOOD
    assert rig.read(1000, 64).data == bytes(64 * BS)


def test_verify_bytchk(rig):
    data = os.urandom(8 * BS)
    rig.write(50, data)
    cdb = bytes([0x2F, 0x02]) + struct.pack(">I", 50) + bytes(1) + struct.pack(">H", 8) + bytes(1)
    assert rig.run(cdb, data_out=data).status == scsi.GOOD
    bad = bytearray(data)
    bad[1000] ^= 1
    res = rig.run(cdb, data_out=bytes(bad))
    assert sense_key(res) == (0x0E, 0x1D, 0x00)
    assert struct.unpack(">I", res.sense[3:7])[0] == 1000


def test_write_and_verify(rig):
    data = os.urandom(16 * BS)
    cdb = bytes([0x2E, 0x02]) + struct.pack(">I", 300) + bytes(1) + struct.pack(">H", 16) + bytes(1)
    assert rig.run(cdb, data_out=data).status == scsi.GOOD
    assert rig.read(300, 16).data == data


def test_synchronize_cache(rig):
    assert rig.run(bytes([0x35]) + bytes(9)).status == scsi.GOOD


def test_read_only_lun_rejects_writes(tmp_path):
    b = MemoryBackend(MiB, read_only=True)
    with Rig(b) as rig:
        res = rig.write(0, bytes(BS))
        assert sense_key(res) == (0x07, 0x27, 0x00)
        assert rig.read(0, 1).status == scsi.GOOD


def test_a_read_fills_the_buffer_it_was_given(rig):
    # the kernel gave a 4096-byte buffer for a 16-block read: GOOD with the
    # 4096 bytes it holds (the overflow residual cannot be expressed)
    data = os.urandom(16 * BS)
    assert rig.write(0, data).status == scsi.GOOD
    res = rig.run(rig.read16(0, 16), data_in=4096)
    assert res.status == scsi.GOOD and res.data == data[:4096]


class Delayed(Backend):
    """Holds completions until released: an asynchronous backend whose
    completions arrive in an order the test chooses."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.size, self.granularity, self.read_only = inner.size, inner.granularity, inner.read_only
        self.held = []
        self.released = []
        inner.on_complete = lambda tag, ret, extra: self.held.append((tag, ret, extra))
        self.r, self.w = os.pipe2(os.O_NONBLOCK)

    def fileno(self):
        return self.r

    def release(self, order):
        self.released += [self.held[i] for i in order]
        self.held = []
        os.write(self.w, b"x")

    def poll(self):
        try:
            os.read(self.r, 100)
        except BlockingIOError:
            pass
        out, self.released = self.released, []
        for t in out:
            self.on_complete(*t)
        return len(out)

    def read(self, *a):
        self.inner.read(*a)

    def write(self, *a):
        self.inner.write(*a)

    def flush(self, tag):
        self.inner.flush(tag)

    def write_zeroes(self, *a):
        self.inner.write_zeroes(*a)

    def write_same(self, *a):
        self.inner.write_same(*a)

    def compare_and_write(self, *a):
        self.inner.compare_and_write(*a)

    def allocated(self, *a):
        self.inner.allocated(*a)


def test_out_of_order_backend_completions_and_abort():
    inner = MemoryBackend(8 * MiB)
    b = Delayed(inner)
    with Rig(b) as rig:
        ids = [rig.submit(rig.write16(i * 8, 8), data_out=bytes([i]) * 8 * BS) for i in range(32)]
        rig.handler.process()
        assert len(b.held) == 32 and rig.emu.inflight == 32
        # abort three of them while their I/O is in flight
        rig.emu.submit_tmr(1, ids[:3])
        rig.handler.process()
        order = list(range(32))
        random.Random(3).shuffle(order)
        b.release(order)
        rig.pump()
        res = {r.cmd_id: r for r in rig.emu.reap()}
        assert len(res) == 32 and not rig.emu.broken
        assert all(res[i].status == scsi.GOOD for i in ids[3:])
        assert rig.handler.stats["aborts"] == 3
        # a stale completion (the id was completed already) is dropped
        rig.handler._on_complete((rig.handler._cmds[ids[5]].gen << 16) | ids[5], 0, 0)
        assert rig.handler.stats["stale"] == 1
        for i in range(3, 32):                 # what the backend holds now
            assert inner._map[i * 8 * BS:(i + 1) * 8 * BS] == bytes([i]) * 8 * BS


# ---------------------------------------------------------------- property
OPCODES = [0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2E,
           0x2F, 0x34, 0x35, 0x37, 0x41, 0x42, 0x55, 0x5A, 0x83, 0x84, 0x88, 0x89, 0x8A, 0x8E,
           0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA3, 0xA4, 0xA8, 0xAA, 0xAE, 0xAF, 0xB7]


# commands answered by the emulation itself: their whole Data-In buffer must
# be written (answer + zeroes), so the emulator's stale-data poison never shows
EMULATED_DATA_IN = {0x03, 0x12, 0x1A, 0x25, 0x37, 0x5A, 0x84, 0x9E, 0xA3, 0xB7}


@st.composite
def commands(draw):
    op = draw(st.sampled_from(OPCODES) | st.integers(0, 255))
    length = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(op >> 5, 16)
    body = draw(st.binary(min_size=length - 1, max_size=length - 1))
    cdb = bytes([op]) + body
    if draw(st.booleans()):   # keep LBAs and lengths small sometimes, so I/O happens
        cdb = bytes([op]) + bytes(min(len(body), 4)) + body[4:]
    nvec = draw(st.integers(0, 4))
    vecs = [draw(st.integers(1, 9000)) for _ in range(nvec)]
    data = draw(st.binary(min_size=0, max_size=64)) if draw(st.booleans()) else None
    return cdb, vecs, data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=st.lists(commands(), min_size=1, max_size=12))
def test_random_commands_always_complete_well_formed(cmds):
    b = MemoryBackend(4 * MiB)
    with Rig(b, emulator=Emulator(cmdr_size=64 * 1024, data_blocks=256)) as rig:
        ids = []
        for cdb, vecs, data in cmds:
            if data is not None and vecs:
                data = (data * (sum(vecs) // max(len(data), 1) + 1))[:sum(vecs)]
                ids.append(rig.submit(cdb, data_out=data, iov_lens=vecs))
            else:
                ids.append(rig.submit(cdb, data_in=sum(vecs), iov_lens=vecs))
        rig.pump(timeout=10)
        res = {r.cmd_id: r for r in rig.emu.reap()}
        assert not rig.emu.broken
        for cid, (cdb, _, _) in zip(ids, cmds):
            r = res[cid]
            assert r.status in (scsi.GOOD, scsi.CHECK_CONDITION, scsi.CONDITION_MET)
            if r.status == scsi.CHECK_CONDITION:
                assert r.sense[0] in (0x70, 0xF0) and r.sense[7] >= 6
                assert 0 < (r.sense[2] & 0x0F) <= 0x0E
            elif r.data is not None and cdb[0] in EMULATED_DATA_IN:
                assert bytes([POISON]) * 16 not in r.data     # no stale bytes


def test_concurrent_verifies_on_an_async_backend_do_not_share_buffers():
    inner = MemoryBackend(8 * MiB)
    b = Delayed(inner)
    with Rig(b) as rig:
        a, c = os.urandom(16 * BS), os.urandom(16 * BS)
        for lba, data in ((0, a), (64, c)):
            rig.submit(rig.write16(lba, 16), data_out=data)
        rig.handler.process()
        b.release(range(len(b.held)))
        rig.pump()
        rig.emu.reap()
        verify = lambda lba: bytes([0x2F, 0x02]) + struct.pack(">I", lba) + bytes(1) + struct.pack(">H", 16) + bytes(1)
        ids = [rig.submit(verify(0), data_out=a), rig.submit(verify(64), data_out=c)]
        rig.handler.process()
        assert len(b.held) == 2                     # both reads in flight together
        b.release([1, 0])                           # completing in reverse order
        rig.pump()
        res = {r.cmd_id: r for r in rig.emu.reap()}
        assert [res[i].status for i in ids] == [scsi.GOOD, scsi.GOOD]


class GateStub:
    """The handler's side of failover.Failover: the gate and the error report."""

    def __init__(self, owner):
        self.owner = owner
        self.asked = 0
        self.errors = []

    def may_write(self):
        self.asked += 1
        return self.owner

    def io_error(self, ret):
        self.errors.append(ret)

    swap_ready = False


class FailingWrites(MemoryBackend):
    def write(self, tag, iov, cnt, offset, length, fua=False):
        self.on_complete(tag, -errno.ESHUTDOWN, 0)


def test_non_owner_answers_busy_to_medium_changes_and_serves_reads():
    with Rig(MemoryBackend(8 * MiB)) as rig:
        gate = rig.handler.failover = GateStub(owner=False)
        assert rig.write(0, b"x" * BS).status == scsi.BUSY
        unmap = bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0])
        param = struct.pack(">HH4xQI4x", 22, 16, 0, 8)
        assert rig.run(unmap, data_out=param).status == scsi.BUSY
        assert rig.read(0, 8).status == scsi.GOOD           # reads go on
        assert gate.asked == 2
        gate.owner = True
        assert rig.write(0, b"y" * BS).status == scsi.GOOD
        assert rig.read(0, 1).data == b"y" * BS


def test_blocklisted_write_is_busy_and_reported_to_failover():
    with Rig(FailingWrites(8 * MiB)) as rig:
        gate = rig.handler.failover = GateStub(owner=True)
        assert rig.write(0, b"x" * BS).status == scsi.BUSY
        assert gate.errors == [-errno.ESHUTDOWN]


def test_format_unit_goes_in_pieces_and_an_abort_stops_it_between_two(monkeypatch):
    from tcmu_rbd import handler
    monkeypatch.setattr(handler, "PIECE", 1 * MiB)
    inner = MemoryBackend(8 * MiB)
    b = Delayed(inner)
    pieces = []
    zeroes = b.write_zeroes
    b.write_zeroes = lambda tag, off, n: pieces.append((off, n)) or zeroes(tag, off, n)
    with Rig(b) as rig:
        inner._map[7 * MiB:7 * MiB + BS] = b"\xff" * BS
        fid = rig.submit(bytes([0x04, 0, 0, 0, 0, 0]))          # FORMAT UNIT: the whole LUN
        rig.handler.process()
        assert pieces == [(0, MiB)] and len(b.held) == 1         # one piece at a time
        for n in (2, 3):
            b.release([0])
            rig.pump(until=lambda: len(pieces) == n and len(b.held) == 1)
        rig.emu.submit_tmr(1, [fid])                             # ABORT TASK
        rig.handler.process()
        b.release([0])                                           # the third piece completes
        rig.pump(until=lambda: rig.emu.is_done(fid))
        assert pieces == [(0, MiB), (MiB, MiB), (2 * MiB, MiB)]  # and no fourth starts
        assert rig.emu.reap()[-1].status == scsi.TASK_ABORTED
        assert inner._map[7 * MiB:7 * MiB + BS] == b"\xff" * BS  # untouched past the abort
