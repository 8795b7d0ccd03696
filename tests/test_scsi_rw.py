"""SCSI emulation: READ/WRITE (6/10/12/16), WRITE AND VERIFY, VERIFY, SYNCHRONIZE CACHE and
COMPARE AND WRITE.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

import pytest

from tcmu_rbd import scsi
from scsi_util import (
    BS, P, assert_check, assert_good, assert_invalid_cdb, make_lun, no_data, rw6, rw10,
    rw12, rw16,
)


# ======================================================================== READ / WRITE
class TestReadWrite:
    def test_read10(self):
        assert P(rw10(0x28, 100, 8), data_len=8 * BS) == (scsi.READ, 100 * BS, 8 * BS, 0)

    def test_write10_fua_dpo(self):
        assert P(rw10(0x2A, 100, 8, b1=0x18), data_len=8 * BS) == (scsi.WRITE, 100 * BS, 8 * BS, 1)
        assert P(rw10(0x2A, 100, 8, b1=0x10), data_len=8 * BS) == (scsi.WRITE, 100 * BS, 8 * BS, 0)

    def test_read6_zero_means_256(self):
        assert P(rw6(0x08, 0x1FFFF, 0), data_len=256 * BS) == (scsi.READ, 0x1FFFF * BS, 256 * BS, 0)
        assert P(rw6(0x0A, 5, 2), data_len=2 * BS) == (scsi.WRITE, 5 * BS, 2 * BS, 0)

    def test_read12_16(self):
        assert P(rw12(0xA8, 7, 3), data_len=3 * BS) == (scsi.READ, 7 * BS, 3 * BS, 0)
        assert P(rw12(0xAA, 7, 3, b1=0x08), data_len=3 * BS) == (scsi.WRITE, 7 * BS, 3 * BS, 1)
        assert P(rw16(0x88, 9, 1), data_len=BS) == (scsi.READ, 9 * BS, BS, 0)
        assert P(rw16(0x8A, 9, 1, b1=0x08), data_len=BS) == (scsi.WRITE, 9 * BS, BS, 1)

    def test_4k_blocks(self):
        lun = make_lun(block_size=4096, num_blocks=100)
        assert P(rw10(0x28, 99, 1), lun, 4096) == (scsi.READ, 99 * 4096, 4096, 0)

    def test_last_block_and_past_end(self):
        n = 1 << 21
        assert P(rw10(0x28, n - 1, 1), data_len=BS)[0] == scsi.READ
        assert_check(P(rw10(0x28, n - 1, 2), data_len=2 * BS), 0x05, 0x21, 0x00, None)
        assert_check(P(rw10(0x2A, n, 1), data_len=BS), 0x05, 0x21, 0x00, None)
        assert_check(P(rw6(0x08, 10, 1), make_lun(num_blocks=10), BS), 0x05, 0x21, 0x00)

    def test_lba_plus_length_overflow(self):
        assert_check(P(rw16(0x88, (1 << 64) - 1, 2), data_len=2 * BS), 0x05, 0x21, 0x00, None)
        assert_check(P(rw16(0x8A, (1 << 64) - 1, 1), data_len=BS), 0x05, 0x21, 0x00, None)

    def test_zero_length(self):
        assert_good(P(rw10(0x28, 5, 0)))
        assert_good(P(rw16(0x8A, 5, 0)))
        assert_check(P(rw10(0x28, (1 << 21) + 1, 0)), 0x05, 0x21, 0x00)

    @pytest.mark.parametrize("cdb,field", [
        (rw6(0x08, 0, 4), 4), (rw10(0x28, 0, 4), 7), (rw12(0xA8, 0, 4), 6), (rw16(0x88, 0, 4), 10),
        (rw6(0x0A, 0, 4), 4), (rw10(0x2A, 0, 4), 7), (rw12(0xAA, 0, 4), 6), (rw16(0x8A, 0, 4), 10)])
    def test_data_len_mismatch(self, cdb, field):
        assert_invalid_cdb(P(cdb, data_len=3 * BS), field)
        assert_invalid_cdb(P(cdb, data_len=5 * BS), field)

    @pytest.mark.parametrize("op,fn,field", [(0x28, rw10, 7), (0x8A, rw16, 10), (0xA8, rw12, 6)])
    def test_over_max_transfer(self, op, fn, field):
        lun = make_lun(max_xfer_blocks=128)
        assert P(fn(op, 0, 128), lun, 128 * BS)[0] in (scsi.READ, scsi.WRITE)
        assert_invalid_cdb(P(fn(op, 0, 129), lun, 129 * BS), field)

    @pytest.mark.parametrize("cdb", [rw10(0x28, 0, 1, b1=0x20), rw16(0x8A, 0, 1, b1=0xE0),
                                     rw12(0xA8, 0, 1, b1=0x40)])
    def test_protection_rejected(self, cdb):
        assert_invalid_cdb(P(cdb, data_len=BS), 1, 7)

    def test_read_only(self):
        lun = make_lun(read_only=True)
        assert P(rw10(0x28, 0, 1), lun, BS)[0] == scsi.READ
        for cdb in (rw6(0x0A, 0, 1), rw10(0x2A, 0, 1), rw12(0xAA, 0, 1), rw16(0x8A, 0, 1),
                    rw10(0x2E, 0, 1), rw16(0x8E, 0, 1)):
            assert_check(P(cdb, lun, BS), 0x07, 0x27, 0x00, None)

    def test_fast_path_agrees_with_slow_path(self):
        from tcmu_rbd.scsi.cdb import _parse_slow
        lun = make_lun()
        for cdb, dl in [(rw10(0x28, 3, 2), 2 * BS), (rw10(0x2A, 3, 2, 0x08), 2 * BS),
                        (rw16(0x88, 3, 2), 2 * BS), (rw16(0x8A, 3, 2), 2 * BS)]:
            assert scsi.parse(cdb, lun, dl, no_data) == _parse_slow(cdb, lun, dl, no_data)

    def test_accepts_memoryview_and_bytearray(self):
        cdb = rw10(0x28, 1, 1)
        lun = make_lun()
        assert P(memoryview(cdb), lun, BS) == P(bytearray(cdb), lun, BS) == (scsi.READ, BS, BS, 0)
        assert P(memoryview(rw6(0x08, 1, 1)), lun, BS) == (scsi.READ, BS, BS, 0)


class TestVerify:
    def test_write_and_verify(self):
        assert P(rw10(0x2E, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.WRITE_VERIFY, 4 * BS, 2 * BS, 0)
        assert P(rw16(0x8E, 4, 2), data_len=2 * BS) == (scsi.WRITE_VERIFY, 4 * BS, 2 * BS, 0)
        assert_invalid_cdb(P(rw16(0x8E, 4, 2), data_len=BS), 10)

    def test_verify_medium(self):
        assert P(rw10(0x2F, 4, 2)) == (scsi.VERIFY, 4 * BS, 2 * BS, 0)
        assert P(rw16(0x8F, 4, 2)) == (scsi.VERIFY, 4 * BS, 2 * BS, 0)

    def test_verify_bytchk(self):
        assert P(rw10(0x2F, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.VERIFY, 4 * BS, 2 * BS, 1)
        assert P(rw16(0x8F, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.VERIFY, 4 * BS, 2 * BS, 1)
        assert_invalid_cdb(P(rw10(0x2F, 4, 2, b1=0x02), data_len=BS), 7)

    def test_verify_medium_check_takes_no_data(self):
        assert_invalid_cdb(P(rw10(0x2F, 4, 2), data_len=BS), 1, 2)

    def test_verify_bad_bytchk(self):
        assert_invalid_cdb(P(rw10(0x2F, 4, 2, b1=0x06), data_len=BS), 1, 2)
        assert_invalid_cdb(P(rw16(0x8F, 4, 2, b1=0x04)), 1, 2)

    def test_verify_range(self):
        assert_check(P(rw10(0x2F, (1 << 21) - 1, 2)), 0x05, 0x21, 0x00)
        assert_good(P(rw10(0x2F, 4, 0)))


class TestSyncCache:
    def test_flush(self):
        assert P(rw10(0x35, 0, 0)) == (scsi.FLUSH, 0, 0, 0)
        assert P(rw10(0x35, 10, 10, b1=0x02)) == (scsi.FLUSH, 0, 0, 0)
        assert P(rw16(0x91, 0, 0)) == (scsi.FLUSH, 0, 0, 0)

    def test_range(self):
        assert_check(P(rw10(0x35, 1 << 21, 1)), 0x05, 0x21, 0x00)
        assert_check(P(rw16(0x91, 1 << 40, 0)), 0x05, 0x21, 0x00)


# ======================================================================== COMPARE AND WRITE
def caw(lba, n, b1=0):
    return struct.pack(">BBQ3xBBB", 0x89, b1, lba, n, 0, 0)


class TestCompareAndWrite:
    def test_one_block(self):
        assert P(caw(77, 1, b1=0x08), data_len=2 * BS) == (scsi.COMPARE_AND_WRITE, 77 * BS, BS, 0)

    def test_more_than_one_block(self):
        assert_invalid_cdb(P(caw(0, 2), data_len=4 * BS), 13)

    def test_data_len(self):
        assert_invalid_cdb(P(caw(0, 1), data_len=BS), 13)

    def test_zero(self):
        assert_good(P(caw(0, 0)))

    def test_range_ro_protect(self):
        assert_check(P(caw(1 << 21, 1), data_len=2 * BS), 0x05, 0x21, 0x00)
        assert_check(P(caw(0, 1), make_lun(read_only=True), 2 * BS), 0x07, 0x27, 0x00)
        assert_invalid_cdb(P(caw(0, 1, b1=0x20), data_len=2 * BS), 1, 7)
