"""The daemon's entry point (tcmu_rbd.daemon): the CLI, the settings file, the
single-instance lock, the tcmu-runner check and run() against a fake kernel
(lio.Roots in a temp dir)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tcmu_rbd import daemon as d
from tcmu_rbd import lio
from tcmu_rbd import netlink as nl
from tcmu_rbd import settings as st

ROOT = Path(__file__).resolve().parent.parent


def test_find_tcmu_runner(tmp_path):
    for pid, comm in ((10, "bash"), (11, "tcmu-runner"), (12, "python3")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "self").mkdir()
    assert d.find_tcmu_runner(str(tmp_path)) == 11
    (tmp_path / "11" / "comm").write_text("tcmu-runnerx\n")
    assert d.find_tcmu_runner(str(tmp_path)) is None


# --- settings -----------------------------------------------------------------------


def test_settings_example_file_is_valid_and_default():
    s = st.loads((ROOT / "packaging" / "tcmu-rbd.conf").read_text(), "example")
    want = st.Settings()
    assert s == want


@pytest.mark.parametrize(
    "text,msg",
    [
        ("[daemon]\nlog_level = loud\n", "log_level: 'loud' is not one of"),
        ("[daemon]\nlog_target = relative.log\n", "must be stderr, syslog or an absolute"),
        ("[daemon]\nworker_start_timeout = -1\n", "must be > 0"),
        ("[daemon]\nworker_start_timeout = soon\n", "is not a number"),
        ("[daemon]\ndbus = maybe\n", "not a boolean"),
        ("[daemon]\nluns_per_worker = 0\n", "'0' is not a whole number from 1 to 256"),
        ("[daemon]\nluns_per_worker = 2.5\n", "'2.5' is not a whole number from 1 to 256"),
        ("[daemon]\nluns_per_worker = 257\n", "'257' is not a whole number from 1 to 256"),
        ("[daemon]\nfoo = 1\n", "unknown key 'foo'"),
        ("[rbd]\nosd_op_timeout = 1.5\n", "not an integer"),
        ("[other]\n", "unknown section [other]"),
        ("no section\n", "no section headers"),
    ],
)
def test_settings_errors(text, msg):
    with pytest.raises(st.SettingsError, match=None) as e:
        st.loads(text, "/etc/x.conf")
    assert msg in str(e.value) and "/etc/x.conf" in str(e.value)


def test_settings_resolution(tmp_path):
    f = tmp_path / "a.conf"
    f.write_text("[daemon]\nlog_level = debug\ndbus = no\nluns_per_worker = 8\n"
                 "[rbd]\nosd_op_timeout = 0\n")
    s = st.load(None, {"TCMU_RBD_CONFIG": str(f)})
    assert (s.log_level, s.dbus, s.osd_op_timeout, s.path) == ("debug", False, 0, str(f))
    assert s.luns_per_worker == 8
    s = st.load(str(f), {"TCMU_RBD_LOG_LEVEL": "ERROR"})
    assert s.log_level == "error"
    with pytest.raises(st.SettingsError, match="does not exist"):
        st.load(str(tmp_path / "nope.conf"), {})
    assert st.resolve_path(None, {}) == (st.DEFAULT_PATH, False)


# --- real processes: CLI, single instance, SIGTERM --------------------------------------

DAEMON_WITH_FAKE_KERNEL = textwrap.dedent(
    """
    import socket, sys
    from tcmu_rbd import daemon as d, lio, logs, netlink as nl, settings as st
    s = st.load(sys.argv[1])
    logs.setup_logging(s)
    root = sys.argv[2]
    roots = lio.Roots(sysfs=root + "/sys", configfs=root + "/cfg", proc=root + "/proc")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    def ready(sup):
        print("READY", flush=True)
    sys.exit(d.run(s, roots=roots, netlink_factory=lambda: nl.TcmuNetlink.from_socket(a, 30),
                   ready_cb=ready))
    """
)


def _conf(tmp_path, **extra):
    f = tmp_path / "t.conf"
    lines = ["[daemon]", f"lock_file = {tmp_path / 'tcmu.lock'}", "dbus = no"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    f.write_text("\n".join(lines) + "\n")
    return f


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tcmu_rbd", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_cli_bad_config_exits_2(tmp_path):
    r = _cli("--config", str(tmp_path / "missing.conf"), "--foreground")
    assert r.returncode == 2 and "does not exist" in r.stderr
    f = tmp_path / "bad.conf"
    f.write_text("[daemon]\nlog_level = loud\n")
    r = _cli("--config", str(f), "--foreground")
    assert r.returncode == 2 and "log_level" in r.stderr
    r = _cli("--help")
    assert r.returncode == 0 and "--no-dbus" in r.stdout and "--log-level" in r.stdout


def test_second_daemon_refused_by_lock_and_sigterm_exits_0(tmp_path):
    conf = _conf(tmp_path)
    for p in ("sys/class/uio", "cfg", "proc"):
        (tmp_path / p).mkdir(parents=True)
    first = subprocess.Popen([sys.executable, "-c", DAEMON_WITH_FAKE_KERNEL, str(conf), str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "READY"
        r = _cli("--config", str(conf), "--foreground", "--no-dbus")
        assert r.returncode == 1
        assert "refusing to start" in r.stderr and f"locked by pid {first.pid}" in r.stderr
        assert "only one daemon per host" in r.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0
        assert "stopping" in first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()
        first.stderr.close()


def test_lock_conflicts_with_tcmu_runner_style_posix_lock(tmp_path):
    """tcmu-runner holds fcntl(F_SETLK, F_WRLCK) on /run/tcmu.lock; a BSD flock
    would not see it, so we must use a POSIX lock too."""
    lock = tmp_path / "tcmu.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, struct, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))\n"
         "print('LOCKED', flush=True); time.sleep(60)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(d.AlreadyRunning, match=f"pid {holder.pid}"):
            d.take_lock(str(lock))
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    fd = d.take_lock(str(lock))  # free again
    os.close(fd)


def test_refuses_when_tcmu_runner_process_runs(tmp_path, caplog):
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "comm").write_text("tcmu-runner\n")
    s = st.Settings(dbus=False, lock_file=str(tmp_path / "l"))
    roots = lio.Roots(sysfs=str(tmp_path), configfs=str(tmp_path), proc=str(proc))
    assert d.run(s, roots=roots, netlink_factory=lambda: pytest.fail("must not open netlink")) == 1
    assert "tcmu-runner (pid 4242) is running" in caplog.text


def test_netlink_failure_is_clear_and_unblocks(tmp_path, caplog):
    mp = tmp_path / "module" / "target_core_user" / "parameters"
    mp.mkdir(parents=True)
    (mp / "block_netlink").write_text("0")
    (mp / "reset_netlink").write_text("0")
    s = st.Settings(dbus=False, lock_file=str(tmp_path / "l"))
    roots = lio.Roots(sysfs=str(tmp_path), configfs=str(tmp_path), proc=str(tmp_path / "p"))

    def boom():
        assert (mp / "block_netlink").read_text().strip() == "1"
        raise nl.FamilyNotFound("generic netlink family TCM-USER not found: is the "
                                "target_core_user kernel module loaded?")

    assert d.run(s, roots=roots, netlink_factory=boom) == 1
    assert "target_core_user" in caplog.text
    assert (mp / "block_netlink").read_text().strip() == "0"
    assert (mp / "reset_netlink").read_text().strip() == "1"
