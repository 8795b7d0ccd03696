"""The one model of a TCMU device (tcmu_rbd.lio) against a fake sysfs/configfs
in a temp dir."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_rbd import lio


@pytest.fixture
def roots(tmp_path):
    r = lio.Roots(sysfs=str(tmp_path / "sys"), configfs=str(tmp_path / "cfg"),
                  proc=str(tmp_path / "proc"), dev=str(tmp_path / "dev"))
    for d in (r.uio_class, r.modparams, r.proc, r.dev):
        Path(d).mkdir(parents=True)
    return r


def add(roots, minor, name, cfg="rbd/pool/img", hba=1, map_size="0x1000000"):
    u = Path(roots.uio_class) / f"uio{minor}"
    (u / "maps" / "map0").mkdir(parents=True)
    (u / "name").write_text(f"tcm-user/{hba}/{name}/{cfg}\n")
    (u / "maps" / "map0" / "size").write_text(map_size + "\n")
    d = Path(roots.configfs) / f"user_{hba}" / name
    for sub in ("attrib", "wwn", "action"):
        (d / sub).mkdir(parents=True)
    (Path(roots.dev) / f"uio{minor}").write_text("")
    return d


def test_uio_name():
    u = lio.UioName.parse("tcm-user/3/disk0/rbd/pool/ns/img@s;osd_op_timeout=3;conf=/e/c\n")
    assert (u.hba, u.name, u.subtype, u.image) == ("3", "disk0", "rbd", "pool/ns/img@s")
    assert str(u) == "tcm-user/3/disk0/rbd/pool/ns/img@s;osd_op_timeout=3;conf=/e/c"
    assert lio.UioName.parse("tcm-user/3/disk0") is None
    assert lio.UioName.parse("foo/1/a/rbd/p/i") is None
    assert lio.UioName.parse("tcm-user//a/rbd/p/i") is None
    assert u.with_config("rbd/p/j").dev_config == "rbd/p/j"
    assert lio.UioName("1", "x", "rbd").image == ""


def test_devices_in_uio_order_and_only_tcmu(roots):
    add(roots, 10, "ten")
    add(roots, 2, "two", "glfs/v@h/f")
    (Path(roots.uio_class) / "uio5").mkdir()
    (Path(roots.uio_class) / "uio5" / "name").write_text("uio_pdrv_genirq\n")
    (Path(roots.uio_class) / "uiox").mkdir()
    k = lio.Kernel(roots)
    assert [(d.uio, d.name.name, d.name.subtype) for d in k.devices()] == [
        ("uio2", "two", "glfs"), ("uio10", "ten", "rbd")]
    assert k.device("uio5") is None and k.device("uio99") is None
    assert lio.Kernel(dataclasses.replace(roots, sysfs="/nonexistent")).devices() == []


def test_device_attributes(roots):
    d = add(roots, 0, "disk0", hba=4)
    dev = lio.Kernel(roots).device("uio0")
    assert (dev.label, dev.node, dev.configfs) == (
        "disk0(uio0)", str(Path(roots.dev) / "uio0"), str(d))
    assert dev.map_size() == 0x1000000
    (d / "attrib" / "hw_block_size").write_text("4096\n")
    (d / "attrib" / "hw_max_sectors").write_text("garbage\n")
    assert dev.attr("hw_block_size", 512) == 4096
    assert dev.attr("hw_max_sectors", 1024) == 1024  # unreadable: default
    assert dev.attr("emulate_write_cache", 0) == 0  # absent: default
    (d / "wwn" / "vpd_unit_serial").write_text("T10 VPD Unit Serial Number: abc-123\n")
    assert dev.serial() == "abc-123"
    # size: attrib/dev_size, else "Size:" in info, else 0
    assert dev.size() == 0
    (d / "info").write_text("Status: ACTIVATED  Max Queue Depth: 0  Size: 1073741824  Foo\n")
    assert dev.size() == 1 << 30
    (d / "attrib" / "dev_size").write_text("2147483648\n")
    assert dev.size() == 2 << 30
    (Path(roots.uio_class) / "uio0" / "maps" / "map0" / "size").unlink()
    with pytest.raises(OSError, match="map0/size"):
        dev.map_size()


def test_actions_and_presence(roots, caplog):
    d = add(roots, 0, "disk0")
    dev = lio.Kernel(roots).device("uio0")
    assert dev.block() and (d / "action" / "block_dev").read_text() == "1\n"
    assert dev.block(False) and (d / "action" / "block_dev").read_text() == "0\n"
    assert dev.reset_ring() and (d / "action" / "reset_ring").read_text() == "1\n"
    assert dev.set_attr("tmr_notification", 1)
    assert (d / "attrib" / "tmr_notification").read_text() == "1\n"
    (d / "action").rename(d / "gone")
    assert dev.block() is False and "device=disk0: cannot write 1" in caplog.text
    assert dev.present()
    assert dev.reconfigured("rbd/p/j").name.dev_config == "rbd/p/j"
    (Path(roots.uio_class) / "uio0" / "name").write_text("tcm-user/1/other/rbd/p/i\n")
    assert not dev.present()  # the uio now names another device
    (Path(roots.uio_class) / "uio0" / "name").unlink()
    assert not dev.present()


def test_modparams(roots, caplog):
    k = lio.Kernel(roots)
    assert k.module_loaded()
    assert k.modparam("block_netlink", 1) is None  # not in this kernel
    p = Path(roots.modparams) / "block_netlink"
    p.write_text("0\n")
    assert k.modparam("block_netlink", 1) is True and p.read_text() == "1\n"
    p.unlink()
    p.mkdir()  # exists but cannot be written
    assert k.modparam("block_netlink", 1) is False and "cannot write 1" in caplog.text


def test_device_of_storage_object(roots):
    add(roots, 0, "disk0", hba=1)
    add(roots, 1, "disk0", hba=2)

    class SO:
        name = "disk0"
        path = str(Path(roots.configfs) / "user_2" / "disk0")

    k = lio.Kernel(roots)
    assert k.device_of_storage_object(SO()).uio == "uio1"
    SO.name = "disk9"
    assert k.device_of_storage_object(SO()) is None


def test_holders_from_proc(roots):
    """A process with /dev/uio3 open is found through the real /proc."""
    add(roots, 3, "disk3")
    add(roots, 4, "disk4")
    roots = dataclasses.replace(roots, proc="/proc")
    node = Path(roots.dev) / "uio3"
    p = subprocess.Popen([sys.executable, "-c",
                          "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                          "print('OPEN', flush=True); time.sleep(60)",
                          str(node), "--uio", "uio3", "--ctl-fd", "5"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "OPEN"
        held = lio.Kernel(roots).uio_holders()
        assert [h.pid for h in held["uio3"]] == [p.pid] and "uio4" not in held
        dev = lio.Kernel(roots).device("uio3")
        (h,) = dev.holders()
        assert h.is_worker_of("uio3") and not h.is_worker_of("uio4")
        assert h.argv[-4:] == ("--uio", "uio3", "--ctl-fd", "5")
        assert h.describe().startswith(f"pid {p.pid} ({sys.executable} -c import")
        assert lio.Kernel(roots).device("uio4").holders() == []
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_holder_recognises_workers_by_their_contract_arguments():
    w = lio.Holder(1, ("python3", "-m", "tcmu_rbd.worker", "--uio", "uio0", "--ctl-fd", "7"))
    assert w.is_worker_of("uio0") and not w.is_worker_of("uio1")
    assert not lio.Holder(2, ("fio", "--uio", "uio0")).is_worker_of("uio0")
    assert not lio.Holder(3, ("x", "--ctl-fd", "7", "--uio")).is_worker_of("uio0")
    # a worker host serves whichever devices it holds
    host = lio.Holder(5, ("python3", "-m", "tcmu_rbd.worker", "--host", "--ctl-fd", "7"))
    assert host.is_worker_of("uio0") and host.is_worker_of("uio9")
    assert lio.Holder(4, ()).describe() == "pid 4 (?)"


def export(roots, fabric, wwn, lun, hba, name, tpg="tpgt_1", alua=True):
    """A fabric LUN linking to core/user_<hba>/<name>, as configfs shows it, and
    (unless LIO passes ALUA through) its line in the device's default ALUA group,
    with the fabric named as the kernel writes it there."""
    d = Path(roots.target) / fabric / wwn / tpg / "lun" / f"lun_{lun}"
    d.mkdir(parents=True)
    (d / "alua_tg_pt_gp").write_text("default_tg_pt_gp\n")
    (d / "statistics").mkdir()
    dev = Path(roots.configfs) / f"user_{hba}" / name
    (d / "a1b2c3d4e5").symlink_to(Path(os.path.relpath(dev, d)))
    if alua:
        group = dev / "alua" / "default_tg_pt_gp"
        group.mkdir(parents=True, exist_ok=True)
        kernel_name = {"iscsi": "iSCSI"}.get(fabric, fabric)
        with open(group / "members", "a") as f:
            f.write(f"{kernel_name}/{wwn}/{tpg}/lun_{lun}\n\0")


def test_fabrics_the_device_is_exported_on(roots):
    add(roots, 0, "disk0", hba=1)
    add(roots, 1, "disk1", hba=1)
    k = lio.Kernel(roots)
    dev0, dev1 = k.device("uio0"), k.device("uio1")
    assert roots.target == str(Path(roots.configfs).parent)
    assert dev0.fabrics() == set()
    export(roots, "iscsi", "iqn.2003-01.org.x:gw1", 0, 1, "disk0")
    export(roots, "iscsi", "iqn.2003-01.org.x:gw2", 3, 1, "disk0", tpg="tpgt_2")
    export(roots, "loopback", "naa.5001405aaaaaaaaa", 0, 1, "disk1")
    (Path(roots.target) / "iscsi" / "discovery_auth").mkdir()
    assert dev0.fabrics() == {"iscsi"}
    assert dev1.fabrics() == {"loopback"}
    export(roots, "vhost", "naa.5001405bbbbbbbbb", 0, 1, "disk0")
    assert dev0.fabrics() == {"iscsi", "vhost"}
    # another device of the same name on another HBA is not this one
    add(roots, 2, "disk0", hba=2)
    assert k.device("uio2").fabrics() == set()


def test_fabrics_where_lio_passes_alua_through(roots):
    """No LUN joins an ALUA group then (attrib/alua_support 0): every fabric LUN
    is read instead of the groups' members."""
    d = add(roots, 0, "disk0", hba=1)
    (d / "attrib" / "alua_support").write_text("0\n")
    dev = lio.Kernel(roots).device("uio0")
    export(roots, "iscsi", "iqn.2003-01.org.x:gw1", 0, 1, "disk0", alua=False)
    export(roots, "loopback", "naa.5001405aaaaaaaaa", 2, 1, "disk0", alua=False)
    assert dev.fabrics() == {"iscsi", "loopback"}
    (d / "attrib" / "alua_support").write_text("1\n")
    assert dev.fabrics() == set()          # emulated: the groups (none here) say where it is


