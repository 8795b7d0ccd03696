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


def rcr(sa, list_id=0, alloc=1024):
    return struct.pack(">BBB7xIBB", 0x84, sa, list_id, alloc, 0, 0)


class TestExtendedCopy:
    def test_copy_within_lun(self):
        par = xcopy_par([cscd(), cscd()], [b2b(0, 1, 128, 0, 4096)])
        assert run_xcopy(par) == (scsi.COPY, [(0, 4096 * BS, 128 * BS)], None, 0)

    def test_single_cscd_and_multiple_segments(self):
        # zero-length segments are kept: COPY STATUS counts them as processed
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 100), b2b(0, 0, 0, 5, 5), b2b(0, 0, 8, 8, 200)])
        assert run_xcopy(par) == (scsi.COPY, [(0, 100 * BS, 8 * BS), (5 * BS, 5 * BS, 0),
                                              (8 * BS, 200 * BS, 8 * BS)], None, 0)

    def test_list_identifier_to_record(self):
        seg = [b2b(0, 0, 8, 0, 16)]
        assert run_xcopy(xcopy_par([cscd()], seg, usage=0x00, list_id=7))[2] == 7
        assert run_xcopy(xcopy_par([cscd()], seg, usage=0x10, list_id=1))[2] == 1   # sg_xcopy
        assert run_xcopy(xcopy_par([cscd()], seg, usage=0x18, list_id=0))[2] is None

    def test_zero_length(self):
        assert_good(P(xcopy_cdb(0)))
        assert run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 0, 0, 1)])) == \
            (scsi.COPY, [(0, BS, 0)], None, 0)
        assert run_xcopy(xcopy_par([cscd()], [])) == (scsi.COPY, [], None, 0)

    def test_other_lun(self):
        other = bytes.fromhex("6001405ffffffffffffffffffffffff0")
        par = xcopy_par([cscd(), cscd(other)], [b2b(0, 1, 8, 0, 0)])
        assert_check(run_xcopy(par), 0x0A, 0x0D, 0x02, None)

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

    def test_stream_segment_of_another_length(self):
        # stream -> stream (03h) is 20 bytes: its type is what is wrong
        stream = struct.pack(">BBHHH4xI4x", 0x03, 0, 0x10, 0, 0, 512)
        assert len(stream) == 20
        assert_check(run_xcopy(xcopy_par([cscd()], [stream])), 0x05, 0x26, 0x09, None)
        # a block -> block list that is not whole descriptors
        assert_check(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)[:20]])),
                     0x05, 0x26, 0x09, None)

    def test_cscd_list_not_whole_descriptors(self):
        assert_check(run_xcopy(xcopy_par([cscd()[:24]], [b2b(0, 0, 8, 0, 16)])), 0x05, 0x26, 0x07)
        assert_check(run_xcopy(xcopy_par([cscd(), cscd()[:8]], [b2b(0, 0, 8, 0, 16)])),
                     0x05, 0x26, 0x07)
        assert_check(run_xcopy(xcopy_par([], [b2b(0, 0, 8, 0, 16)])), 0x05, 0x1A, 0x00)

    def test_too_many(self):
        assert_check(run_xcopy(xcopy_par([cscd()] * 3, [b2b(0, 0, 8, 0, 16)])), 0x05, 0x26, 0x06)
        lun = make_lun(max_copy_segments=1)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)] * 2)
        assert_check(run_xcopy(par, lun), 0x05, 0x26, 0x08)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)] * 17)          # 16 advertised
        assert_check(run_xcopy(par), 0x05, 0x26, 0x08)

    def test_descriptor_lists_over_the_maximum_first(self):
        # 3 CSCDs + 34 segments (libiscsi): too many of both, but the lists'
        # length is over MAX DESCRIPTOR LIST LENGTH (1024), and that comes first
        par = xcopy_par([cscd()] * 3, [b2b(0, 0, 8, 0, 16)] * 34)
        assert 3 * 32 + 34 * 28 > 1024
        assert_check(run_xcopy(par), 0x05, 0x1A, 0x00, None)
        bad = bytearray(cscd())
        bad[0] = 0xE0
        par = xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16, typ=0x01)] * 36, inline=4)
        assert_check(run_xcopy(par), 0x05, 0x1A, 0x00, None)
        # exactly 1024 is allowed (here: too many segments, the next check)
        par = xcopy_par([cscd()] * 2, [b2b(0, 0, 8, 0, 16)] * 34)
        assert 2 * 32 + 34 * 28 == 1016
        assert_check(run_xcopy(par), 0x05, 0x26, 0x08, None)

    def test_bad_designator(self):
        bad = bytearray(cscd())
        bad[5] = 0x02                       # EUI-64
        assert_invalid_param(run_xcopy(xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16)])), 16 + 5, 3)
        bad = bytearray(cscd())
        bad[7] = 8
        assert_invalid_param(run_xcopy(xcopy_par([bytes(bad)], [b2b(0, 0, 8, 0, 16)])), 16 + 7)

    def test_bad_index_and_length(self):
        # a CSCD index outside the list: a copy target that cannot be reached
        assert_check(run_xcopy(xcopy_par([cscd()], [b2b(0, 1, 8, 0, 16)])), 0x0A, 0x0D, 0x02, None)
        assert_check(run_xcopy(xcopy_par([cscd()], [b2b(0x7FF, 0, 8, 0, 16)])), 0x0A, 0x0D, 0x02)
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16, dlen=0x14)])), 16 + 32 + 2)

    def test_range(self):
        for seg in (b2b(0, 0, 8, 0, (1 << 21) - 4), b2b(0, 0, 8, (1 << 21) - 7, 0),
                    b2b(0, 0, 1, 0, (1 << 64) - 1)):
            assert_check(run_xcopy(xcopy_par([cscd()], [seg])), 0x0A, 0x0D, 0x02, None)

    def test_every_segment_checked_before_any_copy(self):
        good = b2b(0, 0, 8, 0, 16)
        for bad in (b2b(0, 0, 8, 0, 1 << 21), b2b(0, 2, 8, 0, 16), b2b(0, 0, 8, 0, 16, typ=0x0A)):
            res = run_xcopy(xcopy_par([cscd()], [good, good, bad]))
            assert res[0] == scsi.DONE and res[1] == scsi.CHECK_CONDITION

    def test_segment_too_long(self):
        lun = make_lun(max_copy_segment_bytes=8 * BS)
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 9, 0, 100)]), lun), 16 + 32 + 10)

    def test_inline_data_and_truncated_list(self):
        assert_invalid_param(run_xcopy(xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)], inline=4)), 12)
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)])
        assert_check(P(xcopy_cdb(len(par)), None, len(par) - 4, data_from(par)), 0x05, 0x1A, 0)
        assert_check(P(xcopy_cdb(len(par) - 4), None, len(par), data_from(par)), 0x05, 0x1A, 0)

    def test_read_only(self):
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)])
        assert_check(run_xcopy(par, make_lun(read_only=True)), 0x07, 0x27, 0x00)


