"""Generic netlink (``NETLINK_GENERIC``): the wire codec and a socket that speaks it.

What belongs here: pure encode/decode functions over ``bytes`` for ``nlmsghdr``,
``genlmsghdr`` and ``nlattr`` (with the 4-byte NLA alignment) and the controller
("nlctrl") messages that resolve a family and its multicast groups; the errors
they raise (malformed or truncated input raises :class:`NetlinkDecodeError`, never
anything else); and :class:`GenlSocket`, a thin synchronous socket on top.

What does NOT: any particular family's commands and attributes (TCM-USER lives
in :mod:`tcmu_rbd.netlink`), logging, and policy about what to do with a message.

Numbers follow ``<linux/netlink.h>`` and ``<linux/genetlink.h>``.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

# --- <linux/netlink.h> -------------------------------------------------------
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_EXT_ACK = 11

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENL_HDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA_HDR = struct.Struct("=HH")  # len, type
NLMSG_ALIGNTO = 4
NLA_ALIGNTO = 4

# --- <linux/genetlink.h> -----------------------------------------------------
GENL_ID_CTRL = NLMSG_MIN_TYPE
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

class NetlinkError(Exception):
    """Base class of everything this module raises."""


class NetlinkDecodeError(NetlinkError, ValueError):
    """Bytes that are not a well-formed netlink/genetlink message."""


class NetlinkRequestError(NetlinkError, OSError):
    """The kernel answered a request with NLMSG_ERROR (errno is positive)."""

    def __init__(self, err: int, what: str):
        super().__init__(err, f"{what}: {os.strerror(err)} (errno {err})")


class FamilyNotFound(NetlinkError, LookupError):
    """The generic netlink family (or its multicast group) does not exist."""


# =============================================================================
# Sans-IO: attributes
# =============================================================================


def align(n: int, to: int = 4) -> int:
    return (n + to - 1) & ~(to - 1)


def encode_attr(atype: int, payload: bytes) -> bytes:
    """One nlattr: header, payload, zero padding to a 4-byte boundary."""
    if not 0 <= atype <= 0xFFFF:
        raise ValueError(f"attribute type {atype} out of range")
    length = NLA_HDR.size + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"attribute {atype} too long ({len(payload)} bytes)")
    return NLA_HDR.pack(length, atype) + payload + b"\0" * (align(length) - length)


def attr_u8(atype: int, value: int) -> bytes:
    return encode_attr(atype, struct.pack("=B", value))


def attr_u16(atype: int, value: int) -> bytes:
    return encode_attr(atype, struct.pack("=H", value))


def attr_u32(atype: int, value: int) -> bytes:
    return encode_attr(atype, struct.pack("=I", value))


def attr_s32(atype: int, value: int) -> bytes:
    return encode_attr(atype, struct.pack("=i", value))


def attr_u64(atype: int, value: int) -> bytes:
    return encode_attr(atype, struct.pack("=Q", value))


def attr_string(atype: int, value: str | bytes) -> bytes:
    """NLA_STRING / NLA_NUL_STRING: the payload carries a terminating NUL."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if b"\0" in value:
        raise ValueError("netlink string attribute cannot contain NUL")
    return encode_attr(atype, value + b"\0")


def attr_nested(atype: int, children: bytes) -> bytes:
    return encode_attr(atype | NLA_F_NESTED, children)


def _walk_frames(buf: bytes, hdr: struct.Struct, header: str, frame: str, type_mask: int = 0):
    """Yield ``(header fields, payload)`` for each frame of a run of TLVs.

    nlmsghdr and nlattr share this framing: the header's first field is the
    frame length (header included, padding excluded) and frames start on
    4-byte boundaries.  *header*/*frame* name them in errors; *type_mask*
    (nlattr) adds the masked type (field 1) to the overrun error.
    """
    off, end, size = 0, len(buf), hdr.size
    while off < end:
        if end - off < size:
            raise NetlinkDecodeError(
                f"truncated {header} header at offset {off} ({end - off} bytes left)"
            )
        fields = hdr.unpack_from(buf, off)
        length = fields[0]
        if length < size:
            raise NetlinkDecodeError(f"{frame} at offset {off} has bad length {length}")
        if off + length > end:
            typed = f" type {fields[1] & type_mask}" if type_mask else ""
            raise NetlinkDecodeError(
                f"{frame}{typed} at offset {off} claims {length} bytes, only {end - off} present"
            )
        yield fields, buf[off + size : off + length]
        off += align(length)


def decode_attrs(buf: bytes | memoryview) -> list[tuple[int, bytes]]:
    """Split a run of nlattrs into ``[(type, payload), ...]``.

    The type has the NESTED/NET_BYTEORDER flags masked off.  The last attribute
    may omit its trailing padding (the kernel never does that, but the
    alignment rule only requires it *between* attributes).
    """
    frames = _walk_frames(bytes(buf), NLA_HDR, "attribute", "attribute", NLA_TYPE_MASK)
    return [(atype & NLA_TYPE_MASK, payload) for (_len, atype), payload in frames]


