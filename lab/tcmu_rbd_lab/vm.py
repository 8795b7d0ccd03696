"""Run scripts inside Debian's kernel (real LIO/TCMU/iSCSI) under QEMU, via virtme-ng.

The host's own kernel may have no configfs/LIO/UIO: the lab boots Debian's kernel
(/boot/vmlinuz-*-amd64 with target_core_user.ko) with the host root filesystem shared
read-only into the guest (tmpfs overlays on /etc, /var, /tmp...), always under TCG
(nested KVM hangs), with a writable results directory shared back (--rwdir).

One boot is expensive (~10-20 s to the script, plus ~35 s for Ceph under TCG), so a
test module boots ONE VM that runs a guest-side script doing many checks; each check
appends a JSON record to <results>/results.jsonl (tests/vm/guest/lib.sh) and the
host-side tests assert on those records::

    run = run_guest_checks(GUEST / "daemon.sh", results_dir)   # module-scoped fixture
    run.assert_ok("size")                                       # one test per check

Everything the guest logs (the lab scripts' logs, daemon logs, dmesg, Ceph logs,
iscsid) lands in <results>/logs; a failure raises/asserts with their tails.

Only one QEMU VM runs at a time on the machine: run_in_vm takes a lock file and
waits while any other qemu-system process exists.

Not here: what the guest checks (tests/vm/guest/*.sh and their lib.sh), stopping
process groups and log tails (process.py), the benchmarks' VM half (bench/vm.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .process import log_tail, stop_group

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPTS = REPO / "vagrant" / "scripts"
LOCK_FILE = Path("/tmp/tcmu-rbd-vm.lock")
# guest-side paths (inside the VM; /tmp and /run are tmpfs there)
GUEST_LAB_DIR = "/tmp/lab"
GUEST_STATE_DIR = "/run/tcmu-rbd-lab"

DEFAULT_MEMORY = "6G"
DEFAULT_CPUS = 2
DEFAULT_TIMEOUT = 20 * 60
# the guest ends the script this long before the host's timeout, to collect logs
GUEST_GRACE = 60
# The guest's clock: under TCG the kernel finds the TSC unstable and falls back to the
# HPET, whose reads QEMU emulates as device accesses and which has no vDSO path, so
# every clock_gettime() of every process is a system call plus an emulated read
# (30-50 us each).  Measured on the daemon's threads, 4 KiB QD32 on the iSCSI disk:
# 25-35 system calls per command with the HPET, 10-13 with the TSC (randread 322-387
# -> 488 IOPS).  A real gateway reads the TSC in user space: so does the lab.  Do not
# switch a running guest to the HPET: it hung.  $TCMU_RBD_VM_APPEND replaces these.
KERNEL_ARGS = ("clocksource=tsc", "tsc=reliable")
_TAIL_CHARS = 6000  # per log in a failure message


class VMError(RuntimeError):
    """The VM could not run, timed out, or the guest script failed."""


def _log(msg: str) -> None:
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


def venv_bin() -> Path:
    """The bin dir of the virtualenv that has tcmu_rbd (and vng) installed."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin"
    return REPO / ".venv" / "bin"


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> tuple[Path, str]:
    """The newest /boot/vmlinuz-<ver>-amd64 whose modules include target_core_user.ko."""
    candidates = []
    for image in boot.glob("vmlinuz-*-amd64"):
        ver = image.name[len("vmlinuz-"):]
        moddir = modules / ver
        if not moddir.is_dir():
            continue
        if any(moddir.glob("kernel/drivers/target/target_core_user.ko*")):
            candidates.append((_version_key(ver), image, ver))
    if not candidates:
        raise VMError(
            f"no {boot}/vmlinuz-*-amd64 with target_core_user.ko under {modules}/<ver>: "
            "install Debian's kernel (apt-get install linux-image-amd64; scripts/setup does)")
    candidates.sort()
    _, image, ver = candidates[-1]
    return image, ver


def _version_key(ver: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-]", ver))


