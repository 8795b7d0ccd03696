"""TCM-USER: the numbers against the kernel header, events, replies, SET_FEATURES and
TcmuNetlink (over a socketpair with a fake kernel, and on this host without the module)."""

import errno
import logging
import re
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tcmu_rbd import genl, netlink as nl

HEADER = "/usr/include/linux/target_core_user.h"


# --- numbers agree with the kernel header --------------------------------------


def _enum(text, first):
    body = text[text.index(first):]
    body = body[: body.index("}")]
    names = re.findall(r"\b(TCMU_[A-Z_]+)\b", body)
    return {n: i for i, n in enumerate(names) if not n.startswith("__")}


def test_constants_match_kernel_header():
    try:
        with open(HEADER) as f:
            text = f.read()
    except OSError:
        pytest.skip("linux-libc-dev not installed")
    cmds = _enum(text, "TCMU_CMD_UNSPEC")
    attrs = _enum(text, "TCMU_ATTR_UNSPEC")
    assert cmds and attrs
    for name, value in list(cmds.items()) + list(attrs.items()):
        if name.endswith("_MAX"):
            continue
        assert getattr(nl, name) == value, name


# --- TCM-USER -------------------------------------------------------------------


@pytest.mark.parametrize("devname", ["tcm-user/1/d/rbd/p/i", "tcm-user/12/disk0/rbd/pool/img;osd_op_timeout=30"])
def test_event_roundtrip_with_pad_for_u64(devname):
    b = nl.build_tcmu_event(33, nl.TCMU_CMD_RECONFIG_DEVICE, device=devname, minor=3,
                            device_id=17, dev_size=1 << 40)
    [m] = genl.decode_nlmsgs(b)
    g = genl.decode_genl(m)
    # the u64 payload is 8-byte aligned within the message, as the kernel does it
    off = 16 + 4
    for t, p in g.attrs:
        if t == nl.TCMU_ATTR_DEV_SIZE:
            break
        off += genl.align(4 + len(p))
    assert (off + 4) % 8 == 0
    ev = nl.parse_tcmu_event(g)
    assert ev == nl.TcmuEvent(nl.TCMU_CMD_RECONFIG_DEVICE, 2, devname, 3, 17, None, 1 << 40, None)
    assert ev.uio == "uio3" and ev.reply_cmd == nl.TCMU_CMD_RECONFIG_DEVICE_DONE


def test_event_all_attrs():
    b = nl.build_tcmu_event(33, nl.TCMU_CMD_RECONFIG_DEVICE, device="tcm-user/1/a/rbd/p/i",
                            minor=0, device_id=1, dev_cfg="rbd/p/j", writecache=1)
    ev = nl.parse_tcmu_event(genl.decode_genl(genl.decode_nlmsgs(b)[0]))
    assert (ev.dev_cfg, ev.writecache, ev.dev_size, ev.error) == ("rbd/p/j", 1, None, None)


def test_malformed_attribute_keeps_device_id():
    attrs = genl.encode_attr(nl.TCMU_ATTR_MINOR, b"\1\0") + genl.attr_u32(nl.TCMU_ATTR_DEVICE_ID, 5)
    g = genl.decode_genl(genl.decode_nlmsgs(genl.encode_genl(33, 1, 2, attrs))[0])
    ev = nl.parse_tcmu_event(g)
    assert ev.device_id == 5 and ev.minor is None and "need 4" in ev.error


def test_reply_exact_bytes():
    b = nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE_DONE, 0x0102, -2, seq=1)
    want = (
        struct.pack("=IHHII", 36, 0x1F, genl.NLM_F_REQUEST | genl.NLM_F_ACK, 1, 0)
        + bytes([4, 2, 0, 0])
        + struct.pack("=HHi", 8, 7, -2)
        + struct.pack("=HHI", 8, 8, 0x0102)
    )
    assert b == want
    g = genl.decode_genl(genl.decode_nlmsgs(b)[0])
    assert nl.parse_reply(g) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 0x0102, -2)
    with pytest.raises(ValueError):
        nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE, 1, 0)
    with pytest.raises(ValueError):
        nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE_DONE, 1, 5)


