"""Shared helpers of the SCSI emulation tests (tests/test_scsi_*.py): pure, no kernel.

Here: the LUN the tests use (``make_lun``, its SERIAL and NAA), ``P`` (parse one
CDB against it), data-out callbacks, the sense-data checks and the CDB builders
more than one command family uses.  Not here: builders of one command family's
CDBs or parameter lists (they live in that family's test file) and fixtures.
"""

import struct

from tcmu_rbd import scsi

SERIAL = "a1b2c3d4-e5f6-7890-abcd-ef0123456789"
# 6-001405 (NAA 6, OUI 00-14-05) + the first 25 hex digits of SERIAL
NAA = bytes.fromhex("6001405a1b2c3d4e5f67890abcdef012")
BS = 512  # make_lun()'s block size


def make_lun(**kw):
    kw.setdefault("num_blocks", 1 << 21)           # 1 GiB of 512-byte blocks
    kw.setdefault("serial", SERIAL)
    return scsi.Lun(**kw)


def no_data(n):
    raise AssertionError("data_out must not be called (asked for %d bytes)" % n)


def P(cdb, lun=None, data_len=0, data_out=no_data):
    return scsi.parse(cdb, lun if lun is not None else make_lun(), data_len, data_out)


def data_from(buf):
    def data_out(n):
        return buf[:n]
    return data_out


def sense_of(res):
    """Check res is a well-formed CHECK CONDITION; return (key, asc, ascq, sks)
    where sks is None or (c_d, bit_or_None, field_pointer)."""
    assert res[0] == scsi.DONE, res
    assert res[1] == scsi.CHECK_CONDITION, res
    s = res[2]
    assert res[3] is None
    assert isinstance(s, bytes) and len(s) == 18
    assert s[0] in (0x70, 0xF0)
    assert s[7] == 0x0A
    sks = None
    if s[15] & 0x80:
        sks = (bool(s[15] & 0x40), (s[15] & 0x07) if s[15] & 0x08 else None,
               int.from_bytes(s[16:18], "big"))
    else:
        assert s[15:18] == b"\0\0\0"
    return s[2] & 0x0F, s[12], s[13], sks


def assert_check(res, key, asc, ascq, sks="any"):
    got = sense_of(res)
    assert got[:3] == (key, asc, ascq), (got, res)
    if sks != "any":
        assert got[3] == sks, got
    return got


def assert_invalid_cdb(res, byte, bit=None):
    assert_check(res, 0x05, 0x24, 0x00, (True, bit, byte))


def assert_invalid_param(res, byte, bit=None):
    assert_check(res, 0x05, 0x26, 0x00, (False, bit, byte))


def assert_good(res):
    assert res[0] == scsi.DONE and res[1] == scsi.GOOD and res[2] is None, res
    return res[3]


# ---- CDB builders ----
def cdb6(op, b1=0, b2=0, b3=0, b4=0, ctl=0):
    return bytes((op, b1, b2, b3, b4, ctl))


def rw6(op, lba, n):
    return bytes((op, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, n & 0xFF, 0))


def rw10(op, lba, n, b1=0):
    return struct.pack(">BBIBHB", op, b1, lba, 0, n, 0)


def rw12(op, lba, n, b1=0):
    return struct.pack(">BBIIBB", op, b1, lba, n, 0, 0)


def rw16(op, lba, n, b1=0):
    return struct.pack(">BBQIBB", op, b1, lba, n, 0, 0)


def inquiry(evpd=0, page=0, alloc=255, b1=0):
    return struct.pack(">BBBHB", 0x12, evpd | b1, page, alloc, 0)


def mode_sense6(page, pc=0, sub=0, alloc=255, dbd=0):
    return bytes((0x1A, 0x08 if dbd else 0, (pc << 6) | page, sub, alloc, 0))


def mode_sense10(page, pc=0, sub=0, alloc=1024, dbd=0):
    return struct.pack(">BBBBBBBHB", 0x5A, 0x08 if dbd else 0, (pc << 6) | page, sub, 0, 0, 0,
                       alloc, 0)


def sai16(sa, lba=0, alloc=32):
    return struct.pack(">BBQIBB", 0x9E, sa, lba, alloc, 0, 0)


def maint_in(sa, alloc=1024, b2=0, b3=0, sa2=0, b1_hi=0):
    return struct.pack(">BBBBHIBB", 0xA3, sa | b1_hi, b2, b3, sa2, alloc, 0, 0)
