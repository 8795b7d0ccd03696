"""Issue 11's answers end to end: emulated kernel -> real ring and engine ->
handler -> backend, and what an initiator gets back.  Each test runs on the
memory and file backends (every command through Python) and on an rbd image
on the throwaway cluster (plain READ/WRITE started and completed in C, the
rest through Python): transfers above the LUN's MAXIMUM TRANSFER LENGTH,
Data-In/Data-Out lengths that are not the CDB's, UNMAP and WRITE SAME with
UNMAP reading back zero, EXTENDED COPY and COPY STATUS, the new commands.
"""

import os
import struct
import uuid

import pytest

from tcmu_rbd import scsi
from tcmu_rbd.backends.file import FileBackend
from tcmu_rbd.backends.memory import MemoryBackend
from tcmu_rbd_lab.rig import Rig

from scsi_util import rw10, rw12, rw16

MiB = 1 << 20
BS = 512
MAX_XFER = 128          # the kernel's default hw_max_sectors (stock targetcli)


def sense_key(res):
    assert res.status == scsi.CHECK_CONDITION, res
    return res.sense[2] & 0x0F, res.sense[12], res.sense[13]


@pytest.fixture(params=["memory", "file", pytest.param("rbd", marks=pytest.mark.ceph)])
def rig(request, tmp_path):
    """A 64 MiB LUN with MAXIMUM TRANSFER LENGTH 128 blocks; rig.in_c says
    whether plain READ/WRITE are started in C."""
    image = None
    if request.param == "memory":
        b = MemoryBackend(64 * MiB)
    elif request.param == "file":
        b = FileBackend(str(tmp_path / "lun.img"), size=64 * MiB, create=True)
    else:
        from tcmu_rbd.backends.rbd import RbdBackend
        ceph = request.getfixturevalue("ceph")
        image = "dp-" + uuid.uuid4().hex[:10]
        ceph.create_image(image, 64 * MiB)
        b = RbdBackend("rbd", image, conf=ceph.conf_path, keyring=ceph.admin_keyring)
    r = Rig(b, max_xfer_blocks=MAX_XFER)
    r.in_c = request.param == "rbd"
    yield r
    r.close()
    if image is not None:
        ceph.remove_image(image)


def started_in_c(rig):
    return int(rig.handler._limits.started)


# ---- transfers above the maximum transfer length -------------------------------------
@pytest.mark.parametrize("blocks", [256, 2048])
def test_reads_and_writes_above_the_maximum_transfer_length(rig, blocks):
    data = os.urandom(blocks * BS)
    n0 = started_in_c(rig)
    assert rig.run(rw10(0x2A, 8, blocks), data_out=data).status == scsi.GOOD
    assert rig.run(rw16(0x8A, 8 + blocks, blocks, b1=0x08), data_out=data[::-1]).status == scsi.GOOD
    res = rig.run(rw10(0x28, 8, blocks), data_in=blocks * BS)
    assert res.status == scsi.GOOD and res.data == data
    res = rig.run(rw16(0x88, 8 + blocks, blocks), data_in=blocks * BS)
    assert res.status == scsi.GOOD and res.data == data[::-1]
    assert started_in_c(rig) - n0 == (4 if rig.in_c else 0)
    # the slow path's READ(12)/WRITE(12), VERIFY and WRITE AND VERIFY too
    assert rig.run(rw12(0xAA, 8, blocks), data_out=data[::-1]).status == scsi.GOOD
    res = rig.run(rw12(0xA8, 8, blocks), data_in=blocks * BS)
    assert res.status == scsi.GOOD and res.data == data[::-1]
    for cdb in (rw10(0x2F, 8, blocks, b1=0x02), rw12(0xAF, 8, blocks, b1=0x02),
                rw16(0x8F, 8, blocks, b1=0x02)):
        assert rig.run(cdb, data_out=data[::-1]).status == scsi.GOOD
    for cdb in (rw10(0x2E, 8, blocks), rw12(0xAE, 8, blocks), rw16(0x8E, 8, blocks)):
        assert rig.run(cdb, data_out=data).status == scsi.GOOD
        assert rig.run(rw16(0x88, 8, blocks), data_in=blocks * BS).data == data
    # the Block Limits page still says 128
    vpd = rig.run(bytes((0x12, 1, 0xB0, 0, 64, 0)), data_in=64)
    assert struct.unpack_from(">II", vpd.data, 8) == (MAX_XFER, MAX_XFER)


def test_out_of_range_whatever_the_length(rig):
    last = rig.lun.num_blocks
    for cdb, dl in ((rw10(0x28, last - 1, 2048), 2048 * BS), (rw16(0x88, last, 1), BS),
                    (rw10(0x2A, last - 100, 256), 256 * BS), (rw16(0x88, 1 << 40, 4096), 0)):
        if cdb[0] & 0x02:
            res = rig.run(cdb, data_out=os.urandom(dl))
        else:
            res = rig.run(cdb, data_in=dl)
        assert sense_key(res) == (0x05, 0x21, 0x00)