class TestReceiveCopyResults:
    def test_operating_parameters(self):
        cdb = struct.pack(">BB8xIBB", 0x84, 0x03, 1024, 0, 0)
        d = assert_good(P(cdb))
        assert len(d) == 46 and struct.unpack_from(">I", d, 0)[0] == 42
        assert d[4] == 0x01                                  # SNLID
        assert struct.unpack_from(">HHII", d, 8) == (2, 16, 1024, 16 * 1024 * 1024)
        assert struct.unpack_from(">H", d, 34)[0] == 1 and d[36] == 1
        assert d[37:40] == bytes([9, 9, 9]) and d[43] == 2 and d[44:46] == b"\x02\xe4"
        assert assert_good(P(rcr(0x03, alloc=10))) == d[:10]

    def test_other_service_actions(self):
        for sa in (0x01, 0x02, 0x04, 0x05, 0x1F):
            assert_invalid_cdb(P(rcr(sa)), 1, 4)

    def test_copy_status_unknown_list_id(self):
        assert_invalid_cdb(P(rcr(0x00, 1)), 2)
        lun = make_lun()
        scsi.record_copy(lun, 1, scsi.COPY_COMPLETED, 1, 4096)
        assert_invalid_cdb(P(rcr(0x00, 2), lun), 2)

    def test_copy_status_after_success_and_failure(self):
        lun = make_lun()
        scsi.record_copy(lun, 1, scsi.COPY_IN_PROGRESS, 0, 0)
        assert assert_good(P(rcr(0x00, 1), lun)) == bytes.fromhex("000000080000000000000000")
        scsi.record_copy(lun, 1, scsi.COPY_COMPLETED, 3, 2048 * BS)
        assert assert_good(P(rcr(0x00, 1), lun)) == bytes.fromhex("000000080100030000100000")
        scsi.record_copy(lun, 9, scsi.COPY_FAILED, 1, 4096)
        assert assert_good(P(rcr(0x00, 9), lun)) == bytes.fromhex("000000080200010000001000")
        assert assert_good(P(rcr(0x00, 9, alloc=5), lun)) == bytes.fromhex("0000000802")
        assert assert_good(P(rcr(0x00, 1), lun))[4] == 0x01      # still there

    def test_no_identifier_is_not_recorded(self):
        lun = make_lun()
        scsi.record_copy(lun, None, scsi.COPY_COMPLETED, 1, 512)
        assert lun.copy_results == {}

    def test_the_last_16_list_ids(self):
        lun = make_lun()
        for i in range(20):
            scsi.record_copy(lun, i, scsi.COPY_COMPLETED, 1, i)
        scsi.record_copy(lun, 4, scsi.COPY_COMPLETED, 1, 4)     # 4 used again: newest
        scsi.record_copy(lun, 20, scsi.COPY_COMPLETED, 1, 20)   # forgets the oldest, 5
        assert len(lun.copy_results) == 16
        for i in (0, 1, 2, 3, 5):
            assert_invalid_cdb(P(rcr(0x00, i), lun), 2)
        for i in (4, 6, 19, 20):
            assert assert_good(P(rcr(0x00, i), lun))[8:12] == struct.pack(">I", i)

    def test_copy_status_after_a_rejected_list(self):
        lun = make_lun()
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 1 << 21)], usage=0x00, list_id=3)
        assert_check(run_xcopy(par, lun), 0x0A, 0x0D, 0x02)
        assert assert_good(P(rcr(0x00, 3), lun)) == bytes.fromhex("000000080200000000000000")
        par = xcopy_par([cscd()], [b2b(0, 0, 8, 0, 16)], usage=0x18)       # no list id
        bad = par[:16 + 32] + b"\x0a" + par[16 + 33:]
        assert_check(run_xcopy(bad, lun), 0x05, 0x26, 0x09)
        assert set(lun.copy_results) == {3}
