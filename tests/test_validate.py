"""A config against the cluster: validate() and check_config() (a real throwaway
cluster, except for the syntax-only and unreachable-monitor cases)."""

from __future__ import annotations

import uuid

import pytest

from tcmu_rbd.config import ConfigError, parse_config
from tcmu_rbd.validate import ImageInfo, check_config, validate


def test_check_config_syntax_only_ok():
    assert check_config("rbd/p/i;osd_op_timeout=30", connect=False) == (True, "OK")


# ------------------------------------------------------------------ against the cluster

def _u() -> str:
    return uuid.uuid4().hex[:8]


def test_validate_ok(ceph, rbd_image):
    cfg = parse_config(f"{rbd_image.cfgstring};conf={ceph.conf_path};"
                       f"osd_op_timeout=300")
    info = validate(cfg, size=rbd_image.size)
    assert isinstance(info, ImageInfo)
    assert info.size == rbd_image.size and info.object_size == 4 << 20
    assert info.order == 22 and not info.read_only
    assert "exclusive-lock" in info.feature_names and info.image_id
    assert info.osd_op_timeout == 300 and info.warnings == ()
    assert validate(cfg, size=4096).size == rbd_image.size  # smaller LUN is fine
    assert check_config(cfg.to_config_string(), size=rbd_image.size) == (True, "OK")


def test_validate_low_timeout_is_raised_with_warning(ceph, rbd_image):
    # the test cluster's osd_heartbeat_grace is 120, interval 6
    ok, msg = check_config(f"{rbd_image.cfgstring};conf={ceph.conf_path}")
    assert ok and msg.startswith("OK; warning: osd_op_timeout=30")
    assert "using 131" in msg


def test_validate_conf_from_defaults(ceph, rbd_image):
    info = validate(parse_config(rbd_image.cfgstring,
                                 defaults={"conf": ceph.conf_path,
                                           "osd_op_timeout": 200}))
    assert info.size == rbd_image.size


def test_validate_namespace_and_snapshot(ceph):
    ns, img = f"ns{_u()}", f"img{_u()}"
    ceph.create_namespace("rbd", ns)
    ceph.create_image(img, 64 << 20, namespace=ns)
    try:
        ceph.run("rbd", "snap", "create", f"rbd/{ns}/{img}@s1")
        ceph.run("rbd", "resize", "--no-progress", f"rbd/{ns}/{img}", "--size", "128M")
        base = f"rbd/rbd/{ns}/{img};conf={ceph.conf_path};osd_op_timeout=300"
        assert validate(parse_config(base)).size == 128 << 20
        snap = f"rbd/rbd/{ns}/{img}@s1;conf={ceph.conf_path};osd_op_timeout=300"
        info = validate(parse_config(snap), size=64 << 20)
        assert info.read_only and info.size == 64 << 20
        with pytest.raises(ConfigError) as ei:
            validate(parse_config(snap), size=128 << 20)
        assert ei.value.code == "size-too-large" and "snapshots cannot grow" in str(ei.value)
        with pytest.raises(ConfigError) as ei:
            validate(parse_config(f"rbd/rbd/{ns}/{img}@nope;conf={ceph.conf_path}"))
        assert ei.value.code == "snapshot-missing"
        assert "snapshot 'nope'" in str(ei.value) and "existing: s1" in str(ei.value)
        assert f"rbd snap create rbd/{ns}/{img}@nope" in str(ei.value)
    finally:
        ceph.run("rbd", "snap", "purge", "--no-progress", f"rbd/{ns}/{img}", check=False)
        ceph.remove_image(img, namespace=ns)


