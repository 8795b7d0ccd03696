"""OUR daemon (tcmu-rbd) in the real kernel, in one VM boot (tests/vm/guest/daemon.sh):
stock targetcli creates user:rbd backstores, LIO exports them over iSCSI on
127.0.0.1:3260 with an ACL, open-iscsi uses them; Ceph on a bluestore OSD (a loop
device: /tmp is tmpfs in the guest) so the OSD can be stopped without losing data.

One test per check of the issue (grouped below); a failure shows the check's own
output, then the daemon's log, the kernel log and the Ceph logs of the guest.
"""

from pathlib import Path

from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
    test_guest_script_and_checks_agree,
)


GUEST = Path(__file__).parent / "guest" / "daemon.sh"

CHECKS = [
    # set-up (steps end the guest script when they fail)
    "ceph_up", "dbus", "kernel_target", "daemon_start",
    # the kernel and targetcli interfaces
    "netlink_set_features", "targetcli_lists_user_rbd", "targetcli_help_create_configdesc",
    "export_disk0", "added_device_done", "login",
    # 1. size, vendor, serial, VPD pages
    "size", "inquiry", "readcap", "readcap16_lbpme", "vpd_serial", "vpd_device_id",
    "vpd_block_limits", "vpd_lbp",
    # 2. partition + ext4 + files; fio write with verify=crc32c
    "fs_ext4_roundtrip", "fio_write_verify",
    # 3. unmap and write same reach the image
    "blkdiscard_reaches_image", "write_same_unmap_reaches_image", "write_same_pattern",
    # 4. resize: image, dev_size (RECONFIG_DEVICE), rescan
    "resize_seen_by_initiator", "reconfig_device_done",
    # 5. a second LUN added and removed under I/O on the first
    "lun1_add", "lun1_number", "lun1_disk", "lun1_io", "checkconfig_as_nobody_under_io",
    "lun1_remove", "removed_device_done",
    "lun0_io_during_lun_changes",
    # 6. kill -9 the daemon under write+verify, restart: I/O resumes
    "daemon_kill9_restart_io_resumes", "after_restart_dd",
    # 7. OSD stopped and started under I/O: nothing lost
    "osd_restart_no_data_lost", "osd_restart_fs_intact",
    # 7b. the worker's client blocklisted under I/O: new client, serves again
    "blocklisted_client_reopens_and_serves",
    # a long VERIFY ends at a LUN reset (TMR notification)
    "long_verify_ends_at_lun_reset",
    # 8. bad cfgstring / missing image: create fails with the daemon's message, no hang
    "bad_cfgstring_missing_image", "bad_cfgstring_syntax", "bad_cfgstring_pool",
    "added_device_failure_fails_enable", "daemon_still_serving", "no_bad_devices_left",
    # SIGTERM under I/O: in-flight work completes, clean exit; restart resumes
    "daemon_sigterm_under_io", "after_sigterm_fs_intact",
    # teardown
    "teardown", "no_sessions", "lio_empty", "daemons_stopped", "daemon_log_clean",
    "dmesg_no_tcmu_errors",
]

# the whole module is one VM run: bluestore Ceph ~100 s + checks ~13 min under TCG
# (targetcli takes 30 s a call while fio, the worker and the OSD share the 2 CPUs)
VM_TIMEOUT = 20 * 60


guest_logs = daemon_logs  # appended to a failed check
