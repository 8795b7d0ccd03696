"""``targetcli-rbd list`` for LUNs on several gateways: the owner and every path,
from the local ALUA groups and the mgr's ``service status``.  The formatter
(targetcli_ext/paths.py) on plain records, then status.list_report over a fake
configfs/sysfs tree (tcmu_rbd.lio reads it) and stand-ins for rtslib's objects; the
real ``service status`` read is in test_service_map_cluster.py."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from targetcli_ext import paths
from targetcli_ext.spec import ExtError, parse_image
from targetcli_ext.status import list_report
from tcmu_rbd.lio import Kernel, Roots

T = "iqn.2003-01.org.linux-iscsi.lab:rbd"
ST = {"tcmu-runner": {"gw1:rbd/img0": {"status": {"lock_owner": "true"}},
                      "gw2:rbd/img0": {"status": {"lock_owner": "false"}}}}


# --------------------------------------------------------------------------- pure

def group(name, gid, state, members=(), local=None):
    ms = [{"target": T, "tpg": tpg, "lun": 0, "enabled": True} for tpg in members]
    return {"name": name, "id": gid, "state": state, "state_name": paths.state_name(state),
            "local": bool(members) if local is None else local, "members": ms}


def export(image, groups, luns=()):
    return {"image": image, "alua_groups": groups,
            "luns": [{"target": T, "tpg": tpg, "lun": 0, "portals": [portal]}
                     for tpg, portal in luns]}


def test_two_gateways_on_one_host():
    es = [export("rbd/img0", [group("gw1", 1, 0, [1]), group("gw2", 2, 1)],
                 [(1, "127.0.0.1:3260")]),
          export("rbd/img0", [group("gw1", 1, 0), group("gw2", 2, 1, [2])],
                 [(2, "127.0.0.2:3260")])]
    view = paths.multipath_view(es, ST)
    assert [(p["gateway"], p["tpg"], p["portals"], p["state_name"], p["lock_owner"])
            for p in view[0]["paths"]] == [
        ("gw1", 1, ["127.0.0.1:3260"], "active/optimized", True),
        ("gw2", 2, ["127.0.0.2:3260"], "active/non-optimized", False)]
    assert (view[0]["owners"], view[0]["owner_from"], view[0]["luns"]) == \
        (["gw1"], "service map", [0])
    assert paths.multipath_lines(view) == [
        "rbd/img0  lun 0  owner gw1  paths: gw1 (127.0.0.1:3260 tpg 1) active/optimized, "
        "gw2 (127.0.0.2:3260 tpg 2) active/non-optimized"]


def test_a_groups_state_comes_from_the_backstore_it_is_local_on():
    # gw1's daemon has not yet seen the move; gw2's own backstore says it is AO
    es = [export("rbd/img0", [group("gw1", 1, 1, [1]), group("gw2", 2, 1)]),
          export("rbd/img0", [group("gw1", 1, 1), group("gw2", 2, 0, [2])])]
    states = {p["gateway"]: p["state"] for p in paths.multipath_view(es, ST)[0]["paths"]}
    assert states == {"gw1": 1, "gw2": 0}


def test_remote_gateway_its_tpg_portal_when_known_here():
    es = [export("rbd/img0", [group("gw1", 1, 0, [1]), group("gw2", 2, 1)],
                 [(1, "10.0.0.1:3260")])]
    line = paths.multipath_lines(paths.multipath_view(es, ST))[0]
    assert line.endswith("gw1 (10.0.0.1:3260 tpg 1) active/optimized, "
                         "gw2 (tpg 2) active/non-optimized")
    # another LUN of the target is in gw2's TPG here: its portal is gw2's
    es.append(export("rbd/other", [], [(2, "10.0.0.2:3260")]))
    line = paths.multipath_lines(paths.multipath_view(es, ST))[0]
    assert "gw2 (10.0.0.2:3260 tpg 2) active/non-optimized" in line


def test_without_the_service_map_the_owner_is_the_ao_group():
    es = [export("rbd/img0", [group("gw1", 1, 1, [1]), group("gw2", 2, 0)])]
    view = paths.multipath_view(es, None, "client.iscsi may not read it (add mgr 'allow r' "
                                          "to its caps)")
    assert view[0]["owners"] == ["gw2"] and view[0]["owner_from"] == "ALUA"
    assert view[0]["paths"][0]["in_service_map"] is None
    assert paths.multipath_lines(view)[0].startswith(
        "rbd/img0  lun 0  owner gw2 (by ALUA; service map: client.iscsi may not read it "
        "(add mgr 'allow r' to its caps))  paths: gw1 (tpg 1) active/non-optimized, ")


def test_service_map_oddities_are_shown():
    es = [export("rbd/img0", [group("gw1", 1, 0, [1]), group("gw2", 2, 0xF),
                              group("gw4", 4, 7)])]
    st = {"tcmu-runner": {"gw1:rbd/img0": {"status": {"lock_owner": "true"}},
                          "gw3:rbd/img0": {"status": {"lock_owner": "true"}}}}
    view = paths.multipath_view(es, st)
    assert view[0]["owners"] == ["gw1", "gw3"]
    line = paths.multipath_lines(view)[0]
    assert "owner gw1, gw3 (more than one!)" in line
    assert "gw2 (tpg 2) transitioning (not in the service map)" in line
    assert "gw4 (tpg 4) state 0x7 (not in the service map)" in line
    assert line.endswith("gw3 (in the service map, no ALUA group here)")
    view = paths.multipath_view(es, {})
    assert "owner none  paths" in paths.multipath_lines(view)[0]


def test_single_gateway_exports_have_no_entry():
    es = [export("rbd/img0", [group(paths.DEFAULT_GROUP, 0, 0, [1])], [(1, "x:3260")]),
          export("rbd/img1", [])]
    assert paths.multipath_view(es, ST) == []


# ------------------------------------------------------- list_report over fake trees

class Tree:
    """sysfs (uio), configfs (core/user_1/<bs>/alua, iscsi/<wwn>/tpgt_N/enable)."""

    def __init__(self, root: Path):
        self.root = root
        self.roots = Roots(sysfs=str(root / "sys"), configfs=str(root / "cfg/target/core"),
                           proc=str(root / "proc"), dev=str(root / "dev"))
        (root / "proc").mkdir(parents=True)
        self.uios = 0

    def backstore(self, name, config, groups):
        """groups: [(name, id, state, [tpg tags of members])]."""
        uio = Path(self.roots.sysfs) / "class" / "uio" / f"uio{self.uios}"
        self.uios += 1
        uio.mkdir(parents=True)
        (uio / "name").write_text(f"tcm-user/1/{name}/rbd/{config}\n")
        d = Path(self.roots.configfs) / "user_1" / name
        for gname, gid, state, members in groups:
            g = d / "alua" / gname
            g.mkdir(parents=True)
            for attr, v in (("tg_pt_gp_id", gid), ("alua_access_state", state),
                            ("alua_access_type", 1), ("implicit_trans_secs", 45),
                            ("preferred", 0)) + tuple(
                    (f"alua_support_{x}", int(x != "lba_dependent")) for x in (
                        "active_optimized", "active_nonoptimized", "standby", "unavailable",
                        "offline", "lba_dependent", "transitioning")):
                (g / attr).write_text(f"{v}\n")
            # the kernel names the fabric "iSCSI" here (its configfs directory is "iscsi")
            (g / "members").write_text("".join(f"iSCSI/{T}/tpgt_{t}/lun_0\n" for t in members))
        return types.SimpleNamespace(name=name, path=str(d), size=1 << 30,
                                     wwn=f"serial-{name}", config=f"rbd/{config}",
                                     status="activated", attached_luns=[])


def tpg(tag, ip):
    return types.SimpleNamespace(
        tag=tag, enable=True, node_acls=[], parent_target=types.SimpleNamespace(
            wwn=T, fabric_module=types.SimpleNamespace(name="iscsi")),
        network_portals=[types.SimpleNamespace(ip_address=ip, port=3260)],
        get_attribute=lambda k: "0")


def lun(so, tp):
    so.attached_luns.append(types.SimpleNamespace(lun=0, parent_tpg=tp))


def two_gateways(tmp_path):
    t = Tree(tmp_path)
    cfg = "rbd/img0;osd_op_timeout=30"
    b1 = t.backstore("gw1.rbd.img0", cfg, [("gw1", 1, 0, [1]), ("gw2", 2, 1, [])])
    b2 = t.backstore("gw2.rbd.img0", cfg, [("gw1", 1, 0, []), ("gw2", 2, 1, [2])])
    lun(b1, tpg(1, "127.0.0.1"))
    lun(b2, tpg(2, "127.0.0.2"))
    ref = parse_image("rbd/img0", check_files=False)
    return t, [(b1, ref), (b2, ref)]


def test_list_shows_owner_and_paths(tmp_path):
    t, bs = two_gateways(tmp_path)
    asked = []

    def service_status(cfg):
        asked.append(cfg.image_spec)
        return ST
    rep = list_report(bs, True, Kernel(t.roots), service_status=service_status)
    assert asked == ["rbd/img0"]                       # one read for the whole listing
    assert rep.lines[-1] == (
        "rbd/img0  lun 0  owner gw1  paths: gw1 (127.0.0.1:3260 tpg 1) active/optimized, "
        "gw2 (127.0.0.2:3260 tpg 2) active/non-optimized")
    assert rep.lines[-2].startswith("LUNs on several gateways")
    g = rep.data["exports"][0]["alua_groups"]
    assert [(x["name"], x["id"], x["state_name"], [m["tpg"] for m in x["members"]])
            for x in g] == [("gw1", 1, "active/optimized", [1]),
                            ("gw2", 2, "active/non-optimized", [])]
    mp = rep.data["multipath"][0]
    assert (mp["image"], mp["owners"], mp["targets"]) == ("rbd/img0", ["gw1"], [T])


def test_list_when_the_service_map_cannot_be_read(tmp_path):
    t, bs = two_gateways(tmp_path)

    def denied(cfg):
        raise ExtError("client.iscsi may not read it (add mgr 'allow r' to its caps)",
                       "mgr-caps")
    rep = list_report(bs, True, Kernel(t.roots), service_status=denied)
    assert "owner gw1 (by ALUA; service map: client.iscsi may not read it (add mgr " \
           "'allow r' to its caps))" in rep.lines[-1]

    def broken(cfg):
        raise OSError("librados went away")
    rep = list_report(bs, True, Kernel(t.roots), service_status=broken)
    assert "service map: OSError: librados went away" in rep.lines[-1]


def test_single_gateway_list_does_not_ask_the_cluster(tmp_path):
    t = Tree(tmp_path)
    so = t.backstore("rbd.img0", "rbd/img0", [(paths.DEFAULT_GROUP, 0, 0, [1])])
    lun(so, tpg(1, "127.0.0.1"))

    def never(cfg):
        pytest.fail("the cluster was asked for a single-gateway export")
    rep = list_report([(so, parse_image("rbd/img0", check_files=False))], True,
                      Kernel(t.roots), service_status=never)
    assert "multipath" not in rep.data
    assert rep.lines[-1].startswith("  LUN 0 of ")          # the export's own last line
    assert not any("several gateways" in line for line in rep.lines)
