"""The mgr service map on the lab's real cluster (CephCluster(mgr=True)): the lab mgr
comes up without Python modules, and what tcmu_rbd/service_map.py builds, registered
through librados (the python binding; the worker does the same through
native/cluster.c), is what ``ceph service status`` / ``service dump`` show.  Also the
caps: who may register, who may read the map (targetcli-rbd list)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

rados = pytest.importorskip("rados")

from tcmu_rbd import service_map as sm  # noqa: E402
from tcmu_rbd_lab.ceph import CephCluster, CephClusterError  # noqa: E402
from tcmu_rbd_lab.process import pid_alive  # noqa: E402

pytestmark = pytest.mark.ceph
GATEWAY_CAPS = {"mon": "profile rbd", "osd": "profile rbd pool=rbd"}  # the README's


@pytest.fixture(scope="module")
def mgr_ceph(tmp_path_factory):
    missing = [b for b in ("ceph-mon", "ceph-osd", "ceph-mgr") if not shutil.which(b)]
    if missing:
        pytest.skip(f"Ceph not installed (missing {', '.join(missing)}): run scripts/setup")
    with CephCluster(tmp_path_factory.mktemp("ceph-mgr"), mgr=True) as c:
        yield c


def _wait(fn, what, timeout=90.0):
    """fn() until it returns something true; its last value in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s (last: {v!r})")
        time.sleep(0.5)


def _connect(c: CephCluster, user="admin", keyring=None):
    conf = {"keyring": keyring} if keyring else {}
    r = rados.Rados(conffile=c.conf_path, rados_id=user, conf=conf)
    r.connect(timeout=60)
    return r


def _register(r, gateway, pool, image, namespace=None, image_id="", owner=False):
    name = sm.daemon_name(gateway, pool, namespace, image)
    r.service_daemon_register(sm.SERVICE, name,
                              sm.metadata(gateway, pool, namespace, image, image_id))
    r.service_daemon_update(sm.status(owner))
    return name


def test_mgr_comes_up_lean(mgr_ceph):
    c = mgr_ceph
    assert set(c.pids) == {"mon.a", f"osd.{c.osd_id}", "mgr.x"}
    st = json.loads(c.run("ceph", "mgr", "stat", "--format", "json").stdout)
    assert st["available"] and st["active_name"] == "x"
    mods = json.loads(c.run("ceph", "mgr", "module", "ls", "--format", "json").stdout)
    assert mods["enabled_modules"] == []
    log = (c._dir / "log" / "ceph-mgr.x.log").read_text()
    assert "Loading python module" not in log          # none imported: fast start
    assert c.run("ceph", "health").stdout.startswith("HEALTH_OK")  # the absent ones muted
    assert c.run("ceph", "osd", "pool", "ls").stdout.split() == ["rbd"]  # no devicehealth pool
    assert json.loads(open(c.state_path).read())["mgr"] is True


def test_registered_lun_shows_up_with_the_references_keys(mgr_ceph):
    c = mgr_ceph
    c.create_namespace("rbd", "svcns")
    r1, r2, r3 = _connect(c), _connect(c), _connect(c)
    try:
        n1 = _register(r1, "gw1", "rbd", "svc0", image_id="1234abcd", owner=True)
        n2 = _register(r2, "gw2", "rbd", "svc0")
        n3 = _register(r3, "gw1", "rbd", "svc0", namespace="svcns")
        assert (n1, n2, n3) == ("gw1:rbd/svc0", "gw2:rbd/svc0", "gw1:rbd/svcns/svc0")

        def both():
            d = sm.image_daemons(c.service_status(), "rbd/svc0")
            return d if all(set(sm.STATUS_KEYS) <= set(v) for v in d.values()) \
                and len(d) == 2 else None
        d = _wait(both, "both gateways' status")
        assert d == {"gw1": {"lock_owner": "true", "lock_lost_cnt": "0",
                             "conn_lost_cnt": "0", "cmd_timed_out_cnt": "0"},
                     "gw2": {"lock_owner": "false", "lock_lost_cnt": "0",
                             "conn_lost_cnt": "0", "cmd_timed_out_cnt": "0"}}
        _wait(lambda: sm.image_daemons(c.service_status(), "rbd/svcns/svc0"),
              "the namespaced LUN")

        # the dump is the map the mgr publishes through the mon: it may lag behind
        daemons = _wait(lambda: (lambda ds: ds if {n1, n3} <= set(ds) else None)(
            c.service_dump()["services"].get(sm.SERVICE, {}).get("daemons", {})),
            "the LUNs in `service dump`")
        md = daemons[n1]["metadata"]
        want = sm.metadata("gw1", "rbd", None, "svc0", "1234abcd")
        assert {k: md.get(k) for k in want} == want
        assert md["hostname"]                       # librados adds the host's own
        assert daemons[n3]["metadata"]["namespace"] == "svcns"

        # a lock change: the whole status again, as the reference sends it
        r1.service_daemon_update(sm.status(False, 1, 0, 0))
        r2.service_daemon_update(sm.status(True))
        _wait(lambda: sm.image_daemons(c.service_status(), "rbd/svc0").get("gw2", {})
              .get("lock_owner") == "true" and sm.image_daemons(
                  c.service_status(), "rbd/svc0")["gw1"]["lock_lost_cnt"] == "1",
              "the lock moving to gw2")
    finally:
        r1.shutdown()
    # a client that goes away unregisters (the mgr drops it at once)
    _wait(lambda: "gw1" not in sm.image_daemons(c.service_status(), "rbd/svc0"),
          "gw1's entry going away")
    r2.shutdown()
    r3.shutdown()


