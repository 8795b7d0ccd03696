"""``targetcli-rbd sync``: the shared configuration (a real object on a throwaway
cluster, real images for their sizes, CHAP secrets in real config-key) applied to an
in-memory LIO: a stand-in for the rtslib-fb classes sync and apply.py use, ALUA
groups included, put in sys.modules as ``rtslib_fb`` (as test_targetcli_apply.py
does). Two gateways share that one kernel, as in the VM test. Checked: what each
gateway creates, in which order, re-applying changes nothing, the daemon's later
ALUA state is kept, removal of a disk and a target, others' objects untouched, one
bad disk not stopping the others, the watch loop, and the CLI verb."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
import types
import uuid

import pytest
import targetcli.ui_node  # noqa: F401 (binds the real rtslib_fb before the fake replaces it)

from targetcli_ext import cli, commands
from targetcli_ext import sync as sync_mod
from targetcli_ext.spec import Secret, parse_portal
from targetcli_ext.store import ChapEntry, ConfigStore, secret_key
from targetcli_ext.sync import Syncer
from targetcli_ext.topology import add_disk, add_gateway, remove_disk
from test_targetcli_ext import FakeDaemon

T = f"iqn.2003-01.org.linux-iscsi.ha:sync-{uuid.uuid4().hex[:8]}"  # config-key is global
INIT = "iqn.1994-05.com.redhat:client1"
SECRET = "sync-secret-0123"
ALUA_DEFAULTS = {"alua_access_state": 0, "alua_access_type": 3, "nonop_delay_msecs": 100,
                 "implicit_trans_secs": 0, "alua_support_active_optimized": 1,
                 "alua_support_active_nonoptimized": 1, "alua_support_standby": 1,
                 "alua_support_unavailable": 1, "alua_support_offline": 1,
                 "alua_support_transitioning": 1, "alua_support_lba_dependent": 0}


# ----------------------------------------------------------------------------- a fake LIO

class Kernel:
    """LIO's objects (``storage_objects``, ``targets``); ``writes`` records changes."""

    def __init__(self):
        self.storage_objects, self.targets, self.writes = [], [], []

    def write(self, *what):
        self.writes.append(what)


