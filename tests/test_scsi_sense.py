"""SCSI emulation: Sense data, I/O results as SCSI status, the simple commands (TEST UNIT READY,
START STOP UNIT, REQUEST SENSE, unsupported and truncated CDBs) and unit attentions.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import errno

import pytest

from tcmu_rbd import scsi
from scsi_util import (
    BS, P, assert_check, assert_good, assert_invalid_cdb, cdb6, inquiry, make_lun, rw10,
    rw16, sense_of,
)


# ======================================================================== sense
class TestSense:
    def test_plain(self):
        s = scsi.sense(0x05, 0x20, 0x00)
        assert s == bytes([0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x20, 0x00, 0, 0, 0, 0])

    def test_information(self):
        s = scsi.sense(scsi.MISCOMPARE, 0x1D, 0x00, info=0x01020304)
        assert s[0] == 0xF0 and s[2] == 0x0E and s[3:7] == b"\x01\x02\x03\x04"
        assert s[12:14] == b"\x1d\x00" and s[15:18] == b"\0\0\0"

    def test_field_pointer_cdb_with_bit(self):
        s = scsi.sense(0x05, 0x24, 0x00, field_pointer=1, bit=7)
        # SKSV | C/D | BPV | bit 7, field pointer 0x0001
        assert s[15:18] == bytes([0x80 | 0x40 | 0x08 | 7, 0x00, 0x01])
        assert s[0] == 0x70 and s[7] == 0x0A

    def test_field_pointer_param_list(self):
        s = scsi.sense(0x05, 0x26, 0x00, field_pointer=0x123, cd=False)
        assert s[15:18] == bytes([0x80, 0x01, 0x23])

    def test_check_tuple(self):
        r = scsi.check(0x06, 0x2A, 0x09)
        assert r[:2] == (scsi.DONE, scsi.CHECK_CONDITION) and r[3] is None
        assert r[2][2] == 0x06 and r[2][12:14] == b"\x2a\x09"


class TestIoResult:
    @pytest.mark.parametrize("kind", [scsi.READ, scsi.WRITE, scsi.COMPARE_AND_WRITE, scsi.FLUSH])
    def test_good(self, kind):
        assert scsi.io_result(kind, 0) == (scsi.GOOD, None)
        assert scsi.io_result(kind, 4096) == (scsi.GOOD, None)

    @pytest.mark.parametrize("err", [errno.ETIMEDOUT, errno.ESHUTDOWN, errno.EROFS,
                                     errno.EAGAIN, errno.EBUSY, errno.ENOTCONN])
    def test_busy(self, err):
        assert scsi.io_result(scsi.WRITE, -err) == (scsi.BUSY, None)
        assert scsi.io_result(scsi.READ, -err) == (scsi.BUSY, None)

    @pytest.mark.parametrize("kind", [scsi.COMPARE_AND_WRITE, scsi.VERIFY, scsi.WRITE_VERIFY])
    def test_miscompare(self, kind):
        st, s = scsi.io_result(kind, -errno.EILSEQ, 37)
        assert st == scsi.CHECK_CONDITION
        assert s[0] == 0xF0 and s[2] == 0x0E and s[12:14] == b"\x1d\x00"
        assert int.from_bytes(s[3:7], "big") == 37

    def test_einval_enospc_enomem(self):
        st, s = scsi.io_result(scsi.WRITE, -errno.EINVAL)
        assert st == scsi.CHECK_CONDITION and (s[2], s[12], s[13]) == (5, 0x24, 0)
        st, s = scsi.io_result(scsi.WRITE_ZEROES, -errno.ENOSPC)
        assert (s[2], s[12], s[13]) == (7, 0x27, 0x07)
        assert scsi.io_result(scsi.READ, -errno.ENOMEM) == (scsi.TASK_SET_FULL, None)

    def test_medium_errors(self):
        st, s = scsi.io_result(scsi.READ, -errno.EIO)
        assert st == scsi.CHECK_CONDITION and (s[2], s[12], s[13]) == (3, 0x11, 0)
        for kind in (scsi.WRITE, scsi.UNMAP, scsi.WRITE_SAME, scsi.FLUSH, scsi.COPY):
            st, s = scsi.io_result(kind, -errno.EIO)
            assert (s[2], s[12], s[13]) == (3, 0x0C, 0), kind
        # EILSEQ on a plain read is a medium error, not a miscompare
        st, s = scsi.io_result(scsi.READ, -errno.EILSEQ, 3)
        assert (s[2], s[12], s[0]) == (3, 0x11, 0x70)


# ======================================================================== simple commands
class TestSimple:
    def test_tur(self):
        assert P(bytes(6)) == (scsi.DONE, scsi.GOOD, None, None)

    def test_start_stop(self):
        assert_good(P(cdb6(0x1B, b4=0x01)))
        assert_good(P(cdb6(0x1B, b4=0x00)))
        assert_good(P(cdb6(0x1B, b1=1, b4=0x01)))
        assert_invalid_cdb(P(cdb6(0x1B, b4=0x30)), 4, 7)

    def test_prevent_allow(self):
        assert_good(P(cdb6(0x1E, b4=1)))
        assert_good(P(cdb6(0x1E, b4=0)))

    def test_request_sense(self):
        assert assert_good(P(cdb6(0x03, b4=252))) == bytes([0x70, 0, 0, 0, 0, 0, 0, 0x0A]) + bytes(10)
        assert assert_good(P(cdb6(0x03, b4=8))) == bytes([0x70, 0, 0, 0, 0, 0, 0, 0x0A])
        assert assert_good(P(cdb6(0x03, b1=1, b4=252))) == bytes([0x72]) + bytes(7)

    @pytest.mark.parametrize("op", [0x01, 0x07, 0x16, 0x17, 0x1D, 0x36, 0x3B, 0x3C, 0x4D, 0x5E,
                                    0x5F, 0x7F, 0x85, 0xA0, 0xA2, 0xB5, 0xB6, 0xC0, 0xFF])
    def test_unsupported_opcodes(self, op):
        assert_check(P(bytes([op]) + bytes(15)), 0x05, 0x20, 0x00, None)

    def test_empty_cdb(self):
        assert_check(P(b""), 0x05, 0x20, 0x00, None)

    def test_truncated_cdb(self):
        assert_check(P(rw10(0x28, 0, 1)[:6], data_len=BS), 0x05, 0x24, 0x00, None)
        assert_check(P(rw16(0x8A, 0, 1)[:10], data_len=BS), 0x05, 0x24, 0x00, None)


# ======================================================================== unit attention
class TestUnitAttention:
    def test_once_after_resize(self):
        lun = make_lun(num_blocks=100)
        lun.resize(200)
        assert lun.num_blocks == 200 and lun.ua_capacity_changed
        # INQUIRY and REQUEST SENSE pass through without consuming it
        assert_good(P(inquiry(), lun))
        assert_good(P(cdb6(0x03, b4=18), lun))
        assert_check(P(bytes(6), lun), 0x06, 0x2A, 0x09, None)
        assert not lun.ua_capacity_changed
        assert_good(P(bytes(6), lun))
        assert assert_good(P(b"\x25" + bytes(9), lun))[:4] == (199).to_bytes(4, "big")

    def test_fast_path_reports_it(self):
        lun = make_lun(num_blocks=100)
        lun.resize(100)
        assert_check(P(rw10(0x28, 0, 1), lun, BS), 0x06, 0x2A, 0x09)
        assert P(rw10(0x28, 0, 1), lun, BS) == (scsi.READ, 0, BS, 0)

    def test_even_for_invalid_opcode(self):
        lun = make_lun()
        lun.resize(10)
        assert_check(P(bytes([0x01]) + bytes(5), lun), 0x06, 0x2A, 0x09)
        assert_check(P(bytes([0x01]) + bytes(5), lun), 0x05, 0x20, 0x00)

    def test_new_size_checked(self):
        lun = make_lun(num_blocks=100)
        lun.resize(50)
        P(bytes(6), lun)
        assert_check(P(rw10(0x28, 60, 1), lun, BS), 0x05, 0x21, 0x00)


def test_sense_parser_rejects_garbage():
    # the helper really checks the fields it claims to
    with pytest.raises(AssertionError):
        sense_of((scsi.DONE, scsi.CHECK_CONDITION, bytes(18), None))
