"""targetcli-rbd export --local: an image as a SCSI disk of this host through LIO's
loopback fabric, against the in-memory LIO of test_targetcli_apply.py (its stand-in
for rtslib-fb) and a sysfs/configfs/proc tree in tmp_path laid out as the kernel
lays it out for tcm_loop (``tpgt_1/address``, ``class/scsi_device/H:C:T:L``).
The plan's rules are also checked pure, against a LioState.  The real kernel
(mkfs, data, UNMAP, WRITE SAME, GET LBA STATUS, unexport) is tested in the VM
(tests/vm/guest/ops.sh, the local block device section)."""

from __future__ import annotations

import json

import pytest

from targetcli_ext import cli, localdisk
from targetcli_ext.localdisk import LocalDisk, local_disk, users
from targetcli_ext.plan import ExportRequest, check_request, plan_local
from targetcli_ext.spec import ExtError, parse_image
from targetcli_ext.state import BackstoreState, LioState
from tcmu_rbd.lio import Kernel, Roots
from test_targetcli_apply import INIT, T, _req, gw, lio, portal  # noqa: F401 (fixtures)

WWN = "naa.5001405000000000"     # the fake rtslib's first generated WWN
IMG = parse_image("rbd/img0")


@pytest.fixture
def roots(tmp_path, gw, monkeypatch):  # noqa: F811
    """The kernel's trees of gw (tcm_loop gives host 3, so the disk is 3:0:1:0)."""
    r = Roots(sysfs=str(tmp_path / "sys"), configfs=str(tmp_path / "cfg/target/core"),
              proc=str(tmp_path / "proc"), dev=str(tmp_path / "dev"))
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mounts").write_text("/dev/sda1 / ext4 rw 0 0\n")
    (tmp_path / "dev").mkdir()
    gw.kernel = Kernel(r)
    monkeypatch.setattr(localdisk, "WAIT_DISK", 0.0)
    return r


def kernel_disk(r: Roots, wwn=WWN, name="sdb", address="3:0:1"):
    """What tcm_loop and the sd driver make for LUN 0 of TPG 1 of ``wwn``."""
    import os
    tpg = os.path.join(r.target, "loopback", wwn, "tpgt_1")
    os.makedirs(tpg, exist_ok=True)
    with open(os.path.join(tpg, "address"), "w") as f:
        f.write(address + "\n")
    dev = os.path.join(r.sysfs, "class", "scsi_device", f"{address}:0", "device")
    os.makedirs(os.path.join(dev, "block", name), exist_ok=True)
    with open(os.path.join(dev, "state"), "w") as f:
        f.write("running\n")
    os.makedirs(os.path.join(r.sysfs, "block", name, "holders"), exist_ok=True)
    open(os.path.join(r.dev, name), "w").close()
    return dev


def _local(**kw):
    return ExportRequest(IMG, local=True, **kw)


def _ref():
    return parse_image("rbd/img0", osd_op_timeout=None)


# ----------------------------------------------------------------------------- export

def test_local_export_creates_a_loopback_lun_and_names_the_disk(gw, lio, roots):  # noqa: F811
    kernel_disk(roots)
    rep = gw.export(_local())
    assert [w[:2] for w in lio.writes] == [
        ("backstore", "rbd.img0"), ("backstore attribute", "cmd_time_out"),
        ("backstore attribute", "qfull_time_out"), ("target", WWN), ("tpg", 1),
        ("lun", 0)]
    assert [t.fabric_module.name for t in lio.targets] == ["loopback"]
    assert rep.changed and rep.lines[0] == \
        "exported rbd/img0 as the local disk /dev/sdb (SCSI 3:0:1:0)"
    assert f"created loopback target {WWN}, LUN 0 -> user:rbd/rbd.img0" in rep.lines
    assert not any("iscsiadm" in line for line in rep.lines)
    assert rep.data["local"] == {"target": WWN, "lun": 0, "device": "/dev/sdb",
                                 "address": "3:0:1:0"}
    before = list(lio.writes)
    again = gw.export(_local())
    assert lio.writes == before and not again.changed
    assert again.lines[0] == "rbd/img0 already has its local disk /dev/sdb (SCSI 3:0:1:0): " \
                             "nothing to change"


