"""The ring engine against the emulated kernel: byte layout, out-of-order
completion, wrap with PAD, ring full, TMR, hostile entries, doorbells."""

import random
import struct

import pytest

from tcmu_rbd._native import ffi, lib
from tcmu_rbd.ring import (BAD_CDB, BAD_ENTRY, BAD_IOV, CAP_OOOC, CAP_READ_LEN, CAP_TMR,
                           EV_CMD, EV_TMR, TMR_ABORT_TASK, UFLAG_READ_LEN, UFLAG_UNKNOWN_OP,
                           Ring, RingError, UioRing)
from tcmu_rbd_lab.emulator import POISON, Emulator, Full, RingBroken

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])


@pytest.fixture
def emu():
    e = Emulator(cmdr_size=64 * 1024, data_blocks=1024)
    yield e
    e.close()


def test_mailbox_is_checked():
    e = Emulator()
    try:
        base = lib.tr_mmap(e._e.memfd, e.size)
        struct.pack_into("<H", ffi.buffer(base, 2), 0, 3)  # version 3
        with pytest.raises(RingError, match="mailbox version 3, expected 2"):
            Ring(base, e.size)
        lib.tr_munmap(base, e.size)
    finally:
        e.close()


def test_uio_ring_maps_a_node_by_path_and_size(emu):
    # the emulator's memfd, reopened by path, stands in for /dev/uioN
    node = "/proc/self/fd/%d" % emu._e.memfd
    r = UioRing(node, emu.size)
    assert r.node == node and r.size == emu.size and r.fd >= 0
    cid = emu.submit(READ10, data_in=512)
    assert r.take() == 1 and r.events[0].cmd_id == cid and r.cdb(cid) == READ10
    r.close()
    assert r.fd == -1 and r.base is None
    with pytest.raises(FileNotFoundError):
        UioRing("/nonexistent/uio0", emu.size)


def test_capabilities_are_read_from_the_mailbox():
    with Emulator(caps=CAP_OOOC) as e:
        r = e.ring()
        assert r.ooo_supported and not r.read_len_supported and not r.tmr_supported
    with Emulator(caps=CAP_OOOC | CAP_READ_LEN | CAP_TMR) as e:
        r = e.ring()
        assert r.read_len_supported and r.tmr_supported


def test_command_is_copied_out_with_cdb_and_iovecs(emu):
    r = emu.ring()
    cid = emu.submit(WRITE10, data_out=b"x" * 4096)
    assert r.take() == 1
    ev = r.events[0]
    assert (ev.kind, ev.cmd_id) == (EV_CMD, cid)
    assert r.cdb(cid) == WRITE10
    c = r.cmd(cid)
    assert c.bad == 0 and c.iov_cnt == 1 and c.data_len == 4096
    assert ffi.buffer(c.iov[0].iov_base, 4096)[:] == b"x" * 4096
    # the iovec points into our own mapping's data area
    addr = int(ffi.cast("uintptr_t", c.iov[0].iov_base))
    base = int(ffi.cast("uintptr_t", r.base))
    assert base + r._r.data_off <= addr < base + r.size
    assert r.take() == 0


def test_data_out_is_in_place_when_a_handler_thread_takes_the_command(emu):
    # the kernel scatters Data-Out before it moves cmd_head: a handler on another
    # thread that takes a WRITE the moment it is published reads all of its data
    import threading
    r = emu.ring()
    n, seen, done = 3000, {}, threading.Event()

    def handler():
        while len(seen) < n and not done.is_set():
            k = r.take()
            if k:
                for ev in r.events[0:k]:
                    c = r.cmd(ev.cmd_id)
                    seen[ev.cmd_id] = ffi.buffer(c.iov[0].iov_base, c.data_len)[:]
                    r.complete(ev.cmd_id, 0)
                r.kick()

    t = threading.Thread(target=handler)
    t.start()
    sent = {}
    try:
        for i in range(n):
            data = bytes([i % 251 + 1]) * 4096
            while True:
                try:
                    sent[emu.submit(WRITE10, data_out=data)] = data
                    break
                except Full:
                    emu.doorbell()
                    emu.reap()
    finally:
        t.join(30)
        done.set()
    assert not t.is_alive()
    assert seen == sent


