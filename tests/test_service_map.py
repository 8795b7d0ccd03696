"""tcmu_rbd/service_map.py: the names, metadata, status and encoding a gateway
publishes in the mgr service map, and reading a ``service status`` answer back
(pure; the real mgr is in test_service_map_cluster.py)."""

from __future__ import annotations

import pytest

from tcmu_rbd import __version__, service_map as sm
from tcmu_rbd.config import parse_config


def test_names_are_the_references():
    assert sm.SERVICE == "tcmu-runner"
    assert sm.daemon_name("gw1", "rbd", None, "img0") == "gw1:rbd/img0"
    assert sm.daemon_name("gw1", "rbd", "ns", "img0") == "gw1:rbd/ns/img0"
    assert sm.daemon_name("gw1", "rbd", None, "img0", "s1") == "gw1:rbd/img0@s1"
    assert sm.daemon_name("host.example.com", "p", "", "i") == "host.example.com:p/i"


def test_image_path_is_the_config_strings_image_spec():
    for s in ("rbd/rbd/img0", "rbd/pool/ns/img", "rbd/pool/img@snap", "rbd/p/n/i@s"):
        c = parse_config(s)
        assert sm.image_path(c.pool, c.namespace, c.image, c.snapshot) == c.image_spec


def test_metadata():
    assert sm.metadata("gw1", "rbd", None, "img0", "10a2b3c4") == {
        "pool_name": "rbd", "image_name": "img0", "image_id": "10a2b3c4",
        "daemon_type": "portal", "daemon_prefix": "gw1", "tcmu_rbd_version": __version__}
    md = sm.metadata("gw2", "rbd", "ns", "img0", snapshot="s1")
    assert md["image_id"] == "" and md["namespace"] == "ns" and md["snapshot"] == "s1"
    assert md["daemon_prefix"] == "gw2"


def test_status_strings():
    assert sm.status(True) == {"lock_owner": "true", "lock_lost_cnt": "0",
                               "conn_lost_cnt": "0", "cmd_timed_out_cnt": "0"}
    assert sm.status(False, 3, 1, 12) == {"lock_owner": "false", "lock_lost_cnt": "3",
                                          "conn_lost_cnt": "1", "cmd_timed_out_cnt": "12"}
    assert tuple(sm.status(False)) == sm.STATUS_KEYS
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="lock_lost must be an integer >= 0"):
            sm.status(False, bad)


@pytest.mark.parametrize("gateway", ["", "gw:1", "gw/1", " gw", "g\0w", None])
def test_bad_gateway_names(gateway):
    with pytest.raises(ValueError, match="gateway name"):
        sm.daemon_name(gateway, "rbd", None, "img0")
    with pytest.raises(ValueError, match="gateway name"):
        sm.metadata(gateway, "rbd", None, "img0")


def test_bad_image_parts():
    with pytest.raises(ValueError, match="pool ''"):
        sm.daemon_name("gw1", "", None, "img0")
    with pytest.raises(ValueError, match="image 'a/b'"):
        sm.metadata("gw1", "rbd", None, "a/b")


def test_encode_kv():
    assert sm.encode_kv({}) == b"\0"
    assert sm.encode_kv({"k": "v"}) == b"k\0v\0\0"
    assert sm.encode_kv({"lock_owner": "true", "lock_lost_cnt": "0"}) == \
        b"lock_owner\0true\0lock_lost_cnt\0" b"0\0\0"
    assert sm.encode_kv({"k": ""}) == b"k\0\0\0"       # an empty value is fine
    assert sm.encode_kv({"n": "gr\u00fc\u00df"}) == "n\0gr\u00fc\u00df\0\0".encode()
    for d in (sm.metadata("gw1", "rbd", "ns", "img0", "abc"), sm.status(True, 1, 2, 3)):
        assert sm.decode_kv(sm.encode_kv(d)) == d


@pytest.mark.parametrize("bad, msg", [({"": "v"}, "non-empty string"),
                                      ({"k": 1}, "must be a string, not int"),
                                      ({"k\0": "v"}, "NUL"), ({"k": "v\0w"}, "NUL")])
def test_encode_kv_refuses(bad, msg):
    with pytest.raises(ValueError, match=msg):
        sm.encode_kv(bad)


def test_decode_kv_stops_at_the_empty_key_as_librados_does():
    assert sm.decode_kv(b"a\0b\0\0c\0d\0") == {"a": "b"}
    with pytest.raises(ValueError, match="without a value"):
        sm.decode_kv(b"a")


def test_image_daemons():
    st = {"tcmu-runner": {
        "gw1:rbd/img0": {"status": {"lock_owner": "true"}, "last_beacon": "x"},
        "gw2:rbd/img0": {"status": {}},
        "gw1:rbd/img00": {"status": {"lock_owner": "true"}},
        "gw1:rbd/ns/img0": {"status": {"lock_owner": "false"}},
        "gw3:other/rbd/img0": {"status": {"lock_owner": "true"}},
        ":rbd/img0": {"status": {}}},
        "rbd-mirror": {"gw9:rbd/img0": {"status": {"lock_owner": "true"}}}}
    assert sm.image_daemons(st, "rbd/img0") == {"gw1": {"lock_owner": "true"},
                                                "gw2": {}}
    assert sm.image_daemons(st, "rbd/ns/img0") == {"gw1": {"lock_owner": "false"}}
    assert sm.image_daemons(st, "ns/img0") == {}
    assert sm.image_daemons({}, "rbd/img0") == {}
    assert sm.image_daemons({"tcmu-runner": []}, "rbd/img0") == {}