# ---- Data-In / Data-Out lengths that are not the CDB's ----------------------------------
def test_read_into_a_larger_buffer_reports_the_real_length(rig):
    data = os.urandom(128 * BS)
    assert rig.write(100, data).status == scsi.GOOD
    for cdb in (rw10(0x28, 100, 128), rw16(0x88, 100, 128), rw12(0xA8, 100, 128)):
        res = rig.run(cdb, data_in=256 * BS)      # EDTL 128 KiB, CDB 64 KiB
        assert res.status == scsi.GOOD
        assert res.read_len == 128 * BS and res.data == data      # the tail is not handed out
    res = rig.run(rw10(0x28, 100, 1), data_in=BS + 3)
    assert res.status == scsi.GOOD and res.read_len == BS and res.data == data[:BS]


def test_read_into_a_smaller_buffer_gives_what_fits(rig):
    data = os.urandom(128 * BS)
    assert rig.write(100, data).status == scsi.GOOD
    res = rig.run(rw10(0x28, 100, 128), data_in=64 * BS)
    assert res.status == scsi.GOOD and res.data == data[:64 * BS]
    res = rig.run(rw16(0x88, 100, 128), data_in=1000)
    assert res.status == scsi.GOOD and res.data == data[:1000]
    res = rig.run(rw10(0x28, 100, 128), data_in=0)
    assert res.status == scsi.GOOD and not res.data


def test_write_with_another_length_is_rejected_and_writes_nothing(rig):
    old = os.urandom(256 * BS)
    assert rig.write(0, old).status == scsi.GOOD
    for cdb, dl in ((rw10(0x2A, 0, 128), 256 * BS), (rw10(0x2A, 0, 128), 64 * BS),
                    (rw16(0x8A, 0, 256), 255 * BS), (rw12(0xAA, 0, 8), 9 * BS),
                    (rw10(0x2E, 0, 128), 256 * BS), (rw16(0x8F, 0, 8, b1=0x02), 4 * BS),
                    (bytes([0x89, 0]) + struct.pack(">Q", 0) + bytes([0, 0, 0, 1, 0, 0]), BS)):
        res = rig.run(cdb, data_out=os.urandom(dl))
        assert sense_key(res) == (0x05, 0x0E, 0x03), cdb.hex()
    assert rig.read(0, 256).data == old


# ---- UNMAP and WRITE SAME with UNMAP read back zero -------------------------------------
OBJ = 4 * MiB // BS
RANGES = [(1, 11), (7, 8193), (8, 16385), (127, 24583), (129, 40962),
          (7, OBJ - 3), (129, 2 * OBJ - 64)]          # the last two cross an object's end


def unmap_cdb(ranges):
    desc = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    return bytes([0x42]) + bytes(6) + struct.pack(">H", len(params)) + bytes(1), params


def test_unmap_zeroes_every_block_at_any_lba_and_length(rig):
    for n, lba in RANGES:
        old = os.urandom((n + 16) * BS)
        assert rig.write(lba - 8, old).status == scsi.GOOD
        cdb, params = unmap_cdb([(lba, n)])
        assert rig.run(cdb, data_out=params).status == scsi.GOOD
        got = rig.read(lba - 8, n + 16).data
        assert got[8 * BS:(8 + n) * BS] == bytes(n * BS), (n, lba)
        assert got[:8 * BS] == old[:8 * BS] and got[(8 + n) * BS:] == old[(8 + n) * BS:]


def test_unmap_of_several_descriptors(rig):
    old = os.urandom(2048 * BS)
    assert rig.write(0, old).status == scsi.GOOD
    cdb, params = unmap_cdb([(1, 1), (9, 7), (100, 129), (1500, 127)])
    assert rig.run(cdb, data_out=params).status == scsi.GOOD
    want = bytearray(old)
    for lba, n in ((1, 1), (9, 7), (100, 129), (1500, 127)):
        want[lba * BS:(lba + n) * BS] = bytes(n * BS)
    assert rig.read(0, 2048).data == bytes(want)


@pytest.mark.parametrize("sixteen", [False, True])
def test_write_same_unmap_zeroes_every_block(rig, sixteen):
    for n, lba in RANGES:
        old = os.urandom((n + 16) * BS)
        assert rig.write(lba - 8, old).status == scsi.GOOD
        if sixteen:
            cdb = bytes([0x93, 0x08]) + struct.pack(">QI", lba, n) + bytes(2)
        else:
            cdb = struct.pack(">BBIBHB", 0x41, 0x08, lba, 0, n, 0)
        assert rig.run(cdb, data_out=bytes(BS)).status == scsi.GOOD
        got = rig.read(lba - 8, n + 16).data
        assert got[8 * BS:(8 + n) * BS] == bytes(n * BS), (n, lba)
        assert got[:8 * BS] == old[:8 * BS] and got[(8 + n) * BS:] == old[(8 + n) * BS:]


