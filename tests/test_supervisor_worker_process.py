"""The supervisor's handle on a worker process (tcmu_rbd.worker_process), with
scripted fake workers: the callbacks, requests answered exactly once, the
control-line bound, kill_after and the stderr relay."""

import errno
import json
import logging
import os
import time
import signal
import sys
import textwrap

import pytest

from tcmu_rbd import control
from tcmu_rbd import settings as st
from tcmu_rbd.mainloop import GLibLoop
from tcmu_rbd.worker_process import WorkerProcess, default_worker_command, describe_exit

# Sends the raw lines of $PLAN (JSON: {"send": [...], "then": "exit"|"echo"|"sleep"|
# "close"}); "echo" answers each request ok and exits on EOF.
SCRIPTED_WORKER = textwrap.dedent(
    r'''
    import json, os, socket, sys, time
    args = sys.argv[1:]
    s = socket.socket(fileno=int(args[args.index("--ctl-fd") + 1]))
    plan = json.loads(os.environ["PLAN"])
    print("<4>careful", file=sys.stderr, flush=True)
    print("2026-01-01 10:00:00,000 name[1] ERROR old style", file=sys.stderr, flush=True)
    sys.stderr.write("no newline at exit")
    sys.stderr.flush()
    for line in plan["send"]:
        s.sendall(line.encode() if isinstance(line, str) else b"x" * line)
    then = plan.get("then", "exit")
    if then == "sleep":
        time.sleep(60)
    if then == "close":
        s.close()
        time.sleep(60)
    if then == "echo":
        buf = b""
        while data := s.recv(65536):
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if req["op"] != "hang":
                    s.sendall((json.dumps({"id": req["id"], "ok": True}) + "\n").encode())
    sys.exit(plan.get("code", 0))
    '''
)


class Run:
    def __init__(self, tmp_path, monkeypatch, plan, command=None, uio="uio0", **settings):
        monkeypatch.setenv("PLAN", json.dumps(plan))
        script = tmp_path / "w.py"
        script.write_text(SCRIPTED_WORKER)
        self.loop = GLibLoop()
        self.events = []
        self.log = logging.LoggerAdapter(logging.getLogger("tcmu_rbd.test"), {})
        self.w = WorkerProcess(
            command or [sys.executable, str(script)], uio, st.Settings(**settings), self.loop,
            self.log,
            on_ready=lambda w: self.events.append(("ready", w)),
            on_failed=lambda w, err, code: self.events.append(("failed", err, code)),
            on_exit=lambda w, code: self.events.append(("exit", code)))

    def until_exit(self, timeout=10):
        assert self.loop.run_until(lambda: self.w.exited, timeout)
        return self.events


def line(obj):
    return json.dumps(obj) + "\n"


def test_ready_then_exit_callbacks(tmp_path, monkeypatch):
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})], "code": 3})
    assert r.until_exit() == [("ready", r.w), ("exit", 3)]
    assert r.w.ready and r.w.exit_code == 3


def test_failed_with_errno_and_only_the_first_line_counts(tmp_path, monkeypatch, caplog):
    r = Run(tmp_path, monkeypatch, {"send": [
        line({"event": "failed", "error": "no image", "errno": errno.EACCES}),
        line({"event": "ready"})]})
    assert r.until_exit() == [("failed", "no image", errno.EACCES), ("exit", 0)]
    assert not r.w.ready and "worker sent unexpected event 'ready'" in caplog.text


def test_requests_are_numbered_and_answered_exactly_once(tmp_path, monkeypatch):
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})], "then": "echo"})
    assert r.loop.run_until(lambda: r.w.ready, 10)
    got = []
    r.w.request(control.Resize(4096), 5, lambda *a: got.append(("resize",) + a))
    r.w.request(control.WriteCache(True), 5, lambda *a: got.append(("wc",) + a))
    assert r.loop.run_until(lambda: len(got) == 2, 10)
    assert got == [("resize", True, None, 0), ("wc", True, None, 0)]


def test_request_timeout_and_exit_fail_what_is_pending(tmp_path, monkeypatch):
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})], "then": "sleep"})
    assert r.loop.run_until(lambda: r.w.ready, 10)
    got = []
    r.w.request(control.Resize(1), 0.2, lambda *a: got.append(a))
    r.w.request(control.Reconfig("rbd/p/i"), 30, lambda *a: got.append(a))
    assert r.loop.run_until(lambda: got, 5)
    assert got == [(False, "resize: no answer from the worker within 0 s", errno.ETIMEDOUT)]
    r.w.kill()
    assert r.until_exit()[-1] == ("exit", -signal.SIGKILL)
    assert got[1] == (False, "reconfig: the worker exited (killed by SIGKILL)", errno.EIO)


