"""Worker hosts (``luns_per_worker`` = 2: several LUNs on threads of one worker process,
tcmu_rbd/worker_host.py) on our daemon in the real kernel, in one VM boot
(tests/vm/guest/hosts.sh), used through open-iscsi on 127.0.0.1:

* three LUNs on two host processes (2 + 1), each LUN's image watched by a cluster
  client of its own;
* data written through all three at once reads back;
* SIGKILL of the host serving two LUNs, under fio write + verify on both: both are
  restarted (blocked, ring reset, served again by new processes), fio sees no error,
  and everything written before reads back;
* a LUN removed leaves the other LUNs in their processes, serving, with no restart.
"""

from pathlib import Path

import pytest

from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
    test_guest_script_and_checks_agree,
)

GUEST = Path(__file__).parent / "guest" / "hosts.sh"

CHECKS = [
    "ceph_up", "dbus", "kernel_target", "daemon_start",
    "export_disk0", "export_disk1", "export_disk2", "login", "lun0_disk", "lun1_disk",
    "lun2_disk",
    "three_luns_two_hosts", "each_lun_its_own_client", "write_all_luns_at_once",
    "read_back_all_luns",
    "host_kill9_restarts_both_luns_nothing_lost", "after_kill_data_intact",
    "lun_removed_others_untouched",
    "teardown", "lio_empty", "daemons_stopped", "daemon_log_clean",
]

# Ceph ~30 s, targetcli ~5-30 s a call, the kill and its restarts ~1 min
VM_TIMEOUT = 15 * 60
# the one VM run is the first test's fixture: its limit, not pytest's default (900 s)
pytestmark = pytest.mark.timeout(VM_TIMEOUT + 600)

guest_logs = daemon_logs  # appended to a failed check