def attrs_dict(buf: bytes | memoryview) -> dict[int, bytes]:
    """Like :func:`decode_attrs` but keyed by type (the last one of a type wins)."""
    return dict(decode_attrs(buf))


def _fixed(payload: bytes, fmt: str, what: str) -> int:
    size = struct.calcsize(fmt)
    if len(payload) < size:
        raise NetlinkDecodeError(f"{what}: payload of {len(payload)} bytes, need {size}")
    return struct.unpack_from(fmt, payload)[0]


def get_u8(payload: bytes) -> int:
    return _fixed(payload, "=B", "u8 attribute")


def get_u16(payload: bytes) -> int:
    return _fixed(payload, "=H", "u16 attribute")


def get_u32(payload: bytes) -> int:
    return _fixed(payload, "=I", "u32 attribute")


def get_s32(payload: bytes) -> int:
    return _fixed(payload, "=i", "s32 attribute")


def get_u64(payload: bytes) -> int:
    return _fixed(payload, "=Q", "u64 attribute")


def get_string(payload: bytes) -> str:
    """A string attribute: up to the first NUL (a missing NUL is tolerated)."""
    nul = payload.find(b"\0")
    if nul >= 0:
        payload = payload[:nul]
    return payload.decode("utf-8", errors="replace")


# =============================================================================
# Sans-IO: messages
# =============================================================================


@dataclass(frozen=True)
class NlMsg:
    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@dataclass(frozen=True)
class NlError:
    """Decoded NLMSG_ERROR: ``error`` is 0 for an ACK, else a negative errno."""

    error: int
    seq: int  # seq of the request it answers
    orig_type: int
    orig_flags: int


@dataclass(frozen=True)
class GenlMsg:
    family: int
    cmd: int
    version: int
    attrs: list[tuple[int, bytes]]
    seq: int = 0
    pid: int = 0
    flags: int = 0

    def attr(self, atype: int) -> bytes | None:
        found = None
        for t, p in self.attrs:
            if t == atype:
                found = p
        return found


def encode_nlmsg(mtype: int, flags: int, seq: int, pid: int, payload: bytes) -> bytes:
    length = NLMSG_HDR.size + len(payload)
    return NLMSG_HDR.pack(length, mtype, flags, seq, pid) + payload + b"\0" * (align(length) - length)


def decode_nlmsgs(buf: bytes | memoryview) -> list[NlMsg]:
    """Split one datagram into its netlink messages."""
    frames = _walk_frames(bytes(buf), NLMSG_HDR, "netlink", "netlink message")
    return [
        NlMsg(mtype, flags, seq, pid, payload)
        for (_len, mtype, flags, seq, pid), payload in frames
    ]


def decode_error(msg: NlMsg) -> NlError:
    if msg.type != NLMSG_ERROR:
        raise NetlinkDecodeError(f"message type {msg.type} is not NLMSG_ERROR")
    if len(msg.payload) < 4:
        raise NetlinkDecodeError("NLMSG_ERROR without an error code")
    (err,) = struct.unpack_from("=i", msg.payload)
    if err > 0:
        raise NetlinkDecodeError(f"NLMSG_ERROR with positive error {err}")
    orig_type = orig_flags = 0
    seq = msg.seq
    if len(msg.payload) >= 4 + NLMSG_HDR.size:
        _l, orig_type, orig_flags, oseq, _p = NLMSG_HDR.unpack_from(msg.payload, 4)
        seq = oseq
    return NlError(err, seq, orig_type, orig_flags)


def encode_genl(
    family: int,
    cmd: int,
    version: int,
    attrs: bytes = b"",
    *,
    flags: int = NLM_F_REQUEST,
    seq: int = 0,
    pid: int = 0,
) -> bytes:
    return encode_nlmsg(family, flags, seq, pid, GENL_HDR.pack(cmd, version, 0) + attrs)


def decode_genl(msg: NlMsg) -> GenlMsg:
    if msg.type < NLMSG_MIN_TYPE:
        raise NetlinkDecodeError(f"message type {msg.type} is a control message, not genetlink")
    if len(msg.payload) < GENL_HDR.size:
        raise NetlinkDecodeError(
            f"genetlink message of {len(msg.payload)} bytes has no genlmsghdr"
        )
    cmd, version, _ = GENL_HDR.unpack_from(msg.payload)
    attrs = decode_attrs(msg.payload[GENL_HDR.size :])
    return GenlMsg(msg.type, cmd, version, attrs, msg.seq, msg.pid, msg.flags)


# --- controller --------------------------------------------------------------


@dataclass(frozen=True)
class FamilyInfo:
    id: int
    name: str
    version: int
    mcast_groups: dict[str, int] = field(default_factory=dict)


def build_getfamily(name: str, seq: int = 0) -> bytes:
    return encode_genl(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        1,
        attr_string(CTRL_ATTR_FAMILY_NAME, name),
        flags=NLM_F_REQUEST,
        seq=seq,
    )


