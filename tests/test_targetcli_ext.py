"""targetcli-rbd, host side: argument, image, IQN, portal and size parsing, the
defaults, CHAP secrets (never from argv, never in output, errors or logs), and the
/rbd shell node's translation to the verbs (commands.py). The export plan is in
test_targetcli_plan.py, exports against an in-memory LIO in test_targetcli_apply.py;
real behaviour against configfs, the daemon and open-iscsi is tested in the VM
(tests/vm/test_targetcli_ext_lab.py)."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from targetcli_ext import cli, commands, daemon
from targetcli_ext.daemon import DaemonNotRunning
from targetcli_ext.gateway import Gateway
from targetcli_ext.plan import ExportRequest
from targetcli_ext.spec import (
    ENV_CHAP_SECRET, ENV_DISCOVERY_SECRET, ENV_MUTUAL_SECRET, Chap, Defaults, ExtError, Portal, Report, Secret, backstore_name, check_iqn,
    connect_instructions, default_target_iqn, human_size, image_of_config, load_secret,
    parse_auth_file, parse_image, parse_portal, parse_size, redact, resolve_portals,
)

SECRET = "alice-secret-0123"
MUTUAL = "target-secret-4567"
INIT = "iqn.1994-05.com.redhat:client1"


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize("spec,pool,ns,image,snap", [
    ("rbd/img0", "rbd", None, "img0", None),
    ("pool1/ns1/disk", "pool1", "ns1", "disk", None),
    ("rbd/img0@snap1", "rbd", None, "img0", "snap1"),
    ("p/n/i@s", "p", "n", "i", "s"),
])
def test_parse_image(spec, pool, ns, image, snap):
    ref = parse_image(spec)
    c = ref.cfg
    assert (c.pool, c.namespace, c.image, c.snapshot) == (pool, ns, image, snap)
    assert ref.read_only == (snap is not None)
    assert ref.dev_config == f"rbd/{spec};osd_op_timeout=30"
    assert ref.cfgstring == f"{spec};osd_op_timeout=30"
    assert ref.spec == spec


def test_parse_image_options(tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    kr = tmp_path / "k.keyring"
    kr.write_text("")
    ref = parse_image("rbd/img", osd_op_timeout=60, conf=str(conf), client_id="client.iscsi",
                      keyring=str(kr))
    assert ref.dev_config == f"rbd/rbd/img;osd_op_timeout=60;conf={conf};id=iscsi;keyring={kr}"
    with pytest.raises(ExtError, match="does not exist"):
        parse_image("rbd/img", conf=str(tmp_path / "missing.conf"))


@pytest.mark.parametrize("bad,why", [
    ("", "no image"), ("rbd", "missing image"), ("a/b/c/d", "too many"),
    ("rbd/img;osd_op_timeout=5", "options go in"), ("rbd/im g", "whitespace"),
    ("rbd/img@a@b", "more than one '@'"), ("rbd/a:b", "':'"),
])
def test_parse_image_errors(bad, why):
    with pytest.raises(ExtError, match=why):
        parse_image(bad)


def test_image_of_config_roundtrip():
    ref = parse_image("rbd/ns/img@s")
    back = image_of_config(ref.dev_config)
    assert back is not None and back.same_image(ref)
    assert image_of_config("file/x") is None and image_of_config(None) is None
    assert image_of_config("rbd/bad name/x") is None


def test_backstore_names():
    assert backstore_name(parse_image("rbd/img0")) == "rbd.img0"
    assert backstore_name(parse_image("p/ns/img")) == "p.ns.img"
    assert backstore_name(parse_image("rbd/img@s1")) == "rbd.img@s1"


# ----------------------------------------------------------------------------- IQNs

@pytest.mark.parametrize("iqn", [
    "iqn.2003-01.org.linux-iscsi.gw1:rbd", "iqn.1994-05.com.redhat:5c3b1a2f",
    "iqn.1991-05.com.microsoft:win-host.example.com", "iqn.2024-01.org.tcmu-rbd.lab",
    "eui.02004567a425678d", "naa.52004567ba64678d",
])
def test_good_iqns(iqn):
    assert check_iqn(iqn) == iqn


@pytest.mark.parametrize("iqn,why", [
    ("", "empty"), ("iqn.bad_name", "not a valid IQN"), ("IQN.2003-01.org.x:y", "upper-case"),
    ("iqn.2003-13.org.x:y", "month"), ("iqn.2003-01.org.x:a b", "not a valid IQN"),
    ("iqn.03-01.org.x", "not a valid IQN"), ("foo.bar", "not an iSCSI name"),
    ("eui.123", "not an iSCSI name"), ("iqn.2003-01.org.x:" + "a" * 220, "223 bytes"),
])
def test_bad_iqns(iqn, why):
    with pytest.raises(ExtError, match=why) as e:
        check_iqn(iqn)
    assert e.value.code == "bad-iqn"


def test_default_target_iqn():
    assert default_target_iqn("gw1") == "iqn.2003-01.org.linux-iscsi.gw1:rbd"
    assert default_target_iqn("Gate_Way.example.com") == "iqn.2003-01.org.linux-iscsi.gate-way:rbd"
    assert default_target_iqn("_") == "iqn.2003-01.org.linux-iscsi.localhost:rbd"
    check_iqn(default_target_iqn())  # this host's name


# ----------------------------------------------------------------------------- portals

@pytest.mark.parametrize("text,ip,port,s", [
    ("127.0.0.1", "127.0.0.1", 3260, "127.0.0.1:3260"),
    ("10.0.0.5:3261", "10.0.0.5", 3261, "10.0.0.5:3261"),
    ("[fd00::1]:3262", "fd00::1", 3262, "[fd00::1]:3262"),
    ("[fd00:0::1]", "fd00::1", 3260, "[fd00::1]:3260"),
    ("fd00::2", "fd00::2", 3260, "[fd00::2]:3260"),
])
def test_parse_portal(text, ip, port, s):
    p = parse_portal(text)
    assert (p.ip, p.port, str(p)) == (ip, port, s)
    assert not p.wildcard


@pytest.mark.parametrize("bad", ["", "gateway.example.com", "1.2.3.4:0", "1.2.3.4:70000",
                                 "1.2.3.4:x", "[fd00::1", "[fd00::1]x", "300.1.1.1"])
def test_bad_portals(bad):
    with pytest.raises(ExtError) as e:
        parse_portal(bad)
    assert e.value.code == "bad-portal"


def test_portal_defaults_never_wildcard():
    assert resolve_portals([]) == [Portal("127.0.0.1", 3260)]
    have = [Portal("10.0.0.1", 3260)]
    assert resolve_portals([], have) == have
    assert resolve_portals([parse_portal("10.0.0.2")] * 2, have) == [Portal("10.0.0.2", 3260)]
    assert parse_portal("0.0.0.0").wildcard and parse_portal("[::]").wildcard
    a = cli.build_parser().parse_args(["export", "rbd/img", "-i", INIT])
    assert a.portal == []  # the default is applied by resolve_portals: 127.0.0.1 only


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("text,n", [
    ("1073741824", 1 << 30), ("512M", 512 << 20), ("2G", 2 << 30), ("2GiB", 2 << 30),
    ("1.5T", 3 << 39), ("10g", 10 << 30), (4096, 4096),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


def test_parse_size_relative_and_errors():
    assert parse_size("+256M", current=1 << 30) == (1 << 30) + (256 << 20)
    for bad in ("", "abc", "-1G", "0", "1000", "+1G"):
        with pytest.raises(ExtError):
            parse_size(bad)
    assert human_size(1 << 30) == "1 GiB" and human_size(1536 << 20) == "1.5 GiB"


# ----------------------------------------------------------------------------- defaults

def test_defaults_and_reason():
    d = Defaults()
    assert (d.hw_max_sectors, d.cmd_time_out, d.qfull_time_out, d.cmdsn_depth) == \
        (1024, 0, 5, 128)
    # 128 commands (the kernel's TCMU queue depth) of hw_max_sectors fit in the data area
    assert d.max_data_area_mb * (1 << 20) >= 128 * d.hw_max_sectors * 512
    assert d.tpg_parameters() == {
        "ImmediateData": "Yes", "InitialR2T": "Yes", "MaxBurstLength": "524288",
        "FirstBurstLength": "262144", "MaxRecvDataSegmentLength": "262144",
        "MaxXmitDataSegmentLength": "262144"}
    d.check()
    assert "64" in Defaults.__doc__ and "128" in Defaults.__doc__


@pytest.mark.parametrize("field,value", [
    ("max_data_area_mb", 0), ("hw_max_sectors", 4), ("cmdsn_depth", 0),
    ("qfull_time_out", -1), ("first_burst_length", 1 << 20), ("osd_op_timeout", 0),
])
def test_defaults_checked(field, value):
    d = Defaults(**{field: value})
    with pytest.raises(ExtError):
        d.check()


def test_cli_overrides_defaults():
    a = cli.build_parser().parse_args([
        "export", "rbd/img", "-i", INIT, "--max-data-area-mb", "8", "--hw-max-sectors",
        "512", "--qfull-time-out", "10", "--cmdsn-depth", "64", "--no-immediate-data"])
    d = cli.defaults_from_args(a)
    assert (d.max_data_area_mb, d.hw_max_sectors, d.qfull_time_out, d.cmdsn_depth) == \
        (8, 512, 10, 64)
    assert d.tpg_parameters()["ImmediateData"] == "No"


# ----------------------------------------------------------------------------- secrets

def _secret_file(tmp_path, name, value, mode=0o600):
    p = tmp_path / name
    p.write_text(value + "\n")
    os.chmod(p, mode)
    return str(p)


def test_no_secret_on_the_command_line():
    ap = cli.build_parser()
    opts = set()
    for action in ap._subparsers._group_actions[0].choices["export"]._actions:
        opts.update(action.option_strings)
    assert not any(("secret" in o or "password" in o) and not o.endswith("-file")
                   for o in opts), opts
    with pytest.raises(SystemExit):  # no abbreviation of --chap-secret-file
        ap.parse_args(["export", "rbd/img", "--chap-secret", SECRET])


@pytest.mark.parametrize("argv", [
    ["export", "rbd/img", "-i", INIT, "--chap-secret", SECRET],
    ["export", "rbd/img", "-i", INIT, f"--chap-secret={SECRET}"],
    ["discovery-auth", "--user", "d", "--password", SECRET],
    ["shell", "/rbd", "export", "--secret", SECRET],
])
def test_secret_in_argv_refused_without_echo(argv, capsys):
    assert cli.main(argv, gw=RecordingGateway()) == 2
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "not accepted on the command line" in out.err


def test_secret_never_shown():
    s = Secret(SECRET, "file /x")
    for text in (str(s), repr(s), f"{s}", "%s" % s, str([s]), str({"k": s})):
        assert SECRET not in text
    assert s.reveal() == SECRET
    c = Chap("alice", s, "tgt", Secret(MUTUAL, "env"))
    assert SECRET not in repr(c) and MUTUAL not in repr(c) and SECRET not in c.describe()


def test_load_secret_sources(tmp_path, monkeypatch):
    f = _secret_file(tmp_path, "s", SECRET)
    assert load_secret(file=f).reveal() == SECRET
    assert load_secret(env="X_SECRET", environ={"X_SECRET": MUTUAL}).reveal() == MUTUAL
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt
    with pytest.raises(ExtError, match="not a terminal") as e:
        load_secret(env="X_SECRET", environ={}, prompt="secret: ")
    assert e.value.code == "no-secret"
    with pytest.raises(ExtError, match="no CHAP secret"):
        load_secret(env="X_SECRET", environ={})


def test_load_secret_prompt(monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stdin", TTY())
    answers = iter([SECRET, SECRET])
    s = load_secret(prompt="p: ", getpass_fn=lambda _p: next(answers))
    assert s.reveal() == SECRET and s.source == "prompt"
    answers = iter([SECRET, MUTUAL])
    with pytest.raises(ExtError, match="differ"):
        load_secret(prompt="p: ", getpass_fn=lambda _p: next(answers))


def test_secret_rules(tmp_path, capsys):
    with pytest.raises(ExtError, match="at least 12"):
        load_secret(file=_secret_file(tmp_path, "short", "short"))
    with pytest.raises(ExtError, match="whitespace"):
        load_secret(file=_secret_file(tmp_path, "sp", "has a space in it"))
    with pytest.raises(ExtError, match="empty"):
        load_secret(file=_secret_file(tmp_path, "empty", ""))
    load_secret(file=_secret_file(tmp_path, "open", SECRET, 0o644))
    err = capsys.readouterr().err
    assert "chmod 600" in err and SECRET not in err
    with pytest.raises(ExtError, match="must differ"):
        Chap("a", Secret(SECRET, "x"), "b", Secret(SECRET, "y"))
    with pytest.raises(ExtError, match="without spaces"):
        Chap("a b", Secret(SECRET, "x"))


def test_short_secret_error_does_not_echo_it(tmp_path):
    with pytest.raises(ExtError) as e:
        load_secret(file=_secret_file(tmp_path, "s", "tiny-secret"))
    assert "tiny-secret" not in str(e.value)


def test_auth_file(tmp_path, capsys):
    p = tmp_path / "auth"
    p.write_text(f"# initiator user secret [mutual-user mutual-secret]\n\n"
                 f"{INIT} alice {SECRET} tgt {MUTUAL}\n"
                 f"iqn.1994-05.com.redhat:client2 bob bob-secret-98765\n")
    os.chmod(p, 0o600)
    creds = parse_auth_file(str(p))
    assert creds[INIT].user == "alice" and creds[INIT].secret.reveal() == SECRET
    assert creds[INIT].mutual and creds[INIT].mutual_secret.reveal() == MUTUAL
    assert not creds["iqn.1994-05.com.redhat:client2"].mutual
    p.write_text(f"{INIT} alice {SECRET} tgt\n")
    with pytest.raises(ExtError, match="line 1: expected 3 or 5 fields") as e:
        parse_auth_file(str(p))
    assert SECRET not in str(e.value)
    p.write_text(f"{INIT} alice short\n")
    with pytest.raises(ExtError) as e:
        parse_auth_file(str(p))
    assert "short" not in str(e.value).replace("shorter", "")
    assert "at least 12" in str(e.value)


def test_redact():
    assert redact(f"x {SECRET} y {MUTUAL}", [SECRET, MUTUAL, ""]) == "x *** y ***"


def test_connect_instructions_have_no_secret():
    chap = Chap("alice", Secret(SECRET, "file /root/a"), "tgt", Secret(MUTUAL, "f"))
    lines = connect_instructions("iqn.2003-01.org.linux-iscsi.gw:rbd",
                                 [parse_portal("127.0.0.1")], initiator=INIT, chap=chap,
                                 secret_hint="CHAP secret from file /root/a")
    text = "\n".join(lines)
    assert SECRET not in text and MUTUAL not in text
    assert "iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260" in text
    assert "node.session.auth.username -v alice" in text
    assert "node.session.auth.password -v '<CHAP secret from file /root/a>'" in text
    assert "node.session.auth.username_in -v tgt" in text
    assert text.endswith("-p 127.0.0.1:3260 --login")
    assert f"InitiatorName={INIT}" in text


# ----------------------------------------------------------------------------- export requests

def _args(*argv):
    return cli.build_parser().parse_args(list(argv))


def _request(a, environ=None):
    return commands.export_request(cli.export_options(a), environ)


def test_export_request_defaults():
    req = _request(_args("export", "rbd/img0", "-i", INIT))
    assert req.target is None and req.portals == [] and req.initiators == [INIT]
    assert req.chap == {} and not req.demo_mode and req.image.dev_config == \
        "rbd/rbd/img0;osd_op_timeout=30"
    assert req.defaults == Defaults()


def test_export_request_chap(tmp_path):
    a = _args("export", "rbd/img0", "-i", INIT, "-i", "iqn.1994-05.com.redhat:c2",
              "--chap-user", "alice", "--chap-secret-file", _secret_file(tmp_path, "a", SECRET),
              "--mutual-user", "tgt")
    req = _request(a, environ={ENV_MUTUAL_SECRET: MUTUAL})
    assert set(req.chap) == {INIT, "iqn.1994-05.com.redhat:c2"}
    assert req.chap[INIT].mutual_secret.reveal() == MUTUAL
    assert SECRET not in repr(req) and MUTUAL not in repr(req)
    assert "from file" in req.secret_hints[INIT][0]


def test_export_request_chap_needs_initiators(tmp_path):
    a = _args("export", "rbd/img0", "--chap-user", "alice",
              "--chap-secret-file", _secret_file(tmp_path, "a", SECRET))
    with pytest.raises(ExtError, match="--initiator"):
        _request(a)
    with pytest.raises(ExtError, match="without a user"):
        _request(_args("export", "rbd/img0", "-i", INIT, "--chap-secret-file", "/x"))


def test_export_request_auth_file_adds_acls(tmp_path):
    p = tmp_path / "auth"
    p.write_text(f"{INIT} alice {SECRET}\n")
    os.chmod(p, 0o600)
    req = _request(_args("export", "rbd/img0", "--auth-file", str(p)))
    assert req.initiators == [INIT] and req.chap[INIT].user == "alice"


def test_demo_mode_excludes_acls():
    with pytest.raises(ExtError, match="demo-mode"):
        _request(_args("export", "rbd/img0", "--demo-mode", "-i", INIT))
    assert _request(_args("export", "rbd/img0", "--demo-mode")).demo_mode


# ----------------------------------------------------------------------------- CLI with fakes

class FakeDaemon:
    def __init__(self, running=True, ok=True, msg="OK"):
        self._running, self.ok, self.msg = running, ok, msg
        self.checked = []

    def running(self):
        return self._running

    def require(self):
        if not self._running:
            raise DaemonNotRunning(f"not running: {daemon.START_HINT}")

    def check_config(self, cfg):
        if not self._running:
            raise DaemonNotRunning(f"not running: {daemon.START_HINT}")
        self.checked.append(cfg)
        return self.ok, self.msg


class RecordingGateway:
    """Stands in for Gateway: records the request, reports like export does."""

    def __init__(self):
        self.req = None

    def export(self, req, dry_run=False):
        self.req = req
        logging.getLogger("targetcli_ext").debug("export request %r", req)
        rep = Report()
        rep.add("exported")
        for i in req.initiators:
            for line in connect_instructions("iqn.2003-01.org.linux-iscsi.gw:rbd",
                                             [parse_portal("127.0.0.1")], initiator=i,
                                             chap=req.chap.get(i)):
                rep.add(line)
        rep.data = {"req": repr(req)}
        return rep


def test_cli_export_output_and_logs_have_no_secret(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    monkeypatch.setenv(ENV_MUTUAL_SECRET, MUTUAL)
    gw = RecordingGateway()
    caplog.set_level(logging.DEBUG)
    argv = ["-v", "export", "rbd/img0", "-i", INIT, "--chap-user", "alice",
            "--chap-secret-file", _secret_file(tmp_path, "a", SECRET), "--mutual-user", "tgt"]
    assert cli.main(argv, gw=gw) == 0
    assert cli.main(["--json"] + argv, gw=gw) == 0
    out = capsys.readouterr()
    everything = out.out + out.err + caplog.text
    assert "export request" in caplog.text
    assert SECRET not in everything and MUTUAL not in everything
    assert gw.req.chap[INIT].secret.reveal() == SECRET


def test_gateway_errors_are_redacted(tmp_path):
    class Boom(Gateway):
        def _export(self, req, *a):
            raise OSError(f"write of {SECRET} to /sys/kernel/config/... failed")
    req = _request(_args("export", "rbd/img0", "-i", INIT, "--chap-user", "alice",
                                   "--chap-secret-file", _secret_file(tmp_path, "a", SECRET)))
    with pytest.raises(ExtError) as e:
        Boom(daemon=FakeDaemon()).export(req)
    assert SECRET not in str(e.value) and "***" in str(e.value)


def test_gateway_validates_before_touching_lio():
    gw = Gateway(daemon=FakeDaemon())

    def no_lio(*a):
        raise AssertionError("configfs touched")
    gw._export = no_lio
    bad = [
        (ExportRequest(parse_image("rbd/i"), target="iqn.bad_name", initiators=[INIT]), "bad-iqn"),
        (ExportRequest(parse_image("rbd/i"), initiators=["IQN.X"]), "bad-iqn"),
        (ExportRequest(parse_image("rbd/i"), initiators=[INIT, INIT]), "bad-iqn"),
        (ExportRequest(parse_image("rbd/i"), initiators=[INIT], lun=70000), "bad-lun"),
        (ExportRequest(parse_image("rbd/i"), initiators=[INIT], name="a/b"), "bad-name"),
        (ExportRequest(parse_image("rbd/i"), initiators=[INIT],
                       defaults=Defaults(max_data_area_mb=0)), "bad-option"),
        (ExportRequest(parse_image("rbd/i"), initiators=[],
                       chap={INIT: Chap("a", Secret(SECRET, "x"))}), "bad-chap"),
    ]
    for req, code in bad:
        with pytest.raises(ExtError) as e:
            gw.export(req)
        assert e.value.code == code, (req, e.value)


def test_daemon_not_running_exit_status(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))

    class NoDaemon(Gateway):
        def _export(self, req, *a):
            self.daemon.check_config(req.image.dev_config)
    gw = NoDaemon(daemon=FakeDaemon(running=False))
    assert cli.main(["export", "rbd/img0", "-i", INIT], gw=gw) == 3
    err = capsys.readouterr().err
    assert "systemctl start tcmu-rbd" in err and "tcmu-rbd --foreground" in err


def test_json_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    assert cli.main(["--json", "export", "rbd/img0", "-i", "iqn.bad_name"],
                    gw=Gateway(daemon=FakeDaemon())) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "code": "bad-iqn", "error": out["error"]}


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["export"])
    assert e.value.code == 2
    assert cli.main(["unexport"], gw=Gateway(daemon=FakeDaemon())) == 2
    assert cli.main(["discovery-auth"], gw=Gateway(daemon=FakeDaemon())) == 2


def test_discovery_auth_secret_from_env_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(commands, "TARGETCLI_LOCK", str(tmp_path / "lock"))
    seen = {}

    class G:
        def discovery_auth(self, chap):
            seen["chap"] = chap
            r = Report()
            r.add(chap.describe())
            return r
    monkeypatch.setenv(ENV_DISCOVERY_SECRET, SECRET)
    assert cli.main(["discovery-auth", "--user", "disc"], gw=G()) == 0
    assert seen["chap"].secret.reveal() == SECRET
    assert SECRET not in capsys.readouterr().out


# ----------------------------------------------------------------------------- the /rbd shell node

def test_targetcli_script_loads_and_root_gets_rbd():
    from targetcli_ext import launcher
    mod = launcher.load_targetcli_script()
    assert callable(mod.main) and hasattr(mod, "UIRoot")
    Root = launcher.make_root_class(mod.UIRoot)
    assert issubclass(Root, mod.UIRoot) and Root.refresh is not mod.UIRoot.refresh


def test_rbd_node_calls_the_verbs(tmp_path, monkeypatch):
    from configshell_fb import ConfigShell
    from targetcli.ui_node import UINode
    from targetcli_ext import shell
    monkeypatch.setenv(ENV_CHAP_SECRET, SECRET)
    sh = ConfigShell(str(tmp_path / "prefs"))
    root = UINode("/", shell=sh)
    node = shell.make_rbd_node_class()(root)
    gw = RecordingGateway()
    node._gw = gw
    shown = []
    monkeypatch.setattr(sh.con, "display", lambda text, *a, **k: shown.append(text))
    node.ui_command_export("rbd/img0", target="iqn.2003-01.org.linux-iscsi.gw:rbd",
                           portal="127.0.0.1:3260, 127.0.0.2", initiator=f"{INIT}",
                           chap_user="alice", max_data_area_mb="32")
    r = gw.req
    assert r.target == "iqn.2003-01.org.linux-iscsi.gw:rbd"
    assert [str(p) for p in r.portals] == ["127.0.0.1:3260", "127.0.0.2:3260"]
    assert r.initiators == [INIT] and r.chap[INIT].secret.reveal() == SECRET
    assert r.defaults.max_data_area_mb == 32 and not r.demo_mode
    assert shown and SECRET not in "\n".join(shown)
    # the shell node has no parameter that could carry a secret
    import inspect
    for name in ("ui_command_export", "ui_command_discovery_auth"):
        params = inspect.signature(getattr(node, name)).parameters
        assert not [p for p in params if ("secret" in p or "password" in p)
                    and not p.endswith("_file")], params


# ----------------------------------------------------------------------------- against a real cluster

def test_cluster_size_and_grow(rbd_image, ceph):
    from targetcli_ext.cluster import Cluster
    ref = parse_image(rbd_image.spec, conf=ceph.conf_path)
    c = Cluster()
    assert c.image_size(ref) == rbd_image.size
    assert c.resize(ref, rbd_image.size + (64 << 20)) == rbd_image.size
    assert c.image_size(ref) == rbd_image.size + (64 << 20)
    missing = parse_image("rbd/no-such-image-here", conf=ceph.conf_path)
    with pytest.raises(ExtError) as e:
        c.image_size(missing)
    assert e.value.code == "image-missing"
    with pytest.raises(ExtError) as e:
        c.resize(missing, 1 << 30)
    assert e.value.code == "image-missing"
