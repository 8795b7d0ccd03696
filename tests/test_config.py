"""The rbd config string: syntax, options, defaults and the osd_op_timeout rule (no cluster)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import pytest

from tcmu_rbd.config import (MAX_CONFIG_BYTES, ConfigError, RbdConfig,
                             effective_osd_op_timeout, parse_config)
from tcmu_rbd.validate import check_config


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
     ["unknown option 'osd_timeout' (supported: osd_op_timeout, conf, id, keyring, "
      "qos_<limit>",
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
