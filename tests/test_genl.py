"""Generic netlink encoding/decoding (sans-IO) and the real controller socket."""

import errno
import struct

import pytest

from tcmu_rbd import genl, netlink as nl


# --- attributes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "enc,get,value,plen",
    [
        (genl.attr_u8, genl.get_u8, 0xAB, 1),
        (genl.attr_u16, genl.get_u16, 0xBEEF, 2),
        (genl.attr_u32, genl.get_u32, 0xDEADBEEF, 4),
        (genl.attr_s32, genl.get_s32, -errno.ENOENT, 4),
        (genl.attr_u64, genl.get_u64, 2**64 - 2, 8),
    ],
)
def test_scalar_roundtrip_and_alignment(enc, get, value, plen):
    b = enc(9, value)
    assert len(b) == genl.align(4 + plen) and len(b) % 4 == 0
    length, atype = struct.unpack_from("=HH", b)
    assert (length, atype) == (4 + plen, 9)  # nla_len excludes the padding
    assert b[4 + plen:] == b"\0" * (len(b) - 4 - plen)
    [(t, p)] = genl.decode_attrs(b)
    assert t == 9 and get(p) == value


@pytest.mark.parametrize("s,total", [("", 8), ("abc", 8), ("abcd", 12), ("tcm-user/1/d/rbd/p/i", 28)])
def test_string_has_nul_and_padding(s, total):
    b = genl.attr_string(1, s)
    assert len(b) == total
    assert struct.unpack_from("=H", b)[0] == 4 + len(s) + 1
    assert b[4:4 + len(s) + 1] == s.encode() + b"\0"
    [(t, p)] = genl.decode_attrs(b)
    assert genl.get_string(p) == s


def test_string_without_nul_is_tolerated_and_nul_inside_refused():
    assert genl.get_string(b"abc") == "abc"
    assert genl.get_string(b"ab\0garbage") == "ab"
    with pytest.raises(ValueError):
        genl.attr_string(1, "a\0b")


def test_several_attrs_and_flags_masked():
    inner = genl.attr_u32(2, 7) + genl.attr_string(1, "x")
    b = genl.attr_u8(1, 1) + genl.attr_nested(7, inner) + genl.encode_attr(5 | genl.NLA_F_NET_BYTEORDER, b"\0\1")
    got = genl.decode_attrs(b)
    assert [t for t, _ in got] == [1, 7, 5]
    assert genl.decode_attrs(got[1][1]) == [(2, struct.pack("=I", 7)), (1, b"x\0")]


def test_last_attribute_without_padding_is_accepted():
    b = genl.attr_u8(1, 5)[:5]  # header + one byte, no pad
    assert genl.decode_attrs(b) == [(1, b"\5")]


@pytest.mark.parametrize(
    "buf,msg",
    [
        (b"\x08\x00", "truncated attribute header"),
        (struct.pack("=HH", 2, 1), "bad length"),
        (struct.pack("=HH", 12, 1) + b"\0\0\0\0", "claims 12 bytes"),
        (genl.attr_u32(1, 1) + b"\x01", "truncated attribute header"),
        # the overrun error names the (flag-masked) type of the attribute
        (genl.attr_u8(1, 0) + struct.pack("=HH", 12, 3 | genl.NLA_F_NESTED),
         "attribute type 3 at offset 8 claims 12 bytes, only 4 present"),
    ],
)
def test_malformed_attrs_raise_clear_error(buf, msg):
    with pytest.raises(genl.NetlinkDecodeError, match=msg):
        genl.decode_attrs(buf)


@pytest.mark.parametrize("get,n", [(genl.get_u8, 0), (genl.get_u16, 1), (genl.get_u32, 3), (genl.get_s32, 2), (genl.get_u64, 7)])
def test_short_scalar_payload_raises(get, n):
    with pytest.raises(genl.NetlinkDecodeError, match="need"):
        get(b"\0" * n)


def test_encode_attr_limits():
    with pytest.raises(ValueError):
        genl.encode_attr(1, b"x" * 70000)
    with pytest.raises(ValueError):
        genl.encode_attr(-1, b"")


# --- messages -------------------------------------------------------------------


