"""SCSI emulation: EXTENDED COPY (LID1) and RECEIVE COPY RESULTS.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

from tcmu_rbd import scsi
from scsi_util import (
    BS, NAA, P, assert_check, assert_good, assert_invalid_cdb, assert_invalid_param,
    data_from, make_lun,
)


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
