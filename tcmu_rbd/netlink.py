"""The kernel's TCMU control channel: the generic netlink family "TCM-USER".

What belongs here: the TCM-USER numbers of ``<linux/target_core_user.h>``
(tests/test_netlink.py checks them against the installed header), the one parser
of a kernel event (:func:`parse_tcmu_event` -> :class:`TcmuEvent`), the messages
the daemon sends (``SET_FEATURES{SUPP_KERN_CMD_REPLY=1}``, the ``*_DONE``
replies), their kernel-side counterparts for tests and fakes, and
:class:`TcmuNetlink`, which joins the "config" multicast group, yields events and
sends replies.

What does NOT: the generic netlink codec, the controller and the socket
(:mod:`tcmu_rbd.genl`); what an event means for a device (the daemon).

Errors: everything :meth:`TcmuNetlink.open` raises on the netlink side is a
:class:`NetlinkError` (from :mod:`tcmu_rbd.genl`; :class:`FamilyNotFound` when
the target_core_user module is not loaded).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
from dataclasses import dataclass

from .genl import (
    GENL_HDR, NLA_HDR, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDR, NLMSG_MIN_TYPE,
    FamilyNotFound, GenlMsg, GenlSocket, NetlinkDecodeError, NetlinkRequestError, NlMsg,
    attr_s32, attr_string, attr_u8, attr_u32, attr_u64, decode_error, decode_genl,
    decode_nlmsgs, encode_attr, encode_genl, get_s32, get_string, get_u8, get_u32, get_u64,
)
# part of this module's interface: the base of everything TcmuNetlink.open() raises
from .genl import NetlinkError  # noqa: F401

log = logging.getLogger("tcmu_rbd.netlink")

# --- <linux/target_core_user.h> ----------------------------------------------
TCMU_FAMILY_NAME = "TCM-USER"
TCMU_MCGRP_CONFIG = "config"
TCMU_NL_VERSION = 2

TCMU_CMD_UNSPEC = 0
TCMU_CMD_ADDED_DEVICE = 1
TCMU_CMD_REMOVED_DEVICE = 2
TCMU_CMD_RECONFIG_DEVICE = 3
TCMU_CMD_ADDED_DEVICE_DONE = 4
TCMU_CMD_REMOVED_DEVICE_DONE = 5
TCMU_CMD_RECONFIG_DEVICE_DONE = 6
TCMU_CMD_SET_FEATURES = 7

TCMU_ATTR_UNSPEC = 0
TCMU_ATTR_DEVICE = 1
TCMU_ATTR_MINOR = 2
TCMU_ATTR_PAD = 3
TCMU_ATTR_DEV_CFG = 4
TCMU_ATTR_DEV_SIZE = 5
TCMU_ATTR_WRITECACHE = 6
TCMU_ATTR_CMD_STATUS = 7
TCMU_ATTR_DEVICE_ID = 8
TCMU_ATTR_SUPP_KERN_CMD_REPLY = 9

#: kernel event -> the reply command that completes it
DONE_FOR = {
    TCMU_CMD_ADDED_DEVICE: TCMU_CMD_ADDED_DEVICE_DONE,
    TCMU_CMD_REMOVED_DEVICE: TCMU_CMD_REMOVED_DEVICE_DONE,
    TCMU_CMD_RECONFIG_DEVICE: TCMU_CMD_RECONFIG_DEVICE_DONE,
}
CMD_NAMES = {
    TCMU_CMD_ADDED_DEVICE: "ADDED_DEVICE",
    TCMU_CMD_REMOVED_DEVICE: "REMOVED_DEVICE",
    TCMU_CMD_RECONFIG_DEVICE: "RECONFIG_DEVICE",
    TCMU_CMD_ADDED_DEVICE_DONE: "ADDED_DEVICE_DONE",
    TCMU_CMD_REMOVED_DEVICE_DONE: "REMOVED_DEVICE_DONE",
    TCMU_CMD_RECONFIG_DEVICE_DONE: "RECONFIG_DEVICE_DONE",
    TCMU_CMD_SET_FEATURES: "SET_FEATURES",
}


@dataclass(frozen=True)
class TcmuEvent:
    """A kernel -> daemon TCM-USER message."""

    cmd: int
    version: int
    device: str | None = None  # the uio name: tcm-user/<hba>/<name>/<dev_config>
    minor: int | None = None
    device_id: int | None = None
    dev_cfg: str | None = None
    dev_size: int | None = None
    writecache: int | None = None
    #: set when an attribute was malformed (the others are still decoded so
    #: the event can be answered with -EINVAL rather than left pending)
    error: str | None = None

    @property
    def uio(self) -> str | None:
        return None if self.minor is None else f"uio{self.minor}"

    @property
    def name(self) -> str:
        return CMD_NAMES.get(self.cmd, f"cmd{self.cmd}")

    @property
    def reply_cmd(self) -> int | None:
        return DONE_FOR.get(self.cmd)


def parse_tcmu_event(msg: GenlMsg) -> TcmuEvent:
    """Decode a TCM-USER message; attribute payloads are type-checked.  A
    malformed attribute does not raise: it is left out and described in
    ``error`` (so the event can still be answered)."""
    a = {t: p for t, p in msg.attrs}
    errors: list[str] = []

    def opt(atype, getter):
        if atype not in a:
            return None
        try:
            return getter(a[atype])
        except NetlinkDecodeError as e:
            errors.append(f"attribute {atype}: {e}")
            return None

    ev = TcmuEvent(
        cmd=msg.cmd,
        version=msg.version,
        device=opt(TCMU_ATTR_DEVICE, get_string),
        minor=opt(TCMU_ATTR_MINOR, get_u32),
        device_id=opt(TCMU_ATTR_DEVICE_ID, get_u32),
        dev_cfg=opt(TCMU_ATTR_DEV_CFG, get_string),
        dev_size=opt(TCMU_ATTR_DEV_SIZE, get_u64),
        writecache=opt(TCMU_ATTR_WRITECACHE, get_u8),
    )
    if errors:
        ev = TcmuEvent(**{**ev.__dict__, "error": "; ".join(errors)})
    return ev


def build_tcmu_event(
    family: int,
    cmd: int,
    *,
    device: str | None = None,
    minor: int | None = None,
    device_id: int | None = None,
    dev_cfg: str | None = None,
    dev_size: int | None = None,
    writecache: int | None = None,
    version: int = TCMU_NL_VERSION,
    seq: int = 0,
    pad_u64: bool = True,
) -> bytes:
    """Encode a kernel -> daemon event exactly as target_core_user.c does
    (tests and fakes).  With ``pad_u64`` a DEV_SIZE is preceded by a PAD
    attribute when needed to 8-byte-align its payload, as nla_put_u64_64bit
    does on architectures without efficient unaligned access."""
    attrs = b""
    if device is not None:
        attrs += attr_string(TCMU_ATTR_DEVICE, device)
    if minor is not None:
        attrs += attr_u32(TCMU_ATTR_MINOR, minor)
    if device_id is not None:
        attrs += attr_u32(TCMU_ATTR_DEVICE_ID, device_id)
    if dev_cfg is not None:
        attrs += attr_string(TCMU_ATTR_DEV_CFG, dev_cfg)
    if dev_size is not None:
        # payload offset within the message = 16 (nlmsghdr) + 4 (genlhdr) + len + 4
        if pad_u64 and (NLMSG_HDR.size + GENL_HDR.size + len(attrs) + NLA_HDR.size) % 8:
            attrs += encode_attr(TCMU_ATTR_PAD, b"")
        attrs += attr_u64(TCMU_ATTR_DEV_SIZE, dev_size)
    if writecache is not None:
        attrs += attr_u8(TCMU_ATTR_WRITECACHE, writecache)
    return encode_genl(family, cmd, version, attrs, flags=0, seq=seq)


def build_set_features(family: int, seq: int = 0, supp_kern_cmd_reply: int = 1) -> bytes:
    return encode_genl(
        family,
        TCMU_CMD_SET_FEATURES,
        TCMU_NL_VERSION,
        attr_u8(TCMU_ATTR_SUPP_KERN_CMD_REPLY, supp_kern_cmd_reply),
        flags=NLM_F_REQUEST | NLM_F_ACK,
        seq=seq,
    )


def build_reply(family: int, reply_cmd: int, device_id: int, status: int, seq: int = 0) -> bytes:
    """``*_DONE{CMD_STATUS (s32), DEVICE_ID (u32)}``; status 0 or a negative errno."""
    if reply_cmd not in (
        TCMU_CMD_ADDED_DEVICE_DONE,
        TCMU_CMD_REMOVED_DEVICE_DONE,
        TCMU_CMD_RECONFIG_DEVICE_DONE,
    ):
        raise ValueError(f"{reply_cmd} is not a *_DONE command")
    if status > 0:
        raise ValueError("status must be 0 or a negative errno")
    return encode_genl(
        family,
        reply_cmd,
        TCMU_NL_VERSION,
        attr_s32(TCMU_ATTR_CMD_STATUS, status) + attr_u32(TCMU_ATTR_DEVICE_ID, device_id),
        flags=NLM_F_REQUEST | NLM_F_ACK,
        seq=seq,
    )


def parse_reply(msg: GenlMsg) -> tuple[int, int, int]:
    """``(reply_cmd, device_id, status)`` of a *_DONE (tests and fakes)."""
    st = msg.attr(TCMU_ATTR_CMD_STATUS)
    did = msg.attr(TCMU_ATTR_DEVICE_ID)
    if st is None or did is None:
        raise NetlinkDecodeError("reply without CMD_STATUS or DEVICE_ID")
    return msg.cmd, get_u32(did), get_s32(st)


class TcmuNetlink:
    """The TCM-USER control channel.

    ``open()`` resolves the family and its "config" group, joins it and sends
    SET_FEATURES{SUPP_KERN_CMD_REPLY=1} (after which the kernel waits for our
    replies).  ``recv_events()`` drains the socket without blocking;
    ``send_reply()`` answers an event.  ``from_socket()`` wraps any datagram
    socket (tests use a socketpair with a fake kernel on the other end).
    """

    #: returned by recv_events() in place of events when the kernel dropped
    #: messages (ENOBUFS): the caller must resynchronise.
    OVERRUN = "overrun"

    def __init__(self, sock: socket.socket, family: int, send=None, genl: GenlSocket | None = None):
        self.sock = sock
        self.family = family
        self._send = send or sock.send
        self._genl = genl
        self._seq = itertools.count(1)
        self._sent: dict[int, tuple[int, int]] = {}  # seq -> (reply_cmd, device_id)
        self.reply_supported = False

    @classmethod
    def open(cls, timeout: float = 5.0) -> "TcmuNetlink":
        genl = GenlSocket()
        try:
            try:
                fam = genl.resolve_family(TCMU_FAMILY_NAME, timeout)
            except FamilyNotFound:
                raise FamilyNotFound(
                    "generic netlink family TCM-USER not found: is the target_core_user "
                    "kernel module loaded?"
                ) from None
            if TCMU_MCGRP_CONFIG not in fam.mcast_groups:
                raise FamilyNotFound(
                    f"TCM-USER has no multicast group {TCMU_MCGRP_CONFIG!r} "
                    f"(groups: {sorted(fam.mcast_groups)})"
                )
            genl.add_membership(fam.mcast_groups[TCMU_MCGRP_CONFIG])
            self = cls(genl.sock, fam.id, send=genl.send, genl=genl)
            self._pending_raw = list(genl.backlog)
            genl.backlog.clear()
            seq = genl.next_seq()
            try:
                genl.request(build_set_features(fam.id, seq), seq, "TCM-USER SET_FEATURES", timeout)
                self.reply_supported = True
            except NetlinkRequestError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    # an old kernel: it will not wait for replies; we still send them
                    log.warning("kernel does not support SET_FEATURES (%s): running without "
                                "command replies", e)
                else:
                    raise
            self._pending_raw += genl.backlog
            genl.backlog.clear()
            return self
        except BaseException:
            genl.close()
            raise

    @classmethod
    def from_socket(cls, sock: socket.socket, family: int) -> "TcmuNetlink":
        self = cls(sock, family)
        self._pending_raw = []
        self.reply_supported = True
        return self

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send_reply(self, reply_cmd: int, device_id: int, status: int) -> None:
        seq = next(self._seq) & 0xFFFFFFFF
        self._sent[seq] = (reply_cmd, device_id)
        if len(self._sent) > 1024:  # acks we never saw: forget the oldest
            for k in list(self._sent)[:512]:
                del self._sent[k]
        self._send(build_reply(self.family, reply_cmd, device_id, status, seq))

    def _handle(self, m: NlMsg, out: list) -> None:
        if m.type == NLMSG_ERROR:
            e = decode_error(m)
            what = self._sent.pop(e.seq, None)
            if e.error and what:
                log.error("kernel rejected %s for device id %d: %s", CMD_NAMES.get(what[0]),
                          what[1], os.strerror(-e.error))
            elif e.error:
                log.error("kernel reported netlink error %s (seq %d)", os.strerror(-e.error), e.seq)
            return
        if m.type < NLMSG_MIN_TYPE:
            return
        if m.type != self.family:
            log.debug("ignoring netlink message of family %d", m.type)
            return
        g = decode_genl(m)
        if g.cmd in DONE_FOR:
            out.append(parse_tcmu_event(g))
        else:
            log.debug("ignoring TCM-USER command %d", g.cmd)

    def recv_events(self) -> list:
        """Drain the socket: a list of :class:`TcmuEvent` (and possibly
        :data:`OVERRUN`).  Undecodable messages are logged and skipped."""
        out: list = []
        pending, self._pending_raw = self._pending_raw, []
        for m in pending:
            self._handle_safe(m, out)
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    log.error("netlink receive buffer overrun: kernel events were lost")
                    out.append(self.OVERRUN)
                    continue
                raise
            if not data:
                break
            try:
                msgs = decode_nlmsgs(data)
            except NetlinkDecodeError as e:
                log.error("dropping malformed netlink datagram (%d bytes): %s", len(data), e)
                continue
            for m in msgs:
                self._handle_safe(m, out)
        return out

    def _handle_safe(self, m: NlMsg, out: list) -> None:
        try:
            self._handle(m, out)
        except NetlinkDecodeError as e:
            log.error("dropping malformed netlink message (type %d): %s", m.type, e)
