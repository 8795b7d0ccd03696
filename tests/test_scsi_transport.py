"""Standard INQUIRY's transport version descriptor: the worker's identity
hook (run before every INQUIRY) finds the fabrics the device is exported on
through tcmu_rbd.lio and claims iSCSI only when every LUN of it is on iSCSI.
A fake configfs in a temp dir; no kernel."""

import os
from pathlib import Path

from tcmu_rbd import lio, scsi
from tcmu_rbd import worker as wk


def _worker(tmp_path):
    core = tmp_path / "target" / "core"
    cfg = core / "user_1" / "disk0" / "wwn"
    cfg.mkdir(parents=True)
    (cfg / "vpd_unit_serial").write_text("T10 VPD Unit Serial Number: 0123-abcd\n")
    dev = lio.TcmuDevice("uio0", lio.UioName("1", "disk0", "rbd/rbd/img0"),
                         lio.Roots(configfs=str(core)))
    return wk.Worker(dev, None), core


def _export(core, fabric, wwn):
    """The LUN's directory linking to the device, and its line in the device's
    default ALUA group (where the kernel lists it; lio finds the LUNs there)."""
    d = core.parent / fabric / wwn / "tpgt_1" / "lun" / "lun_0"
    d.mkdir(parents=True)
    (d / "7f3a9c").symlink_to(Path(os.path.relpath(core / "user_1" / "disk0", d)))
    group = core / "user_1" / "disk0" / "alua" / "default_tg_pt_gp"
    group.mkdir(parents=True, exist_ok=True)
    with open(group / "members", "a") as f:
        f.write("%s/%s/tpgt_1/lun_0\n" % ({"iscsi": "iSCSI"}.get(fabric, fabric), wwn))


def _inquiry(w, lun):
    w._refresh_identity(lun)
    res = scsi.parse(bytes((0x12, 0, 0, 0, 96, 0)), lun, 96, None)
    assert res[:3] == (scsi.DONE, scsi.GOOD, None)
    return res[3]


def test_transport_descriptor_follows_the_fabrics(tmp_path):
    w, core = _worker(tmp_path)
    lun = scsi.Lun(num_blocks=1024)
    d = _inquiry(w, lun)
    assert lun.serial == "0123-abcd"
    assert d[58:66] == bytes.fromhex("00a00000046004c0")          # on no fabric: not known
    _export(core, "iscsi", "iqn.2003-01.org.x:gw1")
    assert _inquiry(w, lun)[58:66] == bytes.fromhex("00a00960046004c0")
    _export(core, "iscsi", "iqn.2003-01.org.x:gw2")
    assert _inquiry(w, lun)[60:62] == b"\x09\x60"
    _export(core, "loopback", "naa.5001405aaaaaaaaa")                 # mixed: not known
    assert _inquiry(w, lun)[60:62] == b"\x00\x00"
