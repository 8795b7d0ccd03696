"""Generic netlink encoding/decoding (sans-IO) and the real controller socket."""

import errno
import logging
import re
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tcmu_rbd import netlink as nl

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


# --- attributes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "enc,get,value,plen",
    [
        (nl.attr_u8, nl.get_u8, 0xAB, 1),
        (nl.attr_u16, nl.get_u16, 0xBEEF, 2),
        (nl.attr_u32, nl.get_u32, 0xDEADBEEF, 4),
        (nl.attr_s32, nl.get_s32, -errno.ENOENT, 4),
        (nl.attr_u64, nl.get_u64, 2**64 - 2, 8),
    ],
)
def test_scalar_roundtrip_and_alignment(enc, get, value, plen):
    b = enc(9, value)
    assert len(b) == nl.align(4 + plen) and len(b) % 4 == 0
    length, atype = struct.unpack_from("=HH", b)
    assert (length, atype) == (4 + plen, 9)  # nla_len excludes the padding
    assert b[4 + plen:] == b"\0" * (len(b) - 4 - plen)
    [(t, p)] = nl.decode_attrs(b)
    assert t == 9 and get(p) == value


@pytest.mark.parametrize("s,total", [("", 8), ("abc", 8), ("abcd", 12), ("tcm-user/1/d/rbd/p/i", 28)])
def test_string_has_nul_and_padding(s, total):
    b = nl.attr_string(1, s)
    assert len(b) == total
    assert struct.unpack_from("=H", b)[0] == 4 + len(s) + 1
    assert b[4:4 + len(s) + 1] == s.encode() + b"\0"
    [(t, p)] = nl.decode_attrs(b)
    assert nl.get_string(p) == s


def test_string_without_nul_is_tolerated_and_nul_inside_refused():
    assert nl.get_string(b"abc") == "abc"
    assert nl.get_string(b"ab\0garbage") == "ab"
    with pytest.raises(ValueError):
        nl.attr_string(1, "a\0b")


def test_several_attrs_and_flags_masked():
    inner = nl.attr_u32(2, 7) + nl.attr_string(1, "x")
    b = nl.attr_u8(1, 1) + nl.attr_nested(7, inner) + nl.encode_attr(5 | nl.NLA_F_NET_BYTEORDER, b"\0\1")
    got = nl.decode_attrs(b)
    assert [t for t, _ in got] == [1, 7, 5]
    assert nl.decode_attrs(got[1][1]) == [(2, struct.pack("=I", 7)), (1, b"x\0")]


def test_last_attribute_without_padding_is_accepted():
    b = nl.attr_u8(1, 5)[:5]  # header + one byte, no pad
    assert nl.decode_attrs(b) == [(1, b"\5")]


@pytest.mark.parametrize(
    "buf,msg",
    [
        (b"\x08\x00", "truncated attribute header"),
        (struct.pack("=HH", 2, 1), "bad length"),
        (struct.pack("=HH", 12, 1) + b"\0\0\0\0", "claims 12 bytes"),
        (nl.attr_u32(1, 1) + b"\x01", "truncated attribute header"),
        # the overrun error names the (flag-masked) type of the attribute
        (nl.attr_u8(1, 0) + struct.pack("=HH", 12, 3 | nl.NLA_F_NESTED),
         "attribute type 3 at offset 8 claims 12 bytes, only 4 present"),
    ],
)
def test_malformed_attrs_raise_clear_error(buf, msg):
    with pytest.raises(nl.NetlinkDecodeError, match=msg):
        nl.decode_attrs(buf)


@pytest.mark.parametrize("get,n", [(nl.get_u8, 0), (nl.get_u16, 1), (nl.get_u32, 3), (nl.get_s32, 2), (nl.get_u64, 7)])
def test_short_scalar_payload_raises(get, n):
    with pytest.raises(nl.NetlinkDecodeError, match="need"):
        get(b"\0" * n)


def test_encode_attr_limits():
    with pytest.raises(ValueError):
        nl.encode_attr(1, b"x" * 70000)
    with pytest.raises(ValueError):
        nl.encode_attr(-1, b"")


# --- messages -------------------------------------------------------------------


def test_nlmsg_roundtrip_multiple_in_one_datagram():
    a = nl.encode_nlmsg(20, nl.NLM_F_REQUEST, 5, 99, b"abc")
    b = nl.encode_nlmsg(21, 0, 6, 0, b"")
    assert len(a) == 20  # 16 + 3 padded to 4
    assert struct.unpack_from("=I", a)[0] == 19  # nlmsg_len excludes padding
    msgs = nl.decode_nlmsgs(a + b)
    assert msgs == [nl.NlMsg(20, 1, 5, 99, b"abc"), nl.NlMsg(21, 0, 6, 0, b"")]


