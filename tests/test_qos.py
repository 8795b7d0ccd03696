"""Per-LUN QoS (librbd's limiter): the values and their spellings (tcmu_rbd.qos),
the config string's qos_* options (tcmu_rbd.config), `targetcli-rbd qos` and
`export --qos-*` (argument errors without a cluster; the verb against the real
cluster), CheckConfig's warning for an overridden option, and, on the real
cluster, a limit written as the image's setting taking effect on an image that
is already open (and lifting it restoring the rate), over a limit from the
config string.  The rate through LIO and an initiator is measured in the VM
(tests/vm/guest/ops.sh, the QoS section)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from targetcli_ext import cli
from targetcli_ext.cluster import Cluster
from targetcli_ext.gateway import Gateway
from targetcli_ext.spec import image_of_config
from tcmu_rbd import qos
from tcmu_rbd.config import ConfigError, parse_config

MiB = 1 << 20


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("name,text,n", [
    ("iops", "0", 0), ("iops", "500", 500), ("bps", "1048576", MiB), ("bps", "10M", 10 * MiB),
    ("bps", "10MiB", 10 * MiB), ("bps", "10Mi", 10 * MiB), ("read_bps", "2g", 2 << 30),
    ("write_bps_burst", "4K", 4096), ("iops_burst", " 7 ", 7),
])
def test_parse_value(name, text, n):
    assert qos.parse_value(name, text) == n
    assert qos.parse_value(name, qos.format_value(name, n)) == n


@pytest.mark.parametrize("name,text,why", [
    ("iops", "-1", "cannot be negative"), ("iops", "1.5", "no fraction"),
    ("iops", "10K", "whole number"), ("bps", "10MB", "ambiguous"),
    ("bps", "10Mb", "ambiguous"), ("bps", "100bps", "ambiguous"), ("bps", "ten", "not a valid"),
    ("bps", "10i", "not a valid"), ("iops", "", "not a valid"),
    ("iops", str(1 << 63), "too large"),
])
def test_parse_value_errors(name, text, why):
    with pytest.raises(qos.QosError, match=why):
        qos.parse_value(name, text)


def test_names_and_keys():
    assert qos.librbd_key("iops") == "rbd_qos_iops_limit"
    assert qos.librbd_key("read_bps_burst") == "rbd_qos_read_bps_burst"
    assert all(qos.name_of_key(qos.librbd_key(n)) == n for n in qos.NAMES)
    assert qos.name_of_key("rbd_qos_schedule_tick_min") is None
    assert qos.format_value("bps", 10 * MiB + 1) == str(10 * MiB + 1)
    assert qos.human("iops", 0) == "0 (no limit)"
    assert qos.human("bps", 10 * MiB) == "10M bytes/s (10485760)"


def test_effective_names_sources_and_overrides():
    entries = [{"name": "rbd_qos_iops_limit", "value": "50", "source": qos.SOURCE_IMAGE},
               {"name": "rbd_qos_bps_limit", "value": "1024", "source": qos.SOURCE_CONFIG},
               {"name": "rbd_qos_read_iops_limit", "value": "9", "source": qos.SOURCE_POOL},
               {"name": "rbd_qos_write_iops_limit", "value": "100", "source": qos.SOURCE_IMAGE},
               {"name": "rbd_qos_write_iops_burst", "value": "10", "source": qos.SOURCE_CONFIG},
               {"name": "rbd_qos_exclude_ops", "value": "", "source": qos.SOURCE_CONFIG}]
    rows = {r.name: r for r in qos.effective(entries, {"iops": 500, "bps": 1024})}
    assert [r.name for r in qos.effective(entries)] == list(qos.NAMES)
    assert (rows["iops"].value, rows["iops"].source) == (50, "image")
    assert "overrides qos_iops=500" in rows["iops"].note
    assert (rows["bps"].source, rows["bps"].note) == ("lun config", "")
    assert rows["read_iops"].source == "pool" and rows["write_bps"].source == "client"
    assert "applies NO write_iops limit" in rows["write_iops_burst"].note
    [warning] = qos.shadowed(entries, {"iops": 500, "bps": 1024})
    assert "qos_iops=500 has no effect" in warning and "rbd_qos_iops_limit=50" in warning


# ----------------------------------------------------------------------------- config string

def test_config_string_qos_options():
    c = parse_config("rbd/rbd/img;qos_iops=500;qos_bps=10485760;qos_write_iops_burst=0;"
                     "qos_read_bps=1G")
    assert dict(c.qos) == {"iops": 500, "bps": 10 * MiB, "read_bps": 1 << 30,
                           "write_iops_burst": 0}
    # canonical and short (the kernel's 255 bytes), and read back the same
    s = c.to_config_string()
    assert s == ("rbd/rbd/img;osd_op_timeout=30;qos_iops=500;qos_bps=10M;qos_read_bps=1G;"
                 "qos_write_iops_burst=0")
    assert parse_config(s) == c
    conf = c.rados_conf()
    assert conf["rbd_qos_iops_limit"] == "500" and conf["rbd_qos_bps_limit"] == str(10 * MiB)
    assert "rbd_qos_write_iops_limit" not in conf
    assert "qos_iops=500" in c.display()
    assert parse_config("rbd/rbd/img").qos == ()
    # targetcli-rbd reads the options of an existing backstore back
    assert dict(image_of_config(s).cfg.qos)["bps"] == 10 * MiB


@pytest.mark.parametrize("opts,code,why", [
    ("qos_iops=-5", "bad-qos", "qos_iops=-5: a limit cannot be negative"),
    ("qos_bps=10MB", "bad-qos", "qos_bps=10MB is ambiguous"),
    ("qos_iops=abc", "bad-qos", "qos_iops=abc: not a valid value"),
    ("qos_iops=", "empty-value", "empty value"),
    ("qos_iops=100;qos_iops_burst=50", "bad-qos", "qos_iops_burst=50 is below qos_iops=100"),
    ("qos_iops=1;qos_iops=2", "duplicate-option", "more than once"),
    ("rbd_qos_iops_limit=100", "unknown-option", "did you mean 'qos_iops'"),
    ("qos_iop=100", "unknown-option", "did you mean 'qos_iops'"),
    ("qos_iops_limit=1", "unknown-option", "qos_<limit>"),
])
def test_config_string_qos_errors(opts, code, why):
    with pytest.raises(ConfigError, match=why) as e:
        parse_config(f"rbd/rbd/img;{opts}")
    assert e.value.code == code


def test_config_string_qos_burst_at_or_above_limit():
    c = parse_config("rbd/rbd/img;qos_iops=100;qos_iops_burst=100;qos_bps=1M;qos_bps_burst=4M")
    assert dict(c.qos) == {"iops": 100, "bps": MiB, "iops_burst": 100, "bps_burst": 4 * MiB}


# ----------------------------------------------------------------------------- the CLI, no cluster

@pytest.mark.parametrize("argv,why", [
    (["qos", "rbd/img", "--iops", "-1"], "--iops -1: a limit cannot be negative"),
    (["qos", "rbd/img", "--bps", "5MB"], "--bps 5MB is ambiguous"),
    (["qos", "rbd/img", "--read-iops", "1e3"], "--read-iops 1e3: not a valid value"),
    (["qos", "rbd/img", "--iops", "100", "--iops-burst", "10"],
     "--iops-burst=10 is below --iops=100"),
    (["export", "rbd/img", "-i", "iqn.1994-05.com.redhat:c", "--qos-bps", "1.5G"],
     "--qos-bps 1.5G: give a whole number"),
])
def test_cli_bad_values_refused_before_anything(argv, why, capsys):
    class Untouchable(Gateway):
        def __getattribute__(self, name):
            raise AssertionError(f"gateway used: {name}")
    assert cli.main(argv, gw=Untouchable()) == 1
    err = capsys.readouterr().err
    assert why in err, err


def test_cli_qos_snapshot_refused(capsys):
    class G:
        cluster = None

        def qos(self, ref, values, clear=False, dry_run=False):
            from targetcli_ext.qos import image_qos
            return image_qos(self.cluster, ref, values, clear=clear)
    assert cli.main(["qos", "rbd/img@s1", "--iops", "5"], gw=G()) == 1
    assert "QoS settings belong to the image" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real cluster

class _So:
    name = "disk0"


class LunGateway(Gateway):
    """A gateway whose LIO has one LUN of the image, with ``dev_config``."""

    def __init__(self, dev_config):
        super().__init__(cluster=Cluster())
        self.lun = image_of_config(dev_config)

    def find_backstore(self, ref=None, name=None):
        return (_So(), self.lun) if ref.same_image(self.lun) else (None, None)


def _qos_json(capsys, argv, gw) -> dict:
    assert cli.main(["--json", *argv], gw=gw) == 0
    return json.loads(capsys.readouterr().out)


def _limits(out) -> dict:
    return {r["name"]: (r["value"], r["source"]) for r in out["limits"]}


def test_qos_verb_sets_shows_and_clears(ceph, rbd_image, capsys):
    dev = f"rbd/{rbd_image.spec};conf={ceph.conf_path};keyring={ceph.admin_keyring};qos_bps=8M"
    gw = LunGateway(dev)
    spec = rbd_image.spec
    out = _qos_json(capsys, ["qos", spec], gw)
    assert _limits(out)["bps"] == (8 * MiB, "lun config")
    assert _limits(out)["iops"] == (0, "client") and not out["changed"]
    out = _qos_json(capsys, ["qos", spec, "--iops", "300", "--bps", "1M", "--dry-run"], gw)
    assert out["changes"] and not out["changed"] and _limits(out)["iops"] == (0, "client")
    out = _qos_json(capsys, ["qos", spec, "--iops", "300", "--bps", "1M"], gw)
    assert out["changed"] and _limits(out)["iops"] == (300, "image")
    row = next(r for r in out["limits"] if r["name"] == "bps")
    assert (row["value"], row["source"]) == (MiB, "image") and "qos_bps=8M" in row["note"]
    # what `rbd config image` sees: the same image settings
    r = ceph.run("rbd", "config", "image", "get", spec, "rbd_qos_iops_limit")
    assert r.stdout.strip() == "300"
    assert not _qos_json(capsys, ["qos", spec, "--iops", "300"], gw)["changed"]
    # text output names the source
    assert cli.main(["qos", spec], gw=gw) == 0
    text = capsys.readouterr().out
    assert "300 IOPS" in text and "from the image" in text and "user:rbd/disk0" in text
    out = _qos_json(capsys, ["qos", spec, "--clear"], gw)
    assert out["changed"] and _limits(out)["iops"] == (0, "client")
    assert _limits(out)["bps"] == (8 * MiB, "lun config")
    # an image that is not there
    assert cli.main(["qos", "rbd/no-such-image-" + uuid.uuid4().hex[:6], "--conf",
                     ceph.conf_path, "--keyring", ceph.admin_keyring],
                    gw=Gateway(cluster=Cluster())) == 1
    assert "does not exist" in capsys.readouterr().err


def test_export_sets_the_image_qos_after_the_export(ceph, rbd_image, capsys, tmp_path,
                                                   monkeypatch):
    from targetcli_ext import commands
    from targetcli_ext.spec import Report
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    done = []

    class ExportingGateway(LunGateway):
        def export(self, req, dry_run=False):
            done.append(dry_run)
            rep = Report(changed=not dry_run)
            rep.add("exported")
            return rep
    gw = ExportingGateway(f"rbd/{rbd_image.spec};conf={ceph.conf_path};"
                          f"keyring={ceph.admin_keyring}")
    argv = ["export", rbd_image.spec, "-i", "iqn.1994-05.com.redhat:c", "--qos-iops", "250",
            "--qos-bps", "2M"]
    out = _qos_json(capsys, [*argv, "--dry-run"], gw)
    assert done == [True] and out["qos"]["dry_run"] and out["qos"]["changes"]
    assert _limits(out["qos"])["iops"] == (0, "client")
    out = _qos_json(capsys, argv, gw)
    assert done == [True, False] and out["changed"]
    assert _limits(out["qos"])["iops"] == (250, "image")
    assert _limits(out["qos"])["bps"] == (2 * MiB, "image")


def test_check_config_warns_of_an_overridden_option(ceph, rbd_image):
    from tcmu_rbd.validate import validate
    ceph.run("rbd", "config", "image", "set", rbd_image.spec, "rbd_qos_iops_limit", "40")
    cfg = parse_config(f"{rbd_image.cfgstring};conf={ceph.conf_path};"
                       f"keyring={ceph.admin_keyring};qos_iops=500;qos_bps=1M")
    [w] = [w for w in validate(cfg).warnings if "qos" in w]
    assert "qos_iops=500 has no effect" in w and "rbd_qos_iops_limit=40" in w


def _rate(rig, secs: float) -> float:
    """4 KiB reads per second at queue depth 16, measured over ``secs``."""
    rig.pump()
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < secs:
        for i in range(16):
            rig.submit(rig.read16((n + i) * 8 % 60000, 8), data_in=4096)
        rig.pump()
        rig.emu.reap()
        rig.emu.results.clear()
        n += 16
    return n / (time.monotonic() - t0)


def test_live_limit_on_an_open_image(ceph, rbd_image, capsys):
    """The LUN's own limit (config string) holds; `targetcli-rbd qos` changes it on
    the open image (no reopen); --iops 0 lifts it; --clear gives the LUN's back."""
    from tcmu_rbd.backends.rbd import open_from_config
    from tcmu_rbd_lab.rig import Rig
    dev = f"{rbd_image.cfgstring};conf={ceph.conf_path};keyring={ceph.admin_keyring};" \
          f"qos_iops=400"
    gw = LunGateway(dev)
    spec = rbd_image.spec

    def limited(want):
        _rate(rig, 0.3)      # the bucket's first tokens
        got = _rate(rig, 1.2)
        assert want * 0.8 < got < want * 1.2, (want, got)
    with Rig(open_from_config(parse_config(dev))) as rig:
        rig.backend.acquire_lock()          # as a gateway that owns the image
        limited(400)
        _qos_json(capsys, ["qos", spec, "--iops", "150"], gw)
        limited(150)
        _qos_json(capsys, ["qos", spec, "--iops", "0"], gw)
        _rate(rig, 0.2)
        assert _rate(rig, 0.5) > 3 * 400
        _qos_json(capsys, ["qos", spec, "--clear"], gw)
        limited(400)
        assert rig.backend.is_lock_owner()


def test_export_shared_sets_the_image_qos(ceph, rbd_image, store):
    from targetcli_ext import commands
    commands.gateway_add(store, "gw1", "127.0.0.1")
    o = commands.ExportOptions(image=rbd_image.spec, target="iqn.2003-01.org.x:qos",
                               initiators=["iqn.1994-05.com.redhat:c"], no_chap=True,
                               conf=ceph.conf_path, qos={"iops": "120", "bps": None})
    rep = commands.export_shared(store, o)
    assert rep.changed and rep.data["lun"] == 0
    assert _limits(rep.data["qos"])["iops"] == (120, "image")
    assert "every gateway's LUN of it" in "\n".join(rep.lines)
    r = ceph.run("rbd", "config", "image", "get", rbd_image.spec, "rbd_qos_iops_limit")
    assert r.stdout.strip() == "120"
