"""targetcli-rbd's export end to end against an in-memory LIO: a stand-in for the
few rtslib-fb classes the extension uses (put in sys.modules as ``rtslib_fb``), so
reading the state, planning, applying, rolling back, re-running (nothing to
change) and --dry-run (nothing written) run without a kernel. The real kernel is
tested in the VM (tests/vm/test_targetcli_ext_lab.py)."""

from __future__ import annotations

import json
import socket
import sys
import types

import pytest
import targetcli.ui_node  # noqa: F401 (binds the real rtslib_fb before the fake replaces it)

from targetcli_ext import cli, commands
from targetcli_ext.gateway import Gateway
from targetcli_ext.plan import ExportRequest
from targetcli_ext.spec import (
    ENV_MUTUAL_SECRET, Chap, ExtError, Secret, parse_image, parse_portal,
)
from test_targetcli_ext import INIT, MUTUAL, SECRET, FakeDaemon, _secret_file

INIT2 = "iqn.1994-05.com.redhat:client2"
T = "iqn.2003-01.org.linux-iscsi.gw:rbd"


# ----------------------------------------------------------------------------- a fake LIO

class FakeLIO:
    """The kernel's target configuration; ``writes`` records every change."""

    def __init__(self):
        self.storage_objects, self.targets, self.writes = [], [], []
        self.fail: set[str] = set()   # class names whose creation fails

    def write(self, *what):
        self.writes.append(what)

    def check(self, cls: str):
        if cls in self.fail:
            raise OSError(f"{cls}: cannot create ({SECRET})")


def fake_rtslib(lio: FakeLIO) -> types.ModuleType:
    class SO:
        plugin, alua_tpgs = "user", ()

        def __init__(self, name, config=None, size=None, wwn=None, hw_max_sectors=None,
                     control=None):
            lio.check("UserBackedStorageObject")
            self.name, self.config, self.size = name, config, size
            self.wwn = wwn or f"serial-{name}"
            self.control, self.hw_max_sectors, self.attrs = control, hw_max_sectors, {}
            self.path, self.status = f"/cfg/core/user_1/{name}", "activated"
            lio.storage_objects.append(self)
            lio.write("backstore", name, control, hw_max_sectors)

        @property
        def attached_luns(self):
            return [l for t in lio.targets for g in t.tpgs for l in g.luns
                    if l.storage_object is self]

        def set_attribute(self, k, v):
            self.attrs[k] = v
            lio.write("backstore attribute", k, v)

        def delete(self):
            lio.storage_objects.remove(self)
            lio.write("delete backstore", self.name)

    class FM:
        def __init__(self, name):
            assert name in ("iscsi", "loopback")
            self.name = name

    class Target:
        def __init__(self, fm, wwn=None, mode="any"):
            assert mode == "create" and (wwn is None) == (fm.name == "loopback")
            lio.check(f"Target {fm.name}")
            n = sum(t.fabric_module.name == "loopback" for t in lio.targets)
            wwn = wwn or f"naa.50014050000000{n:02x}"  # (rtslib generates a random one)
            self.wwn, self.fabric_module, self.tpgs = wwn, fm, []
            lio.targets.append(self)
            lio.write("target", wwn)

        def delete(self):
            lio.targets.remove(self)
            lio.write("delete target", self.wwn)

    class TPG:
        def __init__(self, target, tag, mode="any"):
            self.parent_target, self.tag, self.enable = target, tag, False
            self.attrs, self.params = {}, {}
            self.network_portals, self.luns, self.node_acls = [], [], []
            target.tpgs.append(self)
            lio.write("tpg", tag)

        def get_attribute(self, k):
            return self.attrs.get(k, "")

        def set_attribute(self, k, v):
            self.attrs[k] = v
            lio.write("tpg attribute", k, v)

        def get_parameter(self, k):
            return self.params.get(k, "")

        def set_parameter(self, k, v):
            self.params[k] = v
            lio.write("tpg parameter", k, v)

        def __setattr__(self, k, v):
            if k == "enable" and v:
                lio.write("enable", self.tag)
            object.__setattr__(self, k, v)

    class NP:
        def __init__(self, tpg, ip, port, mode="any"):
            lio.check("NetworkPortal")
            self.tpg, self.ip_address, self.port = tpg, ip, port
            tpg.network_portals.append(self)
            lio.write("portal", ip, port)

        def delete(self):
            self.tpg.network_portals.remove(self)
            lio.write("delete portal", self.ip_address)

    class LUN:
        def __init__(self, tpg, lun=None, storage_object=None):
            assert lun is not None and lun not in [l.lun for l in tpg.luns]
            self.parent_tpg, self.lun, self.storage_object = tpg, lun, storage_object
            tpg.luns.append(self)
            lio.write("lun", lun, storage_object.name)

        @property
        def mapped_luns(self):
            return [m for a in self.parent_tpg.node_acls for m in a.mapped_luns
                    if m.tpg_lun is self]

        def delete(self):
            self.parent_tpg.luns.remove(self)
            lio.write("delete lun", self.lun)

    class ACL:
        def __init__(self, tpg, wwn, mode="any"):
            assert mode == "create"
            lio.check("NodeACL")
            self.tpg, self.node_wwn, self.mapped_luns, self.session = tpg, wwn, [], None
            self.chap_userid = self.chap_password = ""
            self.chap_mutual_userid = self.chap_mutual_password = ""
            self._made = True
            tpg.node_acls.append(self)
            lio.write("acl", wwn)

        def __setattr__(self, k, v):
            if getattr(self, "_made", False):
                lio.write("acl setting", k)
            object.__setattr__(self, k, v)

        def delete(self):
            self.tpg.node_acls.remove(self)
            lio.write("delete acl", self.node_wwn)

    class MappedLUN:
        def __init__(self, acl, mapped_lun, tpg_lun, write_protect=False):
            lio.check("MappedLUN")
            self.acl, self.mapped_lun, self.write_protect = acl, mapped_lun, write_protect
            self.tpg_lun = next(l for l in acl.tpg.luns if l.lun == int(tpg_lun))
            acl.mapped_luns.append(self)
            lio.write("mapped lun", acl.node_wwn, mapped_lun)

        def delete(self):
            self.acl.mapped_luns.remove(self)
            lio.write("delete mapped lun", self.mapped_lun)

    return types.SimpleNamespace(
        UserBackedStorageObject=SO, FabricModule=FM, Target=Target, TPG=TPG,
        NetworkPortal=NP, LUN=LUN, NodeACL=ACL, MappedLUN=MappedLUN)