def test_gateway_key_registers_but_reading_the_map_needs_mgr_caps(mgr_ceph):
    c = mgr_ceph
    kr = c.create_client("svcgw", GATEWAY_CAPS)
    kr_r = c.create_client("svcread", {**GATEWAY_CAPS, "mgr": "allow r"})
    gw = _connect(c, "svcgw", kr)
    reader = _connect(c, "svcread", kr_r)
    cmd = json.dumps({"prefix": "service status", "format": "json"})
    try:
        _register(gw, "gw7", "rbd", "capimg", owner=True)
        _wait(lambda: sm.image_daemons(c.service_status(), "rbd/capimg").get("gw7"),
              "the gateway key's registration")
        ret, _, msg = gw.mgr_command(cmd, b"", timeout=30)
        assert ret == -13 and "mgr caps" in msg     # EACCES without mgr caps
        ret, out, _ = reader.mgr_command(cmd, b"", timeout=30)
        assert ret == 0
        assert sm.image_daemons(json.loads(out), "rbd/capimg")["gw7"]["lock_owner"] == "true"
    finally:
        gw.shutdown()
        reader.shutdown()


def test_service_map_needs_a_mgr():
    c = CephCluster(verbose=False)   # never started: no mgr, and no waiting for one
    with pytest.raises(CephClusterError, match="needs a running mgr"):
        c.service_status()


def test_cli_up_with_mgr_and_down(tmp_path):
    if not shutil.which("ceph-mgr"):
        pytest.skip("ceph-mgr not installed: run scripts/setup")
    d = tmp_path / "cli"
    up = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "up", "--dir", str(d),
                         "--mgr"], capture_output=True, text=True, timeout=600,
                        env=dict(os.environ))
    assert up.returncode == 0, up.stderr
    kv = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    pids = [int(v) for k, v in kv.items() if k.startswith("pid.")]
    try:
        assert set(k for k in kv if k.startswith("pid.")) == {"pid.mon.a", "pid.osd.0",
                                                              "pid.mgr.x"}
        assert kv["pidfile.mgr.x"].endswith("/run/ceph-mgr.x.pid")
        assert all(pid_alive(p) for p in pids)
        r = subprocess.run(["ceph", "-c", kv["conf"], "service", "dump", "-f", "json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "services" in json.loads(r.stdout), r.stderr
    finally:
        dn = subprocess.run([sys.executable, "-m", "tcmu_rbd_lab.ceph", "down", "--dir",
                             str(d)], capture_output=True, text=True, timeout=120)
    assert dn.returncode == 0, dn.stderr
    assert "killed mgr.x" in dn.stdout
    assert not any(pid_alive(p) for p in pids) and not d.exists()


def test_targetcli_list_reads_the_service_map(mgr_ceph):
    """What ``targetcli-rbd list`` asks (rados mgr_command, as the LUN's own client)."""
    from targetcli_ext.spec import ExtError, parse_image
    from targetcli_ext.status import read_service_status
    c = mgr_ceph
    r = _connect(c)
    try:
        _register(r, "gw1", "rbd", "lsimg", owner=True)
        admin = parse_image("rbd/lsimg", conf=c.conf_path).cfg   # the conf finds its key
        _wait(lambda: sm.image_daemons(read_service_status(admin), "rbd/lsimg")
              .get("gw1", {}).get("lock_owner") == "true", "gw1 through list's reader")
        kr = c.create_client("lsgw", GATEWAY_CAPS)
        gw = parse_image("rbd/lsimg", conf=c.conf_path, client_id="lsgw", keyring=kr).cfg
        with pytest.raises(ExtError, match=r"client.lsgw may not read it \(add mgr 'allow r'"):
            read_service_status(gw)
    finally:
        r.shutdown()


def test_targetcli_list_reader_without_a_mgr(ceph):
    """The session cluster has no mgr: the reader gives up after its timeout."""
    from targetcli_ext.spec import ExtError, parse_image
    from targetcli_ext.status import read_service_status
    cfg = parse_image("rbd/x", conf=ceph.conf_path).cfg
    t0 = time.monotonic()
    with pytest.raises(ExtError, match="no mgr answered within 3s"):
        read_service_status(cfg, timeout=3)
    assert time.monotonic() - t0 < 30
