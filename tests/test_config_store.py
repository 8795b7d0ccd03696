"""The shared configuration of several gateways (targetcli_ext/store.py): the value's
JSON and validation (pure), then the RADOS object on a real throwaway cluster:
round trip, epoch and its xattr, writers serialised by the leased lock, a writer
SIGKILLed while holding it, the version guard after a lease ran out, watch/notify,
a newer schema refused, and the CHAP secrets kept in config-key (never in the
object, a report, a log or the monitors' log), with the cephx caps the README gives."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from targetcli_ext import cli, commands
from targetcli_ext.spec import ExtError, Secret, parse_portal
from targetcli_ext.store import (
    ChapEntry, ConfigStore, ConfigWatcher, SchemaTooNew, SharedConfig, secret_key,
)
from targetcli_ext.topology import add_disk, add_gateway

REPO = Path(__file__).resolve().parents[1]
T = "iqn.2003-01.org.linux-iscsi.ha:rbd"
INIT = "iqn.1994-05.com.redhat:client1"
SECRET = "shared-secret-0123"
MUTUAL = "mutual-secret-4567"
GW_CAPS = {"mon": 'profile rbd, allow command "config-key get" with key prefix tcmu-rbd/',
           "osd": "profile rbd pool=rbd"}
ADMIN_CAPS = {"mon": 'profile rbd, allow command "config-key get" with key prefix '
                     'tcmu-rbd/, allow command "config-key set" with key prefix tcmu-rbd/, '
                     'allow command "config-key rm" with key prefix tcmu-rbd/',
              "osd": "profile rbd pool=rbd"}


def _two_gateways() -> SharedConfig:
    cfg = SharedConfig()
    add_gateway(cfg, "gw1", parse_portal("127.0.0.1:3260"))
    add_gateway(cfg, "gw2", parse_portal("127.0.0.2:3260"))
    return cfg


# ----------------------------------------------------------------------------- pure

def test_json_round_trip_and_layout_of_the_object():
    cfg = _two_gateways()
    add_disk(cfg, "rbd/img0", T, initiators=[INIT], chap={INIT: ChapEntry("alice", "tgt")},
             options={"osd_op_timeout": 30}, settings={"max_data_area_mb": 32})
    d = json.loads(cfg.to_json())
    assert d["version"] == 1 and d["gateways"]["gw2"] == {"portal": "127.0.0.2:3260",
                                                           "tag": 2}
    assert d["targets"][T] == {"gateways": ["gw1", "gw2"], "acls": [INIT],
                               "chap": {INIT: {"user": "alice", "mutual_user": "tgt"}},
                               "luns": {"0": "rbd/img0"}, "settings": {}}
    disk = d["disks"]["rbd/img0"]
    assert (disk["target"], disk["lun"], disk["owner"]) == (T, 0, "gw1")
    assert uuid.UUID(disk["wwn"]) and disk["options"] == {"osd_op_timeout": 30}
    back = SharedConfig.from_json(cfg.to_json())
    assert back == cfg and back.to_json() == cfg.to_json()
    assert SharedConfig.from_json(b"") == SharedConfig()


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["gateways"]["gw2"].update(tag=1), "same tag 1"),
    (lambda d: d["gateways"]["gw2"].update(portal="127.0.0.1:3260"), "same portal"),
    (lambda d: d["gateways"]["gw1"].update(color="red"), "unknown key"),
    (lambda d: d["gateways"].update({"a.b": {"portal": "10.0.0.1", "tag": 5}}), "no dots"),
    (lambda d: d["targets"][T]["gateways"].append("gw9"), "gw9, which is not defined"),
    (lambda d: d["targets"][T]["acls"].append("iqn.1994-05.com.redhat:c2"),
     "per-target switch"),
    (lambda d: d["disks"]["rbd/img0"].update(owner="gw3"), "owner gw3 is not"),
    (lambda d: d["disks"]["rbd/img0"].update(lun=4), "LUN 0 names disk rbd/img0"),
    (lambda d: d["disks"]["rbd/img0"]["settings"].update(max_data_area_mb=0),
     "max_data_area_mb 0 must be"),
    (lambda d: d.update(version=0), "version must be"),
])
def test_validation_names_the_problem(edit, match):
    cfg = _two_gateways()
    add_disk(cfg, "rbd/img0", T, initiators=[INIT], chap={INIT: ChapEntry("alice")})
    d = json.loads(cfg.to_json())
    edit(d)
    with pytest.raises(ExtError, match=match):
        SharedConfig.from_dict(d)


def test_newer_schema_is_refused():
    with pytest.raises(SchemaTooNew, match="schema version 2, newer than this") as e:
        SharedConfig.from_json(json.dumps({"version": 2, "gateways": {}}))
    assert e.value.code == "schema-newer" and "upgrade" in str(e.value)


# ----------------------------------------------------------------------------- RADOS



def _other(ceph, store, **kw) -> ConfigStore:
    """A second writer: its own connection to the same object."""
    return ConfigStore.open("rbd", store.obj, conf=ceph.conf_path, **kw)


def test_round_trip_epoch_and_xattr(store):
    assert store.read() == SharedConfig() and store.epoch() == 0
    up = store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    assert up.written and up.after.epoch == 1 and up.before.epoch == 0
    got = store.read()
    assert got.gateways["gw1"].portal == parse_portal("127.0.0.1:3260")
    assert got.epoch == 1 and got.created and got.created == got.updated
    assert store.epoch() == 1
    assert store.ioctx.get_xattr(store.obj, "epoch") == b"1"
    # the same change again writes nothing; another bumps the epoch
    again = store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    assert not again.written and store.epoch() == 1
    store.update(lambda c: add_gateway(c, "gw2", parse_portal("127.0.0.2")))
    got2 = store.read()
    assert got2.epoch == 2 and got2.created == got.created
    assert got2.gateways["gw2"].tag == 2
    # a dry run changes a copy only
    dry = store.update(lambda c: add_gateway(c, "gw3", parse_portal("127.0.0.3")),
                       dry_run=True)
    assert "gw3" in dry.after.gateways and not dry.written
    assert "gw3" not in store.read().gateways and store.epoch() == 2


def test_dry_run_does_not_create_the_object(store):
    store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")), dry_run=True)
    with pytest.raises(Exception):
        store.ioctx.stat(store.obj)


def test_concurrent_writers_are_serialised(ceph, store):
    writers = [_other(ceph, store) for _ in range(4)]
    errors = []

    def write(i, s):
        try:
            for j in range(3):
                # the tag is chosen under the lock: two writers at once would pick the
                # same one (refused) or lose an update
                s.update(lambda c: add_gateway(c, f"w{i}-{j}",
                                               parse_portal(f"10.0.{i}.{j}")))
        except Exception as e:  # pragma: no cover (reported below)
            errors.append(e)
    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in writers:
        s.close()
    assert errors == []
    cfg = store.read()
    assert len(cfg.gateways) == 12 and cfg.epoch == 12
    assert sorted(g.tag for g in cfg.gateways.values()) == list(range(1, 13))


HOLDER = """
import sys, time
from targetcli_ext.store import ConfigStore
s = ConfigStore.open("rbd", sys.argv[2], conf=sys.argv[1], lease=int(sys.argv[3]))
def hold(cfg):
    print("locked", flush=True)
    time.sleep(600)
