"""The tests every VM module shares.  pytest collects no tests from conftest.py,
so each module imports these by name; they run against that module's GUEST and
CHECKS through conftest's ``guest_run`` fixture and ``pytest_generate_tests``."""


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
