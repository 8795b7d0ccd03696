"""The worker's life tied to its supervisor's (tcmu_rbd.worker.follow_supervisor and
supervisor_lost): a SIGKILLed supervisor must not leave workers holding /dev/uioN."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tcmu_rbd import control, lio
from tcmu_rbd import worker as wk

ROOT = Path(__file__).resolve().parent.parent

# supervisor stand-in: starts a "worker" that calls follow_supervisor(), waits until it
# is following, then dies by SIGKILL
SUPERVISOR = textwrap.dedent(
    r'''
    import os, signal, subprocess, sys
    out = sys.argv[1]
    env = dict(os.environ, TCMU_RBD_SUPERVISOR_PID=str(os.getpid()))
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], out], env=env,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout.readline().strip() == "FOLLOWING"
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    '''
)
WORKER = textwrap.dedent(
    r'''
    import os, signal, sys, time
    from tcmu_rbd.worker import follow_supervisor
    out = sys.argv[1]
    def term(signum, frame):
        # written whole, then renamed: the test polls for the file and reads it at once
        with open(out + ".tmp", "w") as f:
            f.write("SIGTERM")
        os.replace(out + ".tmp", out)
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    follow_supervisor()
    print("FOLLOWING", flush=True)
    time.sleep(30)
    '''
)


def test_worker_gets_sigterm_when_its_supervisor_is_killed(tmp_path):
    out = tmp_path / "got"
    sup = subprocess.run([sys.executable, "-c", SUPERVISOR, str(out), WORKER], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, timeout=60)
    assert sup.returncode == -signal.SIGKILL
    child = int(sup.stdout.strip())
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text() == "SIGTERM"
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


def test_worker_refuses_to_start_when_the_supervisor_is_already_gone():
    # our parent is not the pid the (dead) supervisor passed
    with pytest.raises(wk.SupervisorGone, match="exited before this worker started"):
        wk.follow_supervisor({"TCMU_RBD_SUPERVISOR_PID": "999999999"})
    assert wk.follow_supervisor({}) is None  # started by hand: nothing to follow


class _Ring:
    def __init__(self, closed):
        self._closed = closed

    def close(self):
        self._closed.append("ring")


class _H:
    """The handler as the worker's stop path sees it: what it closed, in order."""
    stopping = False

    def __init__(self):
        self.closed = []
        self.ring = _Ring(self.closed)

    def close(self):
        self.closed.append("image")

    def set_write_cache(self, on):
        self.lun.write_cache = on


def _worker(tmp_path):
    cfg = tmp_path / "user_1" / "disk0"
    (cfg / "action").mkdir(parents=True)
    (cfg / "action" / "block_dev").write_text("0\n")
    dev = lio.TcmuDevice("uio0", lio.UioName("1", "disk0", "rbd/rbd/img0"),
                         lio.Roots(configfs=str(tmp_path)))
    w = wk.Worker(dev, None)
    w.handler = _H()
    return w, cfg / "action" / "block_dev"


def test_supervisor_loss_blocks_the_device_and_stops(tmp_path):
    w, block = _worker(tmp_path)
    w.supervisor_pid = os.getpid() + 1_000_000  # not our parent: the supervisor died
    w.on_signal()
    assert w.handler.stopping and block.read_text().strip() == "1"


def test_operator_sigterm_stops_without_blocking(tmp_path):
    w, block = _worker(tmp_path)
    w.supervisor_pid = os.getppid()  # still our parent
    w.on_signal()
    assert w.handler.stopping and block.read_text().strip() == "0"


def test_control_socket_eof_is_supervisor_loss(tmp_path):
    import socket
    w, block = _worker(tmp_path)
    a, b = socket.socketpair()
    w.ctl = a
    b.close()
    w.on_control()
    a.close()
    assert w.handler.stopping and block.read_text().strip() == "1"


def test_daemon_default_osd_op_timeout_applies_when_the_config_names_none(monkeypatch):
    import tcmu_rbd.backends.rbd as rbd_backend
    from tcmu_rbd import worker

    opened = []
    monkeypatch.setattr(rbd_backend, "open_from_config",
                        lambda cfg, default: opened.append(cfg) or "backend")
    worker.open_backend("rbd/pool/img", default_osd_op_timeout=45.0)
    worker.open_backend("rbd/pool/img;osd_op_timeout=7", default_osd_op_timeout=45.0)
    assert [c.osd_op_timeout for c in opened] == [45, 7]


# --- the worker's end of the control protocol -------------------------------------


