"""The plain READ/WRITE(10/16) rule is stated twice, in tcmu_rbd/scsi/fast.py
(the SCSI core's hot path) and native/scsi_fast.c (the engine's): both get the
same CDBs, data lengths and LUN limits and must take the same decisions.

Generation leans to where a rule would break: the four opcodes and their
neighbours, LBAs and lengths at the LUN's end and at max_xfer_blocks (which
bounds neither side: the kernel bounds what it delivers), the
field widths' limits, byte-1 flag bits, short CDBs, data lengths a byte or a
block off, read-only LUNs and a pending unit attention.  The C side also gets
garbage after the CDB it is given, so reading past cdb_len shows up as a
different decision.  (Pure: no ring, no Ceph.)
"""

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tcmu_rbd import scsi
from tcmu_rbd._native import ffi, lib
from tcmu_rbd.scsi import fast

PLAIN = (0x28, 0x2A, 0x88, 0x8A)
# near misses: the other READ/WRITE/VERIFY sizes and kinds, the opcode bits either side
NEIGHBOURS = (0x08, 0x0A, 0xA8, 0xAA, 0x2E, 0x2F, 0x8E, 0x8F, 0x89, 0x29, 0x2B, 0x8B,
              0x68, 0x6A, 0x00, 0xFF)
C_KIND = {lib.SCSI_FAST_READ: scsi.READ, lib.SCSI_FAST_WRITE: scsi.WRITE}
U32, U64 = (1 << 32) - 1, (1 << 64) - 1


def near(values, lo, hi):
    """Each of values and its neighbours, clipped to [lo, hi]."""
    return sorted({min(hi, max(lo, v + d)) for v in values for d in (-1, 0, 1)})


