"""The control protocol between the supervisor and a worker, for both ends.

Belongs here: the worker contract (below), the messages each side sends,
their encoding (one JSON object per line), decoding with the line-length
bound (:class:`LineDecoder`, sans-IO: bytes in, messages out), and the errno
an error carries.  The supervisor (worker_process.py) and the worker
(worker.py) both encode and decode through this module and nowhere else.

Not here: sockets, pipes, timers and processes (worker_process.py, worker.py),
and what a message makes either side do (supervisor.py, worker.py).

Worker contract
---------------
* spawned as ``<worker_command> --uio uioN --ctl-fd FD --osd-op-timeout N --lock-grace S
  [--metrics-fd M]`` (N: the settings' default; M: the LUN's metrics
  region, a memfd the worker maps and records into: tcmu_rbd/metrics.py)
  with ``TCMU_RBD_CONFIG`` (settings file, if any), ``TCMU_RBD_LOG_LEVEL``
  and ``TCMU_RBD_SUPERVISOR_PID`` (the worker dies with it:
  PR_SET_PDEATHSIG) in the environment, stdin ``/dev/null``,
  stdout+stderr a pipe the supervisor relays into its log (an sd-daemon
  ``<N>`` prefix sets the level), in its own session; FD is an AF_UNIX
  stream socket carrying newline-delimited JSON objects;
* worker -> supervisor, first line: ``{"event": "ready"}`` or
  ``{"event": "failed", "error": "<for the operator>"[, "errno": N]}``
  (errno defaults to ENOENT: the kernel fails the enable with it);
* supervisor -> worker: ``{"id": k, "op": "resize", "size": N}``,
  ``{"id": k, "op": "reconfig", "config": "<dev_config>"}``,
  ``{"id": k, "op": "writecache", "value": 0|1}``, ``{"id": k, "op": "stop"}``
  (stop taking commands, finish what is in flight, release the device: the
  image closed, the ring unmapped; answered then, before the exit 0, which a
  thread inside the device's configfs can delay until the kernel has the
  supervisor's answer); every request is answered ``{"id": k, "ok": true}`` or ``{"id": k, "ok": false, "error":
  "...", ["errno": N]}`` (errno defaults to EIO);
* EOF on the socket (or SIGTERM from PR_SET_PDEATHSIG) means the supervisor is
  gone: block the device (action/block_dev=1), then stop as for "stop";
* a line over :data:`MAX_LINE` bytes is a protocol error (the supervisor
  kills the worker).

Worker host (``luns_per_worker`` > 1: several devices in one process)
-------------------------------------------------------------------
* spawned as ``<worker_command> --host --ctl-fd FD --osd-op-timeout N --lock-grace S``
  with the environment, stdin, stdout+stderr and session of a worker; FD is an
  AF_UNIX seqpacket socket: each message the supervisor sends on it is one
  :class:`Serve` (a JSON object) with the device's own control socket and, if
  any, its metrics memfd attached (SCM_RIGHTS, in that order);
* the host serves each such device on threads of its own, speaking the worker
  contract above on the device's control socket, and closes that socket when it
  has released the device: EOF there is that device's exit (a host that died
  ends all of its devices; its exit status is theirs);
* EOF on FD: the supervisor is gone (every device still served is blocked and
  stopped, as above), or it has no device left for this host: the host exits
  once its devices are released.  SIGTERM stops every device.

Restart recovery after a supervisor crash (kill -9): the old workers stop by
themselves (above); any still holding /dev/uioN is stopped by the new
supervisor (SIGTERM, SIGKILL after worker_stop_timeout) before it resets the
ring and starts its own worker (supervisor.py, ``_stop_stale_holders``).
"""

from __future__ import annotations

import errno as errnos
import json
from dataclasses import dataclass
from typing import ClassVar

#: the longest control line either side accepts
MAX_LINE = 1 << 20


# --- worker -> supervisor: the first line ------------------------------------


@dataclass(frozen=True)
class Ready:
    """The worker serves its device."""

    event: ClassVar[str] = "ready"

    def wire(self) -> dict:
        return {"event": self.event}


@dataclass(frozen=True)
class Failed:
    """The worker cannot serve its device; ``error`` is for the operator."""

    error: str
    errno: int = errnos.ENOENT
    event: ClassVar[str] = "failed"

    def wire(self) -> dict:
        return {"event": self.event, "error": self.error, "errno": self.errno}


# --- supervisor -> worker: requests ------------------------------------------
# ``id`` is last so a request can be made before its id is known
# (the worker handle numbers it: dataclasses.replace(req, id=k)).


@dataclass(frozen=True)
class Resize:
    """The LUN's new size in bytes (RECONFIG_DEVICE dev_size)."""

    size: int
    id: int = 0
    op: ClassVar[str] = "resize"

    def wire(self) -> dict:
        return {"id": self.id, "op": self.op, "size": self.size}


@dataclass(frozen=True)
class Reconfig:
    """Reopen on a new dev_config (RECONFIG_DEVICE dev_cfg)."""

    config: str
    id: int = 0
    op: ClassVar[str] = "reconfig"

    def wire(self) -> dict:
        return {"id": self.id, "op": self.op, "config": self.config}


@dataclass(frozen=True)
class WriteCache:
    """Turn the emulated write cache on or off (RECONFIG_DEVICE writecache)."""

    value: bool
    id: int = 0
    op: ClassVar[str] = "writecache"

    def wire(self) -> dict:
        return {"id": self.id, "op": self.op, "value": int(self.value)}


@dataclass(frozen=True)
class Stop:
    """Stop taking commands, finish what is in flight, exit 0."""

    id: int = 0
    op: ClassVar[str] = "stop"

    def wire(self) -> dict:
        return {"id": self.id, "op": self.op}


