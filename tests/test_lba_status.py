"""GET LBA STATUS as the handler runs it: a bounded lookup in steps, each an
asynchronous backend op, so the loop serves other commands meanwhile and an
abort ends it between two steps; partial answers well formed; and on rbd, the
object map answering when fast-diff is valid.

Belongs here: the lookup's steps, bounds and answers through the rig (memory
backend, and rbd on the throwaway cluster).  Not here: the parameter data's
layout (test_scsi_provisioning.py, test_scsi_props.py).
"""

import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcmu_rbd import handler, scsi
from tcmu_rbd.backends.memory import MemoryBackend
from tcmu_rbd.ring import TMR_ABORT_TASK, TMR_LUN_RESET
from tcmu_rbd_lab.rig import Rig
from test_handler import Delayed
from test_rbd_backend import open_backend

MiB = 1 << 20
GiB = 1 << 30
BS = 512


def gls(lba, alloc=4096):
    return bytes([0x9E, 0x12]) + struct.pack(">QI", lba, alloc) + bytes(2)


def descriptors(data):
    n = (struct.unpack_from(">I", data)[0] - 4) // 16
    return [struct.unpack_from(">QIB", data, 8 + 16 * i) for i in range(n)]


def count_lookups(backend):
    """Wrap backend.allocated: the list of (offset, length) it was asked."""
    asked = []
    inner = backend.allocated
    backend.allocated = lambda tag, off, n, out: (asked.append((off, n)), inner(tag, off, n, out))
    return asked


# ---------------------------------------------------------------- any backend
class Extents(MemoryBackend):
    """A backend whose allocated extents are given, at byte granularity."""

    def __init__(self, size, extents):
        super().__init__(size)
        self.extents = sorted(extents)

    def _allocated(self, offset, length):
        end = offset + length
        return [(max(o, offset), min(o + n, end) - max(o, offset)) for o, n in self.extents
                if o < end and o + n > offset]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(raw=st.lists(st.tuples(st.integers(0, 64 * 1024), st.integers(1, 3000)), max_size=30),
       lba=st.integers(0, 100), alloc=st.sampled_from([24, 40, 72, 200, 4096]),
       cap=st.integers(1, 4), step=st.sampled_from([4096, 16384, 1 << 20]))
