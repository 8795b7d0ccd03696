"""The ring engine against a buggy or hostile kernel side: a CMD entry shorter
than the response it gets, fields rewritten while the engine reads them, a
second use of an in-flight cmd_id, a cmd_head or cmd_tail that is not an entry
boundary; then a seeded fuzz of all of it through the emulator and the engine.

The engine sees the emulator's memory between PROT_NONE guard pages
(Emulator.ring()), and every test body runs in a forked child (`forked`): a
touch outside the mapping is a segfault and a walk of the ring that never ends
an alarm, and either fails this test with that said instead of crashing
pytest.  Writes inside the mapping are checked against snapshots: taking may
change only cmd_tail and the UNKNOWN_OP bit of an entry's uflags, answering a
command only cmd_tail and the entry the answer goes into.
"""

import functools
import itertools
import os
import random
import signal
import struct
import time
import traceback
from collections import Counter

import pytest

from tcmu_rbd import scsi
from tcmu_rbd._native import ffi, lib
from tcmu_rbd.ring import EV_CMD, EV_TMR, UFLAG_UNKNOWN_OP, RingError
from tcmu_rbd_lab.emulator import Emulator, Full, RingBroken
from test_engine import CallbackOps, engine_for, rw16

CMDR_OFF = 128                  # the emulator's ring starts after the mailbox
CMDR = 4096 - CMDR_OFF          # and ends on a page boundary: the data area, or a guard page
MB_HEAD, MB_TAIL = 12, 64
RSP = 112                       # what an answer writes: header, status, read_len, sense
TUR = bytes(6)
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
SENSE = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 0x0A] + [0] * 4 + [0x20, 0] + [0] * 4)
SIGNALS = {signal.SIGSEGV: "touched memory outside the mapping (a guard page) or a wild pointer",
           signal.SIGBUS: "touched a page the mapping does not back",
           signal.SIGALRM: "did not finish in time (a walk of the ring that never ends?)"}


# ---------------------------------------------------------------- harness

def in_child(fn, timeout=30):
    """fn() in a forked child: its exception, a fatal signal or a hang fails the test."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rd)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)    # dies even inside a C call
            signal.alarm(timeout)
            fn()
        except BaseException:
            os.write(wr, traceback.format_exc()[-16000:].encode())
            code = 1
        finally:
            os._exit(code)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        pytest.fail("the child was killed by %s: the engine %s"
                    % (signal.Signals(sig).name, SIGNALS.get(sig, "crashed")), pytrace=False)
    if os.WEXITSTATUS(status):
        pytest.fail("in the child:\n" + msg, pytrace=False)


def forked(test):
    """A test whose body runs in_child (its parameters pass through)."""
    @functools.wraps(test)
    def run(*args, **kw):
        in_child(lambda: test(*args, **kw))
    return run


def mem(emu):
    """The kernel's view of the whole mapping, writable."""
    return ffi.buffer(emu._e.base, emu.size)


def snap(ring) -> bytes:
    return bytes(ffi.buffer(ring.base, ring.size))


def changed(before: bytes, after: bytes) -> list[int]:
    """The offsets where two snapshots differ."""
    if before == after:
        return []
    out = []
    for lo in range(0, len(before), 256):
        if before[lo:lo + 256] != after[lo:lo + 256]:
            out += [i for i in range(lo, min(lo + 256, len(before))) if before[i] != after[i]]
    return out


def is_tail(i: int) -> bool:
    return MB_TAIL <= i < MB_TAIL + 4


def assert_take_writes(before, after):
    """Taking writes cmd_tail and sets UNKNOWN_OP in entry headers, nothing else."""
    for i in changed(before, after):
        assert is_tail(i) or ((i - CMDR_OFF) % 8 == 7 and CMDR_OFF <= i < CMDR_OFF + CMDR
                              and after[i] == before[i] | UFLAG_UNKNOWN_OP), \
            "take wrote byte %d: %#x -> %#x" % (i, before[i], after[i])


