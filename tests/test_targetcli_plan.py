"""targetcli-rbd's export plan, pure: a checked request and a snapshot of LIO in,
the list of what will be created or changed out (no kernel, no rtslib)."""

from __future__ import annotations

import json

import pytest

from targetcli_ext.plan import (
    AclChange, ChapRef, ExportRequest, MappedLunChange, NewBackstore, TpgChange,
    check_request, plan_export, tpg_settings,
)
from targetcli_ext.spec import Chap, Defaults, ExtError, Portal, Secret, parse_image
from targetcli_ext.state import AclState, BackstoreState, LioState, TargetState, TpgState

SECRET = "alice-secret-0123"
MUTUAL = "target-secret-4567"
INIT = "iqn.1994-05.com.redhat:client1"
INIT2 = "iqn.1994-05.com.redhat:client2"
T = "iqn.2003-01.org.linux-iscsi.gw:rbd"
P = Portal("127.0.0.1", 3260)
IMG = parse_image("rbd/img0")


def _chap(secret=SECRET, mutual=None):
    return Chap("alice", Secret(secret, "file /root/a"),
                "tgt" if mutual else None, Secret(mutual, "$M") if mutual else None)


def _plan(state=LioState(), **kw):
    kw.setdefault("initiators", [INIT])
    kw.setdefault("target", T)
    return plan_export(check_request(ExportRequest(kw.pop("image", IMG), **kw)), state)


def _applied(req_kw=None, *, chap=None, extra_luns=(), acl_maps=((0, 0),)) -> LioState:
    """LIO as an export of rbd/img0 as LUN 0 of T to INIT leaves it."""
    auth = chap is not None
    attrs, params = tpg_settings(ExportRequest(IMG, chap={INIT: chap} if auth else {}), auth)
    acl = AclState(INIT, mapped=acl_maps, chap_user="alice" if auth else None,
                   chap_secret=Secret(chap.secret.reveal(), "configfs") if auth else None,
                   mutual_user=chap.mutual_user if auth else None,
                   mutual_secret=Secret(chap.mutual_secret.reveal(), "configfs")
                   if auth and chap.mutual else None)
    tpg = TpgState(1, enabled=True, attributes=attrs, parameters=params, portals=(P,),
                   luns=(0,) + tuple(extra_luns), acls=(acl,))
    return LioState(backstores=(BackstoreState("rbd.img0", IMG, wwn="s0", size=1 << 30,
                                               luns=((T, 0),)),),
                    targets=(TargetState(T, (tpg,)),), portals=frozenset({P}))


# ----------------------------------------------------------------------------- what is planned

def test_empty_lio_plans_everything():
    plan = _plan()
    attrs, params = tpg_settings(ExportRequest(IMG), auth=False)
    assert plan.new_backstore == NewBackstore(
        "rbd.img0", "rbd/rbd/img0;osd_op_timeout=30", None, 1024, 64,
        (("cmd_time_out", "0"), ("qfull_time_out", "5")))
    assert plan.new_backstore.control == "max_data_area_mb=64"
    assert plan.create_target and plan.target == T
    assert plan.tpg == TpgChange(1, create=True, attributes=attrs, parameters=params,
                                 enable=True)
    assert dict(attrs) == {"generate_node_acls": "0", "demo_mode_write_protect": "1",
                           "demo_mode_discovery": "0", "authentication": "0",
                           "default_cmdsn_depth": "128"}
    assert dict(params)["AuthMethod"] == "CHAP,None"
    assert plan.portals == plan.new_portals == plan.listen == (P,)
    assert (plan.lun, plan.create_lun) == (0, True)
    assert plan.acls == (AclChange(INIT, create=True, tcq_depth=128),)
    assert plan.mapped_luns == (MappedLunChange(INIT, 0, False),)
    assert plan.initiators == (INIT,) and not plan.warnings and not plan.empty
    assert plan.describe()[0].startswith("+ backstore user:rbd/rbd.img0: ")
    assert plan.describe()[-1] == "~ TPG 1 enable"


def test_identical_export_plans_nothing():
    plan = _plan(state=_applied(), portals=[P])
    assert plan.empty and plan.describe() == []
    assert plan.new_backstore is None and not plan.create_target and not plan.create_lun
    assert plan.tpg == TpgChange(1, create=False)
    assert (plan.backstore, plan.serial, plan.size, plan.lun) == ("rbd.img0", "s0", 1 << 30, 0)
    assert plan.to_dict()["empty"] is True
    # no --portal: the target's own portals, still nothing to do
    assert _plan(state=_applied()).empty


def test_identical_chap_export_plans_nothing_a_new_secret_is_planned():
    state = _applied(chap=_chap(mutual=MUTUAL))
    assert _plan(state=state, chap={INIT: _chap(mutual=MUTUAL)}).empty
    plan = _plan(state=state, chap={INIT: _chap("another-secret-99", mutual=MUTUAL)})
    assert plan.acls == (AclChange(INIT, create=False, chap=ChapRef(
        "alice", "tgt", "CHAP secret from file /root/a", "mutual secret from $M")),)
    assert plan.describe() == [f"~ ACL {INIT}: CHAP user alice, mutual CHAP user tgt "
                               f"(CHAP secret from file /root/a, mutual secret from $M)"]