def test_nlmsg_roundtrip_multiple_in_one_datagram():
    a = genl.encode_nlmsg(20, genl.NLM_F_REQUEST, 5, 99, b"abc")
    b = genl.encode_nlmsg(21, 0, 6, 0, b"")
    assert len(a) == 20  # 16 + 3 padded to 4
    assert struct.unpack_from("=I", a)[0] == 19  # nlmsg_len excludes padding
    msgs = genl.decode_nlmsgs(a + b)
    assert msgs == [genl.NlMsg(20, 1, 5, 99, b"abc"), genl.NlMsg(21, 0, 6, 0, b"")]


@pytest.mark.parametrize(
    "buf,msg",
    [
        (b"\0" * 10, "truncated netlink header"),
        (struct.pack("=IHHII", 8, 20, 0, 0, 0), "bad length"),
        (struct.pack("=IHHII", 40, 20, 0, 0, 0), "claims 40 bytes"),
        # a valid message then a stray byte: the walk must not stop after one frame
        (genl.encode_nlmsg(20, 0, 0, 0, b"abc") + b"\x01", "truncated netlink header at offset 20"),
        (genl.encode_nlmsg(20, 0, 0, 0, b"") + struct.pack("=IHHII", 4, 20, 0, 0, 0),
         "at offset 16 has bad length 4"),
    ],
)
def test_malformed_nlmsg(buf, msg):
    with pytest.raises(genl.NetlinkDecodeError, match=msg):
        genl.decode_nlmsgs(buf)


def test_genl_header_and_short_genl():
    b = genl.encode_genl(30, 4, 2, genl.attr_u32(8, 1), seq=3)
    [m] = genl.decode_nlmsgs(b)
    g = genl.decode_genl(m)
    assert (g.family, g.cmd, g.version, g.seq) == (30, 4, 2, 3)
    assert g.attr(8) == struct.pack("=I", 1)
    with pytest.raises(genl.NetlinkDecodeError, match="no genlmsghdr"):
        genl.decode_genl(genl.NlMsg(30, 0, 0, 0, b"\1\2"))
    with pytest.raises(genl.NetlinkDecodeError, match="control message"):
        genl.decode_genl(genl.NlMsg(genl.NLMSG_ERROR, 0, 0, 0, b"\0" * 20))


def test_error_and_ack_decoding():
    req = nl.build_reply(30, nl.TCMU_CMD_ADDED_DEVICE_DONE, 4, 0, seq=77)
    [m] = genl.decode_nlmsgs(genl.build_error(-errno.ENODEV, req))
    e = genl.decode_error(m)
    assert (e.error, e.seq, e.orig_type) == (-errno.ENODEV, 77, 30)
    [ack] = genl.decode_nlmsgs(genl.build_error(0, req))
    assert genl.decode_error(ack).error == 0
    with pytest.raises(genl.NetlinkDecodeError):
        genl.decode_error(genl.NlMsg(genl.NLMSG_ERROR, 0, 0, 0, b"\1"))
    with pytest.raises(genl.NetlinkDecodeError, match="positive"):
        genl.decode_error(genl.NlMsg(genl.NLMSG_ERROR, 0, 0, 0, struct.pack("=i", 5)))


def test_getfamily_request_bytes():
    b = genl.build_getfamily("TCM-USER", seq=9)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", b)
    assert (mtype, flags, seq, pid) == (genl.GENL_ID_CTRL, genl.NLM_F_REQUEST, 9, 0)
    assert b[16:20] == bytes([genl.CTRL_CMD_GETFAMILY, 1, 0, 0])
    assert genl.decode_attrs(b[20:]) == [(genl.CTRL_ATTR_FAMILY_NAME, b"TCM-USER\0")]


def test_family_parse_roundtrip():
    info = genl.FamilyInfo(31, "TCM-USER", 2, {"config": 9})
    [m] = genl.decode_nlmsgs(genl.build_newfamily(info, seq=1))
    assert genl.parse_family(genl.decode_genl(m)) == info


# --- the real NETLINK_GENERIC socket on the host ---------------------------------


def test_real_controller_resolves_nlctrl():
    s = genl.GenlSocket()
    try:
        info = s.resolve_family("nlctrl")
        assert info.id == genl.GENL_ID_CTRL and info.name == "nlctrl"
        assert "notify" in info.mcast_groups
        s.add_membership(info.mcast_groups["notify"])
    finally:
        s.close()


def test_real_controller_unknown_family():
    s = genl.GenlSocket()
    try:
        with pytest.raises(genl.FamilyNotFound, match="does not exist"):
            s.resolve_family("nosuchfamily")
    finally:
        s.close()
