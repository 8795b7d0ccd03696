"""The rbd backend on the real throwaway cluster, through the emulated kernel,
the real ring engine and the handler."""

import json
import os
import shutil
import subprocess
import tempfile
import random
import struct
import time
import uuid

import pytest
import rbd as pyrbd

from tcmu_rbd import scsi
from tcmu_rbd.backends.rbd import RbdBackend, RbdOpenError
from tcmu_rbd_lab.rig import Rig

pytestmark = pytest.mark.ceph

MiB = 1 << 20
BS = 512


def sense_key(res):
    assert res.status == scsi.CHECK_CONDITION, res
    return res.sense[2] & 0x0F, res.sense[12], res.sense[13]


def open_backend(ceph, image, **kw):
    kw.setdefault("conf", ceph.conf_path)
    kw.setdefault("keyring", ceph.admin_keyring)
    kw.setdefault("osd_op_timeout", 30)
    return RbdBackend(kw.pop("pool", "rbd"), image, **kw)


@pytest.fixture
def image(ceph):
    name = "t-" + uuid.uuid4().hex[:10]
    ceph.create_image(name, 128 * MiB)
    yield name
    ceph.remove_image(name)


@pytest.fixture
def rig(ceph, image):
    r = Rig(open_backend(ceph, image))
    yield r
    r.close()


def test_open_reports_size_and_object_size(ceph, image):
    b = open_backend(ceph, image)
    try:
        assert b.size == 128 * MiB and b.granularity == 4 * MiB and not b.read_only
    finally:
        b.close()


def test_missing_image_and_pool_errors_say_what(ceph):
    with pytest.raises(RbdOpenError, match="image 'rbd/nosuch'.*No such file"):
        open_backend(ceph, "nosuch")
    with pytest.raises(RbdOpenError, match="pool 'nopool'"):
        open_backend(ceph, "x", pool="nopool")


def test_data_integrity_qd128_mixed_sizes(rig):
    rng = random.Random(11)
    nblocks = rig.backend.size // BS
    shadow = {}
    busy = set()       # blocks written by commands in flight together
    for i in range(600):
        # writes in flight at the same time must not overlap: SCSI gives
        # concurrent SIMPLE commands no order, and librbd does reorder them
        while True:
            blocks = rng.choice([1, 7, 8, 64, 128, 1024])
            lba = rng.randrange(0, nblocks - blocks)
            if busy.isdisjoint(range(lba, lba + blocks)):
                break
        busy.update(range(lba, lba + blocks))
        data = rng.randbytes(blocks * BS)
        for k in range(blocks):
            shadow[lba + k] = data[k * BS:(k + 1) * BS]
        rig.submit(rig.write16(lba, blocks), data_out=data)
        if rig.emu.inflight >= 128:
            rig.pump()
            busy.clear()
            assert all(r.status == scsi.GOOD for r in rig.emu.reap())
    rig.pump()
    assert all(r.status == scsi.GOOD for r in rig.emu.reap())
    # read everything back at QD 128, out of order as librbd completes
    lbas = sorted(shadow)
    ids = {}
    for lba in lbas[::97]:
        ids[rig.submit(rig.read16(lba, 1), data_in=BS)] = lba
    rig.pump()
    for r in rig.emu.reap():
        assert r.status == scsi.GOOD and r.data == shadow[ids[r.cmd_id]]
    for lba in random.Random(2).sample(lbas, 200):
        assert rig.read(lba, 1).data == shadow[lba]
    assert not rig.emu.broken


def test_compare_and_write_success_and_miscompare_offset(rig):
    old = os.urandom(BS)
    assert rig.write(2048, old).status == scsi.GOOD
    caw = bytes([0x89, 0]) + struct.pack(">Q", 2048) + bytes(3) + bytes([1, 0, 0])
    new = os.urandom(BS)
    assert rig.run(caw, data_out=old + new).status == scsi.GOOD
    assert rig.read(2048, 1).data == new
    wrong = bytearray(new)
    wrong[300] ^= 0x5A
    res = rig.run(caw, data_out=bytes(wrong) + os.urandom(BS))
    assert sense_key(res) == (0x0E, 0x1D, 0x00)
    assert res.sense[0] & 0x80 and struct.unpack(">I", res.sense[3:7])[0] == 300
    assert rig.read(2048, 1).data == new