def test_second_image_on_a_target_in_use():
    state = _applied()
    plan = _plan(state=state, image=parse_image("rbd/img1"))
    assert plan.new_backstore.name == "rbd.img1" and not plan.create_target
    assert plan.tpg == TpgChange(1, create=False)   # depth already 128, enabled
    assert (plan.lun, plan.create_lun) == (1, True) and plan.acls == ()
    assert plan.mapped_luns == (MappedLunChange(INIT, 1, False),)
    assert plan.portals == (P,) and plan.new_portals == ()
    # a different cmdsn_depth is written before new ACLs (they copy it)
    plan = _plan(state=state, image=parse_image("rbd/img1"), initiators=[INIT, INIT2],
                 defaults=Defaults(cmdsn_depth=64))
    assert plan.tpg.attributes == (("default_cmdsn_depth", "64"),)
    assert plan.acls == (AclChange(INIT2, create=True, tcq_depth=64),)


def test_mapped_lun_number_follows_the_acl():
    # INIT already sees another target LUN as its LUN 1: the new LUN 1 maps as 0
    state = _applied(extra_luns=(), acl_maps=((1, 0),))
    plan = _plan(state=state, image=parse_image("rbd/img1"))
    assert plan.lun == 1 and plan.mapped_luns == (MappedLunChange(INIT, 0, False),)


def test_demo_mode_and_snapshot():
    plan = _plan(initiators=[], demo_mode=True, image=parse_image("rbd/img0@s"))
    attrs = dict(plan.tpg.attributes)
    assert attrs["generate_node_acls"] == "1" and attrs["demo_mode_write_protect"] == "1"
    assert attrs["cache_dynamic_acls"] == "1" and attrs["demo_mode_discovery"] == "1"
    assert plan.acls == () and plan.mapped_luns == () and plan.read_only


def test_portals_lio_listens_on_are_not_probed_and_wildcards_warned():
    other = TargetState("iqn.2003-01.org.linux-iscsi.gw:other", (TpgState(portals=(P,)),))
    plan = _plan(state=LioState(targets=(other,), portals=frozenset({P})),
                 portals=[P, Portal("0.0.0.0", 3261)])
    assert plan.new_portals == (P, Portal("0.0.0.0", 3261))
    assert plan.listen == (Portal("0.0.0.0", 3261),)
    assert plan.warnings == (
        "warning: portal 0.0.0.0:3261 listens on every address of this host",
        f"warning: {INIT} may log in without CHAP on 0.0.0.0:3261, which other hosts "
        f"reach, by claiming the name: give --chap-user or --auth-file, or --no-chap if "
        f"this is meant")


def test_acls_without_chap_beyond_loopback_are_warned_unless_said():
    wild = Portal("0.0.0.0", 3260)
    assert _plan(portals=[P]).warnings == ()                      # loopback only
    assert _plan(portals=[P, Portal("::1", 3260)]).warnings == ()
    assert "without CHAP" in _plan(portals=[Portal("::", 3260)]).warnings[-1]
    assert len(_plan(portals=[wild], no_chap=True).warnings) == 1  # only the wildcard's
    assert len(_plan(portals=[wild], chap={INIT: _chap()}).warnings) == 1


# ----------------------------------------------------------------------------- refused

def _other_lun_state():
    t2 = "iqn.2003-01.org.linux-iscsi.gw:other"
    return LioState(backstores=(BackstoreState("rbd.img0", IMG, luns=((t2, 3),)),))


@pytest.mark.parametrize("state,kw,code,text", [
    (_other_lun_state(), {}, "already-exported", "LUN 3 of iqn.2003-01.org.linux-iscsi.gw:other"),
    (LioState(backstores=(BackstoreState("rbd.img0", IMG),)), {}, "already-exported",
     "that no LUN uses"),
    (LioState(backstores=(BackstoreState("x", parse_image("rbd/zz")),)), {"name": "x"},
     "name-taken", "already serves rbd/zz"),
    (LioState(targets=(TargetState(T, (TpgState(attributes=(("generate_node_acls", "1"),)),)),)),
     {}, "demo-mode-target", "is in demo mode"),
    (LioState(), {"initiators": []}, "no-acl", "no initiator may log in"),
    (_applied(), {"image": parse_image("rbd/img1"), "chap": {INIT: _chap()}},
     "chap-mismatch", "already has ACLs without CHAP"),
    (_applied(chap=_chap()), {"image": parse_image("rbd/img1"), "initiators": [INIT2]},
     "chap-mismatch", "requires CHAP"),
    (LioState(), {"initiators": [INIT, INIT2], "chap": {INIT: _chap()}}, "chap-mismatch",
     "missing: " + INIT2),
    (_applied(), {"image": parse_image("rbd/img1"), "lun": 0}, "lun-taken", "LUN 0 of"),
])
def test_refusals(state, kw, code, text):
    with pytest.raises(ExtError, match=text) as e:
        _plan(state=state, **kw)
    assert e.value.code == code


# ----------------------------------------------------------------------------- secrets

def test_no_secret_in_a_plan():
    for state in (LioState(), _applied(chap=_chap(SECRET, MUTUAL))):
        plan = _plan(state=state, chap={INIT: _chap("changed-secret-1", MUTUAL)})
        printed = "\n".join([repr(plan), str(plan), *plan.describe(),
                             json.dumps(plan.to_dict())])
        for s in (SECRET, MUTUAL, "changed-secret-1"):
            assert s not in printed
        assert "CHAP user alice" in printed and "from file /root/a" in printed