def _err(s: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        validate(parse_config(s), **kw)
    ok, msg = check_config(s, **kw)
    assert not ok and msg == str(ei.value)
    return ei.value


def test_missing_pool(ceph):
    e = _err(f"rbd/nopool{_u()}/img;conf={ceph.conf_path}")
    assert e.code == "pool-missing"
    assert "does not exist" in str(e) and "ceph osd pool create nopool" in str(e)
    assert "rbd pool init" in str(e)


def test_missing_namespace(ceph):
    e = _err(f"rbd/rbd/nons/img;conf={ceph.conf_path}")
    assert e.code == "namespace-missing"
    assert "namespace 'nons' does not exist in pool 'rbd'" in str(e)
    assert "rbd namespace create rbd/nons" in str(e)


def test_missing_image(ceph):
    e = _err(f"rbd/rbd/img9;conf={ceph.conf_path}", size=10 << 30)
    assert e.code == "image-missing"
    assert "image 'rbd/img9' does not exist" in str(e)
    assert "`rbd create rbd/img9 --size 10G`" in str(e)


def test_missing_snapshot(ceph, rbd_image):
    e = _err(f"{rbd_image.cfgstring}@gone;conf={ceph.conf_path}")
    assert e.code == "snapshot-missing" and "it has no snapshots" in str(e)


def test_size_larger_than_image(ceph, rbd_image):
    e = _err(f"{rbd_image.cfgstring};conf={ceph.conf_path}", size=1 << 30)
    assert e.code == "size-too-large"
    msg = str(e)
    assert "larger than image" in msg and "256M" in msg and "1G" in msg
    assert f"rbd resize {rbd_image.spec} --size 1G" in msg


def test_user_without_caps(ceph, rbd_image):
    name = f"nocaps{_u()}"
    ceph.create_client(name)  # keyring found via the conf's $cluster.$name.keyring
    e = _err(f"{rbd_image.cfgstring};conf={ceph.conf_path};id={name}")
    assert e.code == "auth-denied"
    assert f"client.{name}" in str(e) and "ceph auth caps" in str(e)


def test_user_without_osd_caps(ceph, rbd_image):
    name = f"monly{_u()}"
    kr = ceph.create_client(name, {"mon": "profile rbd"})
    e = _err(f"{rbd_image.cfgstring};conf={ceph.conf_path};id={name};keyring={kr}")
    assert e.code == "osd-caps"
    assert "may not open image" in str(e)
    assert f"ceph auth caps client.{name} mon 'profile rbd' osd 'profile rbd pool=rbd'" \
        in str(e)


def test_user_with_caps_ok(ceph, rbd_image):
    name = f"gw{_u()}"
    kr = ceph.create_client(name, {"mon": "profile rbd", "osd": "profile rbd pool=rbd"})
    info = validate(parse_config(
        f"{rbd_image.cfgstring};conf={ceph.conf_path};id={name};keyring={kr};"
        f"osd_op_timeout=300"))
    assert info.size == rbd_image.size


def test_bad_keyring(ceph, rbd_image, tmp_path):
    # a path that does not exist: caught by the syntax check
    ok, msg = check_config(f"{rbd_image.cfgstring};conf={ceph.conf_path};"
                           f"keyring={tmp_path}/missing.keyring")
    assert not ok and "does not exist" in msg
    # a keyring without the user's key
    name = f"gw{_u()}"
    kr = ceph.create_client(name, {"mon": "profile rbd", "osd": "profile rbd"})
    e = _err(f"{rbd_image.cfgstring};conf={ceph.conf_path};id=someoneelse;keyring={kr}")
    assert e.code == "keyring-no-entity"
    assert f"has no key for client.someoneelse (it holds: client.{name})" in str(e)
    # the user's section with a wrong key
    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(f"[client.{name}]\n\tkey = AQBzcQFrr/kRJxAADrp+/uDGolLx2RTjDTsBUw==\n")
    e = _err(f"{rbd_image.cfgstring};conf={ceph.conf_path};id={name};keyring={wrong}")
    assert e.code == "auth-denied" and "is wrong" in str(e)
    assert "AQBzcQ" not in str(e)


def test_unreachable_monitors_time_out(tmp_path):
    conf = tmp_path / "ceph.conf"
    # a port nothing listens on (loopback only)
    conf.write_text("[global]\nmon host = 127.0.0.1:9\nauth client required = cephx\n")
    kr = tmp_path / "k"
    kr.write_text("[client.admin]\n\tkey = AQBzcQFrr/kRJxAADrp+/uDGolLx2RTjDTsBUw==\n")
    import time
    t = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        validate(parse_config(f"rbd/rbd/img;conf={conf};keyring={kr}"), timeout=3)
    assert time.monotonic() - t < 3 + 6
    assert ei.value.code in ("connect-timeout", "timeout")
    assert "127.0.0.1:9" in str(ei.value) or "within 3s" in str(ei.value)


def test_no_monitors_configured(tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    e = _err(f"rbd/rbd/img;conf={conf}")
    assert e.code == "no-mon-host" and "mon host" in str(e)