class FakeCluster:
    def image_size(self, ref):
        return 1 << 30


@pytest.fixture
def lio(monkeypatch, tmp_path):
    lio = FakeLIO()
    monkeypatch.setitem(sys.modules, "rtslib_fb", fake_rtslib(lio))
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    return lio


@pytest.fixture
def gw(lio):
    g = Gateway(daemon=FakeDaemon(), cluster=FakeCluster())
    g._root = lio   # storage_objects and targets: all a root needs here
    return g


@pytest.fixture
def portal():
    """127.0.0.1 with a port nobody listens on (the bind probe really binds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return parse_portal(f"127.0.0.1:{s.getsockname()[1]}")


def _chap(user="alice", secret=SECRET, mutual=None):
    return Chap(user, Secret(secret, "file /s"),
                "tgt" if mutual else None, Secret(mutual, "file /m") if mutual else None)


def _req(portal, **kw):
    kw.setdefault("initiators", [INIT])
    return ExportRequest(parse_image("rbd/img0"), target=T, portals=[portal], **kw)


# ----------------------------------------------------------------------------- export

def test_export_writes_in_order_then_rerun_changes_nothing(gw, lio, portal):
    rep = gw.export(_req(portal))
    kinds = [w[0] for w in lio.writes]
    firsts = [kinds.index(k) for k in ("backstore", "backstore attribute", "target", "tpg",
                                       "tpg attribute", "tpg parameter", "portal", "lun",
                                       "acl", "mapped lun", "enable")]
    assert firsts == sorted(firsts), kinds
    assert ("backstore", "rbd.img0", "max_data_area_mb=64", 1024) in lio.writes
    assert ("tpg attribute", "default_cmdsn_depth", "128") in lio.writes
    # the ACL comes after default_cmdsn_depth (it copies it), with its own depth
    assert kinds.index("acl") > lio.writes.index(("tpg attribute", "default_cmdsn_depth",
                                                  "128"))
    assert rep.changed and rep.lines[0] == f"exported rbd/img0 as LUN 0 of {T}"
    assert f"created target {T}" in rep.lines and f"portal {portal}" in rep.lines
    assert f"LUN 0 of {T} -> user:rbd/rbd.img0" in rep.lines
    assert f"  {INIT}: mapped LUN 0" in rep.lines
    assert any(l.startswith("created backstore user:rbd/rbd.img0: rbd/rbd/img0;"
                            "osd_op_timeout=30, 1 GiB, serial serial-rbd.img0") for l in rep.lines)
    assert rep.data == {"image": "rbd/img0", "backstore": "rbd.img0",
                        "serial": "serial-rbd.img0", "size": 1 << 30, "target": T, "lun": 0,
                        "portals": [str(portal)], "initiators": [INIT], "read_only": False,
                        "changed": True}
    assert f"  iscsiadm -m node -T {T} -p {portal} --login" in rep.lines

    before = list(lio.writes)
    again = gw.export(_req(portal))
    assert lio.writes == before
    assert not again.changed and again.data["changed"] is False
    assert again.lines[0] == f"rbd/img0 is already exported as LUN 0 of {T}: nothing to change"


def test_rerun_with_chap_changes_nothing_new_secret_is_set(gw, lio, portal):
    gw.export(_req(portal, chap={INIT: _chap(mutual=MUTUAL)}))
    acl = lio.targets[0].tpgs[0].node_acls[0]
    assert (acl.chap_userid, acl.chap_password, acl.chap_mutual_password) == \
        ("alice", SECRET, MUTUAL)
    before = list(lio.writes)
    assert not gw.export(_req(portal, chap={INIT: _chap(mutual=MUTUAL)})).changed
    assert lio.writes == before
    other = "another-secret-999"
    rep = gw.export(_req(portal, chap={INIT: _chap(secret=other, mutual=MUTUAL)}))
    assert rep.changed and acl.chap_password == other
    assert [w[0] for w in lio.writes[len(before):]] == ["acl setting"] * 4
    assert other not in "\n".join(rep.lines) + json.dumps(rep.data)


def test_second_image_on_the_same_target(gw, lio, portal):
    gw.export(_req(portal))
    n = len(lio.writes)
    rep = gw.export(ExportRequest(parse_image("rbd/img1"), target=T, initiators=[INIT]))
    new = lio.writes[n:]
    assert [w[0] for w in new] == ["backstore", "backstore attribute", "backstore attribute",
                                   "lun", "mapped lun"], new
    assert ("mapped lun", INIT, 1) in new
    assert rep.data["portals"] == [str(portal)] and rep.data["lun"] == 1


def test_failure_removes_what_was_created_and_redacts(gw, lio, portal):
    lio.fail.add("MappedLUN")
    with pytest.raises(ExtError) as e:
        gw.export(_req(portal, chap={INIT: _chap()}))
    assert e.value.code == "lio-error" and SECRET not in str(e.value)
    assert lio.storage_objects == [] and lio.targets == []
    deletes = [w[0] for w in lio.writes if w[0].startswith("delete")]
    assert deletes == ["delete acl", "delete lun", "delete portal", "delete target",
                       "delete backstore"]


def test_portal_failure_message(gw, lio, portal):
    lio.fail.add("NetworkPortal")
    with pytest.raises(ExtError, match=f"LIO could not open portal {portal}") as e:
        gw.export(_req(portal))
    assert e.value.code == "portal-in-use" and lio.targets == []


# ----------------------------------------------------------------------------- dry run

def test_dry_run_writes_nothing(gw, lio, portal):
    rep = gw.export(_req(portal, chap={INIT: _chap()}), dry_run=True)
    assert lio.writes == [] and lio.storage_objects == [] and lio.targets == []
    assert not rep.changed and rep.data["dry_run"] is True
    assert rep.lines[0] == f"dry run: exporting rbd/img0 as LUN 0 of {T} would make " \
                           f"these changes (none is made now):"
    assert f"  + target {T}" in rep.lines and f"  + {INIT}: mapped LUN 0" in rep.lines
    p = rep.data["plan"]
    assert p["backstore"]["create"] and p["backstore"]["size"] == 1 << 30
    assert SECRET not in "\n".join(rep.lines) + json.dumps(rep.data)
    # after the real export, the dry run plans nothing
    gw.export(_req(portal, chap={INIT: _chap()}))
    n = len(lio.writes)
    rep = gw.export(_req(portal, chap={INIT: _chap()}), dry_run=True)
    assert len(lio.writes) == n and rep.data["plan"]["empty"]
    assert rep.lines == [f"dry run: rbd/img0 is already exported as LUN 0 of {T}: "
                         f"nothing to change"]


def test_cli_dry_run_json_and_text(gw, lio, portal, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_MUTUAL_SECRET, MUTUAL)
    argv = ["export", "rbd/img0", "-t", T, "-i", INIT, "-p", str(portal), "--chap-user",
            "alice", "--chap-secret-file", _secret_file(tmp_path, "a", SECRET),
            "--mutual-user", "tgt", "--dry-run"]
    assert cli.main(["--json"] + argv, gw=gw) == 0
    out = capsys.readouterr().out
    d = json.loads(out)
    assert d["ok"] and d["dry_run"] and not d["changed"]
    acl = d["plan"]["acls"][0]
    assert acl["chap"]["user"] == "alice" and "from file" in acl["chap"]["secret"]
    assert acl["chap"]["mutual_secret"] == f"mutual secret from ${ENV_MUTUAL_SECRET}"
    assert cli.main(argv, gw=gw) == 0
    out += capsys.readouterr().out
    assert "dry run: exporting rbd/img0" in out and "+ portal" in out
    assert SECRET not in out and MUTUAL not in out
    assert lio.writes == []


def test_shell_dry_run(gw, lio, portal, tmp_path, monkeypatch):
    from configshell_fb import ConfigShell
    from targetcli.ui_node import UINode
    from targetcli_ext import shell
    sh = ConfigShell(str(tmp_path / "prefs"))
    node = shell.make_rbd_node_class()(UINode("/", shell=sh))
    node._gw = gw
    shown = []
    monkeypatch.setattr(sh.con, "display", lambda text, *a, **k: shown.append(text))
    node.ui_command_export("rbd/img0", target=T, portal=str(portal), initiator=INIT,
                           lun="3", dry_run="true")
    assert shown[0].startswith("dry run:") and f"  + LUN 3 of {T} -> user:rbd/rbd.img0" in shown
    assert lio.writes == []


def test_plan_is_checked_before_lio_is_read(gw, portal):
    gw.state = lambda iqn: pytest.fail("LIO read")
    with pytest.raises(ExtError) as e:
        gw.export(_req(portal, lun=70000), dry_run=True)
    assert e.value.code == "bad-lun"


def test_unexport_removes_lun_backstore_and_emptied_target(gw, lio, portal):
    gw.export(_req(portal))
    rep = gw.unexport(parse_image("rbd/img0", osd_op_timeout=None))
    assert lio.storage_objects == [] and lio.targets == []
    assert rep.lines == ["unexported rbd/img0", f"removed LUN 0 of {T}",
                         "removed backstore user:rbd/rbd.img0 (rbd/img0)",
                         f"removed target {T} (it had no LUN left)"]
    assert not gw.unexport(parse_image("rbd/img0", osd_op_timeout=None)).changed


# ----------------------------------------------------------------------------- list

def _kernel_tree(tmp_path, holder_pid: int | None):
    """sysfs with uio0 = the fake backstore's device; /proc with one holder of it."""
    from tcmu_rbd.lio import Kernel, Roots
    roots = Roots(sysfs=str(tmp_path / "sys"), proc=str(tmp_path / "proc"),
                  dev=str(tmp_path / "dev"))
    uio = tmp_path / "sys" / "class" / "uio" / "uio0"
    uio.mkdir(parents=True)
    (uio / "name").write_text("tcm-user/1/rbd.img0/rbd/rbd/img0;osd_op_timeout=30\n")
    (tmp_path / "proc").mkdir()
    if holder_pid:
        fd = tmp_path / "proc" / str(holder_pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "5").symlink_to(tmp_path / "dev" / "uio0")
        (fd.parent / "cmdline").write_bytes(b"tcmu-rbd-worker\0--uio\0uio0\0")
    return Kernel(roots)


