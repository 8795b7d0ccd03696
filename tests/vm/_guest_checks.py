"""The tests every VM module shares.  pytest collects no tests from conftest.py,
so each module imports these by name; they run against that module's GUEST and
CHECKS through conftest's ``guest_run`` fixture and ``pytest_generate_tests``."""

import re

from tcmu_rbd_lab.process import log_tail



def test_check(guest_run, name, request):
    # a module may define guest_logs(run) -> str: logs that explain a failure
    guest_logs = getattr(request.module, "guest_logs", None)
    try:
        guest_run.assert_ok(name)
    except AssertionError as e:
        if guest_logs is None:
            raise
        raise AssertionError(f"{e}\n\n{guest_logs(guest_run)}") from None


def test_guest_script_completed(guest_run):
    assert guest_run.vm.returncode == 0 and not guest_run.vm.timed_out, guest_run.vm.log_tails()


def test_every_guest_check_is_asserted(guest_run, request):
    checks = set(request.module.CHECKS)
    recorded = {r["name"] for r in guest_run.records if r["kind"] in ("step", "check")}
    assert recorded <= checks, f"checks not asserted by this module: {recorded - checks}"


def test_guest_script_and_checks_agree(request):
    """Every check a module lists is in its guest script literally (a renamed
    check would otherwise only show up as 'never ran'); for modules whose
    CHECKS are all literal names."""
    text = request.module.GUEST.read_text()
    missing = [c for c in request.module.CHECKS
               if f"check {c} " not in text and f"step {c} " not in text]
    assert not missing, missing
    # a fact named like a check shadows the check's record (GuestRun.get finds the fact)
    facts = set(re.findall(r"\bfact ([A-Za-z0-9_]+) ", text))
    shadowed = sorted(facts & set(request.module.CHECKS))
    assert not shadowed, f"facts named like checks: {shadowed}"


def daemon_logs(run) -> str:
    """Appended to a failed check (_guest_checks.test_check): the daemon
    (supervisor + relayed worker lines), the kernel, the Ceph daemons."""
    logs = run.vm.logs_dir
    files = [logs / "tcmu-rbd.log", logs / "dmesg.log"]
    files += sorted((logs / "ceph").glob("*.log")) if (logs / "ceph").is_dir() else []
    files += [logs / "osd-restarted.log"]
    parts = []
    for f in files:
        if f.is_file() and f.stat().st_size:
            parts.append(f"===== {f} (last 40 lines) =====\n{log_tail(f, 40, max_chars=6000)}")
    return "\n".join(parts)
