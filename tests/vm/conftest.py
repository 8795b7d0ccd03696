"""VM system tests: each module boots ONE Debian-kernel VM (tcmu_rbd_lab.vm) that
runs a guest-side check script (tests/vm/guest/*.sh); the tests assert on its records.
Results and all guest logs: results/vm/<module>/ (or $TCMU_RBD_VM_RESULTS/<module>).

A module defines GUEST (the script), CHECKS (every check/step it records),
VM_TIMEOUT (s) and optionally GUEST_ENV (environment for the guest), and imports
the shared tests from _guest_checks."""

import pytest

from tcmu_rbd_lab.vm import results_root, run_guest_checks


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
            # the module's one VM run happens in its first test's setup: pytest-timeout's
            # default (900 s) must not cut it short (a module may set its own)
            if item.get_closest_marker("timeout") is None:
                vm_timeout = getattr(item.module, "VM_TIMEOUT", 1800)
                item.add_marker(pytest.mark.timeout(vm_timeout + 900))


def pytest_generate_tests(metafunc):
    # _guest_checks.test_check: one test per entry of the module's CHECKS
    if "name" in metafunc.fixturenames and hasattr(metafunc.module, "CHECKS"):
        metafunc.parametrize("name", metafunc.module.CHECKS)


@pytest.fixture(scope="module")
def vm_results_dir(request):
    return results_root() / request.module.__name__.rsplit(".", 1)[-1]


@pytest.fixture(scope="module")
def guest_run(request, vm_results_dir):
    """The module's one VM run of its GUEST script."""
    m = request.module
    return run_guest_checks(m.GUEST, vm_results_dir, timeout=m.VM_TIMEOUT,
                            env=getattr(m, "GUEST_ENV", None))