class _Lun:
    block_size = 512
    write_cache = False

    def resize(self, blocks):
        self.blocks = blocks


class _Backend:
    def refresh_size(self):
        return 1 << 30


def test_worker_answers_every_request_on_its_control_socket(tmp_path, caplog):
    import socket
    w, _ = _worker(tmp_path)
    w.handler.lun, w.handler.backend = _Lun(), _Backend()
    a, b = socket.socketpair()
    w.ctl = a
    b.sendall(control.encode(control.Resize(1 << 20, id=1))
              + control.encode(control.Resize(2 << 30, id=2))
              + control.encode(control.WriteCache(True, id=3))
              + b'{"id": 4, "op": "snapshot"}\n' + b'{"id": 5, "op": "resize"}\n'
              + b"not json\n" + control.encode(control.Stop(id=6)))
    w.on_control()
    answers = control.LineDecoder().feed(b.recv(65536))
    assert w.handler.stopping and not w.handler.closed   # "stop" is not answered yet
    w.release()
    assert w.handler.closed == ["image", "ring"]
    b.shutdown(socket.SHUT_WR)
    answers += control.LineDecoder().feed(b.recv(65536))
    a.close()
    b.close()
    assert [(m.id, m.ok) for m in answers] == [
        (1, True), (2, False), (3, True), (4, False), (5, False), (6, True)]
    assert "larger than the image" in answers[1].error
    assert answers[3].error == "unknown control op 'snapshot'"
    assert w.handler.lun.blocks == 2048 and w.handler.lun.write_cache is True
    assert w.handler.stopping
    assert "bad control message" in caplog.text  # the line without an id is only logged


# --- the kernel's command timer ----------------------------------------------------


def _device_with_timer(tmp_path, secs):
    cfg = tmp_path / "user_1" / "disk0" / "attrib"
    cfg.mkdir(parents=True)
    (cfg / "cmd_time_out").write_text(f"{secs}\n")
    dev = lio.TcmuDevice("uio0", lio.UioName("1", "disk0", "rbd/rbd/img0"),
                         lio.Roots(configfs=str(tmp_path)))
    return dev, cfg / "cmd_time_out"


def test_the_kernel_timer_of_a_stock_targetcli_device_is_turned_off(tmp_path, caplog):
    dev, path = _device_with_timer(tmp_path, 30)
    with caplog.at_level(logging.INFO, logger="tcmu_rbd.worker"):
        assert wk.own_command_timeout(dev)
    assert path.read_text().strip() == "0"
    assert "kernel command timer (30 s) off" in caplog.text


def test_a_timer_the_kernel_will_not_change_is_reported_with_the_remedy(tmp_path, caplog,
                                                                        monkeypatch):
    dev, path = _device_with_timer(tmp_path, 30)
    # the kernel refuses the write (EINVAL) while the device is exported
    monkeypatch.setattr(dev, "set_attr", lambda attr, value: False)
    assert not wk.own_command_timeout(dev)
    assert "Set cmd_time_out=0 before mapping the LUN" in caplog.text
    dev0, path0 = _device_with_timer(tmp_path / "b", 0)
    monkeypatch.setattr(dev0, "set_attr", lambda attr, value: pytest.fail("already off"))
    assert wk.own_command_timeout(dev0)


def test_identity_refresh_is_bounded_when_configfs_sleeps():
    """tcm_loop creates its SCSI device inside the configfs symlink and waits for
    INQUIRY; a configfs read of that LUN's directory sleeps until then: INQUIRY is
    answered from the kept values, the refresh lands later, none piles up."""
    from tcmu_rbd.worker import BoundedRefresh
    release, calls = threading.Event(), []

    def refresh(lun):
        calls.append(lun)
        release.wait(5)
        lun["serial"] = "new"

    lun = {"serial": "old"}
    bounded = BoundedRefresh(refresh, wait=0.05)
    t0 = time.monotonic()
    bounded(lun)
    bounded(lun)                       # the first is still asleep: no second thread
    assert time.monotonic() - t0 < 1 and lun["serial"] == "old" and len(calls) == 1
    release.set()
    deadline = time.monotonic() + 5
    while bounded._busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lun["serial"] == "new"
    bounded(lun)                       # quick this time: waited for, not skipped
    assert len(calls) == 2