def test_no_block_device_yet_is_said(gw, lio, roots):  # noqa: F811
    rep = gw.export(_local())
    assert rep.lines[0] == "exported rbd/img0 as the local disk no SCSI address from " \
                           "the kernel"
    assert any(line.startswith("warning: the kernel shows no block device") for line in rep.lines)
    assert rep.data["local"]["device"] is None


def test_local_dry_run_writes_nothing(gw, lio, roots):  # noqa: F811
    rep = gw.export(_local(), dry_run=True)
    assert lio.writes == [] and not rep.changed
    assert rep.lines[0] == "dry run: exporting rbd/img0 as a local disk of this host " \
                           "would make these changes (none is made now):"
    assert "  + loopback target (WWN generated), TPG 1 with its nexus" in rep.lines
    p = rep.data["plan"]
    assert p["local"] and p["create_target"] and p["backstore"]["size"] == 1 << 30


def test_failure_removes_the_backstore_again(gw, lio, roots):  # noqa: F811
    lio.fail.add("Target loopback")
    with pytest.raises(ExtError) as e:
        gw.export(_local())
    assert e.value.code == "lio-error" and lio.storage_objects == [] and lio.targets == []


def test_local_next_to_iscsi_shares_the_backstore(gw, lio, roots, portal):  # noqa: F811
    gw.export(_req(portal))
    n = len(lio.writes)
    kernel_disk(roots)
    rep = gw.export(_local())
    assert [w[0] for w in lio.writes[n:]] == ["target", "tpg", "lun"]
    assert f"its iSCSI LUN(s) share the backstore: LUN 0 of {T}" in rep.lines
    # the iSCSI export is still in place; the local LUN does not make it "elsewhere"
    n = len(lio.writes)
    assert not gw.export(_req(portal)).changed and len(lio.writes) == n
    e = gw.list().data["exports"][0]
    assert [(x["target"], x["lun"]) for x in e["luns"]] == [(T, 0)]
    assert e["local"] == [{"target": WWN, "tpg": 1, "lun": 0, "device": "/dev/sdb",
                           "address": "3:0:1:0"}]
    line = f"  local disk /dev/sdb (SCSI 3:0:1:0)  LUN 0 of loopback target {WWN}"
    assert line in gw.list().lines


def test_iscsi_after_local_reuses_the_backstore(gw, lio, roots, portal):  # noqa: F811
    gw.export(_local())
    n = len(lio.writes)
    rep = gw.export(_req(portal))
    assert "backstore" not in [w[0] for w in lio.writes[n:]] and rep.data["lun"] == 0


# ----------------------------------------------------------------------------- unexport

def test_unexport_refuses_a_mounted_disk_then_removes_everything(gw, lio, roots):  # noqa: F811
    import os
    kernel_disk(roots)
    gw.export(_local())
    mounts = os.path.join(roots.proc, "self", "mounts")
    with open(mounts, "a") as f:
        f.write("/dev/sdb /mnt/backup ext4 rw 0 0\n")
    with pytest.raises(ExtError, match=r"in use \(/dev/sdb mounted on /mnt/backup\)") as e:
        gw.unexport(_ref())
    assert e.value.code == "disk-busy" and len(lio.targets) == 1 and lio.storage_objects
    with open(mounts, "w") as f:
        f.write("")
    rep = gw.unexport(_ref())
    assert rep.lines == ["unexported rbd/img0",
                         f"removed LUN 0 of {WWN}: the local disk /dev/sdb (SCSI 3:0:1:0)",
                         f"removed loopback target {WWN}",
                         "removed backstore user:rbd/rbd.img0 (rbd/img0)"]
    assert lio.targets == [] and lio.storage_objects == []
    assert rep.data["local_disks"] == ["/dev/sdb"]
    assert not gw.unexport(_ref()).changed


def test_unexport_local_keeps_the_iscsi_lun(gw, lio, roots, portal):  # noqa: F811
    kernel_disk(roots)
    gw.export(_req(portal))
    gw.export(_local())
    rep = gw.unexport(_ref(), local=True)
    assert rep.lines[0] == "unexported rbd/img0 (its local disk)"
    assert f"removed loopback target {WWN}" in rep.lines
    assert [t.wwn for t in lio.targets] == [T] and len(lio.storage_objects) == 1
    again = gw.unexport(_ref(), local=True)
    assert not again.changed and again.lines == ["rbd/img0 has no local disk: nothing to do"]
    # the last LUN going with --local takes the backstore too
    gw.unexport(_ref())
    gw.export(_local())
    assert "removed backstore user:rbd/rbd.img0 (rbd/img0)" in \
        gw.unexport(_ref(), local=True).lines and lio.storage_objects == []