def test_set_features_bytes():
    b = nl.build_set_features(0x20, seq=4)
    g = genl.decode_genl(genl.decode_nlmsgs(b)[0])
    assert g.cmd == nl.TCMU_CMD_SET_FEATURES and g.version == 2
    assert g.flags & genl.NLM_F_ACK
    assert g.attrs == [(nl.TCMU_ATTR_SUPP_KERN_CMD_REPLY, b"\1")]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decoders_only_raise_decode_error(data):
    try:
        for m in genl.decode_nlmsgs(data):
            if m.type == genl.NLMSG_ERROR:
                genl.decode_error(m)
            elif m.type >= genl.NLMSG_MIN_TYPE:
                g = genl.decode_genl(m)
                nl.parse_tcmu_event(g)
                try:
                    genl.parse_family(g)
                except genl.NetlinkDecodeError:
                    pass
    except genl.NetlinkDecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.binary(min_size=1, max_size=120))
def test_fuzz_truncation_of_valid_event(cut, junk):
    b = nl.build_tcmu_event(33, 1, device="tcm-user/1/d/rbd/p/i", minor=1, device_id=2, dev_size=5)
    for data in (b[: len(b) - cut], b + junk):
        try:
            for m in genl.decode_nlmsgs(data):
                nl.parse_tcmu_event(genl.decode_genl(m))
        except genl.NetlinkDecodeError:
            pass


# --- TcmuNetlink over a socketpair (fake kernel on the other end) ----------------


def test_tcmunetlink_events_replies_and_acks(caplog):
    k, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    t = nl.TcmuNetlink.from_socket(d, 33)
    assert t.recv_events() == []
    k.send(nl.build_tcmu_event(33, 1, device="tcm-user/1/d/rbd/p/i", minor=1, device_id=2)
           + nl.build_tcmu_event(33, 2, device="tcm-user/1/e/rbd/p/i", minor=4, device_id=3))
    k.send(b"\1\2\3")  # malformed: logged, skipped
    k.send(nl.build_tcmu_event(34, 1, minor=1))  # other family: ignored
    k.send(genl.encode_genl(33, nl.TCMU_CMD_SET_FEATURES, 2))  # not an event: ignored
    with caplog.at_level(logging.DEBUG, "tcmu_rbd.netlink"):
        evs = t.recv_events()
    assert [(e.cmd, e.minor, e.device_id) for e in evs] == [(1, 1, 2), (2, 4, 3)]
    assert "malformed netlink datagram" in caplog.text
    t.send_reply(nl.TCMU_CMD_ADDED_DEVICE_DONE, 2, -errno.ENOENT)
    raw = k.recv(4096)
    g = genl.decode_genl(genl.decode_nlmsgs(raw)[0])
    assert nl.parse_reply(g) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 2, -errno.ENOENT)
    # the kernel refuses it: the error is logged against the reply it answers
    caplog.clear()
    k.send(genl.build_error(-errno.ENODEV, raw))
    assert t.recv_events() == []
    assert "kernel rejected ADDED_DEVICE_DONE for device id 2" in caplog.text
    k.close()
    t.close()



# --- on this host (no target_core_user module) ----------------------------------


def test_tcmu_open_on_host_without_module_is_clear():
    s = genl.GenlSocket()
    try:
        s.resolve_family("TCM-USER")
        pytest.skip("TCM-USER exists here")
    except genl.FamilyNotFound:
        pass
    finally:
        s.close()
    with pytest.raises(genl.FamilyNotFound, match="target_core_user"):
        nl.TcmuNetlink.open()


# --- the interface the daemon uses ------------------------------------------------


def test_daemon_interface_lives_in_netlink():
    for name in ("TcmuNetlink", "TcmuEvent", "CMD_NAMES", "TCMU_CMD_ADDED_DEVICE",
                 "TCMU_CMD_REMOVED_DEVICE", "NetlinkError"):
        assert hasattr(nl, name), name
    for attr in ("open", "OVERRUN", "recv_events", "send_reply", "fileno", "close"):
        assert hasattr(nl.TcmuNetlink, attr), attr
    # one error hierarchy: what the codec and the socket raise is a NetlinkError
    assert nl.NetlinkError is genl.NetlinkError
    assert issubclass(genl.FamilyNotFound, nl.NetlinkError)
    assert issubclass(genl.NetlinkDecodeError, nl.NetlinkError)