Request = Resize | Reconfig | WriteCache | Stop


# --- worker -> supervisor: answers -------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The answer to request ``id``: ok, or an error for the operator."""

    id: int
    ok: bool = True
    error: str = ""
    errno: int = errnos.EIO

    @classmethod
    def failure(cls, id: int, error: str, errno: int = errnos.EIO) -> "Answer":
        return cls(id, False, error, errno)

    def wire(self) -> dict:
        if self.ok:
            return {"id": self.id, "ok": True}
        return {"id": self.id, "ok": False, "error": self.error, "errno": self.errno}


# --- what a line can be besides a message ------------------------------------


@dataclass(frozen=True)
class Invalid:
    """A line that is not a valid message: ``reason`` for the log, and the
    request's ``id`` when there is one (the worker still answers it)."""

    reason: str
    line: bytes = b""
    id: int | None = None


@dataclass(frozen=True)
class Overlong:
    """A line longer than MAX_LINE (skipped up to its newline)."""

    size: int


Message = Ready | Failed | Request | Answer

_OPS = {cls.op: cls for cls in (Resize, Reconfig, WriteCache, Stop)}


def encode(msg: Message) -> bytes:
    """One message as its line on the wire."""
    return json.dumps(msg.wire()).encode() + b"\n"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def errno_of(msg: dict, default: int) -> int:
    """The positive errno a wire message carries; ``default`` when it has
    none (absent, 0 or not an integer)."""
    v = msg.get("errno")
    return abs(v) if _is_int(v) and v != 0 else default


def decode(line: bytes) -> Message | Invalid:
    """One line (without its newline) as a message, or why it is none."""
    try:
        msg = json.loads(line)
    except ValueError as e:  # UnicodeDecodeError included
        return Invalid(str(e), line)
    if not isinstance(msg, dict):
        return Invalid("not an object", line)
    if "event" in msg:
        ev = msg["event"]
        if ev == Ready.event:
            return Ready()
        if ev == Failed.event:
            return Failed(str(msg.get("error") or "worker failed without a message"),
                          errno_of(msg, errnos.ENOENT))
        return Invalid(f"unknown event {ev!r}", line)
    rid = msg.get("id")
    if not _is_int(rid):
        return Invalid("neither an event nor a request or answer with an integer id", line)
    if "op" in msg:
        return _decode_request(rid, msg, line)
    if msg.get("ok") is True:
        return Answer(rid)
    return Answer.failure(rid, str(msg.get("error") or ""), errno_of(msg, errnos.EIO))


def _decode_request(rid: int, msg: dict, line: bytes) -> Request | Invalid:
    op = msg["op"]
    cls = _OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        return Invalid(f"unknown control op {op!r}", line, rid)
    if cls is Resize:
        size = msg.get("size")
        if not _is_int(size) or size < 0:
            return Invalid(f"resize: size {size!r} is not a byte count", line, rid)
        return Resize(size, rid)
    if cls is Reconfig:
        config = msg.get("config")
        if not isinstance(config, str):
            return Invalid(f"reconfig: config {config!r} is not a string", line, rid)
        return Reconfig(config, rid)
    if cls is WriteCache:
        value = msg.get("value")
        if value not in (0, 1):  # True and False included
            return Invalid(f"writecache: value {value!r} is not 0 or 1", line, rid)
        return WriteCache(bool(value), rid)
    return Stop(rid)


class LineDecoder:
    """Messages out of a control stream: feed it what was read.

    Blank lines are skipped; an unterminated rest waits for more data.  A
    line over ``max_line`` bytes comes out as one :class:`Overlong` and is
    skipped up to its newline, so memory stays bounded whatever the peer
    sends."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a newline (at most max_line)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message | Invalid | Overlong]:
        out: list[Message | Invalid | Overlong] = []
        self._buf += data
        start = 0
        while (end := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:end])
            start = end + 1
            if self._skipping:
                self._skipping = False
            elif len(line) > self.max_line:
                out.append(Overlong(len(line)))
            elif line.strip():
                out.append(decode(line))
        del self._buf[:start]
        if len(self._buf) > self.max_line or self._skipping:
            if not self._skipping:
                out.append(Overlong(len(self._buf)))
                self._skipping = True
            self._buf.clear()
        return out


# --- supervisor -> worker host: a device to serve ----------------------------


@dataclass(frozen=True)
class Serve:
    """Serve device ``uio``; its control socket (and metrics memfd, if
    ``metrics``) travel with the message."""

    uio: str
    metrics: bool = False

    def wire(self) -> dict:
        return {"op": "serve", "uio": self.uio, "metrics": self.metrics}

    def fds(self) -> int:
        """How many descriptors the message carries."""
        return 1 + self.metrics


def encode_serve(msg: Serve) -> bytes:
    return json.dumps(msg.wire()).encode()


def decode_serve(data: bytes, nfds: int) -> Serve:
    """A host message, checked against the descriptors that came with it;
    ValueError says what is wrong."""
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("op") != "serve":
        raise ValueError(f"not a serve message: {data[:200]!r}")
    uio, metrics = obj.get("uio"), obj.get("metrics", False)
    if not isinstance(uio, str) or not uio.startswith("uio") or not uio[3:].isdigit():
        raise ValueError(f"bad device name {uio!r}")
    if not isinstance(metrics, bool):
        raise ValueError(f"metrics: {metrics!r} is not true or false")
    msg = Serve(uio, metrics)
    if nfds != msg.fds():
        raise ValueError(f"{nfds} descriptors with the message, {msg.fds()} expected")
    return msg