def parse_family(msg: GenlMsg) -> FamilyInfo:
    if msg.cmd != CTRL_CMD_NEWFAMILY:
        raise NetlinkDecodeError(f"controller reply has cmd {msg.cmd}, expected NEWFAMILY")
    fid = msg.attr(CTRL_ATTR_FAMILY_ID)
    name = msg.attr(CTRL_ATTR_FAMILY_NAME)
    if fid is None or name is None:
        raise NetlinkDecodeError("controller reply without family id or name")
    version = msg.attr(CTRL_ATTR_VERSION)
    groups: dict[str, int] = {}
    grp_blob = msg.attr(CTRL_ATTR_MCAST_GROUPS)
    if grp_blob is not None:
        for _idx, grp in decode_attrs(grp_blob):
            g = attrs_dict(grp)
            if CTRL_ATTR_MCAST_GRP_NAME in g and CTRL_ATTR_MCAST_GRP_ID in g:
                groups[get_string(g[CTRL_ATTR_MCAST_GRP_NAME])] = get_u32(
                    g[CTRL_ATTR_MCAST_GRP_ID]
                )
    return FamilyInfo(
        get_u16(fid), get_string(name), get_u32(version) if version is not None else 0, groups
    )


def build_newfamily(info: FamilyInfo, seq: int = 0, pid: int = 0) -> bytes:
    """The controller's answer (used by tests and fakes)."""
    grps = b"".join(
        attr_nested(
            i + 1,
            attr_string(CTRL_ATTR_MCAST_GRP_NAME, name) + attr_u32(CTRL_ATTR_MCAST_GRP_ID, gid),
        )
        for i, (name, gid) in enumerate(info.mcast_groups.items())
    )
    attrs = (
        attr_u16(CTRL_ATTR_FAMILY_ID, info.id)
        + attr_string(CTRL_ATTR_FAMILY_NAME, info.name)
        + attr_u32(CTRL_ATTR_VERSION, info.version)
    )
    if grps:
        attrs += attr_nested(CTRL_ATTR_MCAST_GROUPS, grps)
    return encode_genl(GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, 2, attrs, flags=0, seq=seq, pid=pid)


def build_error(error: int, orig: bytes = b"", seq: int = 0, pid: int = 0) -> bytes:
    """An NLMSG_ERROR (error <= 0) quoting the request header (tests/fakes)."""
    return encode_nlmsg(NLMSG_ERROR, 0, seq, pid, struct.pack("=i", error) + orig[: NLMSG_HDR.size])


# =============================================================================
# I/O
# =============================================================================


class GenlSocket:
    """A NETLINK_GENERIC socket with synchronous controller requests.

    Messages that arrive while waiting for an answer and do not belong to it
    (e.g. multicast events) are kept in ``backlog`` for the caller.
    """

    def __init__(self, rcvbuf: int = 4 * 1024 * 1024):
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_GENERIC
        )
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError:
            pass
        self.sock.bind((0, 0))
        self.portid = self.sock.getsockname()[0]
        self._seq = itertools.count(int(time.time()) & 0xFFFF)
        self.backlog: list[NlMsg] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def next_seq(self) -> int:
        return next(self._seq) & 0xFFFFFFFF

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (0, 0))

    def recv_msgs(self, timeout: float | None = None) -> list[NlMsg]:
        """One datagram's worth of messages; [] on timeout."""
        if timeout is not None:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return []
        data = self.sock.recv(1 << 16)
        return decode_nlmsgs(data)

    def request(self, data: bytes, seq: int, what: str, timeout: float = 5.0) -> list[NlMsg]:
        """Send a request and collect its answer: the messages carrying ``seq``
        up to the ACK (if requested) or the first non-multipart reply.
        Raises :class:`NetlinkRequestError` on a negative NLMSG_ERROR."""
        self.send(data)
        wants_ack = bool(NLMSG_HDR.unpack_from(data)[2] & NLM_F_ACK)
        answer: list[NlMsg] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NetlinkRequestError(errno.ETIMEDOUT, what)
            for m in self.recv_msgs(left):
                if m.seq != seq or m.pid not in (0, self.portid) or m.type == NLMSG_NOOP:
                    self.backlog.append(m)
                    continue
                if m.type == NLMSG_ERROR:
                    e = decode_error(m)
                    if e.error:
                        raise NetlinkRequestError(-e.error, what)
                    return answer
                if m.type == NLMSG_DONE:
                    return answer
                answer.append(m)
                if not wants_ack and not (m.flags & NLM_F_MULTI):
                    return answer

    def resolve_family(self, name: str, timeout: float = 5.0) -> FamilyInfo:
        seq = self.next_seq()
        try:
            msgs = self.request(build_getfamily(name, seq), seq, f"CTRL_CMD_GETFAMILY {name}", timeout)
        except NetlinkRequestError as e:
            if e.errno == errno.ENOENT:
                raise FamilyNotFound(f"generic netlink family {name!r} does not exist") from None
            raise
        for m in msgs:
            info = parse_family(decode_genl(m))
            if info.name == name:
                return info
        raise FamilyNotFound(f"generic netlink family {name!r}: no answer from the controller")

    def add_membership(self, group: int) -> None:
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