def _binary(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(4096)
    except OSError:
        return True


def _other_qemus() -> list[str]:
    found = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            found.append(f"{proc.name} {comm}")
    return found


@contextlib.contextmanager
def _one_vm_at_a_time(max_wait: float):
    """Hold the lab's lock file and wait until no other QEMU runs (2 shared cores)."""
    LOCK_FILE.touch(exist_ok=True)
    with open(LOCK_FILE, "r+") as fd:
        deadline = time.monotonic() + max_wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    _log(f"waiting for another VM run ({LOCK_FILE})")
                    announced = True
                if time.monotonic() > deadline:
                    raise VMError(f"gave up after {max_wait:.0f}s waiting for {LOCK_FILE}")
                time.sleep(2)
        while others := _other_qemus():
            if not announced:
                _log(f"waiting for other QEMU processes to end: {others}")
                announced = True
            if time.monotonic() > deadline:
                raise VMError(f"gave up after {max_wait:.0f}s waiting for QEMU {others}")
            time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


class _Terminated(BaseException):
    pass


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM (e.g. an outer `timeout`) unwinds like Ctrl-C, so that QEMU (in its own
    session) is killed too instead of being orphaned."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(f"signal {signum}")
    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass
class VMResult:
    returncode: int
    results_dir: Path
    boot_seconds: float | None      # host launch -> guest script start
    wall_seconds: float
    timed_out: bool = False

    @property
    def logs_dir(self) -> Path:
        return self.results_dir / "logs"

    @property
    def stdout(self) -> str:
        return (self.results_dir / "console.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.results_dir / "console.err").read_text(errors="replace")

    def log_tails(self, lines: int = 25) -> str:
        """Tails of the console and of every log the guest left, newest first."""
        parts = []
        files = [self.results_dir / "console.out", self.results_dir / "console.err"]
        if self.logs_dir.is_dir():
            logs = [p for p in self.logs_dir.rglob("*")
                    if p.is_file() and p.stat().st_size and not _binary(p)]
            logs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
            files += logs
        for p in files:
            if p.is_file() and p.stat().st_size:
                parts.append(f"----- {p} (last {lines} lines) -----\n"
                             f"{log_tail(p, lines, _TAIL_CHARS)}")
        return "\n".join(parts)


# The project's own Python packages: the guest sees the repository read-only and
# writes no bytecode, so a module without a current .pyc would be compiled again by
# every Python process in every VM (each targetcli-rbd, worker, helper).
COMPILED = ("tcmu_rbd", "targetcli_ext", "lab/tcmu_rbd_lab", "tests/vm/guest")


def compile_sources(python: Path) -> None:
    """Bring the .pyc files of COMPILED up to date (on the host, before a boot)."""
    res = subprocess.run([str(python), "-m", "compileall", "-q",
                          *(str(REPO / d) for d in COMPILED)],
                         capture_output=True, text=True)
    if res.returncode != 0:     # a syntax error shows up in the guest as well; say it here
        _log("compileall: " + (res.stdout + res.stderr).strip()[-2000:])


_WRAPPER = r"""#!/bin/bash
# written by tcmu_rbd_lab.vm: runs inside the guest
set -u
R={results}
G=$R/.guest
cat /proc/uptime >$G/started
export PATH={venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home TARGETCLI_HOME=/tmp/targetcli
export TCMU_RBD_RESULTS=$R TCMU_RBD_REPO={repo} LAB_SCRIPTS={lab_scripts}
export LAB_DIR={lab_dir} LAB_LOG_DIR=$R/logs LAB_STATE_DIR={state_dir}
export PYTHON={python} PYTHONDONTWRITEBYTECODE=1
{env}
mkdir -p "$HOME" "$TARGETCLI_HOME" "$LAB_DIR" "$LAB_LOG_DIR" "$LAB_STATE_DIR"
dmesg -w >"$LAB_LOG_DIR/dmesg.log" 2>&1 &
dmesg_pid=$!
cd "$LAB_DIR"
echo "[guest] kernel $(uname -r), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime)s: running {script}"
timeout -k 10 {guest_timeout} bash {script} {args}
rc=$?
[ $rc -eq 124 ] && echo "[guest] TIMEOUT: the script ran more than {guest_timeout}s"
echo "[guest] script exit status $rc"
# collect what is not already under $LAB_LOG_DIR
mkdir -p "$LAB_LOG_DIR/ceph"
[ -d "$LAB_DIR/ceph/log" ] && cp -a "$LAB_DIR/ceph/log/." "$LAB_LOG_DIR/ceph/" 2>/dev/null
for f in /var/log/tcmu-runner.log /var/log/iscsid.log; do [ -f $f ] && cp $f "$LAB_LOG_DIR/"; done
ps -eo pid,ppid,stat,etime,cmd >"$LAB_LOG_DIR/ps.txt" 2>&1
kill $dmesg_pid 2>/dev/null
dmesg >"$LAB_LOG_DIR/dmesg.log" 2>&1
echo $rc >$G/rc
sync
exit $rc
"""


def run_in_vm(
    script: Path | str,
    results_dir: Path | str,
    *,
    args: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    memory: str = DEFAULT_MEMORY,
    cpus: int = DEFAULT_CPUS,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    max_wait_for_lock: float = 30 * 60,
) -> VMResult:
    """Boot Debian's kernel under TCG and run the bash `script` inside it as root.

    `results_dir` (emptied first) is shared writable into the guest at the same path;
    the guest script sees it as $TCMU_RBD_RESULTS and logs go to $LAB_LOG_DIR
    (= <results_dir>/logs). The guest has the venv's bin first on PATH, $PYTHON,
    $LAB_SCRIPTS (vagrant/scripts), $LAB_DIR (a tmpfs work dir), TARGETCLI_HOME.
    With check=True a non-zero status or a timeout raises VMError carrying the log tails.
    """
    script = Path(script).resolve()
    results = Path(results_dir).resolve()
    if not script.is_file():
        raise VMError(f"no guest script {script}")
    kernel, kver = find_kernel()
    vbin = venv_bin()
    compile_sources(vbin / "python3")
    vng = vbin / "vng"
    if not vng.exists():
        raise VMError(f"{vng} missing: virtme-ng is a test dependency (scripts/setup)")
    if results.exists():
        shutil.rmtree(results)
    guest = results / ".guest"
    (results / "logs").mkdir(parents=True)
    guest.mkdir()
    env_lines = "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
    wrapper = guest / "run.sh"
    wrapper.write_text(_WRAPPER.format(
        results=shlex.quote(str(results)), venv_bin=shlex.quote(str(vbin)),
        repo=shlex.quote(str(REPO)), lab_scripts=shlex.quote(str(LAB_SCRIPTS)),
        lab_dir=GUEST_LAB_DIR, state_dir=GUEST_STATE_DIR,
        python=shlex.quote(str(vbin / "python3")), env=env_lines,
        script=shlex.quote(str(script)), args=" ".join(shlex.quote(a) for a in args),
        guest_timeout=max(60, int(timeout) - GUEST_GRACE)))
    append = os.environ.get("TCMU_RBD_VM_APPEND", " ".join(KERNEL_ARGS)).split()
    cmd = ["timeout", "-k", "20", str(int(timeout)), str(vng), "--disable-kvm",
           "-r", str(kernel), "--memory", memory, "--cpus", str(cpus),
           *(f"--append={a}" for a in append),
           "--rwdir", str(results), "--exec", f"bash {shlex.quote(str(wrapper))}"]
    host_env = dict(os.environ)
    host_env["PATH"] = f"{vbin}:{host_env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"

    with _one_vm_at_a_time(max_wait_for_lock), _sigterm_raises():
        _log(f"booting {kernel.name} (TCG, {cpus} CPUs, {memory}) for {script.name}; "
             f"results in {results}")
        t0 = time.monotonic()
        boot_seconds = None
        with open(results / "console.out", "wb") as out, open(results / "console.err", "wb") as err:
            # own process group: an interrupted run kills timeout, vng and QEMU together
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=host_env, cwd=results, start_new_session=True)
            try:
                while proc.poll() is None:
                    if boot_seconds is None and (guest / "started").exists():
                        boot_seconds = time.monotonic() - t0
                        _log(f"boot to script: {boot_seconds:.1f}s")
                    time.sleep(0.25)
            except BaseException:
                stop_group(proc)
                raise
            finally:
                if proc.poll() is None:
                    stop_group(proc)
        wall = time.monotonic() - t0
    rc = proc.returncode
    timed_out = rc in (124, 137) and not (guest / "rc").exists()
    if (guest / "rc").exists():
        rc = int((guest / "rc").read_text().strip() or rc)
    res = VMResult(rc, results, boot_seconds, wall, timed_out)
    _log(f"VM done in {wall:.1f}s, exit status {rc}" + (" (TIMEOUT)" if timed_out else ""))
    (results / "timings.json").write_text(json.dumps(
        {"boot_to_script_s": boot_seconds, "wall_s": wall, "returncode": rc,
         "timed_out": timed_out, "kernel": kver}, indent=1))
    if check and rc != 0:
        raise VMError(_failure_message(res, script))
    return res


def _failure_message(res: VMResult, script: Path) -> str:
    what = "TIMED OUT" if res.timed_out else f"failed with exit status {res.returncode}"
    if res.boot_seconds is None:
        what += " (the guest script never started: boot failed?)"
    return (f"VM run of {script.name} {what} after {res.wall_seconds:.0f}s; "
            f"all logs in {res.results_dir}\n{res.log_tails()}")


@dataclass
class GuestRun:
    """The records a guest check script wrote (see tests/vm/guest/lib.sh)."""
    vm: VMResult
    records: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, vm: VMResult) -> "GuestRun":
        records = []
        path = vm.results_dir / "results.jsonl"
        if path.exists():
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        records.append({"kind": "check", "name": f"<results.jsonl line {n}>",
                                        "ok": False, "rc": -1, "seconds": 0,
                                        "output": f"bad JSON ({e}): {line[:500]}"})
        return cls(vm, records)

    def get(self, name: str) -> dict | None:
        found = [r for r in self.records if r.get("name") == name]
        return found[-1] if found else None

    def fact(self, name: str) -> str | None:
        r = self.get(name)
        return None if r is None else r.get("value")

    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("kind") in ("step", "check") and not r["ok"]]

    def timings(self) -> dict[str, float]:
        return {r["name"]: r["seconds"] for r in self.records if "seconds" in r}

    def assert_ok(self, name: str) -> dict:
        r = self.get(name)
        if r is not None and r.get("ok"):
            return r
        if r is None:
            why = (f"guest check {name!r} never ran (the guest script stopped before it: "
                   f"exit status {self.vm.returncode}"
                   + (", TIMEOUT" if self.vm.timed_out else "") + ")")
            failed_steps = [f["name"] for f in self.failed() if f["kind"] == "step"]
            if failed_steps:
                why += f"; failed step(s): {failed_steps}"
                why += "\n" + "\n".join(f"--- {f['name']} output:\n{f['output']}"
                                        for f in self.failed() if f["kind"] == "step")
        else:
            why = (f"guest check {name!r} failed (rc {r.get('rc')}, {r.get('seconds')}s):\n"
                   f"{r.get('output')}")
        raise AssertionError(f"{why}\nall logs in {self.vm.results_dir}\n"
                             f"{self.vm.log_tails(15)}")

    def summary(self) -> str:
        lines = [f"boot to script {self.vm.boot_seconds or 0:.1f}s, VM wall "
                 f"{self.vm.wall_seconds:.1f}s, exit status {self.vm.returncode}"]
        for r in self.records:
            if r.get("kind") == "fact":
                lines.append(f"  fact  {r['name']} = {r['value']}")
            else:
                lines.append(f"  {'ok  ' if r['ok'] else 'FAIL'}  {r['kind']:5} "
                             f"{r['name']} ({r['seconds']}s)")
        return "\n".join(lines)