def assert_answer_writes(before, after, entries):
    """Answering writes cmd_tail and inside the (ring offset, length) entries it answered into."""
    for i in changed(before, after):
        assert is_tail(i) or any(CMDR_OFF + o <= i < CMDR_OFF + o + n for o, n in entries), \
            "an answer wrote byte %d outside the entries %s" % (i, entries)


def slots(ring) -> list[int]:
    """Ring offsets of the CMD entries the next answers go into, oldest first."""
    r = ring._r
    return [r.slots[(r.slot_rd + i) % 65536] for i in range(r.slot_n)]


def entry_len(image: bytes, off: int) -> int:
    return struct.unpack_from("<I", image, CMDR_OFF + off)[0] & ~7


def answer(ring, cid, status=scsi.CHECK_CONDITION):
    """Complete cid (by default as the handler answers a malformed entry: the
    longest answer), checking it lands inside the entry it goes into."""
    before = snap(ring)
    off = slots(ring)[0]
    assert ring.complete(cid, status, SENSE if status == scsi.CHECK_CONDITION else ffi.NULL)
    assert_answer_writes(before, snap(ring), [(off, entry_len(before, off))])


def start_at(emu, off):
    """An empty ring whose head and tail are at `off` (what a long-running ring looks like)."""
    struct.pack_into("<I", mem(emu), MB_HEAD, off)
    struct.pack_into("<I", mem(emu), MB_TAIL, off)
    emu._e.last_cleaned = off


def cmd_body(emu, length, cdb=TUR, iovs=(), cdb_rel=None):
    """The body (after the 8-byte header) of a CMD entry about to be written at the head."""
    body = bytearray(length - 8)
    cdb_rel = 48 + 16 * len(iovs) if cdb_rel is None else cdb_rel
    if len(body) >= 24:
        struct.pack_into("<IIIIQ", body, 0, len(iovs), 0, 0, 0, CMDR_OFF + emu.head + cdb_rel)
    for i, (base, n) in enumerate(iovs):
        struct.pack_into("<QQ", body, 40 + 16 * i, base, n)
    body[cdb_rel - 8:cdb_rel - 8 + len(cdb)] = cdb[:max(0, len(body) - cdb_rel + 8)]
    return bytes(body)


def check_cmd(ring, c):
    """What the engine hands on of a command: iovecs only in its data area, counts consistent."""
    assert c.iov_cnt + c.bidi_cnt <= c.iov_cap
    assert 1 <= c.cdb_len <= 32
    lo, hi = int(ffi.cast("uintptr_t", ring.base)) + ring._r.data_off, \
        int(ffi.cast("uintptr_t", ring.base)) + ring.size
    total = 0
    for i in range(c.iov_cnt + c.bidi_cnt):
        b, n = int(ffi.cast("uintptr_t", c.iov[i].iov_base)), c.iov[i].iov_len
        assert lo <= b and b + n <= hi, "iovec %d: %#x+%d outside the data area" % (i, b, n)
        if n:
            ffi.buffer(c.iov[i].iov_base, n)[n - 1]     # touch it: a wild one faults
        total += n if i < c.iov_cnt else 0
    assert c.data_len == total


# ---------------------------------------------------------------- a CMD entry shorter than its response

@pytest.mark.parametrize("length", [8, 16, 48, 104])
@pytest.mark.parametrize("where", ["between two commands", "at the end of the mapping"])
@forked
def test_a_cmd_entry_shorter_than_its_response_is_never_answered_into(length, where):
    # the kernel's CMD entries are at least 112 bytes (tcmu_cmd_get_base_cmd_size);
    # a shorter one cannot hold an answer, so it is handed back UNKNOWN_OP
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        if where == "at the end of the mapping":
            start_at(emu, CMDR - length)            # the entry ends where the guard page starts
            ring = emu.ring(CMDR_OFF + CMDR)
        else:
            ring = emu.ring()
        ids = [] if where != "between two commands" else [emu.submit(TUR)]
        emu.write_raw(length | 1, 21, cmd_body(emu, length))
        ids.append(emu.submit(TUR))
        before = snap(ring)
        n = ring.take()
        assert_take_writes(before, snap(ring))
        got = [ring.events[i].cmd_id for i in range(n)]
        for cid in reversed(got):                   # out of order: each answer into the oldest slot
            answer(ring, cid)
        assert got == ids
        ring.kick()
        res = {r.cmd_id: r for r in emu.reap()}
        assert res[21].uflags & UFLAG_UNKNOWN_OP and res[21].status == scsi.CHECK_CONDITION
        assert all(res[c].status == scsi.CHECK_CONDITION for c in ids) and not emu.broken
        assert emu.tail == emu.head and ring.outstanding == 0