def test_variable_length_cdb_is_copied_whole(emu):
    r = emu.ring()
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]) + bytes(range(24))
    cid = emu.submit(cdb)
    r.take()
    assert r.cdb(cid) == cdb and r.cmd(cid).bad == 0


def test_status_sense_and_read_len_reach_the_kernel(emu):
    r = emu.ring()
    a = emu.submit(READ10, data_in=4096)
    b = emu.submit(READ10, data_in=4096)
    r.take()
    sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 0x0A] + [0] * 4 + [0x24, 0] + [0] * 4)
    ffi.memmove(r.cmd(a).iov[0].iov_base, b"hello", 5)
    assert r.complete(a, 0, read_len=5)
    assert r.complete(b, 0x02, sense)
    r.kick()
    res = {x.cmd_id: x for x in emu.reap()}
    assert res[a].status == 0 and res[a].uflags & UFLAG_READ_LEN and res[a].read_len == 5
    assert res[a].data == b"hello"              # only read_len bytes reach the initiator
    assert res[b].status == 0x02 and res[b].sense[:18] == sense and res[b].sense[18:] == bytes(78)


def test_fresh_data_in_buffers_hold_stale_bytes_until_written(emu):
    # the emulator models reuse of the data area: a handler that does not
    # write (or zero) a buffer would hand these bytes to the initiator
    r = emu.ring()
    cid = emu.submit(READ10, data_in=4096)
    r.take()
    assert ffi.buffer(r.cmd(cid).iov[0].iov_base, 4096)[:] == bytes([POISON]) * 4096
    r.complete(cid, 0)
    r.kick()
    assert emu.reap()[0].data == bytes([POISON]) * 4096


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_completion_qd128(seed):
    rng = random.Random(seed)
    with Emulator(cmdr_size=256 * 1024, data_blocks=2048) as e:
        r = e.ring()
        done = 0
        pending = []
        total = 5000
        submitted = 0
        while done < total:
            while submitted < total and len(pending) < 128:
                pending.append(e.submit(WRITE10, data_out=bytes([submitted % 256]) * 512))
                submitted += 1
            n = r.take()
            assert n >= 0
            rng.shuffle(pending)
            k = rng.randint(1, len(pending))
            for cid in pending[:k]:
                assert r.complete(cid, 0)
            pending = pending[k:]
            r.kick()
            results = e.reap()
            done += len(results)
            assert not e.broken
        assert e.inflight == 0 and r.outstanding == 0
        assert r.stats["dropped"] == 0
        assert e.tail == e.head


def test_ring_wraps_with_pad_and_the_engine_skips_it():
    # a tiny ring: entries of 112+ bytes wrap often
    with Emulator(cmdr_size=1024, data_blocks=64) as e:
        r = e.ring()
        pads_seen = 0
        for i in range(500):
            head_before = e.head
            cid = e.submit(READ10, data_in=512)
            if e.head < head_before and e.head != 128 + 0:   # wrapped (PAD or exact fit)
                pads_seen += 1
            assert r.take() == 1 and r.events[0].cmd_id == cid
            r.complete(cid, 0)
            r.kick()
            assert len(e.reap()) == 1
        assert pads_seen > 10 and not e.broken


def test_ring_full_then_space_returns(emu):
    r = emu.ring()
    ids = []
    with pytest.raises(Full):
        for _ in range(10000):
            ids.append(emu.submit(bytes([0x00] * 6)))
    assert len(ids) > 300
    taken = 0
    while (n := r.take()):
        taken += n
    assert taken == len(ids)
    for cid in reversed(ids):          # all out of order
        r.complete(cid, 0)
    r.kick()
    assert len(emu.reap()) == len(ids)
    emu.submit(bytes([0x00] * 6))      # room again
    assert not emu.broken


def test_data_area_full(emu):
    ids = []
    with pytest.raises(Full):
        for _ in range(2000):
            ids.append(emu.submit(READ10, data_in=64 * 1024))
    assert emu.free_blocks < 16


