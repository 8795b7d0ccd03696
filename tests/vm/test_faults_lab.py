"""Faults that end in recovery, in the real kernel, in one VM boot
(tests/vm/guest/faults.sh): a LUN made by stock `targetcli /backstores/user:rbd
create` (kernel defaults, cmd_time_out 30 s), used through open-iscsi with its
defaults, under fio write + verify.

* The only OSD stopped for 45 s (longer than osd_op_timeout and the kernel's
  timer): no I/O error reaches the initiator, and the LUN serves as soon as the
  OSD is back (the daemon turned the kernel's timer off at ADDED_DEVICE).
* kill -9 of the LUN's worker with writes and COMPARE AND WRITE in flight: the
  supervisor restarts it, the initiator's retries succeed, the verify passes,
  the CAW counter never skips, and the dead worker's client is blocklisted
  (fenced) by the new worker's takeover before it writes.
"""

from pathlib import Path

from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
    test_guest_script_and_checks_agree,
)

GUEST = Path(__file__).parent / "guest" / "faults.sh"

CHECKS = [
    "ceph_up", "dbus", "kernel_target", "daemon_start", "export_stock", "login",
    "kernel_timer_off",
    "osd_stopped_45s_no_io_error", "serves_after_osd_outage",
    "worker_kill9_caw_nothing_lost", "serves_after_worker_kill",
    "teardown", "daemons_stopped", "daemon_log_clean",
]

# memstore Ceph ~2 min, the outage ~2 min, the worker kill ~1.5 min, targetcli ~30 s a call
VM_TIMEOUT = 16 * 60

guest_logs = daemon_logs  # appended to a failed check
