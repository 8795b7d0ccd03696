"""The Debian package in the real kernel, in one VM boot (tests/vm/guest/package.sh):
the .deb that scripts/build-deb makes from this tree is installed with dpkg -i in
the guest (its /usr, /etc, /var are overlays: the host is not touched), replacing
tcmu-runner; the installed daemon (its unit's ExecStart=, no systemd in the guest)
serves an image exported with the installed /usr/bin/targetcli-rbd through its
installed D-Bus policy; open-iscsi logs in and a dd round trip reads back what it
wrote. The package's contents are checked on the host (tests/test_package.py).
"""

import subprocess
from pathlib import Path

import pytest
from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
    test_guest_script_and_checks_agree,
)

from tcmu_rbd_lab.vm import REPO, results_root, run_guest_checks

GUEST = Path(__file__).parent / "guest" / "package.sh"

CHECKS = [
    "overlays", "install", "tcmu_runner_replaced", "installed_modules",
    "ceph_up", "dbus", "kernel_target", "daemon_start", "daemon_is_packaged",
    "export", "login", "data_roundtrip", "logout", "unexport",
    "teardown", "daemon_log_clean",
]

# boot ~30 s, memstore Ceph ~2 min, dpkg -i and targetcli-rbd ~30 s each under TCG
VM_TIMEOUT = 10 * 60
# waiting for another VM run (one at a time) counts against pytest-timeout
pytestmark = pytest.mark.timeout(3600)

guest_logs = daemon_logs  # appended to a failed check


@pytest.fixture(scope="module")
def guest_run(vm_results_dir):
    """conftest's one VM run, with the .deb built on the host first (the guest reads
    it through the shared root, outside the results dir the run empties)."""
    out = results_root() / "deb"
    r = subprocess.run([str(REPO / "scripts" / "build-deb"), str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"scripts/build-deb failed:\n{r.stderr}"
    deb = r.stdout.strip().splitlines()[-1]
    return run_guest_checks(GUEST, vm_results_dir, timeout=VM_TIMEOUT,
                            env={"TCMU_RBD_DEB": deb})