def alua_group(dev_dir, name, gid, state, members="", access_type="Implicit", support=("active_optimized",
               "active_nonoptimized", "transitioning")):
    g = Path(dev_dir) / "alua" / name
    g.mkdir(parents=True)
    for attr, v in (("tg_pt_gp_id", gid), ("alua_access_state", state),
                    ("alua_access_type", access_type), ("implicit_trans_secs", 45),
                    ("preferred", 0), ("members", members)):
        (g / attr).write_text(f"{v}\n")
    for s in ("active_optimized", "active_nonoptimized", "standby", "unavailable",
              "lba_dependent", "offline", "transitioning"):
        (g / f"alua_support_{s}").write_text("1\n" if s in support else "0\n")
    return g


def test_alua_groups_members_and_their_tpgs(roots):
    d = add(roots, 0, "gw1.rbd.ha0")
    t = "iqn.2003-01.org.x:ha"
    tpg = Path(roots.target) / "iscsi" / t / "tpgt_1"
    tpg.mkdir(parents=True)
    (tpg / "enable").write_text("1\n")
    alua_group(d, "default_tg_pt_gp", 0, 0, access_type="Implicit and Explicit")
    alua_group(d, "gw2", 2, 0)
    # the kernel writes the fabric's own name ("iSCSI"), configfs has "iscsi"
    alua_group(d, "gw1", 1, 1, members=f"iSCSI/{t}/tpgt_1/lun_0\n")
    os.remove(Path(d) / "alua" / "gw2" / "preferred")      # a missing attribute: default
    dev = lio.Kernel(roots).device("uio0")
    groups = dev.alua_groups()
    assert groups[0].access_type == 3      # configfs reads it back as text
    assert [(g.name, g.id, g.state) for g in groups] == [
        ("default_tg_pt_gp", 0, 0), ("gw1", 1, 1), ("gw2", 2, 0)]
    gw1 = groups[1]
    assert gw1.members == (lio.AluaMember("iscsi", t, 1, "lun_0", True),) and gw1.local
    assert gw1.supported == 0x83 and gw1.access_type == 1 and gw1.implicit_trans_secs == 45
    assert not groups[2].local
    assert dev.alua_groups(skip=("default_tg_pt_gp",)) == groups[1:]    # skipped
    (tpg / "enable").write_text("0\n")
    assert not dev.alua_groups()[1].local
    # writes: an implicit transition and the TPG switch
    assert dev.set_alua_state("gw1", 0)
    assert (d / "alua" / "gw1" / "alua_access_state").read_text() == "0\n"
    assert dev.enable_tpg(gw1.members[0], True) and (tpg / "enable").read_text() == "1\n"