def test_force_sets_the_disk_offline_first(gw, lio, roots):  # noqa: F811
    import os
    dev = kernel_disk(roots)
    gw.export(_local())
    gw.unexport(_ref(), force=True)
    with open(os.path.join(dev, "state")) as f:
        assert f.read() == "offline"
    assert lio.targets == []


def test_disk_users(tmp_path):
    import os
    r = Roots(sysfs=str(tmp_path / "sys"), proc=str(tmp_path / "proc"))
    os.makedirs(tmp_path / "sys/block/sdc/sdc1/holders/dm-0")
    os.makedirs(tmp_path / "proc/self")
    (tmp_path / "proc/self/mounts").write_text("/dev/sdc2 /srv xfs rw 0 0\n")
    (tmp_path / "proc/swaps").write_text("Filename Type Size Used Priority\n"
                                         "/dev/sdc3 partition 1024 0 -2\n")
    for p in ("sdc2", "sdc3"):
        os.makedirs(tmp_path / "sys/block/sdc" / p)
    assert users(r, LocalDisk("3:0:1:0", "sdc")) == [
        "/dev/sdc2 mounted on /srv", "/dev/sdc3 is swap", "/dev/sdc1 held by dm-0"]
    assert users(r, LocalDisk("3:0:1:0", "sdd")) == []
    assert local_disk(r, WWN, 1, 0) is None   # no address: a kernel before 4.5


# ----------------------------------------------------------------------------- refusals

def test_iscsi_options_with_local_are_refused(gw, capsys):  # noqa: F811
    rc = cli.main(["export", "rbd/img0", "--local", "-i", INIT, "--lun", "3"], gw=gw)
    err = capsys.readouterr().err
    assert rc == 2 and "--initiator, --lun: --local makes a SCSI disk of this host" in err
    rc = cli.main(["--json", "export", "rbd/img0", "--local", "--shared", "-t", T],
                  store=object())
    out = json.loads(capsys.readouterr().out)
    assert rc == 2 and "--local and --shared exclude each other" in out["error"]
    assert cli.main(["unexport", "rbd/img0", "--shared", "--local"], store=object()) == 2


def test_a_shared_image_gets_no_local_disk():
    state = LioState(backstores=(BackstoreState("gw1.rbd.img0", IMG, luns=((T, 0),),
                                                groups=("gw1", "gw2")),))
    with pytest.raises(ExtError, match="served by several gateways") as e:
        plan_local(check_request(_local()), state)
    assert e.value.code == "shared-image"


def test_plan_local_pure():
    req = check_request(_local())
    assert req.target is None
    plan = plan_local(req, LioState())
    assert plan.new_backstore.name == "rbd.img0" and plan.target is None and not plan.empty
    have = LioState(backstores=(BackstoreState("rbd.img0", IMG, wwn="s0", size=1 << 30,
                                               local=(WWN,)),))
    plan = plan_local(req, have)
    assert plan.empty and plan.describe() == [] and plan.serial == "s0"
    orphan = LioState(backstores=(BackstoreState("rbd.img0", IMG),))
    with pytest.raises(ExtError, match="that no LUN uses"):
        plan_local(req, orphan)


def test_resize_rescans_the_local_disk(gw, lio, roots):  # noqa: F811
    import os
    dev = kernel_disk(roots)
    gw.export(_local())

    class Cluster:
        size = 1 << 30

        def image_size(self, ref):
            return self.size

        def resize(self, ref, size):
            self.size = size
    gw.cluster = Cluster()
    rep = gw.resize(_ref(), "2G")
    assert ("backstore attribute", "dev_size", str(2 << 30)) in lio.writes
    assert "the local disk /dev/sdb (SCSI 3:0:1:0) is rescanned" in rep.lines
    with open(os.path.join(dev, "rescan")) as f:
        assert f.read() == "1"
