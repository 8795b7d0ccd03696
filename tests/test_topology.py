"""What each gateway must have in LIO, from the shared configuration
(targetcli_ext/topology.py), pure: owners spread over the gateways, names per
gateway, one TPG per gateway with its tag and portal, the ALUA groups with their
ids, settings and first states, the TPG settings of the single-gateway export,
and the edits the verbs make (add/remove gateway and disk) with their refusals."""

from __future__ import annotations

import pytest

from targetcli_ext.plan import ExportRequest, tpg_settings
from targetcli_ext.spec import Defaults, ExtError, parse_portal
from targetcli_ext.store import ChapEntry, SharedConfig, secret_key
from targetcli_ext.topology import (
    ANO, AO, add_disk, add_gateway, choose_owner, describe_changes, group_settings,
    layout, remove_disk, remove_gateway,
)

T = "iqn.2003-01.org.linux-iscsi.ha:rbd"
T2 = "iqn.2003-01.org.linux-iscsi.ha:other"
INIT = "iqn.1994-05.com.redhat:client1"


def _cfg(n=2) -> SharedConfig:
    cfg = SharedConfig()
    for i in range(1, n + 1):
        add_gateway(cfg, f"gw{i}", parse_portal(f"127.0.0.{i}:3260"))
    return cfg


def test_gateway_tags_are_the_lowest_free_and_portals_change():
    cfg = _cfg(3)
    assert [cfg.gateways[g].tag for g in ("gw1", "gw2", "gw3")] == [1, 2, 3]
    remove_gateway(cfg, "gw2")
    add_gateway(cfg, "gw4", parse_portal("127.0.0.4"))
    assert cfg.gateways["gw4"].tag == 2
    add_gateway(cfg, "gw4", parse_portal("10.0.0.4:3261"))
    assert (str(cfg.gateways["gw4"].portal), cfg.gateways["gw4"].tag) == ("10.0.0.4:3261", 2)
    with pytest.raises(ExtError, match="no dots"):
        add_gateway(cfg, "gw.5", parse_portal("127.0.0.5"))
    with pytest.raises(ExtError, match="not in the shared configuration"):
        remove_gateway(cfg, "gw9")


def test_owners_spread_over_the_gateways_ties_to_the_lowest_tag():
    cfg = _cfg(3)
    for i in range(6):
        add_disk(cfg, f"rbd/img{i}", T, initiators=[INIT])
    owners = [cfg.disks[f"rbd/img{i}"].owner for i in range(6)]
    assert owners == ["gw1", "gw2", "gw3", "gw1", "gw2", "gw3"]
    assert [cfg.disks[f"rbd/img{i}"].lun for i in range(6)] == list(range(6))
    # counted over the whole configuration: a target of gw2/gw3 only gets gw2 first,
    # then gw3 once gw2 owns more
    add_disk(cfg, "rbd/x0", T2, gateways=["gw3", "gw2"], initiators=[INIT])
    add_disk(cfg, "rbd/x1", T2, initiators=[INIT])
    assert (cfg.disks["rbd/x0"].owner, cfg.disks["rbd/x1"].owner) == ("gw2", "gw3")
    assert cfg.targets[T2].gateways == ["gw3", "gw2"]
    # a removed gateway's disks go to the least loaded of the others
    remove_gateway(cfg, "gw1")
    assert {cfg.disks[f"rbd/img{i}"].owner for i in (0, 3)} <= {"gw2", "gw3"}
    counts = {g: sum(d.owner == g for d in cfg.disks.values()) for g in ("gw2", "gw3")}
    assert counts == {"gw2": 4, "gw3": 4}
    assert cfg.targets[T].gateways == ["gw2", "gw3"]
    cfg.check()


def test_choose_owner_on_an_empty_target():
    cfg = _cfg(2)
    add_disk(cfg, "rbd/a", T, gateways=["gw2"], initiators=[INIT])
    add_disk(cfg, "rbd/b", T2, initiators=[INIT])
    assert cfg.disks["rbd/b"].owner == "gw1"
    assert choose_owner(cfg, T2) == "gw1"      # 1 each: the lowest tag