@pytest.mark.parametrize(
    "buf,msg",
    [
        (b"\0" * 10, "truncated netlink header"),
        (struct.pack("=IHHII", 8, 20, 0, 0, 0), "bad length"),
        (struct.pack("=IHHII", 40, 20, 0, 0, 0), "claims 40 bytes"),
        # a valid message then a stray byte: the walk must not stop after one frame
        (nl.encode_nlmsg(20, 0, 0, 0, b"abc") + b"\x01", "truncated netlink header at offset 20"),
        (nl.encode_nlmsg(20, 0, 0, 0, b"") + struct.pack("=IHHII", 4, 20, 0, 0, 0),
         "at offset 16 has bad length 4"),
    ],
)
def test_malformed_nlmsg(buf, msg):
    with pytest.raises(nl.NetlinkDecodeError, match=msg):
        nl.decode_nlmsgs(buf)


def test_genl_header_and_short_genl():
    b = nl.encode_genl(30, 4, 2, nl.attr_u32(8, 1), seq=3)
    [m] = nl.decode_nlmsgs(b)
    g = nl.decode_genl(m)
    assert (g.family, g.cmd, g.version, g.seq) == (30, 4, 2, 3)
    assert g.attr(8) == struct.pack("=I", 1)
    with pytest.raises(nl.NetlinkDecodeError, match="no genlmsghdr"):
        nl.decode_genl(nl.NlMsg(30, 0, 0, 0, b"\1\2"))
    with pytest.raises(nl.NetlinkDecodeError, match="control message"):
        nl.decode_genl(nl.NlMsg(nl.NLMSG_ERROR, 0, 0, 0, b"\0" * 20))


def test_error_and_ack_decoding():
    req = nl.build_reply(30, nl.TCMU_CMD_ADDED_DEVICE_DONE, 4, 0, seq=77)
    [m] = nl.decode_nlmsgs(nl.build_error(-errno.ENODEV, req))
    e = nl.decode_error(m)
    assert (e.error, e.seq, e.orig_type) == (-errno.ENODEV, 77, 30)
    [ack] = nl.decode_nlmsgs(nl.build_error(0, req))
    assert nl.decode_error(ack).error == 0
    with pytest.raises(nl.NetlinkDecodeError):
        nl.decode_error(nl.NlMsg(nl.NLMSG_ERROR, 0, 0, 0, b"\1"))
    with pytest.raises(nl.NetlinkDecodeError, match="positive"):
        nl.decode_error(nl.NlMsg(nl.NLMSG_ERROR, 0, 0, 0, struct.pack("=i", 5)))


def test_getfamily_request_bytes():
    b = nl.build_getfamily("TCM-USER", seq=9)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", b)
    assert (mtype, flags, seq, pid) == (nl.GENL_ID_CTRL, nl.NLM_F_REQUEST, 9, 0)
    assert b[16:20] == bytes([nl.CTRL_CMD_GETFAMILY, 1, 0, 0])
    assert nl.decode_attrs(b[20:]) == [(nl.CTRL_ATTR_FAMILY_NAME, b"TCM-USER\0")]


def test_family_parse_roundtrip():
    info = nl.FamilyInfo(31, "TCM-USER", 2, {"config": 9})
    [m] = nl.decode_nlmsgs(nl.build_newfamily(info, seq=1))
    assert nl.parse_family(nl.decode_genl(m)) == info


# --- TCM-USER -------------------------------------------------------------------


@pytest.mark.parametrize("devname", ["tcm-user/1/d/rbd/p/i", "tcm-user/12/disk0/rbd/pool/img;osd_op_timeout=30"])
def test_event_roundtrip_with_pad_for_u64(devname):
    b = nl.build_tcmu_event(33, nl.TCMU_CMD_RECONFIG_DEVICE, device=devname, minor=3,
                            device_id=17, dev_size=1 << 40)
    [m] = nl.decode_nlmsgs(b)
    g = nl.decode_genl(m)
    # the u64 payload is 8-byte aligned within the message, as the kernel does it
    off = 16 + 4
    for t, p in g.attrs:
        if t == nl.TCMU_ATTR_DEV_SIZE:
            break
        off += nl.align(4 + len(p))
    assert (off + 4) % 8 == 0
    ev = nl.parse_tcmu_event(g)
    assert ev == nl.TcmuEvent(nl.TCMU_CMD_RECONFIG_DEVICE, 2, devname, 3, 17, None, 1 << 40, None)
    assert ev.uio == "uio3" and ev.reply_cmd == nl.TCMU_CMD_RECONFIG_DEVICE_DONE


def test_event_all_attrs():
    b = nl.build_tcmu_event(33, nl.TCMU_CMD_RECONFIG_DEVICE, device="tcm-user/1/a/rbd/p/i",
                            minor=0, device_id=1, dev_cfg="rbd/p/j", writecache=1)
    ev = nl.parse_tcmu_event(nl.decode_genl(nl.decode_nlmsgs(b)[0]))
    assert (ev.dev_cfg, ev.writecache, ev.dev_size, ev.error) == ("rbd/p/j", 1, None, None)