s.update(hold)
"""


def test_a_killed_writer_blocks_the_next_only_for_its_lease(ceph, store):
    lease = 4
    store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, ceph.conf_path, store.obj,
                          str(lease)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert p.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        impatient = _other(ceph, store, lock_wait=1)
        with pytest.raises(ExtError, match="locked by another writer") as e:
            impatient.update(lambda c: add_gateway(c, "gw2", parse_portal("127.0.0.2")))
        impatient.close()
        assert e.value.code == "config-locked"
        p.send_signal(signal.SIGKILL)
        p.wait()
        up = store.update(lambda c: add_gateway(c, "gw2", parse_portal("127.0.0.2")))
        waited = time.monotonic() - t0
    finally:
        p.kill()
        p.wait()
    assert up.written and set(store.read().gateways) == {"gw1", "gw2"}
    # the OSD drops an expired lock when it is next asked; after a SIGKILL it was
    # seen to take up to ~3 s past the lease here
    assert lease - 1 <= waited <= lease + 5, waited


def test_a_write_after_the_lease_ran_out_is_refused(ceph, store):
    """The lock's lease ran out and another writer wrote: the late write (guarded
    by the object version it read) must not overwrite that."""
    store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    slow = _other(ceph, store, lease=1)
    cookie = slow._lock()
    raw, version = slow._read_raw()
    time.sleep(1.5)
    store.update(lambda c: add_gateway(c, "gw2", parse_portal("127.0.0.2")))
    late = SharedConfig.from_json(raw)
    add_gateway(late, "gw3", parse_portal("127.0.0.3"))
    late.epoch = 2
    assert slow._write(late, version) is False
    slow._unlock(cookie)
    slow.close()
    assert set(store.read().gateways) == {"gw1", "gw2"}


def test_newer_schema_in_the_object_is_not_overwritten(store):
    newer = json.dumps({"version": 2, "epoch": 7, "gateways": {}, "future": 1}).encode()
    store.ioctx.write_full(store.obj, newer)
    with pytest.raises(SchemaTooNew, match="newer than this targetcli-rbd") as e:
        store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    assert store.obj in str(e.value)
    assert store.ioctx.read(store.obj, 4096) == newer
    with pytest.raises(SchemaTooNew):
        store.read()


def test_a_watcher_learns_of_a_write_within_a_second(ceph, store):
    store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
    reader = _other(ceph, store)
    w = ConfigWatcher(reader)
    try:
        assert w.start() and not w.wait(0.2)   # nothing written: a timeout
        got = []
        th = threading.Thread(target=lambda: got.append((w.wait(10), time.monotonic())))
        th.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        store.update(lambda c: add_gateway(c, "gw2", parse_portal("127.0.0.2")))
        th.join()
        assert got[0][0] is True and got[0][1] - t0 < 1.0
        assert reader.read().epoch == 2
        # after a watch error it watches again (and says so: notifies may be lost)
        w._failed(w._watch.get_id(), -107)   # as rados.pyx calls it: (watch id, error)
        assert w.wait(2) is True and w.watching and w.watches == 2
        t1 = time.monotonic()
        store.update(lambda c: add_gateway(c, "gw3", parse_portal("127.0.0.3")))
        assert w.wait(5) and time.monotonic() - t1 < 1.0
    finally:
        w.close()
        reader.close()


def test_watching_an_object_that_does_not_exist_yet(ceph, store):
    reader = _other(ceph, store)
    w = ConfigWatcher(reader)
    try:
        assert w.start() is False
        t0 = time.monotonic()
        store.update(lambda c: add_gateway(c, "gw1", parse_portal("127.0.0.1")))
        assert w.wait(5) is True and time.monotonic() - t0 < 2.5 and w.watching
    finally:
        w.close()
        reader.close()


# ----------------------------------------------------------------------------- secrets

def _secret_file(tmp_path, name, value):
    p = tmp_path / name
    p.write_text(value + "\n")
    p.chmod(0o600)
    return str(p)


def test_chap_secrets_live_in_config_key_only(ceph, store, tmp_path, capsys, caplog,
                                              monkeypatch, rbd_image):
    T = f"iqn.2003-01.org.linux-iscsi.ha:secrets-{uuid.uuid4().hex[:8]}"  # global keys
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TARGETCLI_RBD_MUTUAL_SECRET", MUTUAL)
    admin_id = f"adm{uuid.uuid4().hex[:6]}"
    admin_kr = ceph.create_client(admin_id, ADMIN_CAPS)
    admin = ConfigStore.open("rbd", store.obj, conf=ceph.conf_path, client_id=admin_id,
                             keyring=admin_kr)
    for name in ("gw1", "gw2"):
        commands.gateway_add(admin, name, f"127.0.0.{name[-1]}:3260")
    argv = ["--json", "export", rbd_image.spec, "--shared", "--target", T, "-i", INIT,
            "--chap-user", "alice", "--chap-secret-file",
            _secret_file(tmp_path, "s", SECRET), "--mutual-user", "tgt"]
    assert cli.main(argv + ["--dry-run"], store=admin) == 0
    assert rbd_image.spec not in store.read().disks
    assert store.get_secret(secret_key(T, INIT)) is None       # a dry run sets nothing
    assert cli.main(argv, store=admin) == 0
    raw = store.ioctx.read(store.obj, 1 << 20)
    assert SECRET.encode() not in raw and MUTUAL.encode() not in raw
    cfg = store.read()
    assert cfg.targets[T].chap[INIT] == ChapEntry("alice", "tgt")
    assert store.get_secret(secret_key(T, INIT)) == Secret(SECRET, "x")
    assert store.get_secret(secret_key(T, INIT, mutual=True)) == Secret(MUTUAL, "x")
    # the same export again: nothing changes, not even the epoch
    epoch = store.epoch()
    assert cli.main(argv, store=admin) == 0 and store.epoch() == epoch
    # a gateway reads the object and the secrets, and may not change them
    gw_id = f"gw{uuid.uuid4().hex[:6]}"
    gw_kr = ceph.create_client(gw_id, GW_CAPS)
    gw = ConfigStore.open("rbd", store.obj, conf=ceph.conf_path, client_id=gw_id,
                          keyring=gw_kr)
    assert gw.read().disks[rbd_image.spec].target == T
    assert gw.get_secret(secret_key(T, INIT)).reveal() == SECRET
    with pytest.raises(ExtError, match='allow command "config-key set"') as e:
        gw.set_secret(secret_key(T, INIT), Secret("another-secret-99", "test"))
    assert e.value.code == "permission"
    with pytest.raises(ExtError, match="refused"):
        gw.get_secret("other/key")
    gw.close()
    # unexport removes the target (its last LUN) and its secrets
    assert cli.main(["unexport", rbd_image.spec, "--shared"], store=admin) == 0
    assert T not in store.read().targets
    assert store.get_secret(secret_key(T, INIT)) is None
    assert store.get_secret(secret_key(T, INIT, True)) is None
    admin.close()
    printed = capsys.readouterr()
    seen = printed.out + printed.err + caplog.text
    assert "config-key" in seen and "alice" in seen
    assert SECRET not in seen and MUTUAL not in seen
    for f in Path(ceph.log_dir).iterdir():   # the monitors' audit log included
        text = f.read_text(errors="replace")
        assert SECRET not in text and MUTUAL not in text, f


def test_export_shared_refusals(store, rbd_image):
    o = commands.ExportOptions(image=rbd_image.spec, target=T, initiators=[INIT])
    with pytest.raises(ExtError, match="no gateway is defined"):
        commands.export_shared(store, o)
    commands.gateway_add(store, "gw1", "127.0.0.1")
    with pytest.raises(ExtError, match="--portal is not used with --shared"):
        commands.export_shared(store, commands.ExportOptions(
            image=rbd_image.spec, target=T, portals=["127.0.0.1"], initiators=[INIT]))
    with pytest.raises(ExtError, match="gateway gw7 is not defined"):
        commands.export_shared(store, o, ["gw7"])
    with pytest.raises(ExtError, match="does not exist"):
        commands.export_shared(store, commands.ExportOptions(
            image="rbd/nosuchimage", target=T, initiators=[INIT]))
    with pytest.raises(ExtError, match="--no-chap excludes"):
        commands.export_shared(store, commands.ExportOptions(
            image=rbd_image.spec, target=T, initiators=[INIT], no_chap=True,
            chap_user="alice", chap_secret_file="/nonexistent"))
    with pytest.raises(ExtError, match="no initiator may log in"):
        commands.export_shared(store, commands.ExportOptions(image=rbd_image.spec, target=T))
    # as the VM test writes it
    assert cli.main(["export", rbd_image.spec, "--shared", "--target", T, "--gateways",
                     "gw1", "--initiator", INIT, "--no-chap", "--config-object", store.obj,
                     "--osd-op-timeout", "30"], store=store) == 0
    rep = commands.export_shared(store, o)
    assert not rep.changed and rep.data["owner"] == "gw1" and rep.data["lun"] == 0
    with pytest.raises(ExtError, match="already LUN 0 of"):
        commands.export_shared(store, commands.ExportOptions(
            image=rbd_image.spec, target=T + "2", initiators=[INIT]))
    assert not commands.unexport_shared(store, "rbd/other").changed
    with pytest.raises(ExtError, match="only gateway of target"):
        commands.gateway_remove(store, "gw1")


def test_shell_node_gateway_and_shared_export(ceph, store, rbd_image, tmp_path,
                                              monkeypatch):
    from configshell_fb import ConfigShell
    from targetcli.ui_node import UINode
    from targetcli_ext import shell
    sh = ConfigShell(str(tmp_path / "prefs"))
    node = shell.make_rbd_node_class()(UINode("/", shell=sh))
    node.assert_root = lambda: None
    shown = []
    monkeypatch.setattr(sh.con, "display", lambda text, *a, **k: shown.append(text))
    where = {"config_object": store.obj, "conf": ceph.conf_path}
    node.ui_command_gateway("add", name="gw1", portal="127.0.0.1", **where)
    node.ui_command_gateway("add", name="gw2", portal="127.0.0.2:3260", dry_run="true",
                            **where)
    assert list(store.read().gateways) == ["gw1"] and shown[-1].startswith("  + gateway gw2")
    node.ui_command_export(rbd_image.spec, target=T, initiator=INIT, shared="true", **where)
    assert store.read().disks[rbd_image.spec].owner == "gw1"
    node.ui_command_gateway("list", **where)
    assert any(line.startswith("  gw1  tag 1") and rbd_image.spec in line for line in shown)
    node.ui_command_unexport(rbd_image.spec, shared="true", **where)
    assert store.read().disks == {}


def test_export_shared_warns_of_acls_without_chap_on_portals_others_reach(store, rbd_image):
    # a portal other hosts reach (TEST-NET-1: only recorded in the object, never bound)
    commands.gateway_add(store, "gw1", "192.0.2.10:3260")
    o = commands.ExportOptions(image=rbd_image.spec, target=T, initiators=[INIT])
    rep = commands.export_shared(store, o)
    warned = [line for line in rep.lines if "without CHAP" in line]
    assert warned and INIT in warned[0] and "192.0.2.10:3260" in warned[0]
    rep = commands.export_shared(store, commands.ExportOptions(
        image=rbd_image.spec, target=T, initiators=[INIT], no_chap=True))
    assert not [line for line in rep.lines if "without CHAP" in line]   # said: no warning