def test_one_doorbell_per_burst(emu):
    r = emu.ring()
    ids = [emu.submit(READ10, data_in=512) for _ in range(64)]
    r.take()
    for cid in ids:
        r.complete(cid, 0)
    assert r.kick() is True
    assert r.kick() is False           # nothing new: no second write
    assert r.stats["doorbells"] == 1 and r.stats["completions"] == 64
    assert len(emu.reap()) == 64


def test_double_completion_is_dropped_not_sent(emu):
    r = emu.ring()
    a = emu.submit(READ10, data_in=512)
    b = emu.submit(READ10, data_in=512)
    r.take()
    assert r.complete(a, 0)
    assert not r.complete(a, 0)         # would break a real kernel's ring
    assert not r.complete(999, 0)       # never issued
    assert r.complete(b, 0)
    r.kick()
    assert len(emu.reap()) == 2 and not emu.broken
    assert r.stats["dropped"] == 2


def test_tmr_entries_are_reported_and_released(emu):
    r = emu.ring()
    a = emu.submit(READ10, data_in=512)
    b = emu.submit(READ10, data_in=512)
    emu.submit_tmr(TMR_ABORT_TASK, [a, b])
    c = emu.submit(READ10, data_in=512)
    n = r.take()
    kinds = [(r.events[i].kind, r.events[i].cmd_id) for i in range(n)]
    assert kinds == [(EV_CMD, a), (EV_CMD, b), (EV_TMR, 0), (EV_CMD, c)]
    assert r.events[2].tmr_type == TMR_ABORT_TASK and r.tmr_ids(r.events[2]) == [a, b]
    for cid in (c, a, b):
        r.complete(cid, 0)
    r.kick()
    assert len(emu.reap()) == 3 and not emu.broken and emu.tail == emu.head


def test_lone_tmr_space_is_released_without_completions(emu):
    r = emu.ring()
    emu.submit_tmr(TMR_ABORT_TASK, [7])
    assert r.take() == 1
    assert r.kick() is True            # tail moved past the TMR entry
    emu.doorbell()
    assert emu.tail == emu.head and not emu.broken


def test_unknown_entry_type_gets_unknown_op(emu):
    r = emu.ring()
    a = emu.submit(READ10, data_in=512)
    emu.write_raw(112 | 5, 4242, bytes(104))     # opcode 5: not PAD/CMD/TMR
    r.take()
    r.complete(a, 0)
    r.kick()
    res = {x.cmd_id: x for x in emu.reap()}
    assert res[4242].uflags & UFLAG_UNKNOWN_OP and res[4242].status == 0x02
    assert res[a].status == 0 and not emu.broken


def _raw_cmd(emu, cmd_id, iov_cnt, cdb_off_rel, iovs, length=128, cdb=READ10):
    """A CMD entry written by hand: cdb_off relative to the entry start."""
    head = emu.head
    body = bytearray(length - 8)
    struct.pack_into("<IIIIQ", body, 0, iov_cnt, 0, 0, 0, 128 + head + cdb_off_rel)
    for i, (off, ln) in enumerate(iovs):
        struct.pack_into("<QQ", body, 40 + 16 * i, off, ln)
    if 0 <= cdb_off_rel - 8 < len(body) - len(cdb):
        body[cdb_off_rel - 8:cdb_off_rel - 8 + len(cdb)] = cdb
    emu.write_raw(length | 1, cmd_id, bytes(body))


def test_hostile_entries_are_flagged_not_followed(emu):
    r = emu.ring()
    data_off = r._r.data_off
    _raw_cmd(emu, 11, 1, 112, [(0, 4096)])                    # iovec over the mailbox
    _raw_cmd(emu, 12, 1, 112, [(r.size - 100, 4096)])         # runs past the mapping
    _raw_cmd(emu, 13, 1, 4000, [(data_off, 512)])             # CDB outside the entry
    _raw_cmd(emu, 14, 1000, 112, [])                          # more iovecs than the entry holds
    _raw_cmd(emu, 15, 1, 56, [(data_off, 512)])               # CDB over its own iovecs
    n = r.take()
    assert n == 5
    assert r.cmd(11).bad == BAD_IOV and r.cmd(12).bad == BAD_IOV
    assert r.cmd(13).bad == BAD_CDB and r.cmd(15).bad == BAD_CDB
    assert r.cmd(14).bad == BAD_ENTRY
    for cid in (11, 12, 13, 14, 15):
        assert r.complete(cid, 0x02, b"\x70\x00\x04")
    r.kick()
    assert len(emu.reap()) == 5 and not emu.broken


