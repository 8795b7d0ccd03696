"""Prometheus metrics (tcmu_rbd/metrics.py, native/metrics.c): the counters the
ring and the engine record in C agree exactly with the commands the emulated
kernel sent and the answers it got; the region's layout is checked on both
sides; the exposition parses; a worker restart keeps the counters monotone;
the Grafana dashboard uses only names the exporter serves."""

import errno
import json
import re
import struct
import sys
import types
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tcmu_rbd import metrics, scsi
from tcmu_rbd import settings as settings_mod
from tcmu_rbd import supervisor as sv
from tcmu_rbd._native import ffi, lib
from tcmu_rbd.backends.memory import MemoryBackend
from tcmu_rbd.lio import Roots, TcmuDevice, UioName
from tcmu_rbd_lab.rig import Rig
from test_engine import EngineMemoryBackend
from test_lio import alua_group
from test_supervisor import FAKE_WORKER, Harness

BS = 512
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "packaging" / "grafana" / "tcmu-rbd.json"
BAD = 1 << 20       # reads from this offset on fail in the backend with -EIO

# The test's own table of which opcode is which kind (the oracle for lm_kind).
KIND_OF = {0x28: "read", 0x88: "read", 0x8A: "write", 0x2A: "write", 0x42: "unmap",
           0x93: "write_same", 0x89: "compare_and_write"}


class FailingBackend(EngineMemoryBackend):
    """Engine-served memory whose reads past BAD complete with -EIO (as librbd
    reports a failed OSD read)."""

    def _c_readv(self, dev, q, tag, iov, cnt, off):
        if off >= BAD:
            self.fast += 1
            lib.rq_push(q, tag, -errno.EIO, 0)
            return 0
        return super()._c_readv(dev, q, tag, iov, cnt, off)


def busy_gate():
    """A failover gate that lets no write go (another gateway holds the lock)."""
    return types.SimpleNamespace(may_write=lambda: False, owner=False, swap_ready=False,
                                 io_error=lambda ret: None)


def cdb16(op, lba, n):
    return struct.pack(">BBQIBB", op, 0, lba, n, 0, 0)


