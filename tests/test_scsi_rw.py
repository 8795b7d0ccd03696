"""SCSI emulation: READ/WRITE (6/10/12/16), WRITE AND VERIFY, VERIFY, PRE-FETCH,
SYNCHRONIZE CACHE, COMPARE AND WRITE and READ DEFECT DATA.

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

    @pytest.mark.parametrize("cdb", [rw6(0x08, 0, 4), rw10(0x28, 0, 4), rw12(0xA8, 0, 4),
                                     rw16(0x88, 0, 4)])
    def test_read_data_len_mismatch_reads_what_fits(self, cdb):
        # D < S: the D bytes the buffer holds; D > S: the S bytes asked for
        # (the handler completes with READ_LEN = S); D == 0: nothing
        assert P(cdb, data_len=3 * BS) == (scsi.READ, 0, 3 * BS, 0)
        assert P(cdb, data_len=5 * BS) == (scsi.READ, 0, 4 * BS, 0)
        assert P(cdb, data_len=4 * BS + 1) == (scsi.READ, 0, 4 * BS, 0)
        assert P(cdb, data_len=BS + 7) == (scsi.READ, 0, BS + 7, 0)
        assert_good(P(cdb, data_len=0))

    @pytest.mark.parametrize("cdb", [rw6(0x0A, 0, 4), rw10(0x2A, 0, 4), rw12(0xAA, 0, 4),
                                     rw16(0x8A, 0, 4), rw10(0x2E, 0, 4), rw12(0xAE, 0, 4),
                                     rw16(0x8E, 0, 4)])
    def test_write_data_len_mismatch_is_invalid_field_in_iu(self, cdb):
        for dl in (0, 3 * BS, 5 * BS, 4 * BS - 1):
            assert_check(P(cdb, data_len=dl), 0x05, 0x0E, 0x03, None)

    @pytest.mark.parametrize("op,fn", [(0x28, rw10), (0x2A, rw10), (0x8A, rw16), (0x88, rw16),
                                       (0xA8, rw12), (0xAA, rw12), (0x2E, rw10), (0xAE, rw12),
                                       (0x8E, rw16)])
    def test_no_max_transfer(self, op, fn):
        lun = make_lun(max_xfer_blocks=128)
        for n in (128, 129, 256, 2048, 0xFFFF):
            assert P(fn(op, 0, n), lun, n * BS)[:3] in (
                (scsi.READ, 0, n * BS), (scsi.WRITE, 0, n * BS), (scsi.WRITE_VERIFY, 0, n * BS))

    @pytest.mark.parametrize("cdb", [rw10(0x28, (1 << 21) - 1, 2048), rw16(0x88, 1 << 21, 0xFFFF),
                                     rw10(0x2A, 1 << 21, 4096), rw12(0xAA, (1 << 21) - 100, 101),
                                     rw16(0x8A, (1 << 64) - 1, (1 << 32) - 1),
                                     rw6(0x08, (1 << 21) - 1, 0), rw12(0xAE, 1 << 30, 300)])
    def test_out_of_range_whatever_the_length_or_buffer(self, cdb):
        lun = make_lun(max_xfer_blocks=128)
        for dl in (0, BS, 2048 * BS):
            assert_check(P(cdb, lun, dl), 0x05, 0x21, 0x00, None)

    def test_order_of_checks(self):
        ro = make_lun(read_only=True, max_xfer_blocks=128)
        end = 1 << 21
        # PROTECT before write protect, write protect before the LBA range,
        # the LBA range before the length
        assert_invalid_cdb(P(rw10(0x2A, end, 4, b1=0x20), ro, 0), 1, 7)
        assert_check(P(rw10(0x2A, end, 4), ro, 0), 0x07, 0x27, 0x00, None)
        assert_check(P(rw16(0x8A, end, 4), make_lun(), 0), 0x05, 0x21, 0x00, None)
        assert_check(P(rw16(0x8A, 0, 4), make_lun(), 0), 0x05, 0x0E, 0x03, None)
        # n == 0 after the range check: GOOD, no I/O, whatever the buffer
        assert_check(P(rw10(0x2A, end + 1, 0), make_lun(), 0), 0x05, 0x21, 0x00)
        assert_good(P(rw10(0x2A, 5, 0), make_lun(), BS))
        assert_good(P(rw10(0x28, 5, 0), make_lun(), BS))

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
        assert P(rw12(0xAE, 4, 2, b1=0x12), data_len=2 * BS) == (scsi.WRITE_VERIFY, 4 * BS, 2 * BS, 0)
        assert_check(P(rw16(0x8E, 4, 2), data_len=BS), 0x05, 0x0E, 0x03, None)
        assert_invalid_cdb(P(rw12(0xAE, 4, 2, b1=0x20), data_len=2 * BS), 1, 7)    # WRPROTECT
        assert_check(P(rw12(0xAE, 4, 2), make_lun(read_only=True), 2 * BS), 0x07, 0x27, 0x00)

    def test_verify_medium(self):
        assert P(rw10(0x2F, 4, 2)) == (scsi.VERIFY, 4 * BS, 2 * BS, 0)
        assert P(rw16(0x8F, 4, 2)) == (scsi.VERIFY, 4 * BS, 2 * BS, 0)
        assert P(rw12(0xAF, 4, 2, b1=0x10)) == (scsi.VERIFY, 4 * BS, 2 * BS, 0)     # DPO

    def test_verify_bytchk(self):
        assert P(rw10(0x2F, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.VERIFY, 4 * BS, 2 * BS, 1)
        assert P(rw16(0x8F, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.VERIFY, 4 * BS, 2 * BS, 1)
        assert P(rw12(0xAF, 4, 2, b1=0x02), data_len=2 * BS) == (scsi.VERIFY, 4 * BS, 2 * BS, 1)
        for cdb in (rw10(0x2F, 4, 2, b1=0x02), rw12(0xAF, 4, 2, b1=0x02)):
            assert_check(P(cdb, data_len=BS), 0x05, 0x0E, 0x03, None)
            assert_check(P(cdb, data_len=3 * BS), 0x05, 0x0E, 0x03, None)

    def test_verify_bytchk_has_no_max_transfer(self):
        lun = make_lun(max_xfer_blocks=128)
        for cdb in (rw10(0x2F, 0, 2048, b1=0x02), rw12(0xAF, 0, 2048, b1=0x02),
                    rw16(0x8F, 0, 2048, b1=0x02)):
            assert P(cdb, lun, 2048 * BS) == (scsi.VERIFY, 0, 2048 * BS, 1)

    def test_verify_medium_check_takes_no_data(self):
        assert_invalid_cdb(P(rw10(0x2F, 4, 2), data_len=BS), 1, 2)

    def test_verify_bad_bytchk(self):
        assert_invalid_cdb(P(rw10(0x2F, 4, 2, b1=0x06), data_len=BS), 1, 2)
        assert_invalid_cdb(P(rw16(0x8F, 4, 2, b1=0x04)), 1, 2)
        assert_invalid_cdb(P(rw12(0xAF, 4, 2, b1=0x04)), 1, 2)
        assert_invalid_cdb(P(rw12(0xAF, 4, 2, b1=0x20)), 1, 7)       # VRPROTECT

    def test_verify_range(self):
        assert_check(P(rw10(0x2F, (1 << 21) - 1, 2)), 0x05, 0x21, 0x00)
        assert_check(P(rw12(0xAF, (1 << 21) - 1, 2)), 0x05, 0x21, 0x00)
        assert_check(P(rw12(0xAF, 1 << 21, 2048, b1=0x02), data_len=BS), 0x05, 0x21, 0x00)
        assert_good(P(rw10(0x2F, 4, 0)))
        assert_good(P(rw12(0xAF, 4, 0)))


class TestPrefetch:
    def test_in_range_is_good_never_condition_met(self):
        for cdb in (rw10(0x34, 0, 8), rw10(0x34, 0, 8, b1=0x02), rw16(0x90, 0, 8),
                    rw16(0x90, 100, 8, b1=0x02), rw10(0x34, (1 << 21) - 8, 8),
                    rw16(0x90, 0, 1 << 21)):
            assert P(cdb) == (scsi.DONE, scsi.GOOD, None, None)

    def test_zero_means_to_the_last_lba(self):
        assert_good(P(rw10(0x34, 0, 0)))
        assert_good(P(rw16(0x90, (1 << 21) - 1, 0)))
        assert_check(P(rw10(0x34, 1 << 21, 0)), 0x05, 0x21, 0x00, None)
        assert_check(P(rw16(0x90, 1 << 21, 0)), 0x05, 0x21, 0x00, None)

    def test_beyond_the_end(self):
        for cdb in (rw10(0x34, (1 << 21) - 1, 2), rw10(0x34, 1 << 31, 1),
                    rw10(0x34, 0xFFFFFFFF, 1), rw16(0x90, (1 << 64) - 1, 1),
                    rw16(0x90, (1 << 64) - 1, 0), rw16(0x90, 1 << 31, 8)):
            assert_check(P(cdb), 0x05, 0x21, 0x00, None)


def read_defect_data10(b2, alloc):
    return struct.pack(">BBBxxxxHB", 0x37, 0, b2, alloc, 0)


def read_defect_data12(b1, alloc):
    return struct.pack(">BBIIBB", 0xB7, b1, 0, alloc, 0, 0)


class TestReadDefectData:
    def test_empty_list_says_which_lists_and_format(self):
        assert assert_good(P(read_defect_data10(0x18, 4))) == bytes.fromhex("00180000")
        assert assert_good(P(read_defect_data10(0x15, 512))) == bytes.fromhex("00150000")
        assert assert_good(P(read_defect_data10(0xE0, 512))) == bytes(4)   # reserved bits
        assert assert_good(P(read_defect_data12(0x1C, 8))) == bytes.fromhex("001c000000000000")
        assert assert_good(P(read_defect_data12(0x0D, 4096))) == bytes.fromhex("000d000000000000")

    def test_allocation_length_truncates(self):
        assert assert_good(P(read_defect_data10(0x18, 2))) == b"\x00\x18"
        assert assert_good(P(read_defect_data10(0x18, 0))) == b""
        assert assert_good(P(read_defect_data12(0x08, 5))) == bytes.fromhex("0008000000")


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
        for dl in (0, BS, 3 * BS, 2 * BS - 1):
            assert_check(P(caw(0, 1), data_len=dl), 0x05, 0x0E, 0x03, None)

    def test_zero(self):
        assert_good(P(caw(0, 0)))

    def test_range_ro_protect(self):
        assert_check(P(caw(1 << 21, 1), data_len=2 * BS), 0x05, 0x21, 0x00)
        assert_check(P(caw(0, 1), make_lun(read_only=True), 2 * BS), 0x07, 0x27, 0x00)
        assert_invalid_cdb(P(caw(0, 1, b1=0x20), data_len=2 * BS), 1, 7)

    def test_order_of_checks(self):
        ro = make_lun(read_only=True)
        assert_invalid_cdb(P(caw(1 << 21, 1, b1=0x20), ro, 0), 1, 7)      # PROTECT first
        assert_invalid_cdb(P(caw(1 << 21, 2), ro, 0), 13)                  # then NUMBER OF BLOCKS
        assert_check(P(caw(1 << 21, 1), ro, 0), 0x07, 0x27, 0x00)          # write protect
        assert_check(P(caw(1 << 21, 1), data_len=0), 0x05, 0x21, 0x00)     # range, then length