# ---- EXTENDED COPY and COPY STATUS ------------------------------------------------------
def xcopy(rig, segments, list_id=1, usage=0x10):
    cscd = bytearray(32)
    cscd[0], cscd[4], cscd[5], cscd[7] = 0xE4, 0x01, 0x03, 16
    cscd[8:24] = rig.lun.naa_id()
    cscd[29:32] = BS.to_bytes(3, "big")
    segs = b"".join(struct.pack(">BBHHHxxHQQ", 0x02, 0, 0x18, 0, 0, n, src, dst)
                    for src, dst, n in segments)
    par = struct.pack(">BBH4xII", list_id, usage, 32, len(segs), 0) + bytes(cscd) + segs
    return rig.run(struct.pack(">BB8xIBB", 0x83, 0, len(par), 0, 0), data_out=par)


def copy_status(rig, list_id, alloc=12):
    return rig.run(struct.pack(">BBB7xIBB", 0x84, 0x00, list_id, alloc, 0, 0), data_in=alloc)


def test_extended_copy_copies_and_reports_its_status(rig):
    src = os.urandom(4096 * BS)
    assert rig.write(0, src).status == scsi.GOOD
    res = xcopy(rig, [(0, 8192, 2048), (2048, 12288, 2048), (0, 0, 0)], list_id=1)
    assert res.status == scsi.GOOD
    assert rig.read(8192, 2048).data == src[:2048 * BS]
    assert rig.read(12288, 2048).data == src[2048 * BS:]
    st = copy_status(rig, 1)
    assert st.status == scsi.GOOD
    assert st.data == bytes.fromhex("00000008" "01" "0003" "00") + struct.pack(">I", 4096 * BS)
    assert copy_status(rig, 1, alloc=6).data == bytes.fromhex("000000080100")
    # a copy with no list identifier (usage 11b) is done but not recorded
    assert xcopy(rig, [(0, 20000, 8)], list_id=0, usage=0x18).status == scsi.GOOD
    assert rig.read(20000, 8).data == src[:8 * BS]
    assert sense_key(copy_status(rig, 0)) == (0x05, 0x24, 0x00)
    assert sense_key(copy_status(rig, 2)) == (0x05, 0x24, 0x00)      # unknown list id


def test_copy_status_after_a_failed_copy(rig):
    assert rig.write(0, os.urandom(64 * BS)).status == scsi.GOOD
    last = rig.lun.num_blocks
    res = xcopy(rig, [(0, 100, 8), (0, last - 4, 8)], list_id=5, usage=0x00)
    assert sense_key(res) == (0x0A, 0x0D, 0x02)                        # COPY ABORTED
    assert rig.read(100, 8).data == bytes(8 * BS)                      # nothing copied
    assert copy_status(rig, 5).data == bytes.fromhex("000000080200000000000000")


def test_copy_status_after_a_copy_that_failed_midway():
    class FailingWrites(MemoryBackend):
        def write(self, tag, iov, cnt, offset, length, fua=False):
            if offset >= 3000 * BS:
                return self.on_complete(tag, -5, 0)                    # EIO
            return super().write(tag, iov, cnt, offset, length, fua)

    with Rig(FailingWrites(8 * MiB)) as rig:
        assert rig.write(0, os.urandom(16 * BS)).status == scsi.GOOD
        res = xcopy(rig, [(0, 1000, 8), (0, 2000, 8), (0, 3000, 8)], list_id=9)
        assert sense_key(res) == (0x03, 0x0C, 0x00)                    # MEDIUM ERROR
        assert copy_status(rig, 9).data == \
            bytes.fromhex("00000008" "02" "0002" "00") + struct.pack(">I", 16 * BS)


# ---- the new commands and INQUIRY ------------------------------------------------------
def test_prefetch_read_defect_data_and_inquiry(rig):
    last = rig.lun.num_blocks
    for cdb in (rw10(0x34, 0, 8), rw10(0x34, 0, 8, b1=0x02), rw16(0x90, 0, 0),
                rw16(0x90, last - 8, 8, b1=0x02)):
        assert rig.run(cdb).status == scsi.GOOD
    for cdb in (rw10(0x34, last, 0), rw16(0x90, last - 1, 2), rw16(0x90, (1 << 64) - 1, 1)):
        assert sense_key(rig.run(cdb)) == (0x05, 0x21, 0x00)
    res = rig.run(bytes.fromhex("37001800000000000400"), data_in=4)
    assert res.status == scsi.GOOD and res.data == bytes.fromhex("00180000")
    res = rig.run(bytes.fromhex("b71c0000000000000008" "0000"), data_in=8)
    assert res.status == scsi.GOOD and res.data == bytes.fromhex("001c000000000000")
    res = rig.run(bytes((0x12, 0, 0, 0, 96, 0)), data_in=96)
    assert res.status == scsi.GOOD and res.data[2] == 0x06 and res.data[4] == 91
    assert res.data[58:66] == bytes.fromhex("00a00000046004c0")