# ---------------------------------------------------------------- fields rewritten while read

FLIPS = {
    # field: (mapping offset, a value the engine takes, a value it must refuse)
    "iov_cnt": (CMDR_OFF + 8, 1, 0xFFFF),
    "iov_bidi_cnt": (CMDR_OFF + 12, 0, 0xFFFF),
    "cdb opcode": (CMDR_OFF + 112, 0x28, 0x88),     # READ(10) or READ(16): 10 or 16 bytes
}


def race(good, tries=100000, seconds=10):
    """Iterations of a race with emu.scribble: at least `tries`, and on until
    good() (how often the field was read with its good value) is not 0, for
    at most `seconds` (a loaded machine may leave the scribbler on one value)."""
    deadline = time.monotonic() + seconds
    for i in itertools.count():
        if i >= tries and good() or time.monotonic() > deadline:
            assert good(), "the good value was never read in %d tries" % i
            return
        yield i


@pytest.mark.parametrize("field", sorted(FLIPS))
@forked
def test_an_entry_field_rewritten_while_it_is_taken_is_read_once(field):
    # a kernel (another CPU) rewrites a field between two reads of it: what
    # the engine keeps must match one value, never a mix (a count validated
    # as 1 and used as 65535 walks off the end of the copied iovecs)
    off, good, bad = FLIPS[field]
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        ring = emu.ring()
        cid = emu.submit(READ10, data_in=4096)
        r, c, seen = ring._r, ring.cmd(cid), Counter()
        with emu.scribble(off, good, bad):
            for _ in race(lambda: seen[0]):
                r.next = r.slot_n = r.outstanding = c.outstanding = 0
                lib.tr_take(r, ring.events, 1)
                seen[c.bad] += 1
                if not c.bad:
                    assert (c.iov_cnt, c.bidi_cnt, c.data_len, c.cdb_len) == \
                        (1, 0, 4096, {0x28: 10, 0x88: 16}[c.cdb[0]])


@pytest.mark.parametrize("field,off,bad", [("cmdr_size", 8, 0xFFFFFFF8), ("cmdr_off", 4, 0x7FFFFFF8)])
@forked
def test_a_mailbox_rewritten_while_the_ring_opens_is_read_once(field, off, bad):
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        good = struct.unpack_from("<I", mem(emu), off)[0]
        base = lib.emu_map_guarded(emu._e, emu.size)
        opened = 0
        try:
            with emu.scribble(off, good, bad):
                for _ in race(lambda: opened, 1500):
                    r = lib.tr_open(base, emu.size, -1)
                    if r != ffi.NULL:
                        opened += 1
                        assert (r.cmdr_off, r.cmdr_size) == (CMDR_OFF, CMDR)
                        assert r.data_off == CMDR_OFF + CMDR
                        lib.tr_close(r)
        finally:
            lib.emu_unmap_guarded(base, emu.size)


# ---------------------------------------------------------------- a second use of an in-flight cmd_id

