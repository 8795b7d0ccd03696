"""SCSI emulation: MAINTENANCE IN/OUT service actions: ALUA (REPORT/SET TARGET PORT GROUPS) and
REPORT SUPPORTED OPERATION CODES.

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

import pytest

from tcmu_rbd import scsi
from scsi_util import (
    P, assert_check, assert_good, assert_invalid_cdb, assert_invalid_param, data_from,
    inquiry, maint_in, make_lun,
)


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

    @pytest.mark.parametrize("op,sa,usage", [
        (0x34, None, "3402ffffffff00ffff00"),                          # PRE-FETCH(10)
        (0x90, None, "9002ffffffffffffffffffffffff0000"),              # PRE-FETCH(16)
        (0xAF, None, "af16ffffffffffffffff0000"),                      # VERIFY(12)
        (0xAE, None, "ae12ffffffffffffffff0000"),                      # WRITE AND VERIFY(12)
        (0x37, None, "37001f00000000ffff00"),                          # READ DEFECT DATA(10)
        (0xB7, None, "b71fffffffffffffffff0000"),                      # READ DEFECT DATA(12)
        (0x84, 0x00, "841fff00000000000000ffffffff0000"),              # RCR COPY STATUS
    ])
    def test_new_commands(self, op, sa, usage):
        usage = bytes.fromhex(usage)
        d = assert_good(P(rsoc(1, op) if sa is None else rsoc(2, op, sa)))
        assert d == bytes([0, 0x03]) + struct.pack(">H", len(usage)) + usage
        d = assert_good(P(rsoc()))
        entry = bytes((op, 0)) + struct.pack(">H", sa or 0) + bytes((0, 0 if sa is None else 1)) \
            + struct.pack(">H", len(usage))
        assert entry in [d[p:p + 8] for p in range(4, len(d), 8)]

    def test_unmap_only_when_thin(self):
        assert assert_good(P(rsoc(1, 0x42), make_lun(thin=False)))[1] == 0x01
        assert assert_good(P(rsoc(1, 0x42)))[1] == 0x03

    def test_maintenance_in_bad_sa(self):
        assert_invalid_cdb(P(maint_in(0x05)), 1, 4)
