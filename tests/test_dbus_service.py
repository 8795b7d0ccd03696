"""org.kernel.TCMUService1 on a private dbus-daemon that behaves like the
system bus (Debian's default system policy + our policy file)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

dbus = pytest.importorskip("dbus")

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "packaging" / "org.kernel.TCMUService1.conf"
NAME = "org.kernel.TCMUService1"

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""

# The service under test, in its own process with its own GLib loop.  The
# validator is the injected callable: "good" passes, "boom" raises, "slow"
# outlives the check timeout.
SERVICE = textwrap.dedent(
    """
    import sys, time
    from gi.repository import GLib
    from tcmu_rbd import dbus_service

    def validator(cfg, caller_uid):
        if "whoami" in cfg:
            return True, "uid %d" % caller_uid
        if "boom" in cfg:
            raise RuntimeError("validator bug")
        if "slow" in cfg:
            time.sleep(3)
        if "good" in cfg:
            return True, ""
        return False, "image %s does not exist" % cfg.split(";")[0]

    svc = dbus_service.DBusService(validator, check_timeout=1.0)
    try:
        svc.start()
    except Exception as e:
        print("ERROR", type(e).__name__, e, flush=True)
        sys.exit(3)
    print("READY", flush=True)
    GLib.MainLoop().run()
    """
)


def start_bus(tmp: Path):
    conf = tmp / "bus.conf"
    sock = tmp / "system_bus_socket"
    conf.write_text(BUS_CONF.format(sock=sock, policy=POLICY))
    p = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE, text=True,
    )
    addr = p.stdout.readline().strip()
    assert addr, "dbus-daemon did not start"
    # as the real system bus address: no guid, so a restarted bus is the same address
    return p, addr.split(",guid=")[0]


@pytest.fixture(scope="module")
def bus_env():
    if not shutil.which("dbus-daemon"):
        pytest.skip("dbus-daemon not installed")
    tmp = Path(tempfile.mkdtemp(prefix="tcmu-rbd-bus-"))
    os.chmod(tmp, 0o755)  # so an unprivileged user can reach the socket
    proc, addr = start_bus(tmp)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=addr)
    try:
        yield env, addr, tmp
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def spawn_service(env):
    p = subprocess.Popen([sys.executable, "-c", SERVICE], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    return p, line


@pytest.fixture(scope="module")
def service(bus_env):
    env, addr, _ = bus_env
    p, line = spawn_service(env)
    assert line == "READY", line
    yield p
    p.terminate()
    p.wait(5)


@pytest.fixture()
def client(bus_env, service):
    env, addr, _ = bus_env
    bus = dbus.bus.BusConnection(addr)
    yield bus
    bus.close()


def obj(bus, path):
    return bus.get_object(NAME, path, introspect=False)


def test_get_managed_objects_lists_only_rbd(client):
    mgr = dbus.Interface(obj(client, "/org/kernel/TCMUService1"), "org.freedesktop.DBus.ObjectManager")
    objs = mgr.GetManagedObjects(signature="")
    assert list(objs) == ["/org/kernel/TCMUService1/rbd"]
    ifaces = objs["/org/kernel/TCMUService1/rbd"]
    assert list(ifaces) == ["org.kernel.TCMUService1"]
    desc = ifaces["org.kernel.TCMUService1"]["ConfigDesc"]
    assert "pool[/namespace]/image[@snapshot]" in desc and "osd_op_timeout" in desc
    assert "keyring" in desc and "conf=" in desc and "id=" in desc


def test_properties(client):
    props = dbus.Interface(obj(client, "/org/kernel/TCMUService1/rbd"), "org.freedesktop.DBus.Properties")
    desc = props.Get("org.kernel.TCMUService1", "ConfigDesc")
    assert isinstance(desc, dbus.String) and desc.startswith("RBD config string")
    assert dict(props.GetAll("org.kernel.TCMUService1")) == {"ConfigDesc": desc}
    assert dict(props.GetAll("org.example.None")) == {}
    with pytest.raises(dbus.DBusException) as e:
        props.Set("org.kernel.TCMUService1", "ConfigDesc", "x")
    assert e.value.get_dbus_name() == "org.freedesktop.DBus.Error.PropertyReadOnly"
    with pytest.raises(dbus.DBusException) as e:
        props.Get("org.kernel.TCMUService1", "Nope")
    assert e.value.get_dbus_name() == "org.freedesktop.DBus.Error.UnknownProperty"


def check(client, cfg, timeout=10):
    h = dbus.Interface(obj(client, "/org/kernel/TCMUService1/rbd"), "org.kernel.TCMUService1")
    ok, msg = h.CheckConfig(cfg, signature="s", timeout=timeout)
    return bool(ok), str(msg)


def test_check_config_passes_whole_string_to_validator(client):
    assert check(client, "rbd/pool/good;osd_op_timeout=30") == (True, "success")
    assert check(client, "rbd/pool/missing") == (False, "image rbd/pool/missing does not exist")


def test_check_config_validator_exception_and_timeout(client):
    ok, msg = check(client, "rbd/pool/boom")
    assert not ok and "internal error" in msg and "validator bug" in msg
    t = time.monotonic()
    ok, msg = check(client, "rbd/pool/slow")
    assert not ok and "did not finish" in msg
    assert time.monotonic() - t < 2.5
    # the service is still healthy afterwards
    assert check(client, "rbd/pool/good")[0]


def test_register_handler_is_refused(client):
    m = dbus.Interface(obj(client, "/org/kernel/TCMUService1/HandlerManager1"),
                       "org.kernel.TCMUService1.HandlerManager1")
    ok, msg = m.RegisterHandler("glfs", "desc", signature="ss")
    assert not ok and "rbd" in msg and "glfs" in msg
    ok, msg = m.RegisterHandler("rbd", "desc", signature="ss")
    assert not ok


def test_introspection(client):
    def intro(path):
        x = dbus.Interface(obj(client, path), "org.freedesktop.DBus.Introspectable").Introspect()
        return ET.fromstring(str(x))

    root = intro("/org/kernel/TCMUService1")
    assert {n.get("name") for n in root.findall("node")} == {"rbd", "HandlerManager1"}
    om = root.find("interface[@name='org.freedesktop.DBus.ObjectManager']")
    assert om.find("method[@name='GetManagedObjects']/arg").get("type") == "a{oa{sa{sv}}}"
    rbd = intro("/org/kernel/TCMUService1/rbd")
    i = rbd.find("interface[@name='org.kernel.TCMUService1']")
    assert i.find("property[@name='ConfigDesc']").attrib == {"name": "ConfigDesc", "type": "s", "access": "read"}
    args = [(a.get("type"), a.get("direction")) for a in i.findall("method[@name='CheckConfig']/arg")]
    assert args == [("s", "in"), ("b", "out"), ("s", "out")]
    assert rbd.find("interface[@name='org.freedesktop.DBus.Properties']") is not None
    hm = intro("/org/kernel/TCMUService1/HandlerManager1")
    m = hm.find("interface[@name='org.kernel.TCMUService1.HandlerManager1']/method[@name='RegisterHandler']")
    assert [a.get("type") for a in m.findall("arg")] == ["s", "s", "b", "s"]
    # libdbus answers for the parents
    top = intro("/org/kernel")
    assert [n.get("name") for n in top.findall("node")] == ["TCMUService1"]


TARGETCLI = textwrap.dedent(
    """
    import json
    from targetcli.ui_backstore import UIBackstores
    out = []
    for name, iface, props in UIBackstores._user_backstores(None):
        ok, msg = iface.CheckConfig('(s)', name + '/pool/good')
        bad = iface.CheckConfig('(s)', name + '/pool/nothere')
        out.append([name, props['org.kernel.TCMUService1']['ConfigDesc'][:17],
                    [ok, msg], list(bad), iface.get_cached_property('ConfigDesc').unpack()[:17]])
    print(json.dumps(out))
    """
)


def test_stock_targetcli_code_path_lists_user_rbd(bus_env, service):
    pytest.importorskip("targetcli.ui_backstore")
    env, _, _ = bus_env
    r = subprocess.run(["/usr/bin/python3", "-c", TARGETCLI], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        ["rbd", "RBD config string", [True, "success"],
         [False, "image rbd/pool/nothere does not exist"], "RBD config string"]
    ]


def test_second_instance_cannot_take_the_name(bus_env, service):
    env, _, _ = bus_env
    p, line = spawn_service(env)
    p.wait(10)
    assert p.returncode == 3
    assert line.startswith("ERROR NameTaken") and f"pid {service.pid}" in line


def _as_nobody(argv, env):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        env=env, capture_output=True, text=True, timeout=30,
    )


def test_policy_unprivileged_may_call(bus_env, service):
    env, addr, _ = bus_env
    r = _as_nobody(["dbus-send", "--system", "--print-reply", f"--dest={NAME}",
                    "/org/kernel/TCMUService1/rbd", "org.kernel.TCMUService1.CheckConfig",
                    "string:rbd/p/good"], env)
    assert r.returncode == 0, r.stderr
    assert "boolean true" in r.stdout
    # the validator learns who asked, from the bus daemon
    r = _as_nobody(["dbus-send", "--system", "--print-reply", f"--dest={NAME}",
                    "/org/kernel/TCMUService1/rbd", "org.kernel.TCMUService1.CheckConfig",
                    "string:rbd/p/whoami"], env)
    assert r.returncode == 0 and '"uid 65534"' in r.stdout, r.stdout + r.stderr
    bus = dbus.bus.BusConnection(addr)
    try:
        assert check(bus, "rbd/p/whoami") == (True, "uid 0")
    finally:
        bus.close()
    r = _as_nobody(["dbus-send", "--system", "--print-reply", f"--dest={NAME}",
                    "/org/kernel/TCMUService1", "org.freedesktop.DBus.ObjectManager.GetManagedObjects"],
                   env)
    assert r.returncode == 0 and "/org/kernel/TCMUService1/rbd" in r.stdout


# as nobody: N CheckConfig calls at once, every answer printed as JSON
FLOOD = (ROOT / "lab" / "tcmu_rbd_lab" / "checkconfig_flood.py").read_text()


def test_unprivileged_flood_is_refused_and_never_delays_root(bus_env, service):
    env, addr, _ = bus_env
    _as_nobody(["true"], env)                      # skips without root and setpriv
    n = 100                                        # the bus allows 128 pending per caller
    flood = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              "/usr/bin/python3", "-c", FLOOD, addr, "rbd/p/slow", str(n)],
                             env=env, cwd="/", stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)                            # the flood is in
        bus = dbus.bus.BusConnection(addr)
        try:
            t = time.monotonic()
            assert check(bus, "rbd/p/good") == (True, "success")   # root: not queued behind
            assert time.monotonic() - t < 0.5
        finally:
            bus.close()
        got = json.loads(flood.communicate(timeout=60)[0])
    finally:
        flood.kill()
    assert len(got) == n                           # every call answered
    refused = [m for ok, m in got if m == "too many CheckConfig calls in progress: try again"]
    timed_out = [m for ok, m in got if "did not finish" in m]
    assert len(refused) >= n - 8 and len(refused) + len(timed_out) == n


def test_policy_unprivileged_may_not_own(bus_env):
    env, addr, _ = bus_env
    code = ("import dbus, sys\n"
            "b = dbus.bus.BusConnection(sys.argv[1])\n"
            "try:\n"
            "    b.request_name('org.kernel.TCMUService1', 4)\n"
            "except dbus.DBusException as e:\n"
            "    print(e.get_dbus_name()); sys.exit(0)\n"
            "print('OWNED'); sys.exit(1)\n")
    r = _as_nobody(["/usr/bin/python3", "-c", code, addr], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "org.freedesktop.DBus.Error.AccessDenied"


def test_policy_xml_semantics():
    root = ET.parse(POLICY).getroot()
    owners = [(p.attrib, a.attrib) for p in root.findall("policy") for a in p.findall("allow")
              if "own" in a.attrib or "own_prefix" in a.attrib]
    assert owners == [({"user": "root"}, {"own": NAME})]
    default = root.find("policy[@context='default']")
    assert [a.attrib for a in default] == [{"send_destination": NAME}]


def test_restart_of_bus_reconnects(tmp_path):
    """dbus-daemon restarts (e.g. package upgrade): the daemon must survive and
    serve the name again on the new bus."""
    if not shutil.which("dbus-daemon"):
        pytest.skip("dbus-daemon not installed")
    proc, addr = start_bus(tmp_path)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=addr)
    code = SERVICE.replace("check_timeout=1.0)", "check_timeout=1.0, reconnect_interval=0.2)")
    svc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert svc.stdout.readline().strip() == "READY"
        proc.terminate()
        proc.wait(5)
        proc, addr2 = start_bus(tmp_path)
        assert addr2 == addr
        deadline = time.monotonic() + 10
        while True:
            b = dbus.bus.BusConnection(addr)
            try:
                if b.name_has_owner(NAME):
                    break
            finally:
                b.close()
            assert time.monotonic() < deadline, "service did not come back"
            assert svc.poll() is None, "service exited when the bus went away"
            time.sleep(0.1)
        b = dbus.bus.BusConnection(addr)
        assert check(b, "rbd/p/good") == (True, "success")
        b.close()
    finally:
        svc.terminate()
        svc.wait(5)
        proc.terminate()
        proc.wait(5)


def _check_as_nobody(env, addr, *configs) -> list[str]:
    r = _as_nobody(["/usr/bin/python3", "-c",
                    "import dbus, sys\n"
                    "o = dbus.bus.BusConnection(sys.argv[1]).get_object("
                    "'org.kernel.TCMUService1', '/org/kernel/TCMUService1/rbd', "
                    "introspect=False)\n"
                    "for c in sys.argv[2:]:\n"
                    "    print(*o.CheckConfig(c, dbus_interface='org.kernel.TCMUService1', "
                    "timeout=30))\n", addr, *configs], env)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_unprivileged_caller_cannot_make_the_real_validator_touch_files_or_leak():
    """tcmu_rbd.validate.check_config behind the bus, called by nobody with a conf that
    would make librados (as root) append to, create or unlink files, and a keyring only
    root may read: nothing is touched and nothing of either file comes back."""
    if not shutil.which("dbus-daemon"):
        pytest.skip("dbus-daemon not installed")
    tmp = Path(tempfile.mkdtemp(prefix="tcmu-rbd-hostile-"))
    os.chmod(tmp, 0o755)
    proc, addr = start_bus(tmp)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=addr)
    code = SERVICE.replace("dbus_service.DBusService(validator,",
                           "dbus_service.DBusService(__import__('tcmu_rbd.validate').validate."
                           "check_config,")
    svc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert svc.stdout.readline().strip() == "READY"
        victim_log, victim_sock = tmp / "victim.log", tmp / "victim.asok"
        victim_log.write_text("precious\n")
        victim_sock.write_text("precious too\n")
        secret = tmp / "root-only.keyring"
        secret.write_text("[client.topsecret]\n\tkey = AQBxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx==\n")
        secret.chmod(0o600)
        evil = tmp / "evil.conf"
        evil.write_text(f"[global]\nmon host = 127.0.0.1:1\nlog file = {victim_log}\n"
                        f"admin socket = {victim_sock}\n[client.leakme]\n")
        os.chown(evil, 65534, 65534)
        cfg = f"rbd/rbd/img;conf={evil};keyring={secret};id=topsecret"
        # syntax only for nobody: tcmu-runner's answer; the cluster check is root's;
        # nor does nobody learn whether a path exists (in /root, say)
        assert _check_as_nobody(env, addr, cfg, f"rbd/rbd/img;conf={secret}",
                                f"rbd/rbd/img;conf={tmp}/nothing") == ["1 OK"] * 3
        # root naming nobody's conf: refused before librados reads it
        b = dbus.bus.BusConnection(addr)
        try:
            ok, msg = check(b, cfg)
        finally:
            b.close()
        assert not ok and "not trusted" in msg and str(evil) in msg, msg
        assert not any(w in msg for w in ("precious", "client.topsecret", "leakme", "AQB"))
        assert victim_log.read_text() == "precious\n"
        assert victim_sock.read_text() == "precious too\n"
        assert sorted(p.name for p in tmp.iterdir()) == sorted(
            ["bus.conf", "system_bus_socket", "victim.log", "victim.asok", "root-only.keyring",
             "evil.conf"])
    finally:
        svc.terminate()
        svc.wait(5)
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
