"""SCSI emulation core: byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import errno
import struct

import pytest

from tcmu_rbd import scsi
from test_scsi_helpers import (
    NAA, SERIAL, assert_check, assert_good, assert_invalid_cdb, assert_invalid_param,
    cdb6, data_from, inquiry, maint_in, make_lun, mode_sense6, mode_sense10, no_data,
    rw6, rw10, rw12, rw16, sai16, sense_of,
)

BS = 512


def P(cdb, lun=None, data_len=0, data_out=no_data):
    return scsi.parse(cdb, lun if lun is not None else make_lun(), data_len, data_out)


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


# ======================================================================== INQUIRY
class TestInquiry:
    def test_standard(self):
        d = assert_good(P(inquiry()))
        assert len(d) == 36
        assert d[0] == 0 and d[1] == 0 and d[2] == 0x05 and d[3] == 0x02 and d[4] == 31
        assert d[5] == 0x08 | 0x10          # 3PC, TPGS implicit
        assert d[6] == 0 and d[7] == 0x02   # CmdQue
        assert d[8:16] == b"LIO-ORG "
        assert d[16:32] == b"TCMU device     "
        assert d[32:36] == b"0002"

    def test_identity_fields(self):
        lun = make_lun(vendor="X", product="a-very-long-product-name", revision="1")
        d = assert_good(P(inquiry(), lun))
        assert d[8:16] == b"X       " and d[16:32] == b"a-very-long-prod" and d[32:36] == b"1   "

    def test_allocation_length_truncates(self):
        assert assert_good(P(inquiry(alloc=5))) == assert_good(P(inquiry()))[:5]
        assert assert_good(P(inquiry(alloc=0))) == b""

    def test_page_code_without_evpd(self):
        assert_invalid_cdb(P(inquiry(page=0x80)), 2)

    def test_cmddt(self):
        assert_invalid_cdb(P(inquiry(b1=0x02)), 1, 1)

    def test_unsupported_vpd(self):
        assert_invalid_cdb(P(inquiry(1, 0x86)), 2)

    def test_vpd00(self):
        assert assert_good(P(inquiry(1, 0x00))) == bytes(
            [0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])

    def test_vpd80(self):
        d = assert_good(P(inquiry(1, 0x80)))
        s = SERIAL.encode()
        assert d == bytes([0, 0x80, 0, len(s) + 1]) + s + b"\0"

    def test_vpd83(self):
        lun = make_lun(config_string="rbd/rbd/img;osd_op_timeout=30")
        lun.port_groups[0].id = 3
        lun.port_groups[0].ports[0].rel_port_id = 2
        lun.port_groups[0].ports[0].wwn = "iqn.2003-01.org.x:gw"
        lun.port_groups[0].ports[0].tpgt = 1
        d = assert_good(P(inquiry(1, 0x83, alloc=1024), lun))
        assert d[:2] == b"\0\x83"
        assert int.from_bytes(d[2:4], "big") == len(d) - 4
        p = 4
        t10 = b"LIO-ORG " + SERIAL.encode() + b"\0"
        assert d[p:p + 4] == bytes([0x02, 0x01, 0, len(t10)]) and d[p + 4:p + 4 + len(t10)] == t10
        p += 4 + len(t10)
        assert d[p:p + 4] == bytes([0x01, 0x03, 0, 16]) and d[p + 4:p + 20] == NAA
        p += 20
        cfg = b"rbd/rbd/img;osd_op_timeout=30\0"
        assert d[p:p + 4] == bytes([0x02, 0x00, 0, len(cfg)]) and d[p + 4:p + 4 + len(cfg)] == cfg
        p += 4 + len(cfg)
        assert d[p:p + 8] == bytes([0x51, 0x94, 0, 4, 0, 0, 0, 2])     # relative port 2
        p += 8
        assert d[p:p + 8] == bytes([0x51, 0x95, 0, 4, 0, 0, 0, 3])     # port group 3
        p += 8
        name = b"iqn.2003-01.org.x:gw,t,0x0001\0"
        name += b"\0" * (-len(name) & 3)
        assert d[p:p + 4] == bytes([0x53, 0x98, 0, len(name)]) and d[p + 4:p + 4 + len(name)] == name
        p += 4 + len(name)
        tname = b"iqn.2003-01.org.x:gw\0"
        tname += b"\0" * (-len(tname) & 3)
        assert d[p:p + 4] == bytes([0x53, 0xA8, 0, len(tname)])
        assert d[p + 4:] == tname

    def test_naa_from_serial_matches_lio(self):
        assert scsi.naa_from_serial(SERIAL) == NAA
        # non-hex characters are skipped; short serials are zero padded
        assert scsi.naa_from_serial("zz12") == bytes.fromhex("600140512" + "0" * 23)

    def test_long_target_name_is_capped(self):
        lun = make_lun()
        lun.port_groups[0].ports[0].wwn = "iqn." + "x" * 300
        d = assert_good(P(inquiry(1, 0x83, alloc=2048), lun))
        assert int.from_bytes(d[2:4], "big") == len(d) - 4
        lens = []
        p = 4
        while p < len(d):
            lens.append((d[p + 1] & 0x3F, d[p + 3]))
            p += 4 + d[p + 3]
        assert p == len(d)
        assert lens[-2:] == [(0x18, 252), (0x28, 252)]
        assert d[-1] == 0

    def test_no_alua_without_enabled_port(self):
        lun = make_lun()
        lun.port_groups[0].ports[0].enabled = False
        assert assert_good(P(inquiry(), lun))[5] == 0x08
        d = assert_good(P(inquiry(1, 0x83), lun))
        assert int.from_bytes(d[2:4], "big") == (4 + 8 + len(SERIAL) + 1) + 20

    def test_vpd_b0(self):
        lun = make_lun(max_xfer_blocks=2048)
        d = assert_good(P(inquiry(1, 0xB0), lun))
        assert len(d) == 64 and d[:4] == b"\0\xb0\0\x3c"
        assert d[4] == 0x01 and d[5] == 1                     # WSNZ, MAX CAW 1
        assert struct.unpack_from(">II", d, 8) == (2048, 2048)
        assert struct.unpack_from(">IIII", d, 20) == (
            4 * 8192, lun.max_unmap_descriptors, 8192, 0x80000000)
        assert struct.unpack_from(">Q", d, 36)[0] == lun.max_write_same_blocks

    def test_vpd_b0_not_thin(self):
        d = assert_good(P(inquiry(1, 0xB0), make_lun(thin=False)))
        assert d[20:36] == bytes(16)

    def test_vpd_b1(self):
        d = assert_good(P(inquiry(1, 0xB1)))
        assert d[:6] == b"\0\xb1\0\x3c\0\x01" and len(d) == 64 and d[6:] == bytes(58)

    def test_vpd_b2(self):
        assert assert_good(P(inquiry(1, 0xB2))) == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])
        assert assert_good(P(inquiry(1, 0xB2), make_lun(thin=False))) == bytes(
            [0, 0xB2, 0, 4, 0, 0, 0, 0])

    def test_unmap_granularity_follows_block_size(self):
        lun = make_lun(block_size=4096, num_blocks=1000)
        assert lun.unmap_granularity == 1024 and lun.max_unmap_blocks == 4096
        assert lun.max_write_same_blocks == 4096

    def test_small_granularity_keeps_16mib_limits(self):
        lun = make_lun(unmap_granularity=8)               # a file backend's 4 KiB
        assert lun.max_unmap_blocks == 32768 and lun.max_write_same_blocks == 32768
        lun = make_lun(unmap_granularity=65536)           # 32 MiB objects
        assert lun.max_unmap_blocks == 4 * 65536


# ======================================================================== capacity
class TestReadCapacity:
    def test_rc10(self):
        assert assert_good(P(bytes(10).replace(b"\0", b"\x25", 1))) == struct.pack(">II", (1 << 21) - 1, 512)

    def test_rc10_large(self):
        lun = make_lun(num_blocks=(1 << 33), block_size=4096)
        assert assert_good(P(b"\x25" + bytes(9), lun)) == struct.pack(">II", 0xFFFFFFFF, 4096)

    def test_rc16(self):
        d = assert_good(P(sai16(0x10)))
        assert d == struct.pack(">QI", (1 << 21) - 1, 512) + bytes([0, 0, 0xC0, 0]) + bytes(16)
        assert assert_good(P(sai16(0x10, alloc=12))) == d[:12]

    def test_rc16_not_thin(self):
        assert assert_good(P(sai16(0x10), make_lun(thin=False)))[14] == 0

    def test_sai_bad_service_action(self):
        assert_invalid_cdb(P(sai16(0x11)), 1, 4)


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

    @pytest.mark.parametrize("op", [0x01, 0x07, 0x16, 0x17, 0x1D, 0x37, 0x3B, 0x3C, 0x4D, 0x5E,
                                    0x5F, 0x7F, 0x85, 0xA0, 0xA2, 0xAF, 0xB5, 0xC0, 0xFF])
    def test_unsupported_opcodes(self, op):
        assert_check(P(bytes([op]) + bytes(15)), 0x05, 0x20, 0x00, None)

    def test_empty_cdb(self):
        assert_check(P(b""), 0x05, 0x20, 0x00, None)

    def test_truncated_cdb(self):
        assert_check(P(rw10(0x28, 0, 1)[:6], data_len=BS), 0x05, 0x24, 0x00, None)
        assert_check(P(rw16(0x8A, 0, 1)[:10], data_len=BS), 0x05, 0x24, 0x00, None)


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


# ======================================================================== EXTENDED COPY
def cscd(naa=NAA, bs=BS):
    d = bytearray(32)
    d[0] = 0xE4
    d[4], d[5], d[7] = 0x01, 0x03, 16
    d[8:24] = naa
    d[29:32] = bs.to_bytes(3, "big")
    return bytes(d)


def b2b(src_i, dst_i, n, src, dst, typ=0x02, dlen=0x18):
    return struct.pack(">BBHHHxxHQQ", typ, 0, dlen, src_i, dst_i, n, src, dst)


def xcopy_par(cscds, segs, usage=0x18, list_id=0, inline=0):
    tdl = b"".join(cscds)
    sdl = b"".join(segs)
    return struct.pack(">BBH4xII", list_id, usage, len(tdl), len(sdl), inline) + tdl + sdl


def xcopy_cdb(plen, sa=0):
    return struct.pack(">BB8xIBB", 0x83, sa, plen, 0, 0)


def run_xcopy(par, lun=None):
    return P(xcopy_cdb(len(par)), lun, len(par), data_from(par))


class TestExtendedCopy:
    def test_copy_within_lun(self):
        par = xcopy_par([cscd(), cscd()], [b2b(0, 1, 128, 0, 4096)])
        assert run_xcopy(par) == (scsi.COPY, [(0, 4096 * BS, 128 * BS)], 0, 0)

    def test_single_cscd_and_multiple_segments(self):
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 100), b2b(0, 0, 0, 5, 5), b2b(0, 0, 8, 8, 200)])
        assert run_xcopy(par) == (scsi.COPY, [(0, 100 * BS, 8 * BS), (8 * BS, 200 * BS, 8 * BS)], 0, 0)

    def test_zero_length(self):
        assert_good(P(xcopy_cdb(0)))
        assert_good(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 0, 0, 1)])))

    def test_other_lun(self):
        other = bytes.fromhex("6001405ffffffffffffffffffffffff0")
        par = xcopy_par([cscd(), cscd(other)], [b2b(0, 1, 8, 0, 0)])
        assert_check(run_xcopy(par), 0x0A, 0x0D, 0x02)

    def test_block_size_mismatch(self):
        par = xcopy_par([cscd(bs=4096)], [b2b(0, 0, 8, 0, 16)])
        assert_check(run_xcopy(par), 0x0A, 0x0D, 0x03)

    def test_lid4(self):
        assert_invalid_cdb(P(xcopy_cdb(32, sa=1), data_len=32, data_out=data_from(bytes(32))), 1, 4)

    def test_short_list(self):
        assert_check(P(xcopy_cdb(8), data_len=8, data_out=data_from(bytes(8))), 0x05, 0x1A, 0)

    def test_list_id_usage(self):
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)], usage=0x08)
        assert_invalid_param(run_xcopy(par), 1, 4)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)], usage=0x18, list_id=5)
        assert_invalid_param(run_xcopy(par), 0)

    def test_unsupported_descriptor_types(self):
        bad = bytearray(cscd())
        bad[0] = 0xE0
        assert_check(run_xcopy(xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16)])), 0x05, 0x26, 0x07)
        assert_check(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16, typ=0x01)])), 0x05, 0x26, 0x09)

    def test_too_many(self):
        assert_check(run_xcopy(xcopy_par([cscd()] * 3, [b2b(0, 0, 8, 0, 16)])), 0x05, 0x26, 0x06)
        lun = make_lun(max_copy_segments=1)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)] * 2)
        assert_check(run_xcopy(par, lun), 0x05, 0x26, 0x08)

    def test_bad_designator(self):
        bad = bytearray(cscd())
        bad[5] = 0x02                       # EUI-64
        assert_invalid_param(run_xcopy(xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16)])), 16 + 5, 3)
        bad = bytearray(cscd())
        bad[7] = 8
        assert_invalid_param(run_xcopy(xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16)])), 16 + 7)

    def test_bad_index_and_length(self):
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 1, 8, 0, 16)])), 16 + 32 + 6)
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16, dlen=0x14)])), 16 + 32 + 2)

    def test_range(self):
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, (1 << 21) - 4)])
        assert_check(run_xcopy(par), 0x05, 0x21, 0x00)

    def test_segment_too_long(self):
        lun = make_lun(max_copy_segment_bytes=8 * BS)
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 9, 0, 100)]), lun), 16 + 32 + 10)

    def test_inline_data_and_truncated_list(self):
        assert_check(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)], inline=4)), 0x05, 0x1A, 0)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)])
        assert_check(P(xcopy_cdb(len(par)), None, len(par) - 4, data_from(par)), 0x05, 0x1A, 0)

    def test_read_only(self):
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)])
        assert_check(run_xcopy(par, make_lun(read_only=True)), 0x07, 0x27, 0x00)

    def test_receive_copy_results_operating_parameters(self):
        cdb = struct.pack(">BB8xIBB", 0x84, 0x03, 1024, 0, 0)
        d = assert_good(P(cdb))
        assert len(d) == 46 and struct.unpack_from(">I", d, 0)[0] == 42
        assert d[4] == 0x01                                  # SNLID
        assert struct.unpack_from(">HHII", d, 8) == (2, 16, 1024, 16 * 1024 * 1024)
        assert struct.unpack_from(">H", d, 34)[0] == 1 and d[36] == 1
        assert d[37:40] == bytes([9, 9, 9]) and d[43] == 2 and d[44:46] == b"\x02\xe4"
        assert_invalid_cdb(P(struct.pack(">BB8xIBB", 0x84, 0x00, 1024, 0, 0)), 1, 4)


# ======================================================================== ALUA
class TestAlua:
    def test_rtpg_default(self):
        d = assert_good(P(maint_in(0x0A)))
        assert d == bytes([0, 0, 0, 12, 0x00, 0xCF, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1])

    def test_rtpg_extended_and_groups(self):
        lun = make_lun(port_groups=[
            scsi.PortGroup(id=1, state=scsi.ALUA_ACTIVE_OPTIMIZED, preferred=True,
                           implicit_trans_secs=10, ports=[scsi.Port(rel_port_id=1)]),
            scsi.PortGroup(id=2, state=scsi.ALUA_STANDBY, status=2,
                           ports=[scsi.Port(rel_port_id=2, enabled=False),
                                  scsi.Port(rel_port_id=3, enabled=False)]),
        ])
        d = assert_good(P(maint_in(0x0A, b1_hi=0x20), lun))
        assert d[:8] == bytes([0, 0, 0, 28, 0x10, 10, 0, 0])
        assert d[8:20] == bytes([0x80, 0xCF, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1])
        assert d[20:] == bytes([0x02, 0xCF, 0, 2, 0, 2, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3])
        assert assert_good(P(maint_in(0x0A, alloc=6), lun)) == bytes([0, 0, 0, 28, 0x80, 0xCF])

    def test_rtpg_bad_format(self):
        assert_invalid_cdb(P(maint_in(0x0A, b1_hi=0x40)), 1, 7)

    def test_rtpg_without_alua(self):
        lun = make_lun(port_groups=[])
        assert_invalid_cdb(P(maint_in(0x0A), lun), 1, 4)

    def test_stpg_implicit_only(self):
        cdb = struct.pack(">BB4xIBB", 0xA4, 0x0A, 8, 0, 0)
        assert_check(P(cdb, data_len=8, data_out=data_from(bytes(8))), 0x05, 0x20, 0x00)

    def test_stpg_explicit(self):
        lun = make_lun(port_groups=[
            scsi.PortGroup(id=1, state=scsi.ALUA_STANDBY, tpgs=scsi.TPGS_EXPLICIT),
            scsi.PortGroup(id=2, state=scsi.ALUA_ACTIVE_OPTIMIZED,
                           ports=[scsi.Port(rel_port_id=2, enabled=False)]),
        ])
        assert assert_good(P(inquiry(), lun))[5] == 0x08 | 0x20
        par = bytes(4) + bytes([0x00, 0, 0, 1])
        cdb = struct.pack(">BB4xIBB", 0xA4, 0x0A, len(par), 0, 0)
        assert_good(P(cdb, lun, len(par), data_from(par)))
        assert lun.port_groups[0].state == scsi.ALUA_ACTIVE_OPTIMIZED
        assert lun.port_groups[0].status == 1 and lun.port_groups[1].state == scsi.ALUA_STANDBY
        par = bytes(4) + bytes([0x00, 0, 0, 2])       # a remote group
        assert_invalid_param(P(cdb, lun, len(par), data_from(par)), 6)
        par = bytes(4) + bytes([0x0E, 0, 0, 1])       # offline
        assert_invalid_param(P(cdb, lun, len(par), data_from(par)), 4, 3)


# ======================================================================== RSOC
def rsoc(opts=0, op=0, sa=0, rctd=0, alloc=8192):
    return maint_in(0x0C, alloc=alloc, b2=opts | (0x80 if rctd else 0), b3=op, sa2=sa)


class TestReportSupportedOpcodes:
    def test_all(self):
        d = assert_good(P(rsoc()))
        n = struct.unpack_from(">I", d, 0)[0]
        assert n == len(d) - 4 and n % 8 == 0
        entries = {}
        for p in range(4, len(d), 8):
            op, sa, flags, ln = d[p], struct.unpack_from(">H", d, p + 2)[0], d[p + 5], \
                struct.unpack_from(">H", d, p + 6)[0]
            entries[(op, sa if flags & 1 else None)] = ln
        assert entries[(0x28, None)] == 10 and entries[(0x8A, None)] == 16
        assert entries[(0x12, None)] == 6 and entries[(0xA8, None)] == 12
        assert entries[(0x9E, 0x10)] == 16 and entries[(0x9E, 0x12)] == 16
        assert entries[(0xA3, 0x0A)] == 12 and entries[(0xA3, 0x0C)] == 12
        assert (0xA4, 0x0A) not in entries            # STPG only with explicit ALUA
        # everything listed is really accepted (not INVALID COMMAND OPERATION CODE)
        lun = make_lun()
        for op, sa in entries:
            cdb = bytearray(entries[(op, sa)])
            cdb[0] = op
            if sa is not None:
                cdb[1] = sa
            r = scsi.parse(bytes(cdb), lun, 0, data_from(bytes(4096)))
            if r[0] == scsi.DONE and r[1] == scsi.CHECK_CONDITION:
                assert (r[2][12], r[2][13]) != (0x20, 0x00), hex(op)

    def test_all_with_timeouts(self):
        d = assert_good(P(rsoc(rctd=1)))
        assert (len(d) - 4) % 20 == 0
        assert d[4 + 5] & 0x02 and d[4 + 8:4 + 10] == b"\x00\x0a"

    def test_one_read10(self):
        d = assert_good(P(rsoc(1, 0x28)))
        assert d == bytes([0, 0x03, 0, 10, 0x28, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00])

    def test_one_write_same16(self):
        d = assert_good(P(rsoc(1, 0x93)))
        assert d[:4] == bytes([0, 3, 0, 16]) and d[4] == 0x93 and d[5] == 0x09

    def test_one_with_timeouts(self):
        d = assert_good(P(rsoc(1, 0x00, rctd=1)))
        assert d[:4] == bytes([0, 0x83, 0, 6]) and d[10:12] == b"\x00\x0a" and len(d) == 22

    def test_one_unsupported(self):
        assert assert_good(P(rsoc(1, 0x01))) == bytes([0, 0x01, 0, 0])
        assert assert_good(P(rsoc(2, 0x9E, 0x11))) == bytes([0, 0x01, 0, 0])

    def test_service_action_rules(self):
        assert_invalid_cdb(P(rsoc(1, 0x9E)), 2, 2)
        assert_invalid_cdb(P(rsoc(2, 0x28)), 2, 2)
        d = assert_good(P(rsoc(2, 0x9E, 0x10)))
        assert d[:6] == bytes([0, 3, 0, 16, 0x9E, 0x1F])
        assert assert_good(P(rsoc(3, 0x9E, 0x12)))[:4] == bytes([0, 3, 0, 16])
        assert assert_good(P(rsoc(3, 0x28, 0x55)))[:4] == bytes([0, 3, 0, 10])
        assert_invalid_cdb(P(rsoc(4, 0x28)), 2, 2)

    def test_unmap_only_when_thin(self):
        assert assert_good(P(rsoc(1, 0x42), make_lun(thin=False)))[1] == 0x01
        assert assert_good(P(rsoc(1, 0x42)))[1] == 0x03

    def test_maintenance_in_bad_sa(self):
        assert_invalid_cdb(P(maint_in(0x05)), 1, 4)


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