def test_partial_answers_are_exact_for_every_block_they_cover(monkeypatch, raw, lba, alloc, cap, step):
    """Extents of any size (several in one block), a buffer of a few extents and
    small steps: the answer starts at the LBA, covers at least one block, is
    contiguous, and says mapped exactly for the blocks an extent touches."""
    monkeypatch.setattr(handler, "LBA_STATUS_EXTENTS", cap)
    monkeypatch.setattr(handler, "LBA_STATUS_STEP", step)
    monkeypatch.setattr(handler, "LBA_STATUS_WINDOW", 48 * 1024)
    merged = []
    for o, n in sorted(raw):                  # a backend lists extents merged
        if merged and o <= merged[-1][0] + merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][0] + merged[-1][1], o + n) - merged[-1][0])
        else:
            merged.append((o, n))
    with Rig(Extents(128 * 1024, merged)) as rig:
        res = rig.run(gls(lba, alloc), data_in=alloc)
    assert res.status == scsi.GOOD
    d = descriptors(res.data)
    assert d and d[0][0] == lba and len(d) <= max(1, (alloc - 8) // 16)
    pos = lba
    for start, count, prov in d:
        assert start == pos and count > 0
        for b in range(start, start + count):
            mapped = any(o < (b + 1) * BS and o + n > b * BS for o, n in merged)
            assert prov == (0 if mapped else 1), (b, d)
        pos += count
    assert pos <= lba + 48 * 1024 // BS                # within the window


def test_an_abort_ends_get_lba_status_between_two_lookups(monkeypatch):
    monkeypatch.setattr(handler, "LBA_STATUS_STEP", 1 * MiB)
    b = Delayed(MemoryBackend(8 * MiB))
    asked = count_lookups(b)
    with Rig(b) as rig:
        cid = rig.submit(gls(0), data_in=4096)
        rig.handler.process()
        assert asked == [(0, MiB)] and len(b.held) == 1     # one lookup at a time
        b.release([0])
        rig.pump(until=lambda: len(asked) == 2 and len(b.held) == 1)
        rig.emu.submit_tmr(TMR_ABORT_TASK, [cid])
        rig.handler.process()
        b.release([0])                                      # the second completes
        rig.pump(until=lambda: rig.emu.is_done(cid))
        assert asked == [(0, MiB), (MiB, MiB)]              # and no third starts
        assert rig.emu.reap()[-1].status == scsi.TASK_ABORTED


# ---------------------------------------------------------------- rbd
OBJ = 4 * MiB
OB = OBJ // BS                 # blocks per object
# (byte offset, blocks): small writes inside objects 0, 3, 10 and 11 (the
# last block), 200 and, past the first 1 GiB window, 5000
WRITES = [(0, 8), (3 * OBJ + MiB, 1), (10 * OBJ + 2 * MiB, 4), (12 * OBJ - BS, 1),
          (200 * OBJ + 3 * MiB, 2), (5000 * OBJ + MiB, 1)]


def sparse_image(ceph, features):
    name = "lbs-" + uuid.uuid4().hex[:10]
    ceph.create_image(name, 64 * GiB, features=features)
    return name


def write_scattered(rig):
    for off, blocks in WRITES:
        assert rig.write(off // BS, os.urandom(blocks * BS)).status == scsi.GOOD


@pytest.fixture
def slow_rig(ceph):
    """64 GiB thin, a few scattered writes, no object map: a lookup lists
    every object (one rados op each)."""
    name = sparse_image(ceph, ())
    r = Rig(open_backend(ceph, name))
    write_scattered(r)
    yield r
    r.close()
    ceph.remove_image(name)


def test_reads_are_served_while_get_lba_status_looks_up(slow_rig, monkeypatch):
    """The whole 64 GiB in one command (16384 list-snaps): plain READs submitted
    while it runs complete, one after the other, before it does."""
    rig = slow_rig
    monkeypatch.setattr(handler, "LBA_STATUS_WINDOW", 64 * GiB)
    expect = rig.read(0, 8).data
    t0 = time.monotonic()
    cid = rig.submit(gls(0), data_in=4096)
    rig.handler.process()
    latencies = []
    while cid not in rig.emu.results and not rig.emu.is_done(cid):
        t = time.monotonic()
        res = rig.read(0, 8)          # the engine starts it in C; it completes meanwhile
        latencies.append(time.monotonic() - t)
        assert res.status == scsi.GOOD and res.data == expect
    took = time.monotonic() - t0
    rig.emu.reap()
    res = rig.emu.results.pop(cid)
    assert res.status == scsi.GOOD
    assert len(latencies) >= 10, "reads waited for GET LBA STATUS (%d served in %.2fs)" % (
        len(latencies), took)
    assert max(latencies) < took / 4
    d = descriptors(res.data)
    assert d[0] == (0, 8, 0) and d[1][2] == 1                # to the end of the image
    assert d[-1][0] + d[-1][1] == rig.lun.num_blocks
    assert [s for s, _, p in d if p == 0] == [0, 3 * OB, 10 * OB, 11 * OB, 200 * OB, 5000 * OB]


@pytest.mark.parametrize("tmr", [TMR_ABORT_TASK, TMR_LUN_RESET])
def test_a_task_management_function_ends_a_running_lookup(slow_rig, monkeypatch, tmr):
    rig = slow_rig
    monkeypatch.setattr(handler, "LBA_STATUS_WINDOW", 64 * GiB)
    asked = count_lookups(rig.backend)
    cid = rig.submit(gls(0), data_in=4096)
    rig.pump(until=lambda: len(asked) >= 3)
    rig.emu.submit_tmr(tmr, [cid])
    before = len(asked)               # only the loop thread starts lookups
    rig.pump(until=lambda: rig.emu.is_done(cid))
    assert rig.emu.reap()[-1].status == scsi.TASK_ABORTED
    steps = 64 * GiB // handler.LBA_STATUS_STEP
    assert len(asked) == before < steps                     # the one in flight ended it
    res = rig.run(gls(0), data_in=4096)                     # the LUN goes on
    assert res.status == scsi.GOOD and descriptors(res.data)[0] == (0, 8, 0)


def objecter_ops(sock):
    """The rados ops a client sent (its admin socket's objecter counters)."""
    out = subprocess.run(["ceph", "--admin-daemon", sock, "perf", "dump", "objecter"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)["objecter"]["op"]


def lookup_both(ceph, d):
    """GET LBA STATUS on the same writes with fast-diff and without: the
    answers, and the rados ops each lookup sent (admin sockets in d)."""
    answers, ops = {}, {}
    for kind, features in (("fast", ("layering", "exclusive-lock", "object-map", "fast-diff")),
                           ("slow", ("layering",))):
        name = sparse_image(ceph, features)
        sock = os.path.join(d, kind + ".asok")
        try:
            with Rig(open_backend(ceph, name, extra_options={"admin_socket": sock})) as rig:
                write_scattered(rig)
                n0 = objecter_ops(sock)
                res = rig.run(gls(0), data_in=4096)
                ops[kind] = objecter_ops(sock) - n0
                assert res.status == scsi.GOOD
                answers[kind] = descriptors(res.data)
                # from inside an object: it starts at the LBA asked
                res = rig.run(gls(3 * OB + 100), data_in=4096)
                answers[kind + "-inside"] = descriptors(res.data)[:2]
        finally:
            ceph.remove_image(name)
    return answers, ops


def test_fast_diff_answers_from_the_object_map_at_object_granularity(ceph):
    """With fast-diff valid, whole objects are mapped (mapped or unknown, as SBC
    allows) and the rest deallocated, from the object map: a fraction of the
    rados ops of the object-by-object lookup of the same image without it."""
    d = tempfile.mkdtemp(prefix="lbs", dir="/tmp")       # a short path: a unix socket's
    try:
        answers, ops = lookup_both(ceph, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    window = handler.LBA_STATUS_WINDOW // BS
    assert answers["fast"] == [(0, OB, 0), (OB, 2 * OB, 1), (3 * OB, OB, 0), (4 * OB, 6 * OB, 1),
                               (10 * OB, 2 * OB, 0), (12 * OB, 188 * OB, 1), (200 * OB, OB, 0),
                               (201 * OB, window - 201 * OB, 1)]
    assert answers["fast-inside"] == [(3 * OB + 100, OB - 100, 0), (4 * OB, 6 * OB, 1)]
    # without the object map: each object up to its last written byte
    mapped = [(s, n) for s, n, p in answers["slow"] if p == 0]
    assert mapped == [(0, 8), (3 * OB, 2049), (10 * OB, 4100), (11 * OB, OB), (200 * OB, 6146)]
    assert answers["slow"][-1][0] + answers["slow"][-1][1] == window
    assert ops["fast"] * 8 < ops["slow"], ops