def test_stop_sends_stop_and_kills_after_the_timeout(tmp_path, monkeypatch, caplog):
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})], "then": "sleep"})
    assert r.loop.run_until(lambda: r.w.ready, 10)
    r.w.stop(0.5)
    assert r.until_exit()[-1] == ("exit", -signal.SIGKILL)
    assert "did not exit in time; killing it" in caplog.text
    assert "stop: stop: no answer from the worker" in caplog.text


def test_over_long_control_line_kills_the_worker(tmp_path, monkeypatch, caplog):
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"}), control.MAX_LINE + 10],
                                    "then": "sleep"})
    assert r.until_exit()[-1] == ("exit", -signal.SIGKILL)
    assert "over-long control line; killing it" in caplog.text


def test_malformed_and_unexpected_lines_are_logged(tmp_path, monkeypatch, caplog):
    r = Run(tmp_path, monkeypatch, {"send": [
        "garbage\n", line({"event": "ready"}), line({"id": 77, "ok": True}),
        line({"id": 1, "op": "stop"})]})
    assert r.until_exit() == [("ready", r.w), ("exit", 0)]
    assert "worker sent a malformed control line" in caplog.text and "garbage" in caplog.text
    assert "worker answered unknown request id 77" in caplog.text
    assert "worker sent an unrecognised control line" in caplog.text


def test_socket_closed_without_exit_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr("tcmu_rbd.worker_process.KILL_GRACE", 0.3)
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})], "then": "close"})
    assert r.until_exit()[-1] == ("exit", -signal.SIGKILL)


def test_stderr_is_relayed_with_levels(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    r = Run(tmp_path, monkeypatch, {"send": [line({"event": "ready"})]})
    r.until_exit()
    got = {rec.getMessage(): rec.levelno for rec in caplog.records
           if rec.getMessage().startswith("worker: ")}
    assert got["worker: careful"] == logging.WARNING
    assert got["worker: 2026-01-01 10:00:00,000 name[1] ERROR old style"] == logging.ERROR
    assert got["worker: no newline at exit"] == logging.INFO  # flushed at EOF


def test_contract_environment(tmp_path, monkeypatch):
    cfg = tmp_path / "t.conf"
    r = Run(tmp_path, monkeypatch, {"send": [], "then": "sleep"}, path=str(cfg), log_level="debug")
    try:
        # until the child has exec'd (before that /proc shows the forked parent's view)
        deadline = time.monotonic() + 10
        while b"--uio" not in open(f"/proc/{r.w.pid}/cmdline", "rb").read() and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        with open(f"/proc/{r.w.pid}/environ", "rb") as f:
            env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
        assert env[b"TCMU_RBD_CONFIG"] == str(cfg).encode()
        assert env[b"TCMU_RBD_LOG_LEVEL"] == b"debug"
        assert env[b"TCMU_RBD_SUPERVISOR_PID"] == str(os.getpid()).encode()
        with open(f"/proc/{r.w.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[2:6] == [b"--uio", b"uio0", b"--ctl-fd", argv[5]] and argv[5].isdigit()
    finally:
        r.w.kill()
        r.until_exit()


def test_the_real_worker_reports_a_missing_device(tmp_path, monkeypatch, caplog):
    """python -m tcmu_rbd.worker keeps the contract: a failed line, its log relayed
    with its level."""
    r = Run(tmp_path, monkeypatch, {}, command=default_worker_command(), uio="uio999999")
    events = r.until_exit(60)
    assert events == [("failed", "cannot read device uio999999: no TCMU device of that name "
                                 "in sysfs", errno.ENOENT), ("exit", 1)]
    rec = [x for x in caplog.records if "worker: tcmu_rbd.worker: cannot read" in x.getMessage()]
    assert rec and rec[0].levelno == logging.ERROR


@pytest.mark.parametrize("code,text", [(None, "still running"), (0, "exit code 0"),
                                       (-9, "killed by SIGKILL"), (-200, "killed by signal 200")])
def test_describe_exit(code, text):
    assert describe_exit(code) == text
