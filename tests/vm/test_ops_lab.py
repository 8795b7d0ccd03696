"""What operators use around the data path, on our daemon in the real kernel, in
one VM boot (tests/vm/guest/ops.sh), used through open-iscsi on 127.0.0.1:

* snapshots and namespaces through stock targetcli (issue 14.4): a snapshot LUN
  comes up write-protected, a write that reaches it anyway is refused with DATA
  PROTECT / WRITE PROTECTED, mount -o ro shows the snapshot's point in time; an
  image in a namespace serves write + verify and its data lands in that namespace;
* per-LUN QoS (14.2): `targetcli-rbd qos` sets librbd's limits as the image's
  settings on a LUN in use: fio 4k random reads land within 10 % of an IOPS limit
  (a third of the unlimited rate), 64k reads within 10 % of a bytes/s limit; lifting
  (--iops 0, --clear) restores the rate; the worker is never restarted;
* the local block device (14.3): `targetcli-rbd export --local` (tcm_loop) gives the
  gateway a /dev/sdX: mkfs + files read back, discard frees space, GET LBA STATUS,
  WRITE SAME, list/save/resize, unexport refused while mounted, beside an iSCSI LUN;
* Prometheus metrics (14.1): /metrics on 127.0.0.1 only; commands, bytes and latency
  counts agree with fio's totals; counters survive a worker kill.
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
QOS = [
    "qos_fill", "qos_show_unlimited", "qos_unlimited_iops", "qos_set_iops",
    "qos_iops_within_10pct", "qos_show_image_source", "qos_lift_iops", "qos_iops_restored",
    "qos_unlimited_bps", "qos_set_bps", "qos_bps_within_10pct", "qos_clear",
    "qos_bps_restored", "qos_no_restart",
]
LOCAL = [
    "local_image_create", "local_export", "local_disk_is_the_image", "local_fs_roundtrip",
    "local_unexport_refused_while_mounted", "local_discard_frees_space",
    "local_get_lba_status", "local_write_same", "local_list", "local_saved",
    "local_resize_seen", "local_unexport", "local_beside_iscsi",
    "local_unexport_keeps_iscsi",
]
METRICS = [
    "metrics_served", "metrics_loopback_only", "metrics_fio_writes", "metrics_fio_reads",
    "metrics_latency_counts", "metrics_worker_restart",
]
TEARDOWN = ["teardown", "lio_empty", "daemons_stopped", "daemon_log_clean"]
CHECKS = SETUP + SNAPSHOTS + NAMESPACES + QOS + LOCAL + METRICS + TEARDOWN

# Ceph ~30 s, targetcli ~5-30 s a call, the QoS measurements ~3 min
VM_TIMEOUT = 25 * 60
# the one VM run is the first test's fixture: its limit, not pytest's default (900 s)
pytestmark = pytest.mark.timeout(VM_TIMEOUT + 600)

guest_logs = daemon_logs  # appended to a failed check