def test_write_same_unmap_lba_status_and_flush(rig, ceph, image):
    obj = rig.backend.granularity // BS                      # blocks per 4 MiB object
    pattern = os.urandom(BS)
    ws = bytes([0x93, 0]) + struct.pack(">QI", 0, 3 * obj) + bytes(2)
    assert rig.run(ws, data_out=pattern).status == scsi.GOOD
    assert rig.read(obj + 5, 2).data == pattern * 2
    assert rig.run(bytes([0x91, 0]) + bytes(14)).status == scsi.GOOD     # SYNCHRONIZE CACHE(16)
    # UNMAP the second object entirely
    desc = struct.pack(">QI4x", obj, obj)
    params = struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc
    res = rig.run(bytes([0x42]) + bytes(6) + struct.pack(">H", len(params)) + bytes(1), data_out=params)
    assert res.status == scsi.GOOD
    assert rig.read(obj, 8).data == bytes(8 * BS)
    assert rig.read(obj - 1, 1).data == pattern
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", obj, 4096) + bytes(2), data_in=4096)
    assert res.status == scsi.GOOD
    lba, count, prov = struct.unpack(">QIB", res.data[8:21])
    assert (lba, prov) == (obj, 1) and count >= obj           # deallocated
    res = rig.run(bytes([0x9E, 0x12]) + struct.pack(">QI", 0, 4096) + bytes(2), data_in=4096)
    lba, count, prov = struct.unpack(">QIB", res.data[8:21])
    assert (lba, prov, count) == (0, 0, obj)                  # mapped
    # WRITE SAME with UNMAP over a partial object range: really zero
    ws_unmap = bytes([0x93, 0x08]) + struct.pack(">QI", 2 * obj + 3, 10) + bytes(2)
    assert rig.run(ws_unmap, data_out=bytes(BS)).status == scsi.GOOD
    assert rig.read(2 * obj + 2, 12).data == pattern + bytes(10 * BS) + pattern


def test_snapshot_lun_is_read_only(ceph, image):
    b = open_backend(ceph, image)
    with Rig(b) as rig:
        data = os.urandom(8 * BS)
        rig.write(0, data)
    ceph.run("rbd", "snap", "create", "rbd/%s@s1" % image)
    b = open_backend(ceph, image, snapshot="s1")
    with Rig(b) as rig:
        assert rig.lun.read_only
        assert rig.read(0, 8).data == data
        res = rig.write(0, bytes(BS))
        assert sense_key(res) == (0x07, 0x27, 0x00)
        ms = rig.run(bytes([0x1A, 0, 0x3F, 0, 255, 0]), data_in=255)
        assert ms.status == scsi.GOOD and ms.data[2] & 0x80          # WP
    ceph.run("rbd", "snap", "rm", "rbd/%s@s1" % image)


def test_namespace_image(ceph):
    ceph.create_namespace("rbd", "tenant1")
    ceph.create_image("nsimg", 16 * MiB, namespace="tenant1")
    b = open_backend(ceph, "nsimg", namespace="tenant1")
    with Rig(b) as rig:
        data = os.urandom(4 * BS)
        assert rig.write(10, data).status == scsi.GOOD
        assert rig.read(10, 4).data == data
    with pytest.raises(RbdOpenError):
        open_backend(ceph, "nsimg")                         # not in the default namespace


def test_zero_copy_reads_do_not_leak_previous_data(rig):
    # a read of a never-written range returns zeroes, not the 0xDB the
    # emulator leaves in fresh data blocks
    res = rig.read(100000, 64)
    assert res.status == scsi.GOOD and res.data == bytes(64 * BS)


@pytest.fixture(scope="module")
def ceph_persistent(tmp_path_factory):
    """A cluster whose OSD keeps its data across a kill (memstore does not)."""
    from tcmu_rbd_lab.ceph import CephCluster
    with CephCluster(base_dir=tmp_path_factory.mktemp("ceph-bluestore"), objectstore="bluestore") as c:
        yield c