def run_guest_checks(script: Path | str, results_dir: Path | str, **kwargs) -> GuestRun:
    """One VM boot running a check script; never raises for failed checks (the
    per-check tests report them), but does raise VMError if nothing was recorded."""
    vm = run_in_vm(script, results_dir, check=False, **kwargs)
    run = GuestRun.load(vm)
    (Path(results_dir) / "summary.txt").write_text(run.summary() + "\n")
    _log(run.summary())
    if not run.records:
        raise VMError(_failure_message(vm, Path(script)) + "\n(no results.jsonl records)")
    return run


def results_root() -> Path:
    """Where VM test results go on the host (gitignored)."""
    return Path(os.environ.get("TCMU_RBD_VM_RESULTS", REPO / "results" / "vm"))


def main(argv: list[str] | None = None) -> int:
    """python -m tcmu_rbd_lab.vm SCRIPT [RESULTS_DIR] [ARGS...]: one VM run."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("script")
    ap.add_argument("--results", default=None)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--memory", default=DEFAULT_MEMORY)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    results = Path(a.results or results_root() / Path(a.script).stem)
    env = dict(kv.split("=", 1) for kv in a.env)
    try:
        res = run_in_vm(a.script, results, args=a.args, env=env, timeout=a.timeout,
                        memory=a.memory)
    except VMError as e:
        print(e, file=sys.stderr)
        return 1
    run = GuestRun.load(res)
    if run.records:
        print(run.summary())
    return 0 if not run.failed() else 1


if __name__ == "__main__":
    sys.exit(main())