@forked
def test_a_second_use_of_an_in_flight_cmd_id_leaves_the_first_alone():
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        ring, ops = emu.ring(), CallbackOps(hold=True)
        eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1000))
        a = emu.submit(rw16(0x88, 1, 8), data_in=8 * 512)
        assert ring.take(eb.taker(ring, lim)) == 0 and len(ops.calls) == 1   # started, in flight
        c = ring.cmd(a)
        first = (c.gen, ring.cdb(a), int(ffi.cast("uintptr_t", c.iov[0].iov_base)), c.data_len)
        # the same id again, a plain WRITE(16) of other data: neither started nor reported
        data_off = ring._r.data_off
        emu.write_raw(RSP + 16 | 1, a,
                      cmd_body(emu, RSP + 16, rw16(0x8A, 9, 1), [(data_off + 3 * 4096, 512)]))
        before = snap(ring)
        assert ring.take(eb.taker(ring, lim)) == 0 and len(ops.calls) == 1
        assert_take_writes(before, snap(ring))
        assert (c.gen, ring.cdb(a), int(ffi.cast("uintptr_t", c.iov[0].iov_base)), c.data_len) == first
        assert ring.outstanding == 1 and len(slots(ring)) == 1
        # the first one's completion is still its own: it completes in C
        ops.release()
        assert eb.poll(lambda *x: pytest.fail("delivered to Python: %r" % (x,))) == 0
        assert ring.outstanding == 0
        assert lib.tr_load_tail(ring._r) == ring._r.next       # past the second one too
        with pytest.raises(RingBroken):     # the kernel reaps a, then finds its id again
            ring.kick()
        assert [(r.cmd_id, r.status) for r in emu.reap()] == [(a, scsi.GOOD)]
        eb.close()


# ---------------------------------------------------------------- cmd_head / cmd_tail

@pytest.mark.parametrize("field", ["cmd_tail", "cmd_head"])
@pytest.mark.parametrize("value", [4, CMDR - 4, CMDR, CMDR + 8, 0xFFFFFFF8])
@forked
def test_a_cmd_head_or_tail_that_is_not_an_entry_boundary_is_refused_at_open(field, value):
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        struct.pack_into("<I", mem(emu), MB_TAIL if field == "cmd_tail" else MB_HEAD, value)
        with pytest.raises(RingError, match=r"%s %d\b" % (field, value)):
            emu.ring()


@forked
def test_a_bad_cmd_tail_after_a_reset_is_refused_and_a_good_one_is_resumed():
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        start_at(emu, CMDR - 8)
        ring = emu.ring()
        assert ring._r.next == CMDR - 8              # a legal tail anywhere is where taking resumes
        cid = emu.submit(TUR)                        # PAD to the end, then the command at 0
        assert ring.take() == 1 and ring.events[0].cmd_id == cid
        struct.pack_into("<I", mem(emu), MB_TAIL, 13)
        with pytest.raises(RingError, match="after the reset: .* cmd_tail 13 in"):
            ring.forget_all()


@forked
def test_a_cmd_head_inside_an_entry_is_a_corrupt_ring():
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        ring = emu.ring()
        a, b = emu.submit(TUR), emu.submit(TUR)
        struct.pack_into("<I", mem(emu), MB_HEAD, emu.head - 16)     # into the middle of b
        assert ring.take() == 1 and ring.events[0].cmd_id == a
        with pytest.raises(RingError, match="corrupt"):
            ring.take()
        assert ring.cmd(b).outstanding == 0


@forked
def test_a_ring_of_pad_that_steps_over_cmd_head_is_corrupt_not_walked_forever():
    with Emulator(cmdr_size=CMDR, data_blocks=4) as emu:
        ring = emu.ring()
        for off in range(0, CMDR, 16):
            struct.pack_into("<I", mem(emu), CMDR_OFF + off, 16)     # PAD, 16 bytes
        struct.pack_into("<I", mem(emu), MB_HEAD, 8)                 # where no entry starts
        with pytest.raises(RingError, match="corrupt"):
            ring.take()


# ---------------------------------------------------------------- fuzz

class CheckingOps(CallbackOps):
    """The engine's backend ops, checking the iovecs they get lie in the data area."""

    def __init__(self, ring):
        super().__init__(hold=True)     # in flight until the fuzz completes them
        self.ring = ring

    def _start(self, kind, q, tag, iov, cnt, off, fua):
        c = ffi.new("struct tr_cmd *", {"iov": iov, "iov_cnt": cnt, "iov_cap": cnt, "cdb_len": 1,
                                        "data_len": sum(iov[i].iov_len for i in range(cnt))})
        check_cmd(self.ring, c)
        return super()._start(kind, q, tag, iov, cnt, off, fua)