def test_alua_groups_of_a_device_without_any(roots, caplog):
    add(roots, 0, "disk0")
    dev = lio.Kernel(roots).device("uio0")
    assert dev.alua_groups() == []
    assert not dev.set_alua_state("nosuch", 0)
    assert "cannot set ALUA group nosuch" in caplog.text


def test_reachable_only_when_mapped_in_an_enabled_tpg(roots):
    add(roots, 0, "disk0", hba=1)
    dev = lio.Kernel(roots).device("uio0")
    assert not dev.reachable()                       # on no LUN
    export(roots, "iscsi", "iqn.2003-01.org.x:t", 0, 1, "disk0")
    tpg = Path(roots.target) / "iscsi" / "iqn.2003-01.org.x:t" / "tpgt_1"
    (tpg / "enable").write_text("0\n")
    (tpg / "attrib").mkdir()
    (tpg / "attrib" / "generate_node_acls").write_text("0\n")
    acl = tpg / "acls" / "iqn.2024-01.org.x:init" / "lun_0"
    acl.mkdir(parents=True)
    assert not dev.reachable()                       # disabled, not mapped
    (tpg / "enable").write_text("1\n")
    assert not dev.reachable()                       # enabled, no ACL maps it (sync's window)
    (acl / "f00d").symlink_to(os.path.relpath(tpg / "lun" / "lun_0", acl))
    assert dev.reachable()
    (acl / "f00d").unlink()
    (tpg / "attrib" / "generate_node_acls").write_text("1\n")
    assert dev.reachable()                           # demo mode maps every LUN
    # a fabric without enable or ACLs (tcm_loop)
    add(roots, 1, "disk1", hba=1)
    export(roots, "loopback", "naa.5001405aaaaaaaaa", 0, 1, "disk1")
    assert lio.Kernel(roots).device("uio1").reachable()


def test_alua_members_as_the_kernel_writes_them(roots):
    """target_tg_pt_gp_members_show ends every line with "\\n\\0": with a second
    member (an image on iSCSI and on tcm_loop) its line starts with a NUL."""
    d = add(roots, 0, "rbd.img0")
    t, naa = "iqn.2003-01.org.x:two", "naa.5001405aabbccdd"
    for fabric, wwn in (("iscsi", t), ("loopback", naa)):
        tpg = Path(roots.target) / fabric / wwn / "tpgt_1"
        tpg.mkdir(parents=True)
        if fabric == "iscsi":
            (tpg / "enable").write_text("1\n")
    g = alua_group(d, "default_tg_pt_gp", 0, 0)
    (g / "members").write_bytes(f"iSCSI/{t}/tpgt_1/lun_0\n\0loopback/{naa}/tpgt_1/lun_0\n\0".encode())
    members = lio.Kernel(roots).device("uio0").alua_groups()[0].members
    assert [(m.fabric, m.wwn, m.tpgt, m.lun) for m in members] == [
        ("iscsi", t, 1, "lun_0"), ("loopback", naa, 1, "lun_0")]