def test_list_reports_device_holder_and_acls(gw, lio, portal, tmp_path):
    gw.export(_req(portal, chap={INIT: _chap(mutual=MUTUAL)}))
    gw.kernel = _kernel_tree(tmp_path, 4242)
    rep = gw.list()
    e = rep.data["exports"][0]
    assert rep.data["daemon_running"] is True and not rep.changed
    assert (e["image"], e["backstore"], e["uio"], e["served_by"], e["state"]) == \
        ("rbd/img0", "rbd.img0", "uio0", 4242, "served by pid 4242")
    lun = e["luns"][0]
    assert (lun["target"], lun["tpg"], lun["lun"], lun["portals"], lun["enabled"]) == \
        (T, 1, 0, [str(portal)], True)
    assert lun["acls"] == [{"initiator": INIT, "mapped_lun": 0, "chap": True,
                            "mutual_chap": True, "session": None}]
    assert rep.lines[0] == "TCMU daemon: running"
    assert "serial serial-rbd.img0  served by pid 4242" in rep.lines[1]
    assert f"    {INIT}  as LUN 0  mutual CHAP  not logged in" in rep.lines
    assert SECRET not in "\n".join(rep.lines) + json.dumps(rep.data)


def test_list_device_not_served(gw, lio, portal, tmp_path):
    gw.export(_req(portal))
    gw.kernel = _kernel_tree(tmp_path, None)
    gw.daemon = FakeDaemon(running=False)
    e = gw.list().data["exports"][0]
    assert e["served_by"] is None and e["state"] == \
        "NOT served: no process has the ring open (the daemon is not running)"
    gw.kernel = _kernel_tree(tmp_path / "none", None)
    (tmp_path / "none" / "sys" / "class" / "uio" / "uio0" / "name").write_text("other\n")
    assert gw.list().data["exports"][0]["state"] == "no uio device (not enabled?)"
