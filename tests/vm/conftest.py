"""VM system tests: each module boots ONE Debian-kernel VM (tcmu_rbd.testing.vm) that
runs a guest-side check script (tests/vm/guest/*.sh); the tests assert on its records.
Results and all guest logs: results/vm/<module>/ (or $TCMU_RBD_VM_RESULTS/<module>)."""

import pytest

from tcmu_rbd.testing.vm import results_root


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="module")
def vm_results_dir(request):
    return results_root() / request.module.__name__.rsplit(".", 1)[-1]