def fake_rtslib(k: Kernel) -> types.ModuleType:
    class SO:
        plugin, alua_supported = "user", True

        def __init__(self, name, config=None, size=None, wwn=None, hw_max_sectors=None,
                     control=None):
            assert name not in [s.name for s in k.storage_objects], name
            self.name, self.config, self.size, self.wwn = name, config, size, wwn
            self.attrs, self.alua = {}, {}
            self.alua["default_tg_pt_gp"] = ALUA(self, "default_tg_pt_gp", 0)
            k.storage_objects.append(self)
            k.write("backstore", name, config, wwn, size, control, hw_max_sectors)

        attached_luns = property(lambda self: [
            lun for t in k.targets for g in t.tpgs for lun in g.luns
            if lun.storage_object is self])
        alua_tpgs = property(lambda self: list(self.alua.values()))

        def set_attribute(self, a, v):
            self.attrs[a] = v
            if a == "dev_size":
                self.size = int(v)
            k.write("backstore attribute", self.name, a, v)

        def delete(self):
            for lun in self.attached_luns:
                lun.delete()
            k.storage_objects.remove(self)
            k.write("delete backstore", self.name)

    class ALUA:
        def __init__(self, so, name, tag=None):
            assert tag is not None and name not in so.alua
            object.__setattr__(self, "v", dict(ALUA_DEFAULTS, tg_pt_gp_id=tag))
            self.so, self.name = so, name
            so.alua[name] = self
            if name != "default_tg_pt_gp":
                k.write("alua group", so.name, name, tag)

        def __getattr__(self, a):
            if a in ("v", "so", "name"):
                raise AttributeError(a)
            return self.v[a]

        def __setattr__(self, a, val):
            if a not in ALUA_DEFAULTS:
                return object.__setattr__(self, a, val)
            assert a != "alua_support_lba_dependent", "read-only in configfs"
            if a == "alua_access_state":   # the kernel: implicit transitions only
                assert self.v["alua_access_type"] & 1, "implicit ALUA disabled"
            self.v[a] = int(val)
            k.write("alua", self.so.name, self.name, a, int(val))

        def delete(self):
            for lun in self.so.attached_luns:
                if lun._group == self.name:
                    lun._group = "default_tg_pt_gp"
            del self.so.alua[self.name]
            k.write("delete alua group", self.so.name, self.name)

    class Target:
        def __init__(self, fm, wwn, mode="any"):
            assert mode == "create" and wwn not in [t.wwn for t in k.targets]
            self.wwn, self.fabric_module, self.tpgs = wwn, fm, []
            k.targets.append(self)
            k.write("target", wwn)

        def delete(self):
            for t in list(self.tpgs):
                t.delete()
            k.targets.remove(self)
            k.write("delete target", self.wwn)

    class TPG:
        def __init__(self, target, tag, mode="any"):
            assert tag not in [int(t.tag) for t in target.tpgs]
            self.parent_target, self.tag, self.enable = target, tag, False
            self.attrs, self.params = {}, {}
            self.network_portals, self.luns, self.node_acls = [], [], []
            target.tpgs.append(self)
            k.write("tpg", target.wwn, tag)

        get_attribute = lambda self, a: self.attrs.get(a, "")  # noqa: E731
        get_parameter = lambda self, a: self.params.get(a, "")  # noqa: E731

        def set_attribute(self, a, v):
            self.attrs[a] = v
            k.write("tpg attribute", self.tag, a, v)

        def set_parameter(self, a, v):
            self.params[a] = v
            k.write("tpg parameter", self.tag, a, v)

        def __setattr__(self, a, v):
            if a == "enable" and v:
                k.write("enable", self.tag)
            object.__setattr__(self, a, v)

        def delete(self):
            for x in self.luns + self.node_acls + self.network_portals:
                x.delete()
            self.parent_target.tpgs.remove(self)
            k.write("delete tpg", self.tag)

    class NP:
        def __init__(self, tpg, ip, port, mode="any"):
            self.tpg, self.ip_address, self.port = tpg, ip, port
            tpg.network_portals.append(self)
            k.write("portal", tpg.tag, ip, port)

        def delete(self):
            self.tpg.network_portals.remove(self)
            k.write("delete portal", self.tpg.tag, self.ip_address)

    class LUN:
        def __init__(self, tpg, lun=None, storage_object=None):
            assert lun not in [x.lun for x in tpg.luns]
            self.parent_tpg, self.lun, self.storage_object = tpg, lun, storage_object
            self._group = "default_tg_pt_gp"
            tpg.luns.append(self)
            k.write("lun", tpg.tag, lun, storage_object.name)

        mapped_luns = property(lambda self: [m for a in self.parent_tpg.node_acls
                                             for m in a.mapped_luns if m.tpg_lun is self])

        def _set_group(self, name):   # rtslib: a failed write only returns -1
            if name in self.storage_object.alua:
                self._group = name
                k.write("lun alua group", self.parent_tpg.tag, self.lun, name)
        alua_tg_pt_gp_name = property(lambda self: self._group, _set_group)

        def delete(self):
            for m in self.mapped_luns:
                m.delete()
            self.parent_tpg.luns.remove(self)
            k.write("delete lun", self.parent_tpg.tag, self.lun)

    class ACL:
        def __init__(self, tpg, wwn, mode="any"):
            self.tpg, self.node_wwn, self.mapped_luns = tpg, wwn, []
            self.chap_userid = self.chap_password = ""
            self.chap_mutual_userid = self.chap_mutual_password = ""
            tpg.node_acls.append(self)
            k.write("acl", tpg.tag, wwn)

        def delete(self):
            self.tpg.node_acls.remove(self)
            k.write("delete acl", self.tpg.tag, self.node_wwn)

    class MappedLUN:
        def __init__(self, acl, mapped_lun, tpg_lun, write_protect=False):
            self.acl, self.mapped_lun, self.write_protect = acl, mapped_lun, write_protect
            self.tpg_lun = next(x for x in acl.tpg.luns if x.lun == int(tpg_lun))
            acl.mapped_luns.append(self)
            k.write("mapped lun", acl.tpg.tag, acl.node_wwn, mapped_lun)

        def delete(self):
            self.acl.mapped_luns.remove(self)
            k.write("delete mapped lun", self.acl.tpg.tag, self.mapped_lun)

    class FM:
        name = "iscsi"

        def __init__(self, name):
            assert name == "iscsi"

    return types.SimpleNamespace(
        UserBackedStorageObject=SO, ALUATargetPortGroup=ALUA, FabricModule=FM,
        Target=Target, TPG=TPG, NetworkPortal=NP, LUN=LUN, NodeACL=ACL, MappedLUN=MappedLUN)


# ----------------------------------------------------------------------------- fixtures