def test_corrupt_ring_is_reported(emu):
    r = emu.ring()
    # an entry header claiming to run past the end of the ring
    struct.pack_into("<IHBB", ffi.buffer(emu._e.base + 128, 8), 0, (1 << 20) | 1, 1, 0, 0)
    struct.pack_into("<I", ffi.buffer(emu._e.base + 12, 4), 0, 16)   # head moved by 16
    with pytest.raises(RingError, match="corrupt"):
        r.take()


def test_emulator_breaks_on_a_bogus_tail(emu):
    # the emulator must catch what a real kernel would: proves the tests above
    # would fail if the engine misbehaved
    emu.submit(READ10, data_in=512)
    struct.pack_into("<I", ffi.buffer(emu._e.base + 64, 4), 0, emu.head)   # tail over an unfinished cmd... legal id
    assert emu.doorbell() == 1                 # reaps it (cmd_id in flight): legal
    emu.submit(READ10, data_in=512)
    struct.pack_into("<I", ffi.buffer(emu._e.base + 64, 4), 0, (emu.head + 8) % emu.cmdr_size)
    with pytest.raises(RingBroken):
        emu.doorbell()
    assert emu.broken


def test_emulator_breaks_on_unknown_cmd_id(emu):
    emu.submit(READ10, data_in=512)
    # rewrite the entry's cmd_id to one never issued, then move the tail
    struct.pack_into("<H", ffi.buffer(emu._e.base + 128 + 4, 2), 0, 777)
    struct.pack_into("<I", ffi.buffer(emu._e.base + 64, 4), 0, emu.head)
    with pytest.raises(RingBroken):
        emu.doorbell()


def test_reset_ring_and_forget(emu):
    r = emu.ring()
    ids = [emu.submit(READ10, data_in=512) for _ in range(5)]
    r.take()
    emu.reset_ring()
    r.forget_all()
    assert r.outstanding == 0 and emu.head == 0 and emu.tail == 0
    assert not r.complete(ids[0], 0)           # late completion after reset: dropped
    cid = emu.submit(READ10, data_in=512)
    assert r.take() == 1 and r.events[0].cmd_id == cid
    r.complete(cid, 0)
    r.kick()
    assert [x.cmd_id for x in emu.reap()] == [cid] and not emu.broken


def test_iov_helpers():
    a = ffi.new("uint8_t[]", 10)
    b = ffi.new("uint8_t[]", 6)
    iov = ffi.new("struct iovec[2]", [{"iov_base": a, "iov_len": 10}, {"iov_base": b, "iov_len": 6}])
    src = bytes(range(1, 17))
    assert lib.iov_from_buf(iov, 2, 3, src, 16) == 13
    assert bytes(ffi.buffer(a, 10)) == bytes(3) + src[:7]
    assert bytes(ffi.buffer(b, 6)) == src[7:13]
    out = ffi.new("uint8_t[]", 16)
    assert lib.iov_to_buf(iov, 2, 3, out, 16) == 13
    assert bytes(ffi.buffer(out, 13)) == src[:13]
    assert lib.iov_compare(iov, 2, 3, src, 13) == -1
    assert lib.iov_compare(iov, 2, 3, src[:9] + b"\xff" + src[10:], 13) == 9
    assert lib.iov_fill(iov, 2, 12, 0, 100) == 4
    assert bytes(ffi.buffer(b, 6)) == src[7:9] + bytes(4)
    assert lib.iov_first_nonzero(iov, 2, 12, 4) == -1
    assert lib.iov_first_nonzero(iov, 2, 0, 16) == 3