CDBS = [READ10, bytes([0x2A]) + READ10[1:], rw16(0x88, 0, 8), rw16(0x8A, 7, 8), TUR,
        bytes([0x12, 0, 0, 0, 96, 0]), bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]) + bytes(24),
        bytes([0xC1]) + bytes(15)]
U64 = (1 << 64) - 1


def mutate(emu, off, rng, held):
    """Rewrite one to three fields of the entry at ring offset off, hostile values first."""
    m, e = mem(emu), CMDR_OFF + off
    length = entry_len(m, off)
    size, data_off = emu.size, emu._e.data_off
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(8)
        if what == 0:
            n = rng.choice([8, 16, 48, 104, RSP - 8, RSP, length - 8, length + 8, length + 4,
                            rng.randrange(8, CMDR, 8), 0, CMDR])
            struct.pack_into("<I", m, e, n | (struct.unpack_from("<I", m, e)[0] & 7))
        elif what == 1:
            struct.pack_into("<I", m, e, length | rng.randrange(8))
        elif what == 2:
            struct.pack_into("<H", m, e + 4, rng.choice(held or [0]) if rng.random() < 0.6
                             else rng.randrange(65536))
        elif what in (3, 4):
            struct.pack_into("<I", m, e + rng.choice([8, 12, 16]),
                             rng.choice([0, 1, 2, 5, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)]))
        elif what == 5:
            struct.pack_into("<Q", m, e + 24, rng.choice(
                [e, e + 8, e + 47, e + 48, e + length - 1, e + length, e + length - 4, 0, U64,
                 rng.randrange(size)]))
        elif what == 6 and length >= 64:
            k = rng.randrange((length - 48) // 16)
            struct.pack_into("<QQ", m, e + 48 + 16 * k,
                             rng.choice([0, data_off - 1, data_off, size - 1, size, size + 1, U64,
                                         1 << 63, rng.randrange(size)]),
                             rng.choice([0, 1, 4096, size, U64, rng.randrange(size)]))
        elif what == 7:
            cdb = struct.unpack_from("<Q", m, e + 24)[0]
            if e <= cdb < e + length:
                m[cdb:cdb + 1] = bytes([rng.choice([0x7F, rng.randrange(256)])])
                if cdb + 7 < e + length:
                    m[cdb + 7:cdb + 8] = bytes([rng.randrange(256)])


def kernel_step(emu, rng, held, stats):
    """What the hostile kernel does in one round: a few entries, some mutated, maybe a head jump."""
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.7:
            cdb = rng.choice(CDBS)
            data = rng.choice([0, 512, 4096, 4096, 4096])     # 4096: what the CDB asks
            cid = emu.submit(cdb, data_out=bytes(data) if cdb[0] in (0x2A, 0x8A) else None,
                             data_in=data)
            if rng.random() < 0.4:
                mutate(emu, emu._e.cmds[cid].entry_off, rng, held)
                stats["mutated"] += 1
        elif kind < 0.85:
            n = rng.choice([8, 16, 48, 104, RSP, RSP + 16])
            emu.write_raw(n | rng.choice([1, 1, 1, 2, 5]), rng.choice(held or [1]),
                          bytes(rng.randrange(256) for _ in range(n - 8)))
            stats["raw"] += 1
        else:
            ids = held[:3]
            emu.submit_tmr(rng.choice([1, 5]), ids)
            if rng.random() < 0.5:                  # its cmd_cnt
                size = (32 + 2 * len(ids) + 7) & ~7
                struct.pack_into("<I", mem(emu), CMDR_OFF + (emu.head - size) % CMDR + 12,
                                 rng.choice([0xFFFFFFFF, 1 << 20, len(ids) + 1]))
        stats["entries"] += 1
    if rng.random() < 0.05:
        good = rng.random() < 0.7
        struct.pack_into("<I", mem(emu), MB_HEAD, rng.randrange(0, CMDR, 8) if good
                         else rng.choice([4, CMDR, 0xFFFFFFF8]))
        stats["head jumps"] += 1
        return good
    return True


def fuzz(seed, rounds):
    rng, stats = random.Random(seed), Counter()
    with Emulator(cmdr_size=CMDR, data_blocks=32) as emu:
        ring = emu.ring()
        ops = CheckingOps(ring)
        eb, lim, _ = engine_for(ring, ops, scsi.Lun(num_blocks=1 << 20))
        take, r = eb.taker(ring, lim), ring._r
        held, fast = [], set()      # taken: answered by us, started by the engine

        def reset():
            emu.reset_ring()
            ring.forget_all()
            ops.release()                   # stale now: queued, not onto the ring
            eb.poll(lambda *x: None)
            held.clear()
            fast.clear()

        for _ in range(rounds):
            try:
                head_ok = kernel_step(emu, rng, held + sorted(fast), stats)
            except Full:
                head_ok = True
            before, known, calls, was = snap(ring), len(slots(ring)), len(ops.calls), set(held) | fast
            try:
                n = ring.take(take)
            except RingError:
                assert_take_writes(before, snap(ring))
                stats["reported broken"] += 1
                reset()
                continue
            assert head_ok, "taken up to a cmd_head outside the ring"
            assert_take_writes(before, snap(ring))
            lengths = {off: entry_len(before, off) for off in slots(ring)[known:]}
            assert all(n >= RSP for n in lengths.values()), "an answer would not fit: %s" % lengths
            new = [ops.calls[k][1] & 0xFFFF for k in range(calls, len(ops.calls))]
            for i in range(n):
                ev = ring.events[i]
                if ev.kind == EV_CMD:
                    c = ring.cmd(ev.cmd_id)
                    stats["bad" if c.bad else "events"] += 1
                    if not c.bad:
                        check_cmd(ring, c)
                    new.append(ev.cmd_id)
                    held.append(ev.cmd_id)
                else:
                    assert ev.kind == EV_TMR and ev.tmr_count <= 65536
            assert len(set(new)) == len(new) and not set(new) & was, \
                "a cmd_id handed out while in flight: %s" % new
            fast.update(new[:len(ops.calls) - calls])
            assert r.outstanding == len(held) + len(fast) == len(slots(ring))
            rng.shuffle(held)
            for cid in held[:rng.randint(0, len(held))]:
                answer(ring, cid, scsi.CHECK_CONDITION if ring.cmd(cid).bad else scsi.GOOD)
                held.remove(cid)
            if rng.random() < 0.5:          # the fast path's completions, in C
                before, queued, done = snap(ring), slots(ring), r.completions
                ops.release()               # librbd's thread: straight onto the ring
                eb.poll(lambda *x: pytest.fail("delivered to Python: %r" % (x,)))
                k = r.completions - done
                assert k == len(fast)
                assert_answer_writes(before, snap(ring), [(o, entry_len(before, o)) for o in queued[:k]])
                stats["fast"] += k
                fast.clear()
            try:
                ring.kick()
            except RingBroken:
                stats["kernel broke"] += 1
                reset()
                continue
            emu.reap(capture=False)
            tail = lib.tr_load_tail(r)
            assert tail < CMDR and tail % 8 == 0
            if r.outstanding == 0:          # everything taken is answered and released
                assert tail == r.next
                stats["quiet"] += 1
        eb.close()
    for what in ("mutated", "raw", "bad", "events", "fast", "reported broken", "kernel broke", "quiet"):
        assert stats[what], "the fuzz never got to %r: %s" % (what, stats)
    return stats


ROUNDS = 6000     # of one to four entries each (when the ring has room): about 5000 entries a seed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_hostile_entries_under_guard_pages(seed):
    in_child(lambda: print("fuzz seed %d: %s" % (seed, dict(fuzz(seed, ROUNDS)))), timeout=60)
