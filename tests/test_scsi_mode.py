"""SCSI emulation: MODE SENSE (6/10) and MODE SELECT (6/10): the caching, read-write error recovery
and control pages.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

from scsi_util import (
    P, assert_check, assert_good, assert_invalid_cdb, assert_invalid_param, data_from,
    make_lun, mode_sense6, mode_sense10,
)


# ======================================================================== MODE SENSE / SELECT
CACHING = bytes([0x08, 0x12]) + bytes(18)
RWERR = bytes([0x01, 0x0A]) + bytes(10)
CONTROL = bytes([0x0A, 0x0A, 0x02, 0, 0, 0x40, 0, 0, 0xFF, 0xFF, 0, 0])


class TestModeSense:
    def test_caching6(self):
        d = assert_good(P(mode_sense6(0x08)))
        assert d == bytes([3 + 20, 0, 0x10, 0]) + CACHING

    def test_caching_wce(self):
        d = assert_good(P(mode_sense6(0x08), make_lun(write_cache=True)))
        assert d[4 + 2] == 0x04

    def test_all_pages10(self):
        d = assert_good(P(mode_sense10(0x3F)))
        body = RWERR + CACHING + CONTROL
        assert d == struct.pack(">HBBBBH", len(body) + 6, 0, 0x10, 0, 0, 0) + body

    def test_all_pages_all_subpages(self):
        assert assert_good(P(mode_sense6(0x3F, sub=0xFF))) == assert_good(P(mode_sense6(0x3F)))

    def test_dbd_changes_nothing(self):
        assert assert_good(P(mode_sense6(0x0A, dbd=1))) == bytes([3 + 12, 0, 0x10, 0]) + CONTROL

    def test_changeable(self):
        d = assert_good(P(mode_sense6(0x08, pc=1)))
        assert d[4:] == bytes([0x08, 0x12]) + bytes(18)
        d = assert_good(P(mode_sense6(0x0A, pc=1)))
        assert d[4:] == bytes([0x0A, 0x0A]) + bytes(10)

    def test_default_equals_current(self):
        assert assert_good(P(mode_sense6(0x3F, pc=2))) == assert_good(P(mode_sense6(0x3F)))

    def test_saved_not_supported(self):
        assert_check(P(mode_sense6(0x08, pc=3)), 0x05, 0x39, 0x00, None)

    def test_unsupported_page(self):
        assert_invalid_cdb(P(mode_sense6(0x1C)), 2, 5)
        assert_invalid_cdb(P(mode_sense10(0x02)), 2, 5)

    def test_unsupported_subpage(self):
        assert_invalid_cdb(P(mode_sense6(0x08, sub=1)), 3)

    def test_write_protect_bit(self):
        assert assert_good(P(mode_sense6(0x08), make_lun(read_only=True)))[2] == 0x90
        assert assert_good(P(mode_sense10(0x08), make_lun(read_only=True)))[3] == 0x90

    def test_truncation_keeps_length_field(self):
        d = assert_good(P(mode_sense6(0x3F, alloc=4)))
        assert d == bytes([3 + 44, 0, 0x10, 0])
        assert assert_good(P(mode_sense6(0x3F, alloc=0))) == b""


def mode_select6(plen, pf=1, sp=0):
    return bytes((0x15, (0x10 if pf else 0) | sp, 0, 0, plen, 0))


def mode_select10(plen, pf=1, sp=0):
    return struct.pack(">BBBBBBBHB", 0x55, (0x10 if pf else 0) | sp, 0, 0, 0, 0, 0, plen, 0)


class TestModeSelect:
    def test_identical_page_accepted(self):
        par = bytes(4) + CACHING
        assert_good(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)))
        par = bytes(8) + CONTROL + RWERR
        assert_good(P(mode_select10(len(par)), data_len=len(par), data_out=data_from(par)))

    def test_ps_bit_ignored(self):
        par = bytes(4) + bytes([0x88]) + CACHING[1:]
        assert_good(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)))

    def test_changed_field_rejected_with_pointer(self):
        par = bytearray(bytes(4) + CACHING)
        par[4 + 2] = 0x04                           # try to set WCE
        assert_invalid_param(P(mode_select6(len(par)), data_len=len(par),
                               data_out=data_from(bytes(par))), 6)

    def test_wrong_page_length(self):
        par = bytes(4) + bytes([0x08, 0x10]) + bytes(16)
        assert_invalid_param(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)), 5)

    def test_unknown_page(self):
        par = bytes(4) + bytes([0x1C, 0x0A]) + bytes(10)
        assert_invalid_param(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)), 4, 5)

    def test_truncated_page(self):
        par = bytes(4) + CACHING[:10]
        assert_check(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)),
                     0x05, 0x1A, 0x00, None)

    def test_short_header(self):
        assert_check(P(mode_select10(4), data_len=4, data_out=data_from(bytes(4))), 0x05, 0x1A, 0)

    def test_pf_and_sp(self):
        par = bytes(4) + CACHING
        assert_invalid_cdb(P(mode_select6(len(par), pf=0), data_len=len(par),
                             data_out=data_from(par)), 1, 4)
        assert_invalid_cdb(P(mode_select6(len(par), sp=1), data_len=len(par),
                             data_out=data_from(par)), 1, 0)

    def test_zero_length(self):
        assert_good(P(mode_select6(0)))

    def test_block_descriptor(self):
        par = bytes([0, 0, 0, 8]) + bytes([0, 0, 0, 0, 0, 0, 2, 0]) + CACHING
        assert_good(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)))
        par = bytes([0, 0, 0, 8]) + bytes([0, 0, 0, 0, 0, 0, 16, 0]) + CACHING
        assert_invalid_param(P(mode_select6(len(par)), data_len=len(par), data_out=data_from(par)), 9)