def test_malformed_attribute_keeps_device_id():
    attrs = nl.encode_attr(nl.TCMU_ATTR_MINOR, b"\1\0") + nl.attr_u32(nl.TCMU_ATTR_DEVICE_ID, 5)
    g = nl.decode_genl(nl.decode_nlmsgs(nl.encode_genl(33, 1, 2, attrs))[0])
    ev = nl.parse_tcmu_event(g)
    assert ev.device_id == 5 and ev.minor is None and "need 4" in ev.error


def test_reply_exact_bytes():
    b = nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE_DONE, 0x0102, -2, seq=1)
    want = (
        struct.pack("=IHHII", 36, 0x1F, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1, 0)
        + bytes([4, 2, 0, 0])
        + struct.pack("=HHi", 8, 7, -2)
        + struct.pack("=HHI", 8, 8, 0x0102)
    )
    assert b == want
    g = nl.decode_genl(nl.decode_nlmsgs(b)[0])
    assert nl.parse_reply(g) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 0x0102, -2)
    with pytest.raises(ValueError):
        nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE, 1, 0)
    with pytest.raises(ValueError):
        nl.build_reply(0x1F, nl.TCMU_CMD_ADDED_DEVICE_DONE, 1, 5)


def test_set_features_bytes():
    b = nl.build_set_features(0x20, seq=4)
    g = nl.decode_genl(nl.decode_nlmsgs(b)[0])
    assert g.cmd == nl.TCMU_CMD_SET_FEATURES and g.version == 2
    assert g.flags & nl.NLM_F_ACK
    assert g.attrs == [(nl.TCMU_ATTR_SUPP_KERN_CMD_REPLY, b"\1")]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decoders_only_raise_decode_error(data):
    try:
        for m in nl.decode_nlmsgs(data):
            if m.type == nl.NLMSG_ERROR:
                nl.decode_error(m)
            elif m.type >= nl.NLMSG_MIN_TYPE:
                g = nl.decode_genl(m)
                nl.parse_tcmu_event(g)
                try:
                    nl.parse_family(g)
                except nl.NetlinkDecodeError:
                    pass
    except nl.NetlinkDecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.binary(min_size=1, max_size=120))
def test_fuzz_truncation_of_valid_event(cut, junk):
    b = nl.build_tcmu_event(33, 1, device="tcm-user/1/d/rbd/p/i", minor=1, device_id=2, dev_size=5)
    for data in (b[: len(b) - cut], b + junk):
        try:
            for m in nl.decode_nlmsgs(data):
                nl.parse_tcmu_event(nl.decode_genl(m))
        except nl.NetlinkDecodeError:
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
    k.send(nl.encode_genl(33, nl.TCMU_CMD_SET_FEATURES, 2))  # not an event: ignored
    with caplog.at_level(logging.DEBUG, "tcmu_rbd.netlink"):
        evs = t.recv_events()
    assert [(e.cmd, e.minor, e.device_id) for e in evs] == [(1, 1, 2), (2, 4, 3)]
    assert "malformed netlink datagram" in caplog.text
    t.send_reply(nl.TCMU_CMD_ADDED_DEVICE_DONE, 2, -errno.ENOENT)
    raw = k.recv(4096)
    g = nl.decode_genl(nl.decode_nlmsgs(raw)[0])
    assert nl.parse_reply(g) == (nl.TCMU_CMD_ADDED_DEVICE_DONE, 2, -errno.ENOENT)
    # the kernel refuses it: the error is logged against the reply it answers
    caplog.clear()
    k.send(nl.build_error(-errno.ENODEV, raw))
    assert t.recv_events() == []
    assert "kernel rejected ADDED_DEVICE_DONE for device id 2" in caplog.text
    k.close()
    t.close()


# --- the real NETLINK_GENERIC socket on the host ---------------------------------


def test_real_controller_resolves_nlctrl():
    s = nl.GenlSocket()
    try:
        info = s.resolve_family("nlctrl")
        assert info.id == nl.GENL_ID_CTRL and info.name == "nlctrl"
        assert "notify" in info.mcast_groups
        s.add_membership(info.mcast_groups["notify"])
    finally:
        s.close()


def test_real_controller_unknown_family():
    s = nl.GenlSocket()
    try:
        with pytest.raises(nl.FamilyNotFound, match="does not exist"):
            s.resolve_family("nosuchfamily")
    finally:
        s.close()


def test_tcmu_open_on_host_without_module_is_clear():
    s = nl.GenlSocket()
    try:
        s.resolve_family("TCM-USER")
        pytest.skip("TCM-USER exists here")
    except nl.FamilyNotFound:
        pass
    finally:
        s.close()
    with pytest.raises(nl.FamilyNotFound, match="target_core_user"):
        nl.TcmuNetlink.open()