def test_layout_names_per_gateway_same_serial_and_lun():
    cfg = _cfg(2)
    add_disk(cfg, "rbd/img0", T, initiators=[INIT], options={"osd_op_timeout": 30})
    add_disk(cfg, "pool1/ns1/img1@s1", T, initiators=[INIT])
    a, b = layout(cfg, "gw1"), layout(cfg, "gw2")
    assert (a.tag, str(a.portal), b.tag, str(b.portal)) == (1, "127.0.0.1:3260", 2,
                                                            "127.0.0.2:3260")
    ta, tb = a.target(T), b.target(T)
    assert (ta.tag, tb.tag) == (1, 2) and ta.portal != tb.portal
    assert [x.backstore.name for x in ta.luns] == ["gw1.rbd.img0", "gw1.pool1.ns1.img1@s1"]
    assert [x.backstore.name for x in tb.luns] == ["gw2.rbd.img0", "gw2.pool1.ns1.img1@s1"]
    for x, y in zip(ta.luns, tb.luns):
        assert x.lun == y.lun and x.backstore.wwn == y.backstore.wwn
        assert x.backstore.dev_config == y.backstore.dev_config
    assert ta.luns[0].backstore.dev_config == "rbd/rbd/img0;osd_op_timeout=30"
    assert ta.luns[1].backstore.read_only and not ta.luns[0].backstore.read_only
    nb = ta.luns[0].backstore.new_backstore(1 << 30)
    assert (nb.hw_max_sectors, nb.max_data_area_mb, nb.size, nb.wwn) == \
        (1024, 64, 1 << 30, cfg.disks["rbd/img0"].wwn)
    assert nb.attributes == (("cmd_time_out", "0"), ("qfull_time_out", "5"))
    assert a.prefix == "gw1." and len(a.backstores) == 2
    assert ta.acls[0].initiator == INIT and ta.acls[0].chap is None


def test_alua_groups_ids_settings_and_first_states():
    cfg = _cfg(2)
    add_disk(cfg, "rbd/img0", T, initiators=[INIT])                  # owner gw1
    add_disk(cfg, "rbd/img1", T, initiators=[INIT],
             options={"osd_op_timeout": 60})                         # owner gw2
    for gw in ("gw1", "gw2"):
        lay = layout(cfg, gw).target(T)
        b0, b1 = lay.luns[0].backstore, lay.luns[1].backstore
        assert b0.group == gw and b1.group == gw   # the LUN joins this gateway's group
        assert [(g.name, g.group_id, g.state) for g in b0.groups] == \
            [("gw1", 1, AO), ("gw2", 2, ANO)]
        assert [(g.name, g.group_id, g.state) for g in b1.groups] == \
            [("gw1", 1, ANO), ("gw2", 2, AO)]
        s0 = dict(b0.groups[0].settings)
        assert s0 == {"alua_access_type": "1", "alua_support_active_optimized": "1",
                      "alua_support_active_nonoptimized": "1",
                      "alua_support_transitioning": "1", "alua_support_standby": "0",
                      "alua_support_unavailable": "0", "alua_support_offline": "0",
                      "nonop_delay_msecs": "0", "implicit_trans_secs": "45"}
        assert dict(b1.groups[1].settings)["implicit_trans_secs"] == "75"
    assert group_settings(30)[0] == ("alua_access_type", "1")   # written first


def test_tpg_settings_are_the_single_gateway_exports():
    cfg = _cfg(2)
    add_disk(cfg, "rbd/img0", T, initiators=[INIT])
    add_disk(cfg, "rbd/img1", T2, initiators=[INIT], chap={INIT: ChapEntry("alice", "tgt")},
             target_settings={"cmdsn_depth": 64})
    lay = layout(cfg, "gw2")
    plain, chap = lay.target(T), lay.target(T2)
    assert (plain.attributes, plain.parameters) == \
        tpg_settings(ExportRequest(image=None), auth=False)
    assert dict(plain.attributes)["generate_node_acls"] == "0"
    assert dict(chap.attributes)["authentication"] == "1"
    assert dict(chap.attributes)["default_cmdsn_depth"] == "64" and chap.cmdsn_depth == 64
    assert dict(chap.parameters)["AuthMethod"] == "CHAP"
    a = chap.acls[0]
    assert a.chap == ChapEntry("alice", "tgt")
    assert (a.secret_key, a.mutual_key) == (secret_key(T2, INIT), secret_key(T2, INIT, True))
    assert a.secret_key == f"tcmu-rbd/chap/{T2}/{INIT}"
    text = "\n".join(lay.describe())
    assert "LUN 0 -> user:rbd/gw2.rbd.img1" in text and "ACL " + INIT + " (alice" in text


