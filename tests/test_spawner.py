"""Workers forked from the spawner (tcmu_rbd.spawner): the same contract as an
exec'd worker (fds, stderr relay, the supervisor as parent, exit status), a
worker's command line in ps, and a spawner that died replaced.  Each case runs
its supervisor side in a child process: enable() makes the caller a child
subreaper, which pytest itself should not become."""

import json
import os
import subprocess
import sys
import textwrap
import time

SUPERVISOR = textwrap.dedent(r'''
    import errno, json, logging, os, resource, sys
    from tcmu_rbd import spawner, settings as st

    # a low open-file limit, as a VM's or a service's (1024 in the lab's guest): the
    # spawner's fd juggling must stay under it
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from tcmu_rbd.mainloop import GLibLoop
    from tcmu_rbd.worker_process import WorkerProcess, default_worker_command

    records = []
    class Keep(logging.Handler):
        def emit(self, rec):
            records.append(rec.getMessage())
    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)
    assert spawner.enable()
    # started with enable(), before any worker is asked for
    prestarted = spawner.shared()._proc.pid if spawner.shared()._proc else None
    loop = GLibLoop()
    out = []
    def start():
        events = []
        w = WorkerProcess(default_worker_command(), "uio999999", st.Settings(), loop,
                          logging.LoggerAdapter(logging.getLogger("t"), {}),
                          on_ready=lambda w: events.append("ready"),
                          on_failed=lambda w, err, code: events.append(["failed", err, code]),
                          on_exit=lambda w, code: events.append(["exit", code]))
        assert loop.run_until(lambda: w.exited, 60)
        return {"events": events, "forked": w.proc is None, "pid": w.pid,
                "spawner": spawner.shared()._proc.pid if spawner.shared() else None}
    out.append(start())
    if "--setup-fails" in sys.argv:
        # a worker the spawner cannot set up: fds above the spawner's open-file limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(100)]
        out.append(start())
        out.append(start())
    if "--kill-spawner" in sys.argv:
        os.kill(spawner.shared()._proc.pid, 9)
        spawner.shared()._proc.wait()
        out.append(start())
    if spawner.shared() is not None:
        spawner.disable()
    print(json.dumps({"runs": out, "log": records, "prestarted": prestarted}))
''')


def _supervise(*args):
    r = subprocess.run([sys.executable, "-c", SUPERVISOR, *args], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_a_forked_worker_keeps_the_contract_of_an_exec_d_one():
    got = _supervise()
    run = got["runs"][0]
    assert run["forked"]                  # from the spawner, not exec'd
    # by the spawner enable() started, before the first worker was asked for
    assert run["spawner"] == got["prestarted"] is not None
    # the first line on the control socket (fd passed at its number), then the exit
    # status reaped by the supervisor: the worker is its child
    assert run["events"] == [["failed", "cannot read device uio999999: no TCMU device of "
                                         "that name in sysfs", 2], ["exit", 1]]
    assert any("worker: tcmu_rbd.worker: cannot read device uio999999" in m for m in got["log"])
    assert not any("exec" in m for m in got["log"]), got["log"]


def test_a_spawner_that_died_is_replaced_for_the_next_worker():
    got = _supervise("--kill-spawner")
    first, second = got["runs"]
    assert second["forked"] and second["spawner"] != first["spawner"]
    assert second["events"] == first["events"]


def test_a_worker_shows_its_own_command_line():
    code = ("import sys, time\n"
            "from tcmu_rbd.spawner import set_cmdline\n"
            "print(set_cmdline(['python3', '-m', 'tcmu_rbd.worker', '--uio', 'uio7', '--ctl-fd', '5']),"
            " set_cmdline(['x' * 5000]), flush=True)\n"
            "time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code, "python3", " " * 1024], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().split() == ["True", "False"]    # too long: left alone
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            cmdline = f.read()
        assert cmdline.rstrip(b"\0") == b"python3\0-m\0tcmu_rbd.worker\0--uio\0uio7\0--ctl-fd\0005"
        # what the lab's scripts and an operator look for
        found = subprocess.run(["pgrep", "-f", "--", "-m [t]cmu_rbd[.]worker --uio uio7 "],
                               capture_output=True, text=True).stdout.split()
        assert found == [str(p.pid)]
    finally:
        p.kill()
        p.wait()


def test_a_worker_the_spawner_cannot_set_up_turns_the_supervisor_to_exec():
    got = _supervise("--setup-fails")
    ok, failed, execd = got["runs"]
    assert ok["forked"] and failed["forked"] and failed["events"] == [["exit", 127]]
    assert any("workers start with exec from now on" in m for m in got["log"])
    assert not execd["forked"] and execd["events"] == ok["events"]     # served as before


def test_what_a_worker_runs_after_the_fork_is_imported_before_it():
    """The spawner imports tcmu_rbd.worker, then forks: a module the worker first
    imports while opening its image is private to it (~2 MB for these)."""
    code = textwrap.dedent("""
        import sys
        import tcmu_rbd.worker as w
        before = set(sys.modules)
        try:
            w.open_backend("rbd/pool/img;conf=/nonexistent/ceph.conf")
        except Exception as e:
            print(type(e).__name__)
        print(sorted(m for m in set(sys.modules) - before if m.startswith("tcmu_rbd")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out[0] == "ConfigError" and out[1] == "[]", out
