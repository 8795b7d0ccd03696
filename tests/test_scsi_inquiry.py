"""SCSI emulation: INQUIRY (standard data and the VPD pages) and READ CAPACITY (10/16).

Pure (no kernel); byte-level checks against SPC-4/SBC-3 and tcmu-runner."""

import struct

from tcmu_rbd import scsi
from scsi_util import NAA, P, SERIAL, assert_good, assert_invalid_cdb, inquiry, make_lun, sai16


# ======================================================================== INQUIRY
class TestInquiry:
    def test_standard(self):
        d = assert_good(P(inquiry()))
        assert len(d) == 96
        assert d[0] == 0 and d[1] == 0 and d[2] == 0x06 and d[3] == 0x02 and d[4] == 91
        assert d[5] == 0x08 | 0x10          # 3PC, TPGS implicit
        assert d[6] == 0 and d[7] == 0x02   # CmdQue
        assert d[8:16] == b"LIO-ORG "
        assert d[16:32] == b"TCMU device     "
        assert d[32:36] == b"0002"
        assert d[36:58] == bytes(22) and d[66:96] == bytes(30)
        # SAM-5, transport not known, SPC-4, SBC-3
        assert d[58:66] == bytes.fromhex("00a0000004600" "4c0")

    def test_version_descriptors_with_the_transport(self):
        lun = make_lun(transport_version_descriptor=scsi.VD_ISCSI)
        d = assert_good(P(inquiry(), lun))
        assert scsi.VD_ISCSI == 0x0960
        assert d[58:66] == bytes.fromhex("00a00960046004c0")
        assert assert_good(P(inquiry(alloc=62), lun)) == d[:62]
        assert assert_good(P(inquiry(alloc=36), lun)) == d[:36]

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