def _free_portal(ip: str):
    with socket.socket() as s:
        s.bind((ip, 0))
        return parse_portal(f"{ip}:{s.getsockname()[1]}")


@pytest.fixture
def kernel(monkeypatch):
    k = Kernel()
    monkeypatch.setitem(sys.modules, "rtslib_fb", fake_rtslib(k))
    return k




@pytest.fixture
def images(ceph):
    names = [f"sync-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for i, n in enumerate(names):
        ceph.create_image(n, (i + 1) << 28)
    yield [f"rbd/{n}" for n in names]
    for n in names:
        ceph.remove_image(n)


@pytest.fixture
def two(store, images):
    """gw1 and gw2 (one kernel); disk 0 with CHAP (owner gw1), disk 1 (owner gw2)."""
    p1, p2 = _free_portal("127.0.0.1"), _free_portal("127.0.0.2")
    store.set_secret(secret_key(T, INIT), Secret(SECRET, "test"))

    def change(c):
        add_gateway(c, "gw1", p1)
        add_gateway(c, "gw2", p2)
        for d in images:
            add_disk(c, d, T, initiators=[INIT], chap={INIT: ChapEntry("alice")},
                     options={"osd_op_timeout": 30})
    store.update(change)
    yield p1, p2
    store.remove_secret(secret_key(T, INIT))


def _syncer(store, kernel, gw, tmp_path, **kw):
    return Syncer(store, gw, root=kernel, daemon=kw.pop("daemon", FakeDaemon()),
                  state_dir=str(tmp_path), **kw)


def _tpg(kernel, tag):
    t = next(t for t in kernel.targets if t.wwn == T)
    return next(g for g in t.tpgs if g.tag == tag)


# ----------------------------------------------------------------------------- tests

def test_two_gateways_on_one_kernel(store, kernel, two, images, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    p1, p2 = two
    cfg = store.read()
    r1 = _syncer(store, kernel, "gw1", tmp_path).apply(cfg)
    assert r1.errors == [] and r1.changed
    r2 = _syncer(store, kernel, "gw2", tmp_path).apply(cfg)
    assert r2.errors == []
    bs = {so.name: so for so in kernel.storage_objects}
    names = [f"{gw}.rbd.{d.split('/')[1]}" for gw in ("gw1", "gw2") for d in images]
    assert sorted(bs) == sorted(names)
    for d, size in zip(images, (1 << 28, 2 << 28)):
        wwn = cfg.disks[d].wwn
        for gw in ("gw1", "gw2"):
            so = bs[f"{gw}.rbd.{d.split('/')[1]}"]
            assert (so.config, so.wwn, so.size) == (f"rbd/{d};osd_op_timeout=30", wwn, size)
            assert so.attrs == {"cmd_time_out": "0", "qfull_time_out": "5"}
            groups = {n: g.v for n, g in so.alua.items() if n != "default_tg_pt_gp"}
            assert sorted(groups) == ["gw1", "gw2"]
            owner = cfg.disks[d].owner
            for n, v in groups.items():
                assert v["tg_pt_gp_id"] == {"gw1": 1, "gw2": 2}[n]
                assert v["alua_access_state"] == (0 if n == owner else 1)
                assert (v["alua_access_type"], v["implicit_trans_secs"],
                        v["nonop_delay_msecs"], v["alua_support_standby"],
                        v["alua_support_offline"], v["alua_support_unavailable"]) == \
                    (1, 45, 0, 0, 0, 0)
    assert [cfg.disks[d].owner for d in images] == ["gw1", "gw2"]
    # one target, one TPG per gateway: its tag, its portal, enabled; LUNs in its group
    assert [t.wwn for t in kernel.targets] == [T]
    for tag, portal, gw in ((1, p1, "gw1"), (2, p2, "gw2")):
        tpg = _tpg(kernel, tag)
        assert tpg.enable and [(n.ip_address, n.port) for n in tpg.network_portals] == \
            [(portal.ip, portal.port)]
        assert tpg.attrs["authentication"] == "1" and tpg.params["AuthMethod"] == "CHAP"
        assert tpg.attrs["generate_node_acls"] == "0"
        assert [(x.lun, x.storage_object.name, x.alua_tg_pt_gp_name) for x in tpg.luns] \
            == [(i, f"{gw}.rbd.{d.split('/')[1]}", gw) for i, d in enumerate(images)]
        (acl,) = tpg.node_acls
        assert (acl.node_wwn, acl.chap_userid, acl.chap_password) == (INIT, "alice", SECRET)
        assert [(m.mapped_lun, m.tpg_lun.lun) for m in acl.mapped_luns] == [(0, 0), (1, 1)]
    # the LUN joins its group before an initiator can see it (mapped LUN, enable)
    w = [x[0] for x in kernel.writes]
    assert w.index("lun alua group") < w.index("mapped lun") < w.index("enable")
    assert w.index("alua", w.index("alua group")) < w.index("lun alua group")
    assert any(f"+ ALUA group gw2 (id 2, Active/Non-optimized) on user:rbd/gw1.rbd." in line
               for line in r1.lines)
    assert SECRET not in caplog.text + "\n".join(r1.lines + r2.lines)
    assert json.load(open(tmp_path / "sync-gw1.json")) == {"gateway": "gw1",
                                                           "targets": {T: 1}}


def test_reapplying_changes_nothing_and_keeps_the_daemons_alua_state(
        store, kernel, two, tmp_path):
    cfg = store.read()
    s1, s2 = _syncer(store, kernel, "gw1", tmp_path), _syncer(store, kernel, "gw2", tmp_path)
    s1.apply(cfg), s2.apply(cfg)
    # the daemon moved gw1's groups: the image's lock went to gw2
    so = next(s for s in kernel.storage_objects if s.name.startswith("gw1."))
    so.alua["gw1"].alua_access_state, so.alua["gw2"].alua_access_state = 1, 0
    n = len(kernel.writes)
    for s in (s1, s2, s1):
        res = s.apply(store.read())
        assert res.errors == [] and res.lines == []
    assert len(kernel.writes) == n
    assert (so.alua["gw1"].v["alua_access_state"], so.alua["gw2"].v["alua_access_state"]) \
        == (1, 0)


def test_removing_a_disk_then_the_target(store, kernel, two, images, tmp_path):
    s1, s2 = _syncer(store, kernel, "gw1", tmp_path), _syncer(store, kernel, "gw2", tmp_path)
    s1.apply(store.read()), s2.apply(store.read())
    # somebody else's objects in the same kernel: a single-gateway export
    rts = sys.modules["rtslib_fb"]
    other = rts.UserBackedStorageObject("rbd.other", config="rbd/rbd/other", size=1)
    t = rts.Target(rts.FabricModule("iscsi"), "iqn.2003-01.org.linux-iscsi.x:other",
                   mode="create")
    rts.LUN(rts.TPG(t, 1), lun=0, storage_object=other)
    store.update(lambda c: remove_disk(c, images[0]))
    res = s1.apply(store.read())
    img0 = images[0].split("/")[1]
    assert res.errors == [] and f"removed backstore user:rbd/gw1.rbd.{img0} " \
        f"({images[0]})" in res.lines
    names = sorted(so.name for so in kernel.storage_objects)
    assert f"gw1.rbd.{img0}" not in names and f"gw2.rbd.{img0}" in names   # gw2: its sync
    assert [x.lun for x in _tpg(kernel, 1).luns] == [1]
    assert [m.mapped_lun for m in _tpg(kernel, 1).node_acls[0].mapped_luns] == [1]
    s2.apply(store.read())
    assert [x.lun for x in _tpg(kernel, 2).luns] == [1]
    # the last disk: the target goes (each gateway removes its TPG, the last the target)
    store.update(lambda c: remove_disk(c, images[1]))
    r1 = s1.apply(store.read())
    assert f"removed TPG 1 of {T}" in r1.lines and T in [t.wwn for t in kernel.targets]
    r2 = s2.apply(store.read())
    assert f"removed target {T} (no TPG left)" in r2.lines
    assert [so.name for so in kernel.storage_objects] == ["rbd.other"]
    assert [t.wwn for t in kernel.targets] == ["iqn.2003-01.org.linux-iscsi.x:other"]
    assert json.load(open(tmp_path / "sync-gw1.json"))["targets"] == {}
    assert s1.apply(store.read()).lines == []


def test_one_bad_disk_does_not_stop_the_others(store, kernel, two, images, tmp_path):
    store.update(lambda c: add_disk(c, "rbd/nosuchimage", T))
    res = _syncer(store, kernel, "gw1", tmp_path).apply(store.read())
    assert len(res.errors) == 1 and "rbd/nosuchimage: image rbd/nosuchimage does not " \
        "exist" in res.errors[0]
    assert sorted(x.lun for x in _tpg(kernel, 1).luns) == [0, 1]
    # the daemon refusing a config: that disk only
    k2 = Kernel()
    sys.modules["rtslib_fb"] = fake_rtslib(k2)
    res = _syncer(store, k2, "gw2", tmp_path, daemon=FakeDaemon(ok=False, msg="no")) \
        .apply(store.read())
    assert len(res.errors) == 3 and all("refused" in e or "does not exist" in e
                                        for e in res.errors)
    # a missing secret: reported, the ACL made without credentials
    store.remove_secret(secret_key(T, INIT))
    k3 = Kernel()
    sys.modules["rtslib_fb"] = fake_rtslib(k3)
    res = _syncer(store, k3, "gw1", tmp_path / "3").apply(store.read())
    assert any("no CHAP secret in config-key" in e for e in res.errors)
    assert k3.targets[0].tpgs[0].node_acls[0].chap_password == ""


def test_unknown_gateway_serves_nothing(store, kernel, two, tmp_path):
    res = _syncer(store, kernel, "gw7", tmp_path).apply(store.read())
    assert res.errors and "gateway add gw7" in res.errors[0] and kernel.writes == []


def test_the_loop_applies_a_change_within_a_second(store, kernel, two, images, tmp_path):
    s = _syncer(store, kernel, "gw1", tmp_path)
    stop = threading.Event()
    th = threading.Thread(target=s.run, kwargs={"interval": 60, "stop": stop})
    th.start()
    try:
        deadline = time.monotonic() + 20
        while len(kernel.storage_objects) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(kernel.storage_objects) == 2
        t0 = time.monotonic()
        store.update(lambda c: remove_disk(c, images[0]))
        while len(kernel.storage_objects) > 1 and time.monotonic() < t0 + 5:
            time.sleep(0.02)
        assert len(kernel.storage_objects) == 1 and time.monotonic() - t0 < 1.0
    finally:
        stop.set()
        th.join(10)
    assert not th.is_alive()


def test_cli_sync_once_and_dry_run(store, kernel, two, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sync_mod, "open_root", lambda: kernel)
    monkeypatch.setattr("targetcli_ext.daemon.Daemon", FakeDaemon)
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    base = ["sync", "--gateway", "gw2", "--state-dir", str(tmp_path)]
    assert cli.main(base + ["--dry-run"], store=store) == 0
    out = capsys.readouterr().out
    assert "dry run:" in out and "LUN 1 -> user:rbd/gw2.rbd." in out and kernel.writes == []
    assert cli.main(["--json"] + base + ["--once"], store=store) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ok"] and d["changed"] and d["gateway"] == "gw2" and kernel.storage_objects
    assert cli.main(base + ["--once"], store=store) == 0
    assert "0 change(s)" in capsys.readouterr().out
    assert cli.main(["sync", "--gateway", "gw9", "--once", "--state-dir", str(tmp_path)],
                    store=store) == 1
    assert "gateway add gw9" in capsys.readouterr().err
    assert cli.main(["gateway", "list"], store=store) == 0
    out = capsys.readouterr().out
    assert "gw1  tag 1" in out and "gw2  tag 2" in out


def test_a_new_tag_moves_the_tpg_and_the_alua_group(store, kernel, two, tmp_path):
    s1, s2 = _syncer(store, kernel, "gw1", tmp_path), _syncer(store, kernel, "gw2", tmp_path)
    s1.apply(store.read()), s2.apply(store.read())
    p1 = store.read().gateways["gw1"].portal
    store.update(lambda c: add_gateway(c, "gw1", p1, tag=3))
    res = s1.apply(store.read())
    assert res.errors == [] and f"removed TPG 1 of {T}" in res.lines
    assert sorted(g.tag for g in kernel.targets[0].tpgs) == [2, 3]
    for so in kernel.storage_objects:
        if so.name.startswith("gw1."):
            assert so.alua["gw1"].v["tg_pt_gp_id"] == 3
            assert so.alua["gw2"].v["tg_pt_gp_id"] == 2
    assert [x.alua_tg_pt_gp_name for x in _tpg(kernel, 3).luns] == ["gw1", "gw1"]
    assert json.load(open(tmp_path / "sync-gw1.json"))["targets"] == {T: 3}
    # gw2's sync fixes its backstores' gw1 group id; its TPG stays
    r2 = s2.apply(store.read())
    assert r2.errors == [] and not any("TPG" in line and "removed" in line
                                       for line in r2.lines)
    assert all(so.alua["gw1"].v["tg_pt_gp_id"] == 3 for so in kernel.storage_objects)
