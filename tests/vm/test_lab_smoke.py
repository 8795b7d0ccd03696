"""The lab's plumbing on the real kernel, in one VM boot (tests/vm/guest/smoke.sh):
Ceph + LIO + D-Bus via vagrant/scripts, a kernel ramdisk backstore exported over
iSCSI on 127.0.0.1 and checked through open-iscsi, then a user:rbd backstore through
the same scripts served by our daemon (tcmu-rbd), teardown. (tcmu-runner is not
used by the tests: it stays only as the benchmark peer.)
"""

from pathlib import Path

from _guest_checks import (  # noqa: F401 (collected here, in this order)
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
)

GUEST = Path(__file__).parent / "guest" / "smoke.sh"

CHECKS = [
    # set-up (steps end the guest script when they fail)
    "ceph_up", "dbus", "kernel_target",
    "configfs_mounted", "dbroot_pr_dir", "targetcli_prefs", "no_bus_activation",
    # kernel ramdisk backstore over iSCSI
    "export_ramdisk", "export_lun_number", "portal_loopback_only", "acl_cmdsn_depth",
    "login_ramdisk", "ramdisk_size", "ramdisk_inquiry_vendor", "ramdisk_readcap",
    "ramdisk_dd_roundtrip", "ramdisk_session_count",
    # user:rbd through our daemon
    "daemon_start", "export_rbd", "rbd_uio_name", "login_rbd", "rbd_size", "rbd_inquiry",
    "rbd_dd_roundtrip", "rbd_written_reaches_image", "sessions_two",
    # teardown
    "teardown", "no_sessions", "lio_empty", "daemons_stopped",
]

VM_TIMEOUT = 12 * 60


def test_boot_is_fast_enough(guest_run):
    # ~20 s under TCG on 2 shared cores; far more means the VM set-up is wrong
    assert guest_run.vm.boot_seconds is not None and guest_run.vm.boot_seconds < 120
