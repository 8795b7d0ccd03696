"""SCSI emulation: Thin provisioning and zeroing: UNMAP, WRITE SAME (10/16), FORMAT UNIT and
GET LBA STATUS.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

from tcmu_rbd import scsi
from scsi_util import (
    BS, P, assert_check, assert_good, assert_invalid_cdb, assert_invalid_param, cdb6,
    data_from, make_lun, rw10, rw16, sai16,
)


# ======================================================================== UNMAP
def unmap_cdb(plen, b1=0):
    return struct.pack(">BBIBHB", 0x42, b1, 0, 0, plen, 0)


def unmap_par(descs, bddl=None):
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descs)
    bddl = len(body) if bddl is None else bddl
    return struct.pack(">HH4x", bddl + 6, bddl) + body


class TestUnmap:
    def test_descriptors(self):
        par = unmap_par([(0, 8), (100, 0), (1000, 16)])
        assert P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par)) == (
            scsi.UNMAP, [(0, 8 * BS), (1000 * BS, 16 * BS)], 0, 0)

    def test_empty(self):
        assert_good(P(unmap_cdb(0)))
        par = unmap_par([])
        assert P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par)) == (
            scsi.UNMAP, [], 0, 0)

    def test_short_parameter_list(self):
        assert_check(P(unmap_cdb(6), data_len=6, data_out=data_from(bytes(6))), 0x05, 0x1A, 0x00, None)

    def test_truncated_descriptor_ignored(self):
        par = unmap_par([(0, 8), (50, 8)])[:8 + 16 + 10]
        assert P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par)) == (
            scsi.UNMAP, [(0, 8 * BS)], 0, 0)
        par = unmap_par([(0, 8), (50, 8)], bddl=20)
        assert P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par))[1] == [(0, 8 * BS)]

    def test_anchor(self):
        par = unmap_par([(0, 8)])
        assert_invalid_cdb(P(unmap_cdb(len(par), b1=1), data_len=len(par), data_out=data_from(par)), 1, 0)

    def test_range(self):
        par = unmap_par([(0, 8), ((1 << 21) - 4, 8)])
        assert_check(P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par)), 0x05, 0x21, 0)
        par = unmap_par([((1 << 64) - 1, 2)])
        assert_check(P(unmap_cdb(len(par)), data_len=len(par), data_out=data_from(par)), 0x05, 0x21, 0)

    def test_too_many_descriptors(self):
        lun = make_lun(max_unmap_descriptors=2)
        par = unmap_par([(0, 1), (10, 1), (20, 1)])
        assert_invalid_param(P(unmap_cdb(len(par)), lun, len(par), data_from(par)), 2)

    def test_too_many_blocks(self):
        lun = make_lun(max_unmap_blocks=100)
        par = unmap_par([(0, 60), (1000, 50)])
        assert_invalid_param(P(unmap_cdb(len(par)), lun, len(par), data_from(par)), 8 + 16 + 8)

    def test_not_thin(self):
        par = unmap_par([(0, 8)])
        assert_check(P(unmap_cdb(len(par)), make_lun(thin=False), len(par), data_from(par)),
                     0x05, 0x20, 0x00)

    def test_read_only(self):
        par = unmap_par([(0, 8)])
        assert_check(P(unmap_cdb(len(par)), make_lun(read_only=True), len(par), data_from(par)),
                     0x07, 0x27, 0x00)


# ======================================================================== WRITE SAME
class TestWriteSame:
    def test_pattern(self):
        assert P(rw10(0x41, 10, 100), data_len=BS) == (scsi.WRITE_SAME, 10 * BS, 100 * BS, BS)
        assert P(rw16(0x93, 10, 100), data_len=BS) == (scsi.WRITE_SAME, 10 * BS, 100 * BS, BS)

    def test_unmap_zero_block(self):
        r = P(rw16(0x93, 10, 100, b1=0x08), data_len=BS, data_out=data_from(bytes(BS)))
        assert r == (scsi.WRITE_ZEROES, 10 * BS, 100 * BS, 0)
        r = P(rw10(0x41, 10, 3, b1=0x08), data_len=BS, data_out=data_from(bytes(BS)))
        assert r == (scsi.WRITE_ZEROES, 10 * BS, 3 * BS, 0)

    def test_unmap_nonzero_block_writes(self):
        blk = bytes(BS - 1) + b"\x01"
        r = P(rw16(0x93, 10, 100, b1=0x08), data_len=BS, data_out=data_from(blk))
        assert r == (scsi.WRITE_SAME, 10 * BS, 100 * BS, BS)

    def test_ndob(self):
        assert P(rw16(0x93, 0, 8, b1=0x09)) == (scsi.WRITE_ZEROES, 0, 8 * BS, 0)
        assert P(rw16(0x93, 0, 8, b1=0x01)) == (scsi.WRITE_ZEROES, 0, 8 * BS, 0)
        assert_invalid_cdb(P(rw16(0x93, 0, 8, b1=0x01), data_len=BS), 1, 0)

    def test_zero_blocks_rejected(self):
        assert_invalid_cdb(P(rw10(0x41, 0, 0), data_len=BS), 7)
        assert_invalid_cdb(P(rw16(0x93, 0, 0), data_len=BS), 10)

    def test_over_max(self):
        lun = make_lun(max_write_same_blocks=1000)
        assert P(rw16(0x93, 0, 1000), lun, BS)[0] == scsi.WRITE_SAME
        assert_invalid_cdb(P(rw16(0x93, 0, 1001), lun, BS), 10)

    def test_bad_data_len(self):
        assert_check(P(rw16(0x93, 0, 8), data_len=2 * BS), 0x05, 0x24, 0x00, None)

    def test_flags(self):
        assert_invalid_cdb(P(rw16(0x93, 0, 8, b1=0x10), data_len=BS), 1, 4)
        assert_invalid_cdb(P(rw16(0x93, 0, 8, b1=0x04), data_len=BS), 1, 2)
        assert_invalid_cdb(P(rw16(0x93, 0, 8, b1=0x02), data_len=BS), 1, 1)
        assert_invalid_cdb(P(rw16(0x93, 0, 8, b1=0x20), data_len=BS), 1, 7)

    def test_range_and_ro(self):
        assert_check(P(rw16(0x93, (1 << 21) - 1, 2), data_len=BS), 0x05, 0x21, 0x00)
        assert_check(P(rw16(0x93, 0, 2), make_lun(read_only=True), BS), 0x07, 0x27, 0x00)


# ======================================================================== FORMAT UNIT
class TestFormatUnit:
    def test_format(self):
        assert P(cdb6(0x04)) == (scsi.WRITE_ZEROES, 0, (1 << 21) * BS, 0)

    def test_fmtpinfo(self):
        assert_invalid_cdb(P(cdb6(0x04, b1=0x80)), 1, 7)

    def test_parameter_header(self):
        assert P(cdb6(0x04, b1=0x10), data_len=4, data_out=data_from(bytes(4)))[0] == scsi.WRITE_ZEROES
        assert_invalid_param(P(cdb6(0x04, b1=0x10), data_len=4,
                               data_out=data_from(bytes([0, 0x08, 0, 0]))), 1, 3)
        assert_check(P(cdb6(0x04, b1=0x30), data_len=4, data_out=data_from(bytes(4))), 0x05, 0x1A, 0)

    def test_read_only(self):
        assert_check(P(cdb6(0x04), make_lun(read_only=True)), 0x07, 0x27, 0x00)


# ======================================================================== GET LBA STATUS
class TestGetLbaStatus:
    def test_parse(self):
        assert P(sai16(0x12, lba=100, alloc=1024)) == (scsi.GET_LBA_STATUS, 100 * BS, 1024, 0)
        assert_check(P(sai16(0x12, lba=1 << 21)), 0x05, 0x21, 0x00)
        assert P(sai16(0x12, alloc=0)) == (scsi.DONE, scsi.GOOD, None, b"")

    def test_data(self):
        lun = make_lun(num_blocks=1000)
        # allocated: bytes [10*BS, 20*BS) and a partial block at 30*BS+100..
        d = scsi.lba_status_data(lun, 5, [(30 * BS + 100, 10), (10 * BS, 10 * BS)], 1024)
        descs = [struct.unpack_from(">QIB", d, 8 + 16 * i) for i in range((len(d) - 8) // 16)]
        assert struct.unpack_from(">I", d, 0)[0] == len(d) - 4
        assert descs == [(5, 5, 1), (10, 10, 0), (20, 10, 1), (30, 1, 0), (31, 969, 1)]

    def test_data_truncated(self):
        lun = make_lun(num_blocks=1000)
        d = scsi.lba_status_data(lun, 0, [(0, BS), (2 * BS, BS)], 8 + 32)
        assert struct.unpack_from(">I", d, 0)[0] == 4 + 32 and len(d) == 40
        assert struct.unpack_from(">QIB", d, 8) == (0, 1, 0)
        assert struct.unpack_from(">QIB", d, 24) == (1, 1, 1)
        assert scsi.lba_status_data(lun, 0, [], 10) == struct.pack(">I4xQ", 20, 0)[:10]

    def test_data_past_end(self):
        lun = make_lun(num_blocks=10)
        assert scsi.lba_status_data(lun, 10, [], 100) == struct.pack(">I4x", 4)

    def test_data_merges_and_clips(self):
        lun = make_lun(num_blocks=100)
        d = scsi.lba_status_data(lun, 10, [(0, 15 * BS), (12 * BS, 10 * BS), (90 * BS, 50 * BS)], 4096)
        descs = [struct.unpack_from(">QIB", d, 8 + 16 * i) for i in range((len(d) - 8) // 16)]
        assert descs == [(10, 12, 0), (22, 68, 1), (90, 10, 0)]

    def test_not_thin_answers_mapped(self):
        d = assert_good(P(sai16(0x12, lba=10, alloc=64), make_lun(thin=False, num_blocks=100)))
        assert d == struct.pack(">I4xQIB3x", 20, 10, 90, 0)
