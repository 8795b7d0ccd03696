"""The supervisor <-> worker protocol (tcmu_rbd.control): encoding, decoding and
framing, for both ends."""

import errno
import json

import pytest

from tcmu_rbd import control as c

MESSAGES = [
    c.Ready(),
    c.Failed("image pool/missing does not exist"),
    c.Failed("permission denied by cephx", errno.EACCES),
    c.Resize(1 << 33, id=1),
    c.Reconfig("rbd/pool/img2;osd_op_timeout=5", id=2),
    c.WriteCache(True, id=3),
    c.WriteCache(False, id=4),
    c.Stop(id=5),
    c.Answer(6),
    c.Answer.failure(7, "image too small"),
    c.Answer.failure(8, "not supported", errno.EOPNOTSUPP),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=repr)
def test_round_trip(msg):
    line = c.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert c.decode(line[:-1]) == msg
    assert c.LineDecoder().feed(line) == [msg]


def test_wire_format_is_the_contract():
    """What the worker contract (control.py's docstring) spells out."""
    wire = lambda m: json.loads(c.encode(m))  # noqa: E731
    assert wire(c.Ready()) == {"event": "ready"}
    assert wire(c.Resize(8, id=1)) == {"id": 1, "op": "resize", "size": 8}
    assert wire(c.Reconfig("rbd/a/b", id=2)) == {"id": 2, "op": "reconfig", "config": "rbd/a/b"}
    assert wire(c.WriteCache(True, id=3)) == {"id": 3, "op": "writecache", "value": 1}
    assert wire(c.Stop(id=4)) == {"id": 4, "op": "stop"}
    assert wire(c.Answer(5)) == {"id": 5, "ok": True}
    assert wire(c.Answer.failure(6, "no", errno.EBUSY)) == \
        {"id": 6, "ok": False, "error": "no", "errno": errno.EBUSY}


def test_defaults_of_what_a_peer_may_leave_out():
    assert c.decode(b'{"event": "failed"}') == \
        c.Failed("worker failed without a message", errno.ENOENT)
    assert c.decode(b'{"event": "failed", "error": "x", "errno": -13}') == \
        c.Failed("x", errno.EACCES)  # sign does not matter
    for bad in ("0", "true", '"5"', "1.5"):
        assert c.decode(b'{"id": 1, "ok": false, "errno": %s}' % bad.encode()).errno == errno.EIO
    assert c.decode(b'{"id": 1, "ok": false}') == c.Answer(1, False, "", errno.EIO)
    assert c.decode(b'{"id": 1}').ok is False  # only "ok": true is success
    assert c.errno_of({"errno": True}, 7) == 7


@pytest.mark.parametrize("line,reason", [
    (b"not json", "Expecting value"),
    (b'{"a": "\xc3("}', "codec"),
    (b"[1, 2]", "not an object"),
    (b'{"event": "bored"}', "unknown event 'bored'"),
    (b'{"hello": 1}', "integer id"),
    (b'{"id": "1", "ok": true}', "integer id"),
    (b'{"id": true, "ok": true}', "integer id"),
])
def test_malformed_lines(line, reason):
    m = c.decode(line)
    assert isinstance(m, c.Invalid) and reason in m.reason and m.line == line and m.id is None


@pytest.mark.parametrize("line,reason", [
    (b'{"id": 9, "op": "snapshot"}', "unknown control op 'snapshot'"),
    (b'{"id": 9, "op": 3}', "unknown control op 3"),
    (b'{"id": 9, "op": "resize"}', "resize: size None"),
    (b'{"id": 9, "op": "resize", "size": -1}', "resize: size -1"),
    (b'{"id": 9, "op": "resize", "size": "8"}', "resize: size '8'"),
    (b'{"id": 9, "op": "reconfig", "config": 5}', "reconfig: config 5"),
    (b'{"id": 9, "op": "writecache", "value": 2}', "writecache: value 2"),
])
def test_bad_requests_keep_their_id_so_they_can_be_answered(line, reason):
    m = c.decode(line)
    assert isinstance(m, c.Invalid) and m.id == 9 and m.reason.startswith(reason)


def test_decoder_frames_split_and_joined_lines():
    d = c.LineDecoder()
    a, b = c.encode(c.Resize(1, id=1)), c.encode(c.Stop(id=2))
    assert d.feed(a[:5]) == []
    assert d.feed(a[5:] + b"\n  \n" + b[:-1]) == [c.Resize(1, id=1)]  # blank lines skipped
    assert d.feed(b"\n") == [c.Stop(id=2)]


def test_decoder_bounds_over_long_lines_and_resyncs():
    d = c.LineDecoder(max_line=64)
    ok = c.encode(c.Ready())
    # complete over-long line, with messages around it
    out = d.feed(ok + b"x" * 100 + b"\n" + ok)
    assert out == [c.Ready(), c.Overlong(100), c.Ready()]
    # unterminated: reported once, skipped to its newline, then decoding goes on
    assert d.feed(b"y" * 65) == [c.Overlong(65)]
    assert d.feed(b"y" * 1000) == []
    assert d.buffered == 0  # memory stays bounded while skipping
    assert d.feed(b"yyy\n" + ok) == [c.Ready()]
    # exactly at the bound is fine
    line = b'{"id": 1, "op": "reconfig", "config": "' + b"a" * 23 + b'"}'
    assert len(line) == 64 and d.feed(line + b"\n") == [c.Reconfig("a" * 23, id=1)]


def test_request_is_a_union_of_the_four_ops():
    for m in MESSAGES:
        assert isinstance(m, c.Request) == hasattr(m, "op")
    assert {cls.op for cls in (c.Resize, c.Reconfig, c.WriteCache, c.Stop)} == \
        {"resize", "reconfig", "writecache", "stop"}
