"""Host checks of the Vagrant lab (vagrant/): what holds without VirtualBox or libvirt.

The Vagrantfile is evaluated by ruby against a stub of Vagrant's configuration API
that records each box and its shell provisioners; every command line of those is
then checked: only scripts/setup, vagrant/scripts/*.sh, targetcli-rbd and a few
box-preparation commands are called; each script exists and passes ``bash -n``; each
action and option passed to a script is one its argument parser has (options after
``--`` against the command the script hands them to); each targetcli-rbd verb (in the
Vagrantfile and in the scripts it provisions) is accepted by ``targetcli-rbd VERB
--help`` with every option given; the ceph box's cluster is told to bind the
box's address. ceph-client.sh runs against real clusters (loopback and, where the
host has one, a non-loopback address); ceph.sh brings one up with images and down.
Not here: booting the boxes (vagrant up).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"
SCRIPTS = REPO / "vagrant" / "scripts"
SRC = "/srv/tcmu-rbd"  # the repository inside each box (the Vagrantfile's SRC)
BOXES = ["ceph", "gw1", "gw2", "initiator"]
# what provisioning may call besides the project's scripts and targetcli-rbd
BOX_PREP = {"set", "export", "apt-get", "systemctl", "multipath", "true"}
# where a script hands the arguments after `--`: the command whose --help lists them
PASSTHROUGH = {"ceph.sh": ["-m", "tcmu_rbd_lab.ceph", "up"],
               "tcmu-daemon.sh": ["-m", "tcmu_rbd"]}
NO_RUBY = "ruby not installed (scripts/setup installs it, so CI has it)"

# Vagrant's configuration API, recorded: every call answers a recorder; `define`
# opens a box, `provision "shell"` records its inline script; trigger code
# (`t.ruby`) runs on the host at `vagrant up` and is not called here.
STUB = r"""
require "json"
BOXES = {}
ORDER = []
class Rec < BasicObject
  def initialize(box) @box = box end
  def method_missing(name, *args, **kw, &blk)
    case name
    when :define
      ::ORDER << args[0].to_s
      ::BOXES[args[0].to_s] = []
      blk.call(::Rec.new(args[0].to_s)) if blk
    when :provision
      if args[0].to_s == "shell"
        ::Kernel.raise "shell provisioner without inline: in #{@box}" unless kw[:inline]
        (::BOXES[@box || "*"] ||= []) << kw[:inline]
      end
    when :ruby
    else
      blk.call(*::Array.new([blk.arity, 0].max) { ::Rec.new(@box) }) if blk
    end
    ::Rec.new(@box)
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  def self.configure(_version) yield Rec.new(nil) end
end
load ARGV[0]
puts JSON.generate({"order" => ORDER, "boxes" => BOXES})
"""


def _ruby():
    if shutil.which("ruby") is None:
        pytest.skip(NO_RUBY)
    return "ruby"


def evaluate(vagrantfile: Path) -> dict:
    """{"order": [box...], "boxes": {box: [inline script...]}} of a Vagrantfile."""
    r = subprocess.run([_ruby(), "-e", STUB, str(vagrantfile)], capture_output=True,
                       text=True, cwd=vagrantfile.parent, timeout=60)
    assert r.returncode == 0, f"{vagrantfile} does not evaluate: {r.stderr}"
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def lab() -> dict:
    return evaluate(VAGRANTFILE)


def commands(inline: str) -> list[list[str]]:
    """The simple commands of a provisioner's script, each as its argv (leading
    VAR=value assignments dropped)."""
    out = []
    for line in inline.replace("\\\n", " ").splitlines():
        argv: list[str] = []
        for tok in shlex.split(line, comments=True) + [";"]:
            if tok in ("&&", "||", ";", "|"):
                while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
                    argv.pop(0)
                if argv:
                    out.append(argv)
                argv = []
            else:
                argv.append(tok)
    return out


def _calls(lab) -> list[tuple[str, list[str]]]:
    return [(box, argv) for box, scripts in lab["boxes"].items()
            for inline in scripts for argv in commands(inline)]


def _script_of(cmd: str) -> Path | None:
    if "/vagrant/scripts/" in cmd:
        return SCRIPTS / cmd.rsplit("/", 1)[1]
    if cmd.endswith("/scripts/setup"):
        return REPO / "scripts" / "setup"
    return None


def _script_calls(lab):
    return [(box, _script_of(argv[0]), argv[1:]) for box, argv in _calls(lab)
            if _script_of(argv[0])]


def _targetcli_calls(lab) -> list[tuple[str, list[str]]]:
    """(where, argv after targetcli-rbd): from the Vagrantfile's provisioners and from
    the text of the scripts they call (e.g. a unit's ExecStart)."""
    out = [(box, argv[1:]) for box, argv in _calls(lab)
           if Path(argv[0]).name == "targetcli-rbd"]
    seen = set()
    for script in sorted({s for _, s, _ in _script_calls(lab)}):
        for line in script.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            for m in re.finditer(r"(?:^|[\s=/])targetcli-rbd\s+([a-z][\w-]*)(.*)", line):
                opts = re.findall(r"(?<!\S)--[a-z][\w-]*", m.group(2))
                if (script.name, m.group(1), *opts) not in seen:
                    seen.add((script.name, m.group(1), *opts))
                    out.append((script.name, [m.group(1), *opts]))
    return out


def parser_of(script: Path) -> tuple[set[str] | None, dict[str, bool], bool]:
    """(actions or None, {option: takes a value}, has `--`) from the script's
    `case $1 in` arms and its `case $action in` labels."""
    text = script.read_text()
    opts, passthrough = {}, False
    for m in re.finditer(r"^\s*(--[\w-]*(?:\|--[\w-]+)*)\)(.*)$", text, re.M):
        for o in m.group(1).split("|"):
            if o == "--":
                passthrough = True
            else:
                opts[o] = "shift 2" in m.group(2)
    actions = None
    if re.search(r"^action=\$\{1:-\}", text, re.M):
        block = text[text.index("case $action in"):]
        actions = {a for m in re.finditer(r"^  ([a-z][\w|-]*)\)", block, re.M)
                   for a in m.group(1).split("|")}
    return actions, opts, passthrough


def test_vagrantfile_syntax():
    r = subprocess.run([_ruby(), "-c", str(VAGRANTFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_boxes(lab):
    assert lab["order"] == BOXES
    assert all(lab["boxes"][b] for b in BOXES), "a box without a shell provisioner"


@pytest.mark.parametrize("box", BOXES)
def test_provisioner_parses(lab, box):
    for inline in lab["boxes"][box]:
        r = subprocess.run(["bash", "-n"], input=inline, capture_output=True, text=True)
        assert r.returncode == 0, f"{box}: {r.stderr}"


def test_only_lab_scripts_and_targetcli(lab):
    other = {(box, argv[0]) for box, argv in _calls(lab) if not _script_of(argv[0])
             and Path(argv[0]).name != "targetcli-rbd" and argv[0] not in BOX_PREP}
    assert not other, f"provisioning calls something else: {sorted(other)}"


def test_scripts_exist_and_parse(lab):
    for box, script, _ in _script_calls(lab):
        assert script.is_file(), f"{box}: {script} missing"
        assert script.stat().st_mode & 0o111, f"{script} not executable"
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_repo_paths_exist(lab):
    for box, argv in _calls(lab):
        for a in argv:
            if a.startswith(SRC + "/"):
                assert (REPO / a[len(SRC) + 1:]).exists(), f"{box}: {a} is not in the repository"


def _help(argv: list[str]) -> tuple[str | None, str]:
    """(--help's text or None, the error) of ``python ARGV --help``."""
    r = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    if r.returncode:
        return None, f"--help exits {r.returncode}: {r.stderr.strip()[-300:]}"
    return r.stdout, ""


def _missing_options(given: list[str], text: str) -> list[str]:
    return [o for o in given if o.startswith("--")
            and not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]


def script_option_problems(lab) -> list[str]:
    problems = []
    for box, script, args in _script_calls(lab):
        where = f"{box}: {script.name} {' '.join(args)}"
        if script.name == "setup":
            if args:
                problems.append(f"{where}: scripts/setup takes no arguments")
            continue
        actions, opts, passthrough = parser_of(script)
        if actions is not None:
            if not args or args[0] not in actions:
                problems.append(f"{where}: action not in {sorted(actions)}")
                continue
            args = args[1:]
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                if not passthrough:
                    problems.append(f"{where}: the script takes no `--`")
                    break
                target = PASSTHROUGH[script.name]
                text, err = _help(target)
                missing = _missing_options(args[i + 1:], text or "")
                if text is None or missing:
                    problems.append(f"{where}: python {' '.join(target)} {err}"
                                    f"has no option {' '.join(missing)}")
                break
            if a not in opts:
                problems.append(f"{where}: no option {a} (it has {' '.join(sorted(opts))})")
            elif opts[a]:
                i += 1
                if i >= len(args):
                    problems.append(f"{where}: {a} needs a value")
            i += 1
    return problems


def targetcli_problems(lab) -> list[str]:
    calls = _targetcli_calls(lab)
    cli = ["-m", "targetcli_ext.cli"]
    problems = []
    for where, argv in calls:
        verb, rest = argv[0], argv[1:]
        cmd = [verb]
        # a sub-verb (gateway add): its own usage line names it
        if rest and not rest[0].startswith("-"):
            text, _ = _help(cli + [verb, rest[0]])
            if text and f" {verb} {rest[0]} " in text.split("\n", 1)[0]:
                cmd.append(rest[0])
        text, err = _help(cli + cmd)
        missing = _missing_options(rest, text or "")
        if text is None:
            problems.append(f"{where}: targetcli-rbd {' '.join(cmd)} {err}")
        elif missing:
            problems.append(f"{where}: targetcli-rbd {' '.join(cmd)} has no option "
                            f"{' '.join(missing)}")
    return list(dict.fromkeys(problems))


def test_script_options(lab):
    problems = script_option_problems(lab)
    assert not problems, "\n".join(problems)


def test_targetcli_verbs(lab):
    assert {"gateway", "export", "sync"} <= {argv[0] for _, argv in _targetcli_calls(lab)}
    problems = targetcli_problems(lab)
    assert not problems, "\n".join(problems)


def test_ceph_box_binds_its_address(lab):
    """The ceph box starts the cluster with --public-addr and the box's private
    network address (what the gateways' mon_host will name)."""
    calls = [args for box, script, args in _script_calls(lab)
             if box == "ceph" and script.name == "ceph.sh"]
    assert len(calls) == 1 and calls[0][0] == "up", calls
    module_args = calls[0][calls[0].index("--") + 1:]
    i = module_args.index("--public-addr")
    assert module_args[i + 1] == os.environ.get("LAB_NET", "192.168.56") + ".10"


def test_checks_catch_bad_calls(tmp_path):
    """The checks above, on a Vagrantfile that gets each thing wrong once."""
    vf = tmp_path / "Vagrantfile"
    s = f"{SRC}/vagrant/scripts"
    vf.write_text(f"""Vagrant.configure("2") do |config|
  config.vm.define "a" do |a|
    a.vm.provision "shell", inline: <<-SHELL
      X=1 {s}/initiator.sh login --target t --bogus 1 && {s}/initiator.sh nosuch
      {s}/dbus.sh --policy
      {s}/ceph.sh up --dir d -- --no-such-module-option
      targetcli-rbd export rbd/x --no-such-flag
      targetcli-rbd no-such-verb
      curl http://example.invalid
    SHELL
  end
end
""")
    bad = evaluate(vf)
    p = "\n".join(script_option_problems(bad))
    for what in ("no option --bogus", "nosuch", "--policy needs a value", "--no-such-module-option"):
        assert what in p, p
    t = "\n".join(targetcli_problems(bad))
    assert "export has no option --no-such-flag" in t and "no-such-verb --help exits 2" in t, t
    assert [argv[0] for _, argv in _calls(bad) if argv[0] == "curl"] == ["curl"]


def test_ceph_client_refuses_a_loopback_cluster(ceph, tmp_path):
    """ceph-client.sh on a real cluster: the throwaway cluster listens on 127.0.0.1,
    which no gateway on another host reaches: refused, no keyring written."""
    out = tmp_path / "client"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAB_LOG_DIR": str(tmp_path / "log"),
           "LAB_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    r = subprocess.run([str(SCRIPTS / "ceph-client.sh"), "--conf", ceph.conf_path,
                        "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 1 and "loopback only" in r.stderr, r.stderr
    assert not (out / "ceph.client.admin.keyring").exists()
    assert not (out / "ceph.conf").exists()


def test_ceph_client_on_a_public_address(tmp_path):
    """A cluster started as the ceph box starts it (--public-addr; here 127.0.0.2, as
    tests stay on loopback, allowed with LAB_ALLOW_LOOPBACK=1): ceph-client.sh writes a
    conf naming that address and a 0600 keyring, and those two files alone (what a
    gateway gets) reach the cluster."""
    addr = "127.0.0.2"
    rados = pytest.importorskip("rados")
    from tcmu_rbd_lab.ceph import CephCluster
    out = tmp_path / "client"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAB_LOG_DIR": str(tmp_path / "log"),
           "LAB_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path),
           "LAB_ALLOW_LOOPBACK": "1"}
    with CephCluster(tmp_path / "c", public_addr=addr, timeout=300) as c:
        r = subprocess.run([str(SCRIPTS / "ceph-client.sh"), "--conf", c.conf_path,
                            "--out", str(out)], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(out)
        conf = (out / "ceph.conf").read_text()
        assert f"v2:{addr}:{c.mon_ports[0]}" in conf and "127.0.0.1:" not in conf, conf
        keyring = out / "ceph.client.admin.keyring"
        assert keyring.stat().st_mode & 0o777 == 0o600
        with rados.Rados(conffile=str(out / "ceph.conf"), rados_id="admin",
                         conf={"keyring": str(keyring)}) as cl:
            assert "rbd" in cl.list_pools()


def test_ceph_sh_up_with_images_and_down(tmp_path):
    """ceph.sh as the boxes and the VM guests call it: its stdout is the conf path
    alone, the images are there with their sizes (created by the module's ``up``),
    ``down`` keeps the logs and removes the cluster; a spec without SIZE is refused."""
    if shutil.which("ceph-mon") is None:
        pytest.skip("Ceph not installed: run scripts/setup")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAB_LOG_DIR": str(tmp_path / "log"),
           "LAB_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path),
           "PYTHON": sys.executable}
    d = tmp_path / "ceph"
    bad = subprocess.run([str(SCRIPTS / "ceph.sh"), "up", "--dir", str(d), "--image",
                          "rbd/nosize"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "--image wants POOL/NAME=SIZE, got rbd/nosize" in bad.stderr
    up = subprocess.run([str(SCRIPTS / "ceph.sh"), "up", "--dir", str(d), "--image",
                         "rbd/a=16M", "--image", "rbd/b=1G"], capture_output=True, text=True,
                        env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout == f"{d.resolve()}/ceph.conf\n"
        ls = subprocess.run(["rbd", "-c", up.stdout.strip(), "ls", "-l", "--format", "json"],
                            capture_output=True, text=True, timeout=120)
        assert ls.returncode == 0, ls.stderr
        assert {i["image"]: i["size"] for i in json.loads(ls.stdout)} == \
            {"a": 16 << 20, "b": 1 << 30}
        assert "image.rbd/b=1073741824 (created)" in (tmp_path / "log" / "ceph.log").read_text()
    finally:
        dn = subprocess.run([str(SCRIPTS / "ceph.sh"), "down", "--dir", str(d)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert dn.returncode == 0 and dn.stdout == "down\n", dn.stderr
    assert not d.exists() and (tmp_path / "log" / "ceph" / "ceph-mon.a.log").is_file()