def command(rig, c):
    """Send one command as described; returns (cdb, data bytes, Result)."""
    kind, lba, n = c
    if kind == "read":
        cdb, out, din = cdb16(0x88, lba, n), None, n * BS
    elif kind == "read10":
        cdb, out, din = struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0), None, n * BS
    elif kind in ("write", "busy_write"):
        cdb, out, din = cdb16(0x8A, lba, n), bytes([lba & 0xFF]) * (n * BS), 0
    elif kind == "write_same":
        cdb, out, din = cdb16(0x93, lba, n), b"\x5a" * BS, 0
    elif kind == "unmap":
        cdb = struct.pack(">BBIBHB", 0x42, 0, 0, 0, 24, 0)
        out, din = struct.pack(">HH4xQI4x", 22, 16, lba, n), 0
    elif kind == "caw":
        cdb = struct.pack(">BBQ3xBBB", 0x89, 0, lba, 1, 0, 0)
        out, din = bytes(2 * BS), 0
    elif kind == "past_end":
        cdb, out, din = cdb16(0x88, rig.lun.num_blocks, 1), None, BS
    elif kind == "eio":
        cdb, out, din = cdb16(0x88, BAD // BS + lba, n), None, n * BS
    else:   # an INQUIRY, a TEST UNIT READY: "other"
        cdb, out, din = (bytes([0x12, 0, 0, 0, 96, 0]), None, 96) if lba % 2 else (bytes(6), None, 0)
    if kind == "busy_write":
        rig.handler.failover = busy_gate()
    try:
        res = rig.run(cdb, data_out=out, data_in=din)
    finally:
        rig.handler.failover = None
    return cdb, len(out) if out is not None else din, res


def sense_key(sense: bytes) -> int:
    return sense[1] & 0x0F if sense[0] & 0x7E == 0x72 else sense[2] & 0x0F


def snapshot(m) -> dict:
    """Every counter of a region, for comparisons."""
    return {"cmds": list(m.cmds), "bytes": list(m.bytes), "sense": list(m.sense_keys),
            "busy": m.busy, "other": m.other_status, "errnos": list(m.errnos),
            "latency": [list(m.latency[k]) for k in (0, 1)],
            "sum": list(m.latency_sum_ns)}


@pytest.fixture
def region():
    r = metrics.LunRegion()
    yield r
    r.close()


# --- the layout, as C writes it and Python reads it --------------------------


def test_the_region_layout_is_checked_on_both_sides(region):
    m = region.m
    assert (m.magic, m.version, m.size) == (lib.LM_MAGIC, lib.LM_VERSION,
                                             ffi.sizeof("struct lun_metrics"))
    assert region.size >= ffi.sizeof("struct lun_metrics") and region.size % 4096 == 0
    assert len(metrics.KINDS) == lib.LM_KINDS and len(metrics.SENSE_KEYS) == 16
    assert len(lib.lm_latency_bounds_us) == lib.LM_BOUNDS == lib.LM_BUCKETS - 1
    assert list(lib.lm_latency_bounds_us) == sorted(set(lib.lm_latency_bounds_us))
    # a worker maps the same memory through its inherited fd
    import os
    w = metrics.LunRegion(os.dup(region.fd))
    lib.lm_backend_error(w.m, -errno.ETIMEDOUT)
    lib.lm_backend_error(w.m, -4000)
    assert m.errnos[errno.ETIMEDOUT] == 1 and m.errnos[0] == 1
    w.close()
    # another build's layout is refused, naming both versions
    m.version = lib.LM_VERSION + 1
    with pytest.raises(metrics.MetricsError, match="version %d.*expects.*version %d"
                       % (lib.LM_VERSION + 1, lib.LM_VERSION)):
        metrics.LunRegion(os.dup(region.fd))


@pytest.mark.parametrize("cdb,kind", [
    (b"\x08", lib.LM_READ), (b"\x28", lib.LM_READ), (b"\xa8", lib.LM_READ), (b"\x88", lib.LM_READ),
    (b"\x0a", lib.LM_WRITE), (b"\x2a", lib.LM_WRITE), (b"\x8a", lib.LM_WRITE), (b"\x2e", lib.LM_WRITE),
    (b"\x42", lib.LM_UNMAP), (b"\x41", lib.LM_WRITE_SAME), (b"\x93", lib.LM_WRITE_SAME),
    (b"\x7f" + bytes(7) + b"\x00\x0d", lib.LM_WRITE_SAME), (b"\x7f" + bytes(7) + b"\x00\x0b", lib.LM_OTHER),
    (b"\x89", lib.LM_COMPARE_AND_WRITE), (b"\x35", lib.LM_OTHER), (b"\x12", lib.LM_OTHER),
])
def test_the_kind_of_a_command(cdb, kind):
    assert lib.lm_kind(cdb.ljust(32, b"\0")) == kind


# --- the counters agree exactly with what was sent ---------------------------

COMMANDS = st.lists(st.tuples(
    st.sampled_from(["read", "read10", "write", "busy_write", "write_same", "unmap", "caw",
                     "past_end", "eio", "other"]),
    st.integers(0, 2000), st.integers(1, 64)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmds=COMMANDS)
def test_counters_agree_with_the_commands_sent(cmds):
    region = metrics.LunRegion()
    try:
        with Rig(FailingBackend(4 << 20), unmap_granularity=1) as rig:
            rig.ring.set_metrics(region)
            m = region.m
            want = {"cmds": [0] * 6, "bytes": [0] * 6, "sense": [0] * 16, "busy": 0, "eio": 0}
            names = [metrics.KINDS[k] for k in range(lib.LM_KINDS)]
            for c in cmds:
                cdb, nbytes, res = command(rig, c)
                k = names.index(KIND_OF.get(cdb[0], "other"))
                want["cmds"][k] += 1
                if res.status == scsi.GOOD:
                    want["bytes"][k] += nbytes
                elif res.status == scsi.CHECK_CONDITION:
                    want["sense"][sense_key(res.sense)] += 1
                elif res.status == scsi.BUSY:
                    want["busy"] += 1
                want["eio"] += c[0] == "eio"
                assert m.in_flight == 0 and m.data_in_use == 0
            got = snapshot(m)
            assert got["cmds"] == want["cmds"] and got["bytes"] == want["bytes"]
            assert got["sense"] == want["sense"] and got["busy"] == want["busy"]
            assert got["errnos"][errno.EIO] == want["eio"] and sum(got["errnos"]) == want["eio"]
            assert got["other"] == 0
            # every READ and WRITE is in exactly one latency bucket
            assert sum(got["latency"][0]) == want["cmds"][lib.LM_READ]
            assert sum(got["latency"][1]) == want["cmds"][lib.LM_WRITE]
            assert m.data_size == rig.ring.size - rig.ring._r.data_off
    finally:
        region.close()


def test_gauges_follow_commands_in_flight(region):
    with Rig(MemoryBackend(4 << 20, engine=True)) as rig:
        rig.ring.set_metrics(region)
        m = region.m
        ids = [rig.submit(cdb16(0x88, i * 8, 8), data_in=8 * BS) for i in range(5)]
        rig.handler.ring.take()     # taken by hand: nothing started, all in flight
        assert m.in_flight == 5 and m.data_in_use == 5 * 8 * BS
        for cid in ids:
            rig.ring.complete(cid, scsi.GOOD)
        rig.ring.kick()
        assert m.in_flight == 0 and m.data_in_use == 0 and m.cmds[lib.LM_READ] == 5
        assert m.bytes[lib.LM_READ] == 5 * 8 * BS


def test_a_new_worker_continues_the_counters(region):
    """A worker restart: the next worker's ring records into the same region,
    counters only grow, the gauges start again from its ring."""
    with Rig(MemoryBackend(4 << 20, engine=True)) as rig:
        rig.ring.set_metrics(region)
        for i in range(3):
            assert rig.write(i, bytes(BS)).status == scsi.GOOD
        rig.submit(cdb16(0x88, 0, 1), data_in=BS)
        rig.handler.ring.take()     # dies with one in flight
        before = snapshot(region.m)
        assert region.m.in_flight == 1
    with Rig(MemoryBackend(4 << 20, engine=True)) as rig:
        rig.ring.set_metrics(region)
        assert region.m.in_flight == 0 and region.m.data_in_use == 0
        assert snapshot(region.m) == before
        assert rig.read(0, 2).status == scsi.GOOD
        after = snapshot(region.m)
    assert after["cmds"][lib.LM_WRITE] == 3 and after["cmds"][lib.LM_READ] == 1
    assert all(a >= b for a, b in zip(after["cmds"] + after["bytes"], before["cmds"] + before["bytes"]))


# --- the exposition -------------------------------------------------------------


def fake_supervisor(tmp_path, region, state=sv.READY):
    """A supervisor serving one LUN, with two gateways' ALUA groups in a
    configfs tree under tmp_path (this one's: gw1, active/non-optimized)."""
    roots = Roots(configfs=str(tmp_path / "target" / "core"))
    tcmu = TcmuDevice("uio0", UioName("1", "disk0", "rbd/rbd/ns1/img0;osd_op_timeout=30"), roots)
    wwn = "iqn.2003-01.org.x:ha"
    tpg = Path(roots.target) / "iscsi" / wwn / "tpgt_1"
    if not tpg.exists():
        tpg.mkdir(parents=True)
        (tpg / "enable").write_text("1\n")
        alua_group(tcmu.configfs, "gw1", 1, 1, members=f"iSCSI/{wwn}/tpgt_1/lun_0\n")
        alua_group(tcmu.configfs, "gw2", 2, 0)
    dev = sv.ServedDevice(tcmu, None, metrics=region, state=state, restarts=2, ring_resets=3)
    return types.SimpleNamespace(devices={"uio0": dev})


def scrape(sup) -> dict:
    reg = CollectorRegistry()
    reg.register(metrics.Collector(sup))
    text = generate_latest(reg).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def test_the_exposition_parses_and_reads_the_region(tmp_path, region):
    with Rig(FailingBackend(4 << 20)) as rig:
        rig.ring.set_metrics(region)
        for i in range(4):
            rig.write(i * 8, bytes(8 * BS))
        for i in range(6):
            rig.read(i, 1)
        rig.read(BAD // BS, 1)
    fams, _ = scrape(fake_supervisor(tmp_path, region))
    lab = {"pool": "rbd", "namespace": "ns1", "image": "img0", "backstore": "disk0"}

    def value(fam, suffix="", **extra):
        hits = [s.value for s in fams[fam].samples
                if s.name == fam + suffix and s.labels == {**lab, **extra}]
        assert len(hits) == 1, (fam, extra)
        return hits[0]
    assert value("tcmu_rbd_lun_commands", "_total", kind="read") == 7
    assert value("tcmu_rbd_lun_commands", "_total", kind="write") == 4
    assert value("tcmu_rbd_lun_bytes", "_total", kind="write") == 4 * 8 * BS
    assert value("tcmu_rbd_lun_bytes", "_total", kind="read") == 6 * BS
    assert value("tcmu_rbd_lun_librbd_errors", "_total", errno="EIO") == 1
    assert value("tcmu_rbd_lun_check_conditions", "_total", sense_key="medium_error") == 1
    assert value("tcmu_rbd_lun_worker_restarts", "_total") == 2
    assert value("tcmu_rbd_lun_ring_resets", "_total") == 3
    assert value("tcmu_rbd_lun_data_area_bytes") == region.m.data_size > 0
    assert value("tcmu_rbd_lun_alua_state", state="active_non_optimized") == 1
    assert "tcmu_rbd_lun_exclusive_lock_owner" not in {  # the image has no lock to follow
        s.name for f in fams.values() for s in f.samples}
    region.set_lock_owner(True)
    fams, _ = scrape(fake_supervisor(tmp_path, region))
    assert value("tcmu_rbd_lun_exclusive_lock_owner") == 1
    for kind, n in (("read", 7), ("write", 4)):
        buckets = [s for s in fams["tcmu_rbd_lun_latency_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels["kind"] == kind]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == n
        assert buckets[-1].labels["le"] == "+Inf"
        assert value("tcmu_rbd_lun_latency_seconds", "_count", kind=kind) == n
    assert {s.labels["state"]: s.value for s in fams["tcmu_rbd_luns"].samples}["ready"] == 1
    assert fams["tcmu_rbd_uptime_seconds"].samples[0].value >= 0


def test_the_endpoint_serves_metrics_on_loopback(tmp_path, region):
    server = metrics.MetricsServer(("127.0.0.1", 0), fake_supervisor(tmp_path, region))
    try:
        host, port = server.address
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            text = r.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"tcmu_rbd_lun_commands", "tcmu_rbd_luns", "tcmu_rbd_uptime_seconds"} <= names
        # the port is taken: a clear error naming the setting
        with pytest.raises(metrics.MetricsError, match="metrics_address 127.0.0.1:%d: cannot "
                           "listen.*metrics_address" % port):
            metrics.MetricsServer(("127.0.0.1", port), fake_supervisor(tmp_path, region))
    finally:
        server.close()


def test_the_dashboard_uses_only_exported_names(tmp_path, region):
    lib.lm_backend_error(region.m, -errno.EIO)   # families that appear once non-zero
    region.m.sense_keys[3] = 1
    region.set_lock_owner(False)
    _, text = scrape(fake_supervisor(tmp_path, region))
    served = set(re.findall(r"^(tcmu_rbd_\w+)", text, re.M))
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {n for e in exprs for n in re.findall(r"\b(tcmu_rbd_\w+)", e)}
    assert used and used <= served, sorted(used - served)


# --- the setting -------------------------------------------------------------------


@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:9289", ("127.0.0.1", 9289)), ("localhost:1", ("127.0.0.1", 1)),
    ("[::1]:9000", ("::1", 9000)), ("0", None), ("", None), ("off", None),
])
def test_metrics_address_values(text, want):
    assert settings_mod.parse_metrics_address(text) == want


@pytest.mark.parametrize("text,why", [
    ("127.0.0.1", "no port"), ("127.0.0.1:0", "not 1-65535"), ("127.0.0.1:70000", "not 1-65535"),
    ("gateway:9289", "not an IP address"), ("::1:9289", "in brackets"), ("127.0.0.1:x", "not 1-65535"),
])
def test_bad_metrics_address_is_refused_clearly(text, why):
    with pytest.raises(settings_mod.SettingsError, match="metrics_address.*" + why):
        settings_mod.loads("[daemon]\nmetrics_address = %s\n" % text, "t.conf")


def test_metrics_are_on_loopback_by_default():
    assert settings_mod.Settings().metrics_address == ("127.0.0.1", 9289)
    assert settings_mod.loads("[daemon]\nmetrics_address = 0\n").metrics_address is None


# --- the supervisor keeps the region across worker restarts -------------------------

COUNTING_WORKER = (
    "import sys\n"
    "from tcmu_rbd.metrics import LunRegion\n"
    "_a = sys.argv[1:]\n"
    "_m = LunRegion(int(_a[_a.index('--metrics-fd') + 1])).m\n"
    "_m.cmds[0] += 1\n") + FAKE_WORKER


def test_a_restarted_worker_records_into_the_same_region(tmp_path, monkeypatch):
    script = tmp_path / "counting_worker.py"
    script.write_text(COUNTING_WORKER)
    h = Harness(tmp_path, monkeypatch, worker_command=[sys.executable, str(script)])
    try:
        h.behave(0, start="ready_then_crash")
        assert h.reply_for(h.added(0, "disk0", "rbd/rbd/img0"))[1] == 0
        dev = h.sup.devices["uio0"]
        seen = []

        def restarted_twice():
            fams, _ = scrape(h.sup)
            seen.append([s.value for s in fams["tcmu_rbd_lun_commands"].samples
                         if s.labels["kind"] == "read"][0])
            return dev.restarts >= 2 and seen[-1] >= 3
        h.run_until(restarted_twice, 15)
        assert seen == sorted(seen)             # monotone across the restarts
        assert dev.ring_resets >= 2
    finally:
        h.close()