# threads that malloc at once, then the number of arenas glibc made (malloc_info's heaps)
ARENAS = textwrap.dedent(
    r'''
    import ctypes, os, sys, tempfile, threading
    from tcmu_rbd import worker
    env = dict(a.split("=", 1) for a in sys.argv[1:])
    if env.get("call") == "1":
        print(worker.limit_malloc_arenas({k: v for k, v in env.items() if k != "call"}))
    else:
        print("-")
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    go = threading.Barrier(6)
    def churn():
        go.wait()
        for _ in range(2000):      # ctypes calls drop the GIL: the threads malloc at once
            libc.free(libc.malloc(200))
        go.wait()
    ts = [threading.Thread(target=churn) for _ in range(5)]
    for t in ts: t.start()
    go.wait(); go.wait()
    with tempfile.TemporaryFile("w+") as f:
        libc.fdopen.restype = ctypes.c_void_p
        fp = libc.fdopen(os.dup(f.fileno()), b"w")
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info(0, fp); libc.fclose(fp)
        f.seek(0)
        print(f.read().count("<heap nr="))
    for t in ts: t.join()
    ''')


def _arenas(*args):
    out = subprocess.run([sys.executable, "-c", ARENAS, *args], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=dict(os.environ, MALLOC_ARENA_MAX=""))
    set_to, heaps = out.stdout.split()
    return set_to, int(heaps)


def test_a_worker_keeps_its_threads_to_one_malloc_arena():
    # glibc alone: a new thread gets an arena of its own
    assert _arenas()[1] >= 3
    assert _arenas("call=1") == ("1", 1)
    # the operator's $MALLOC_ARENA_MAX wins; a bad one is refused for the default
    assert _arenas("call=1", "MALLOC_ARENA_MAX=2") == ("2", 2)
    assert _arenas("call=1", "MALLOC_ARENA_MAX=lots") == ("1", 1)
    assert _arenas("call=1", "MALLOC_ARENA_MAX=0") == ("1", 1)


def test_the_worker_reads_the_command_line_the_supervisor_builds():
    from tcmu_rbd.settings import Settings
    from tcmu_rbd.worker_process import host_args, worker_args
    s = Settings(osd_op_timeout=45, lock_grace=2.5)
    a = wk.parse_args(worker_args("uio3", 15, s, 9), environ={})
    assert vars(a) == {"uio": "uio3", "ctl_fd": 15, "osd_op_timeout": 45.0, "lock_grace": 2.5,
                       "metrics_fd": 9, "log_level": "info", "host": False}
    # a worker host's: its devices come over the socket, not on the command line
    a = wk.parse_args(host_args(7, s), environ={})
    assert vars(a) == {"uio": None, "ctl_fd": 7, "osd_op_timeout": 45.0, "lock_grace": 2.5,
                       "metrics_fd": None, "log_level": "info", "host": True}
    a = wk.parse_args(worker_args("uio3", 15, s, None), environ={"TCMU_RBD_LOG_LEVEL": "debug"})
    assert (a.metrics_fd, a.log_level) == (None, "debug")
    # --flag=value too; the defaults where a flag is absent
    a = wk.parse_args(["--uio=uio0", "--log-level=warning"], environ={})
    assert (a.uio, a.ctl_fd, a.osd_op_timeout, a.log_level) == ("uio0", None, 30.0, "warning")


@pytest.mark.parametrize("argv, error", [
    ([], "--uio is required"),
    (["--uio"], "--uio needs a value"),
    (["--uio", "uio0", "--ctl-fd", "seven"], "--ctl-fd: not a whole number: 'seven'"),
    (["--uio", "uio0", "--lock-grace", "soon"], "--lock-grace: not a number: 'soon'"),
    (["--ui", "uio0"], "unknown argument '--ui'"),           # no abbreviations
    (["uio0"], "unknown argument 'uio0'"),
    (["--host=1", "--ctl-fd", "3"], "--host takes no value"),
    (["--host"], "--host takes its devices over --ctl-fd, not --uio or --metrics-fd"),
    (["--host", "--ctl-fd", "3", "--uio", "uio0"],
     "--host takes its devices over --ctl-fd, not --uio or --metrics-fd"),
])
def test_a_bad_worker_command_line_is_refused_with_its_reason(argv, error):
    with pytest.raises(wk.UsageError) as e:
        wk.parse_args(argv, environ={})
    assert str(e.value) == error


def test_the_worker_exits_2_on_a_bad_command_line():
    r = subprocess.run([sys.executable, "-m", "tcmu_rbd.worker", "--uio", "uio0", "--nope", "1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == "tcmu-rbd-worker: error: unknown argument '--nope'"
    r = subprocess.run([sys.executable, "-m", "tcmu_rbd.worker", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("usage: python3 -m tcmu_rbd.worker --uio")