@st.composite
def luns(draw):
    bs = draw(st.sampled_from([512, 512, 4096, 1, 2, 1 << 16]))
    cap = U64 // bs                          # a LUN's size in bytes fits in 64 bits
    num_blocks = draw(st.one_of(
        st.integers(0, 64), st.integers(0, 1 << 24),
        st.sampled_from(near([U32 // bs, 1 << 32, cap], 0, cap)),
        st.integers(0, cap)))
    max_xfer = draw(st.one_of(st.integers(1, 4096),
                              st.sampled_from(near([0xFFFF, 1 << 16, U32], 1, U32))))
    return scsi.Lun(num_blocks=num_blocks, block_size=bs, max_xfer_blocks=max_xfer,
                    read_only=draw(st.booleans()),
                    ua_capacity_changed=draw(st.integers(0, 7)) == 0)


def weighted(*pairs):
    """One of the strategies, each as often as its weight (st.one_of would
    merge repeated strategies, so repeating one does not weigh it)."""
    strats = [strat for weight, strat in pairs for _ in range(weight)]
    return st.sampled_from(range(len(strats))).flatmap(lambda i: strats[i])


@st.composite
def commands(draw, lun):
    """(cdb, data_len), about one in eight of them plain."""
    op = draw(weighted((8, st.sampled_from(PLAIN)), (1, st.sampled_from(NEIGHBOURS)),
                       (1, st.integers(0, 255))))
    ten = op >> 5 in (1, 2)                  # 10-byte group (else: laid out as 16)
    lba_max, n_max = (U32, 0xFFFF) if ten else (U64, U32)
    n = draw(weighted((3, st.integers(1, min(n_max, lun.max_xfer_blocks))),
                      (1, st.sampled_from(near([0, 1, lun.max_xfer_blocks, n_max], 0, n_max))),
                      (1, st.integers(0, n_max))))
    end = lun.num_blocks
    lba = draw(weighted((3, st.integers(0, min(lba_max, max(0, end - n)))),
                        (1, st.sampled_from(near([0, end - n, end, lba_max], 0, lba_max))),
                        (1, st.integers(0, lba_max))))
    b1 = draw(weighted((6, st.sampled_from([0, 0x08, 0x10, 0x18, 0x02, 0x04, 0x01])),
                       (1, st.sampled_from([0x20, 0x40, 0x80, 0xE0, 0x28])),
                       (1, st.integers(0, 255))))
    group, control = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    if ten:
        cdb = struct.pack(">BBIBHB", op, b1, lba, group, n, control)
    else:
        cdb = struct.pack(">BBQIBB", op, b1, lba, n, group, control)
    cdb += draw(st.sampled_from([b""] * 6 + [b"\0" * 6, b"\xff" * 16]))
    cut = draw(st.sampled_from([0] * 20 + [1, 2, 6, len(cdb) - 1, len(cdb)]))
    cdb = cdb[:len(cdb) - cut]
    bs = lun.block_size
    delta = draw(st.sampled_from([0] * 12 + [-1, 1, -bs, bs, None]))
    data_len = draw(st.integers(0, 1 << 40)) if delta is None else max(0, n * bs + delta)
    return cdb, min(data_len, U64)


def c_decide(cdb, lun, data_len, garbage=b""):
    """scsi_fast_decide on cdb (followed in memory by garbage it must not read)."""
    lim = ffi.new("struct scsi_fast_limits *")
    fast.store_limits(lun, lim)
    io = ffi.new("struct scsi_fast_io *")
    buf = ffi.from_buffer("uint8_t[]", cdb + garbage + b"\0")
    d = lib.scsi_fast_decide(buf, len(cdb), data_len, lim, io)
    if d == lib.SCSI_FAST_NO:
        return None
    return (C_KIND[d], io.offset, io.length, io.fua)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), garbage=st.binary(min_size=0, max_size=16))
def test_c_and_python_take_the_same_decision(data, garbage):
    lun = data.draw(luns(), label="lun")
    cdb, data_len = data.draw(commands(lun), label="cdb, data_len")
    py, c = fast.decide(cdb, lun, data_len), c_decide(cdb, lun, data_len, garbage)
    assert c == py, "C %r, Python %r: %s" % (c, py, _case(cdb, lun, data_len))


def _rw16(op, lba, n, b1=0):
    return struct.pack(">BBQIBB", op, b1, lba, n, 0, 0)


def _rw10(op, lba, n, b1=0):
    return struct.pack(">BBIBHB", op, b1, lba, 0, n, 0)


LUN = dict(num_blocks=100, block_size=512, max_xfer_blocks=8)


@pytest.mark.parametrize("cdb, data_len, lun, want", [
    (_rw16(0x88, 1, 2), 1024, {}, (scsi.READ, 512, 1024, 0)),
    (_rw10(0x2A, 92, 8, b1=0x08), 4096, {}, (scsi.WRITE, 92 * 512, 4096, 1)),
    (_rw10(0x28, 99, 1, b1=0x18), 512, {"read_only": True}, (scsi.READ, 99 * 512, 512, 0)),
    (_rw16(0x8A, 0, 1), 512, {"read_only": True}, None),
    (_rw16(0x88, 93, 8), 4096, {}, None),                    # one block past the end
    (_rw16(0x88, 0, 9), 9 * 512, {}, (scsi.READ, 0, 9 * 512, 0)),      # over max_xfer_blocks
    (_rw10(0x2A, 0, 100), 100 * 512, {}, (scsi.WRITE, 0, 100 * 512, 0)),
    (_rw16(0x88, 0, 2), 3 * 512, {}, None),                  # D > S: the slow path's
    (_rw16(0x88, 0, 0), 0, {}, None),
    (_rw16(0x88, 0, 1), 511, {}, None),
    (_rw16(0x88, 0, 1, b1=0x20), 512, {}, None),             # RDPROTECT
    (_rw16(0x88, 0, 1), 512, {"ua_capacity_changed": True}, None),
    (_rw16(0x88, 0, 1)[:15], 512, {}, None),
    (_rw16(0x88, (1 << 64) - 1, 2), 1024, {}, None),         # lba + n wraps in 64 bits
    (_rw16(0xA8, 0, 1), 512, {}, None),                      # READ(12): the slow path's
])
def test_known_decisions(cdb, data_len, lun, want):
    lun = scsi.Lun(**{**LUN, **lun})
    assert fast.decide(cdb, lun, data_len) == want
    assert c_decide(cdb, lun, data_len, b"\xff" * 16) == want


@settings(max_examples=1000, deadline=None)
@given(lun=luns(), cdb=st.binary(min_size=0, max_size=32), data_len=st.integers(0, U64),
       garbage=st.binary(min_size=0, max_size=16))
def test_random_bytes_too(lun, cdb, data_len, garbage):
    py, c = fast.decide(cdb, lun, data_len), c_decide(cdb, lun, data_len, garbage)
    assert c == py, "C %r, Python %r: %s" % (c, py, _case(cdb, lun, data_len))


def _case(cdb, lun, data_len):
    return "cdb %s data_len %d; LUN %d blocks of %d, max_xfer %d%s%s" % (
        cdb.hex(), data_len, lun.num_blocks, lun.block_size, lun.max_xfer_blocks,
        ", read-only" if lun.read_only else "", ", UA pending" if lun.ua_capacity_changed else "")


def test_the_generator_reaches_every_decision():
    """Each reason not to be fast, and both ways of being fast, occur in what
    the strategies produce: the property above is not met by luck.  The same
    examples every run (derandomize): a random 1,500 missed a reason once in a host
    suite run, which says nothing about the rule."""
    seen = set()

    @settings(max_examples=1500, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def collect(data):
        lun = data.draw(luns())
        cdb, data_len = data.draw(commands(lun))
        why = _why(cdb, lun, data_len)
        seen.add(why)
        if why.startswith(("read", "write")) and \
                struct.unpack_from(">IxH" if cdb[0] < 0x80 else ">QI", cdb, 2)[1] > lun.max_xfer_blocks:
            seen.add("above max_xfer")

    collect()
    assert seen >= {"read", "write", "write fua", "opcode", "short", "flags", "n == 0",
                    "data_len", "range", "ua", "read-only", "above max_xfer"}, seen


def _why(cdb, lun, data_len):
    """The first reason the rule gives, worked out independently of both sides."""
    if not cdb or cdb[0] not in PLAIN:
        return "opcode"
    ten = cdb[0] < 0x80
    if len(cdb) < (10 if ten else 16):
        return "short"
    lba, n = struct.unpack_from(">IxH" if ten else ">QI", cdb, 2)
    write = cdb[0] & 0x02
    for reason, hit in (("flags", cdb[1] & 0xE0), ("n == 0", n == 0),
                        ("data_len", n * lun.block_size != data_len),
                        ("range", lba + n > lun.num_blocks), ("ua", lun.ua_capacity_changed),
                        ("read-only", write and lun.read_only)):
        if hit:
            return reason
    return ("write fua" if cdb[1] & 0x08 else "write") if write else "read"
