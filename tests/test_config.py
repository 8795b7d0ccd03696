"""The rbd config string: syntax (no cluster) and validation (real cluster)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid

import pytest

from tcmu_rbd.config import (MAX_CONFIG_BYTES, ConfigError, ImageInfo, RbdConfig,
                             check_config, effective_osd_op_timeout, parse_config,
                             validate)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfgfiles")
    conf = d / "ceph.conf"
    conf.write_text("[global]\nmon host = 127.0.0.1:1\n")
    kr = d / "ceph.client.x.keyring"
    kr.write_text("[client.x]\n\tkey = AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n")
    (d / "adir").mkdir()
    return d


# (config string, code, substrings the message must contain)
BAD = [
    ("", "empty", ["empty", "rbd/<pool>"]),
    ("rbd/pool/img;" + "x" * 300, "too-long", ["255", "kernel", "shorter"]),
    ("rbd/pool/img:1", "colon", ["':'", "rtslib"]),
    ("pool", "no-subtype", ["'rbd/'", "targetcli"]),
    ("file/pool/img", "wrong-subtype", ["'file'", "did you mean rbd/file/pool/img"]),
    ("rbd/pool", "no-image", ["missing image", "rbd/pool/disk0"]),
    ("rbd/a/b/c/d", "too-many-parts", ["too many '/'", "<pool>/<namespace>/<image>"]),
    ("rbd//img", "empty-pool", ["empty pool name"]),
    ("rbd/pool//img", "empty-namespace", ["empty namespace name", "leave the namespace out"]),
    ("rbd/pool/", "empty-image", ["empty image name"]),
    ("rbd/pool/img@", "empty-snapshot", ["empty snapshot name", "<image>@<snapshot>"]),
    ("rbd/pool/img@a@b", "many-at", ["more than one '@'"]),
    ("rbd/po@ol/img", "at-sign", ["pool name 'po@ol'", "'@'"]),
    ("rbd/my pool/img", "whitespace", ["whitespace", "rename the pool"]),
    ("rbd/pool/im,g", "comma", ["','", "rename the image"]),
    ("rbd/pool/img\n", "newline", ["line break"]),
    ("rbd/pool/..", "dot-name", ["'..'", "not a valid name"]),
    ("rbd/pool/img;osd_timeout=30", "unknown-option",
     ["unknown option 'osd_timeout' (supported: osd_op_timeout, conf, id, keyring)",
      "did you mean 'osd_op_timeout'"]),
    ("rbd/pool/img;foo=bar", "unknown-option", ["unknown option 'foo'", "supported:"]),
    ("rbd/pool/img;id=a;id=b", "duplicate-option", ["'id' is given more than once"]),
    ("rbd/pool/img;keyring", "no-value", ["option 'keyring' has no value", "keyring=<value>"]),
    ("rbd/pool/img;bogus", "malformed-option", ["malformed option 'bogus'", "name=value"]),
    ("rbd/pool/img;id=", "empty-value", ["'id=' has an empty value"]),
    ("rbd/pool/img;osd_op_timeout=0", "timeout-not-positive", ["greater than 0"]),
    ("rbd/pool/img;osd_op_timeout=-5", "timeout-not-positive", ["greater than 0"]),
    ("rbd/pool/img;osd_op_timeout=2.5", "timeout-fraction",
     ["whole number of seconds", "osd_op_timeout=2"]),
    ("rbd/pool/img;osd_op_timeout=30s", "timeout-not-number", ["not a number", "digits"]),
    ("rbd/pool/img;osd_op_timeout=999999", "timeout-too-large", ["over a day"]),
    ("rbd/pool/img;id=client.admin", "id-prefix", ["'client.' prefix", "id=admin"]),
    ("rbd/pool/img;id=a/b", "id-invalid", ["not a valid cephx user name"]),
    ("rbd/pool/img;conf=etc/ceph/ceph.conf", "conf-relative",
     ["must be an absolute path", "conf=/etc/ceph/ceph.conf"]),
    ("rbd/pool/img;conf=/nonexistent/ceph.conf", "conf-missing",
     ["conf file /nonexistent/ceph.conf does not exist"]),
    ("rbd/pool/img;keyring=/nonexistent/k", "keyring-missing",
     ["keyring file /nonexistent/k does not exist"]),
    ("rbd/pool/img;keyring={adir}", "keyring-not-file", ["is not a regular file"]),
    ("rbd/pool/img;keyring=relative.keyring", "keyring-relative",
     ["must be an absolute path", "ceph.client.admin.keyring"]),
]


@pytest.mark.parametrize("s,code,needles", BAD, ids=[b[1] + "-" + str(i)
                                                     for i, b in enumerate(BAD)])
def test_bad_config_rejected(s, code, needles, files):
    s = s.format(adir=files / "adir")
    with pytest.raises(ConfigError) as ei:
        parse_config(s)
    assert ei.value.code == code, str(ei.value)
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))
    assert isinstance(ei.value, ValueError)
    ok, msg = check_config(s, connect=False)
    assert not ok and msg == str(ei.value)


def test_bad_messages_are_distinct(files):
    msgs = []
    for s, _code, _ in BAD:
        with pytest.raises(ConfigError) as ei:
            parse_config(s.format(adir=files / "adir"))
        msgs.append(str(ei.value))
    assert len(BAD) >= 15
    assert len(set(msgs)) >= len(msgs) - 2  # the two "not positive" share wording
    assert len({m for m in msgs if "greater than 0" not in m}) == \
        len([m for m in msgs if "greater than 0" not in m])


def test_unreadable_file_rejected():
    # a directory every user can enter (pytest's tmp dirs are root-only)
    d = tempfile.mkdtemp(prefix="tcmu-rbd-cfg-")
    os.chmod(d, 0o755)
    p = os.path.join(d, "secret.keyring")
    with open(p, "w") as f:
        f.write("[client.x]\n")
    os.chmod(p, 0)

    def check():
        with pytest.raises(ConfigError, match="not readable"):
            parse_config(f"rbd/pool/img;keyring={p}")

    if os.getuid() != 0:
        check()
        return
    # root reads anything: check as an unprivileged user in a child process
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(d)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_length_limit_counts_bytes_and_full_string():
    base = "rbd/pool/"
    ok = base + "i" * (MAX_CONFIG_BYTES - len(base))
    assert parse_config(ok).image == "i" * (MAX_CONFIG_BYTES - len(base))
    with pytest.raises(ConfigError, match="255"):
        parse_config(ok + "i")
    # without the subtype, the limit still counts the "rbd/" the kernel will see
    with pytest.raises(ConfigError, match="255"):
        parse_config(ok[4:] + "i", with_subtype=False)
    # multibyte characters count as bytes
    with pytest.raises(ConfigError, match="bytes"):
        parse_config(base + "é" * 124)


def test_good_minimal():
    c = parse_config("rbd/rbd/img0")
    assert c == RbdConfig("rbd", None, "img0", None, 30, None, None, None)
    assert not c.read_only
    assert c.image_spec == "rbd/img0"
    assert c.to_config_string() == "rbd/rbd/img0;osd_op_timeout=30"
    assert dataclasses.is_dataclass(c)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.pool = "x"  # type: ignore[misc]


def test_good_namespace_and_snapshot():
    c = parse_config("rbd/pool/ns1/img@snap1")
    assert (c.pool, c.namespace, c.image, c.snapshot) == ("pool", "ns1", "img", "snap1")
    assert c.read_only
    assert c.image_spec == "pool/ns1/img@snap1"
    assert "read-only" in c.display()
    c2 = parse_config("rbd/pool/img@s")
    assert c2.namespace is None and c2.snapshot == "s" and c2.read_only


def test_good_each_option(files):
    conf, kr = files / "ceph.conf", files / "ceph.client.x.keyring"
    c = parse_config(f"rbd/p/i;osd_op_timeout=45;conf={conf};id=x;keyring={kr}")
    assert c.osd_op_timeout == 45 and c.conf == str(conf)
    assert c.client_id == "x" and c.keyring == str(kr)
    assert c.user == "client.x"
    assert parse_config("rbd/p/i;osd_op_timeout=120").osd_op_timeout == 120
    assert parse_config(f"rbd/p/i;conf={conf}").conf == str(conf)
    assert parse_config("rbd/p/i;id=iscsi").client_id == "iscsi"
    assert parse_config(f"rbd/p/i;keyring={kr}").keyring == str(kr)
    # display shows the keyring path, never key material
    d = c.display()
    assert str(kr) in d and "AQAAAA" not in d and "key =" not in d
    assert "AQAAAA" not in repr(c)
    # round trip
    assert parse_config(c.to_config_string()) == c


def test_ceph_iscsi_and_tcmu_runner_strings_still_parse(files):
    # what ceph-iscsi writes; tcmu-runner's strtok skips empty segments
    c = parse_config("rbd/rbd/disk_1;osd_op_timeout=30")
    assert c.image == "disk_1" and c.osd_op_timeout == 30
    assert parse_config("rbd/rbd/img;").image == "img"
    assert parse_config("rbd/rbd/img;;osd_op_timeout=40;").osd_op_timeout == 40


def test_without_subtype_prefix():
    c = parse_config("pool/img;id=u", with_subtype=False)
    assert (c.pool, c.image, c.client_id) == ("pool", "img", "u")
    # a pool named rbd is not mistaken for the subtype
    c = parse_config("rbd/rbd/img")
    assert (c.pool, c.namespace, c.image) == ("rbd", None, "img")
    c = parse_config("rbd/img", with_subtype=False)
    assert (c.pool, c.image) == ("rbd", "img")


def test_defaults_parameter(files):
    conf = files / "ceph.conf"
    assert parse_config("rbd/p/i", defaults={}).osd_op_timeout is None
    c = parse_config("rbd/p/i", defaults={"osd_op_timeout": 60, "conf": str(conf),
                                           "id": "gw"})
    assert (c.osd_op_timeout, c.conf, c.client_id) == (60, str(conf), "gw")
    # the string wins over the defaults
    assert parse_config("rbd/p/i;osd_op_timeout=45;id=me",
                        defaults={"osd_op_timeout": 60, "id": "gw"}).client_id == "me"
    with pytest.raises(ConfigError, match="unknown default option 'bogus'"):
        parse_config("rbd/p/i", defaults={"bogus": 1})
    with pytest.raises(ConfigError, match="greater than 0"):
        parse_config("rbd/p/i", defaults={"osd_op_timeout": 0})


def test_effective_osd_op_timeout():
    assert effective_osd_op_timeout(30, 20, 6) == (30, None)
    t, w = effective_osd_op_timeout(20, 20, 6)
    assert t == 31 and "osd_heartbeat_grace (20)" in w and "osd_op_timeout=31" in w
    t, w = effective_osd_op_timeout(26, 20, 6)  # must be strictly larger
    assert t == 31 and w
    assert effective_osd_op_timeout(None, 20, 6) == (31, None)
    assert effective_osd_op_timeout(None, 20, 6, cluster_default=60) == (None, None)
    cfg = parse_config("rbd/p/i;osd_op_timeout=200")
    assert effective_osd_op_timeout(cfg, 120, 6) == (200, None)


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