def test_layout_leaves_out_other_gateways_targets_and_unknown_gateways():
    cfg = _cfg(3)
    add_disk(cfg, "rbd/img0", T, gateways=["gw1", "gw2"], initiators=[INIT])
    assert layout(cfg, "gw3").targets == ()
    lay = layout(cfg, "gw1").target(T)
    assert [g.name for g in lay.luns[0].backstore.groups] == ["gw1", "gw2"]
    gone = layout(cfg, "gw9")
    assert gone.tag is None and gone.targets == () and "not in the shared" in \
        gone.describe()[0]
    cfg.targets[T].gateways.append("gw3")      # a gateway added to the target later
    assert [g.name for g in layout(cfg, "gw1").target(T).luns[0].backstore.groups] == \
        ["gw1", "gw2", "gw3"]


def test_add_disk_refusals_and_idempotence():
    cfg = _cfg(2)
    with pytest.raises(ExtError, match="gateway gw5 is not defined"):
        add_disk(cfg, "rbd/img0", T, gateways=["gw5"])
    with pytest.raises(ExtError, match="no gateway is defined"):
        add_disk(SharedConfig(), "rbd/img0", T)
    add_disk(cfg, "rbd/img0", T, initiators=[INIT], lun=3, wwn="serial-0")
    before = cfg.to_json()
    add_disk(cfg, "rbd/img0", T, initiators=[INIT])
    assert cfg.to_json() == before
    with pytest.raises(ExtError, match="already LUN 3 of"):
        add_disk(cfg, "rbd/img0", T2)
    with pytest.raises(ExtError, match="unexport it first to change"):
        add_disk(cfg, "rbd/img0", T, wwn="serial-9")
    with pytest.raises(ExtError, match="LUN 3 of .* is rbd/img0"):
        add_disk(cfg, "rbd/img1", T, lun=3)
    add_disk(cfg, "rbd/img1", T, initiators=["iqn.1994-05.com.redhat:c2"])
    assert cfg.disks["rbd/img1"].lun == 0 and len(cfg.targets[T].acls) == 2
    bad = cfg.copy()
    add_disk(bad, "rbd/img2", T, chap={INIT: ChapEntry("alice")})
    with pytest.raises(ExtError, match="per-target switch"):
        bad.check()


def test_remove_disk_and_the_target_with_its_secrets():
    cfg = _cfg(2)
    add_disk(cfg, "rbd/a", T, initiators=[INIT], chap={INIT: ChapEntry("u", "m")})
    add_disk(cfg, "rbd/b", T, initiators=[INIT], chap={INIT: ChapEntry("u", "m")})
    assert remove_disk(cfg, "rbd/a") == [] and list(cfg.targets[T].luns) == [1]
    assert remove_disk(cfg, "rbd/b") == [secret_key(T, INIT), secret_key(T, INIT, True)]
    assert T not in cfg.targets and cfg.disks == {}
    assert remove_disk(cfg, "rbd/b") == []
    add_disk(cfg, "rbd/a", T, initiators=[INIT])
    assert remove_disk(cfg, "rbd/a", keep_target=True) == [] and T in cfg.targets
    cfg.check()


def test_describe_changes_names_users_not_secrets():
    a = _cfg(1)
    b = a.copy()
    add_gateway(b, "gw2", parse_portal("127.0.0.2"))
    add_disk(b, "rbd/img0", T, initiators=[INIT], chap={INIT: ChapEntry("alice")},
             options={"osd_op_timeout": 30})
    lines = describe_changes(a, b)
    assert lines[0] == "+ gateway gw2: portal 127.0.0.2:3260, tag 2"
    assert lines[1] == f"+ target {T}: gateways gw1,gw2; ACLs {INIT}; {INIT} CHAP user alice"
    assert lines[2].startswith(f"+ disk rbd/img0: LUN 0 of {T}, owner gw1, serial ")
    assert lines[2].endswith("options osd_op_timeout=30")
    c = b.copy()
    remove_gateway(c, "gw2")
    assert describe_changes(b, c)[:2] == ["- gateway gw2: portal 127.0.0.2:3260, tag 2",
                                          f"~ target {T}: gateways gw1; ACLs {INIT}; "
                                          f"{INIT} CHAP user alice"]
    assert describe_changes(b, b) == []
    assert Defaults().osd_op_timeout == 30
