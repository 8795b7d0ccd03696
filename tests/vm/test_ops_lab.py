"""What operators use around the data path, on our daemon in the real kernel, in
one VM boot (tests/vm/guest/ops.sh), used through open-iscsi on 127.0.0.1:

* snapshots and namespaces through stock targetcli (issue 14.4): a snapshot LUN
  comes up write-protected, a write that reaches it anyway is refused with DATA
  PROTECT / WRITE PROTECTED, mount -o ro shows the snapshot's point in time; an
  image in a namespace serves write + verify and its data lands in that namespace;
* per-LUN QoS (14.2), the local block device (14.3), Prometheus metrics (14.1).
"""

from pathlib import Path

from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
    test_guest_script_and_checks_agree,
)

GUEST = Path(__file__).parent / "guest" / "ops.sh"

SETUP = ["ceph_up", "dbus", "kernel_target", "daemon_start"]
SNAPSHOTS = [
    "export_img0", "login", "fs_on_img0", "snap_create", "img0_changed_after_snapshot",
    "snap_export", "snap_disk", "snap_write_protected", "snap_write_refused_data_protect",
    "snap_mount_ro_point_in_time", "snap_unchanged_by_use",
]
NAMESPACES = [
    "ns_create", "ns_export", "ns_disk", "ns_fio_verify", "ns_data_in_namespace",
    "ns_snapshot_read_only",
]
QOS: list[str] = []
LOCAL: list[str] = []
METRICS: list[str] = []
TEARDOWN = ["teardown", "lio_empty", "daemons_stopped", "daemon_log_clean"]
CHECKS = SETUP + SNAPSHOTS + NAMESPACES + QOS + LOCAL + METRICS + TEARDOWN

# memstore Ceph ~2 min, targetcli ~5-30 s a call
VM_TIMEOUT = 20 * 60

guest_logs = daemon_logs  # appended to a failed check