@pytest.mark.timeout(600)
def test_osd_outage_gives_busy_never_medium_error(ceph_persistent):
    ceph = ceph_persistent
    name = "fault-" + uuid.uuid4().hex[:6]
    ceph.create_image(name, 64 * MiB)
    b = open_backend(ceph, name, osd_op_timeout=8)
    rng = random.Random(5)
    # every write gets its own 4 KiB slot: a write that failed BUSY leaves its
    # range indeterminate (SCSI), so it must not overlap an acknowledged one
    slots = list(range(0, b.size // BS, 8))
    rng.shuffle(slots)
    acked = {}
    statuses = []
    with Rig(b) as rig:
        def burst(n):
            ids = {}
            for _ in range(n):
                lba = slots.pop()
                data = rng.randbytes(8 * BS)
                ids[rig.submit(rig.write16(lba, 8), data_out=data)] = (lba, data)
            rig.pump(timeout=120)
            for r in rig.emu.reap():
                statuses.append(r.status)
                if r.status == scsi.GOOD:
                    acked[ids[r.cmd_id][0]] = ids[r.cmd_id][1]
                else:
                    assert r.status == scsi.BUSY, ("never MEDIUM ERROR", r)
        burst(64)
        ids_before = len(acked)
        # the OSD dies with writes in flight
        for _ in range(32):
            lba = slots.pop()
            rig.submit(rig.write16(lba, 8), data_out=rng.randbytes(8 * BS))
        rig.handler.process()
        ceph.stop_osd()
        t0 = time.monotonic()
        rig.pump(timeout=120)
        for r in rig.emu.reap():
            statuses.append(r.status)
            assert r.status in (scsi.GOOD, scsi.BUSY), r
        burst(16)                                      # while the OSD is down: BUSY
        assert scsi.BUSY in statuses and time.monotonic() - t0 < 100
        ceph.start_osd()
        deadline = time.monotonic() + 120
        while True:                                    # the initiator retries BUSY
            n = len(acked)
            burst(8)
            if len(acked) > n or time.monotonic() > deadline:
                break
        burst(64)
        assert len(acked) > ids_before
        for lba, data in acked.items():
            assert rig.read(lba, 8).data == data, "an acknowledged write was lost"


def test_plain_successes_complete_in_c_without_a_python_call(rig):
    calls = []
    inner = rig.backend.on_complete
    rig.backend.on_complete = lambda *a: (calls.append(a), inner(*a))
    data = os.urandom(64 * BS)
    assert rig.write(0, data).status == scsi.GOOD
    before, direct = rig.ring.stats["completions"], rig.ring.stats["direct"]
    for i in range(32):
        assert rig.read(i * 2, 2).data == data[i * 2 * BS:(i * 2 + 2) * BS]
    assert rig.ring.stats["completions"] - before == 32
    assert rig.ring.stats["direct"] - direct == 32     # on librbd's thread, straight onto the ring
    assert calls == []                       # READ/WRITE never went through Python
    caw = bytes([0x89, 0]) + struct.pack(">Q", 0) + bytes(3) + bytes([1, 0, 0])
    res = rig.run(caw, data_out=bytes(BS) + bytes(BS))   # miscompare: Python maps it
    assert res.status == scsi.CHECK_CONDITION and len(calls) == 1


def test_plain_read_write_start_in_c_everything_else_in_python(rig):
    lim = rig.handler._limits
    started = lambda: int(lim.started)  # noqa: E731
    data = os.urandom(16 * BS)
    n0 = started()
    assert rig.write(0, data).status == scsi.GOOD                       # WRITE(16)
    w10 = bytes([0x2A, 0x08]) + struct.pack(">IBHB", 16, 0, 16, 0)       # WRITE(10), FUA
    assert rig.run(w10, data_out=data).status == scsi.GOOD
    r10 = bytes([0x28, 0]) + struct.pack(">IBHB", 16, 0, 16, 0)
    assert rig.run(r10, data_in=16 * BS).data == data                    # READ(10)
    assert rig.read(0, 16).data == data                                  # READ(16)
    assert started() - n0 == 4
    n1 = started()
    # outside the plain subset: decoded by the SCSI core, with its answers
    last = rig.lun.num_blocks
    assert sense_key(rig.read(last - 1, 2)) == (0x05, 0x21, 0x00)        # past the end
    assert rig.run(bytes([0x28, 0]) + bytes(8), data_in=0).status == scsi.GOOD   # 0 blocks
    assert sense_key(rig.run(bytes([0x28, 0x20]) + struct.pack(">IBHB", 0, 0, 1, 0),
                             data_in=BS))[0] == 0x05                     # RDPROTECT
    assert started() == n1
    # a pending unit attention is reported first, by the SCSI core
    rig.lun.ua_capacity_changed = True
    assert sense_key(rig.read(0, 1)) == (0x06, 0x2A, 0x09)
    assert started() == n1
    assert rig.read(0, 16).data == data and started() == n1 + 1


def test_abort_of_commands_started_in_c(rig):
    data = os.urandom(8 * BS)
    ids = [rig.submit(rig.write16(i * 8, 8), data_out=data) for i in range(16)]
    rig.handler.process()
    rig.emu.submit_tmr(1, ids[:4])        # ABORT TASK while they are in librbd
    rig.pump()
    res = {r.cmd_id: r for r in rig.emu.reap()}
    assert len(res) == 16 and not rig.emu.broken
    assert all(res[i].status == scsi.GOOD for i in ids[4:])
    assert rig.handler.stats["aborts"] == 4
    # once the aborted ones are gone, plain commands start in C again
    n = int(rig.handler._limits.started)
    assert rig.read(8, 8).data == data
    assert int(rig.handler._limits.started) == n + 1
    assert not rig.handler._aborted


def test_serve_runs_the_steady_state_in_c(rig):
    """Handler.serve with the rbd backend: engine_serve waits, starts and completes
    in C; Python sees the other commands and the control fd.  A pipe stands in
    for /dev/uioN (the kernel's event count), the test thread for the kernel."""
    import threading
    h = rig.handler
    uio_r, uio_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    controls = []

    def on_control():
        controls.append(os.read(ctl_r, 1))

    t = threading.Thread(target=h.serve, args=(uio_r, ctl_r, on_control, 0.2), daemon=True)
    t.start()
    try:
        data = {i: os.urandom(8 * BS) for i in range(64)}
        ids = {}
        for i, d in data.items():
            ids[rig.emu.submit(rig.write16(i * 8, 8), data_out=d)] = ("w", i)
            os.write(uio_w, bytes(4))
        tur = rig.emu.submit(bytes(6))                        # TEST UNIT READY: Python
        ids[tur] = ("tur", 0)
        os.write(uio_w, bytes(4))
        os.write(ctl_w, b"x")

        def wait_all(want):
            deadline = time.monotonic() + 30
            while not all(rig.emu.is_done(c) for c in want):
                assert time.monotonic() < deadline, "commands still in flight"
                rig.emu.doorbell()       # what the handler's doorbell write does
                time.sleep(0.005)
            rig.emu.reap()
            return {c: rig.emu.results.pop(c) for c in want}

        res = wait_all(list(ids))
        assert all(r.status == scsi.GOOD for r in res.values())
        reads = {}
        for i in data:
            reads[rig.emu.submit(rig.read16(i * 8, 8), data_in=8 * BS)] = i
            os.write(uio_w, bytes(4))
        for cid, r in wait_all(list(reads)).items():
            assert r.status == scsi.GOOD and r.data == data[reads[cid]]
        assert int(h._limits.started) == 128          # every READ/WRITE started in C
        assert controls == [b"x"]
        assert not rig.emu.broken
    finally:
        h.stopping = True
        os.write(uio_w, bytes(4))
        t.join(10)
        for fd in (uio_r, uio_w, ctl_r, ctl_w):
            os.close(fd)
    assert not t.is_alive()


class _OtherClient:
    """A second client of the image: what the OSDs hold (a fresh handle per read,
    so its own cache, which the image's rbd config turns on too, holds nothing)."""

    def __init__(self, ceph, image):
        import rados
        self.image = image
        self.cluster = rados.Rados(conffile=ceph.conf_path,
                                   conf={"keyring": ceph.admin_keyring})
        self.cluster.connect()
        self.io = self.cluster.open_ioctx("rbd")

    def read(self, offset, length):
        with pyrbd.Image(self.io, self.image, read_only=True) as im:
            return im.read(offset, length)

    def close(self):
        self.io.close()
        self.cluster.shutdown()


def test_rbd_cache_turned_on_by_image_config_is_detected_and_writes_made_stable(ceph, image):
    """`rbd config image set <img> rbd_cache true` beats the client's rbd_cache=false:
    the backend says so, and a write the LUN reports stable (WCE=0, or FUA) is on
    the OSDs when it completes, as a second client reads it (writeback keeps dirty
    data for up to rbd_cache_max_dirty_age, 1 s: without the flush it reads stale)."""
    plain = open_backend(ceph, image)
    assert not plain.volatile_cache
    plain.close()
    for key, value in (("rbd_cache", "true"), ("rbd_cache_policy", "writeback")):
        subprocess.run(["rbd", "--conf", ceph.conf_path, "--keyring", ceph.admin_keyring,
                        "config", "image", "set", f"rbd/{image}", key, value], check=True)
    r = Rig(open_backend(ceph, image))
    other = _OtherClient(ceph, image)
    try:
        assert r.backend.volatile_cache and not r.handler.lun.write_cache
        assert r.write(0, os.urandom(BS)).status == scsi.GOOD
        # after the first flush librbd's cache stops writing through
        assert r.run(bytes([0x91, 0]) + bytes(14)).status == scsi.GOOD
        for lba in range(8, 8 + 16 * 8, 8):                   # WCE=0: every write
            data = os.urandom(8 * BS)
            assert r.write(lba, data).status == scsi.GOOD
            assert other.read(lba * BS, len(data)) == data
        r.handler.set_write_cache(True)                       # WCE=1: FUA ones
        data = os.urandom(8 * BS)
        assert r.run(r.write16(512, 8, fua=True), data_out=data).status == scsi.GOOD
        assert other.read(512 * BS, len(data)) == data
        pattern = os.urandom(BS)                              # and SYNCHRONIZE CACHE
        assert r.run(bytes([0x93, 0]) + struct.pack(">QI", 1024, 64) + bytes(2),
                     data_out=pattern).status == scsi.GOOD
        assert r.run(bytes([0x91, 0]) + bytes(14)).status == scsi.GOOD
        assert other.read(1024 * BS, 64 * BS) == pattern * 64
    finally:
        other.close()
        r.close()


def test_image_shrunk_under_the_lun_fails_io_past_its_end_never_good(ceph, image):
    """librbd drops the tail of a write past the image's end and reports success,
    and clips a read: once anyone shrinks the image, the backend learns the new size
    from the header watch and refuses both (LBA OUT OF RANGE); inside, I/O goes on."""
    r = Rig(open_backend(ceph, image))
    try:
        end = r.backend.size // BS                      # the LUN keeps this size
        assert r.write(end - 16, os.urandom(16 * BS)).status == scsi.GOOD
        subprocess.run(["rbd", "--conf", ceph.conf_path, "--keyring", ceph.admin_keyring,
                        "resize", "--allow-shrink", "--size", "64M", f"rbd/{image}"],
                       check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while r.backend.size_now() != 64 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.backend.size_now() == 64 * MiB
        new_end = 64 * MiB // BS
        assert sense_key(r.write(end - 16, os.urandom(16 * BS))) == (0x05, 0x21, 0x00)
        assert sense_key(r.read(end - 16, 16)) == (0x05, 0x21, 0x00)
        # across the new end: none of it is served
        assert sense_key(r.write(new_end - 8, os.urandom(16 * BS))) == (0x05, 0x21, 0x00)
        assert sense_key(r.read(new_end - 8, 16)) == (0x05, 0x21, 0x00)
        pattern = os.urandom(BS)
        assert sense_key(r.run(bytes([0x93, 0]) + struct.pack(">QI", new_end - 1, 2) + bytes(2),
                               data_out=pattern)) == (0x05, 0x21, 0x00)
        data = os.urandom(8 * BS)                        # inside: served as before
        assert r.write(new_end - 8, data).status == scsi.GOOD
        assert r.read(new_end - 8, 8).data == data
    finally:
        r.close()


def _conf_get(sock, key):
    out = subprocess.run(["ceph", "--admin-daemon", sock, "config", "get", key],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)[key]


def test_client_keeps_no_recent_log_ring_unless_the_operator_sets_one(ceph, image):
    """librados' in-memory ring of recent log entries (500 by default) is lowered to
    one on the LUN's client, which never dumps it; a value the operator gave stays.
    The other client options (config.client_options) are on the client too."""
    d = tempfile.mkdtemp(prefix="asok", dir="/tmp")     # a unix socket's short path
    try:
        sock = os.path.join(d, "a.asok")
        b = open_backend(ceph, image, extra_options={"admin_socket": sock})
        try:
            assert _conf_get(sock, "log_max_recent") == "1"
            assert _conf_get(sock, "rbd_cache") == "false"
            assert _conf_get(sock, "rados_osd_op_timeout") == "30"
            assert _conf_get(sock, "client_mount_timeout") == "30"
        finally:
            b.close()
        sock = os.path.join(d, "b.asok")
        b = open_backend(ceph, image, extra_options={"admin_socket": sock,
                                                     "log_max_recent": 200})
        try:
            assert _conf_get(sock, "log_max_recent") == "200"
        finally:
            b.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
