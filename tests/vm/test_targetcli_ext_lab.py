"""targetcli-rbd in the real kernel, in one VM boot (tests/vm/guest/targetcli_ext.sh):
errors that leave nothing behind, export with ACLs and proven defaults, login and
data, initiators outside the ACL refused at discovery and login, CHAP and mutual
CHAP (wrong secrets refused), discovery authentication, list, resize seen by the
initiator, the /rbd node in targetcli's shell, saveconfig / clearconfig / daemon
restart / restoreconfig with the same serial and data, unexport, and no secret in
any output or log.

The daemon is tcmu-rbd; TCMU_DAEMON=tcmu-runner runs the same checks against the
reference daemon (to tell an extension bug from a daemon bug).
"""

import os
from pathlib import Path

import pytest
from _guest_checks import (  # noqa: F401 (collected here, in this order)
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
)

GUEST = Path(__file__).parent / "guest" / "targetcli_ext.sh"

# the VM run itself takes ~4 min, but waiting for another developer's VM (the harness
# runs one at a time) counts against pytest-timeout's default 900 s
pytestmark = pytest.mark.timeout(3600)

CHECKS = [
    "ceph_up", "dbus", "kernel_target",
    # errors: each leaves LIO empty
    "err_daemon_not_running", "daemon_start", "err_bad_iqn", "err_image_missing",
    "err_portal_in_use",
    # export with ACLs
    "export_acl", "export_prints_iscsiadm", "lun_defaults", "tpg_defaults",
    "portal_loopback_only", "export_idempotent", "err_already_exported",
    "login_acl", "size_1g", "vpd_serial", "data_roundtrip",
    # an initiator outside the ACL
    "acl_discovery_hides_target", "acl_login_refused", "acl_session_count",
    "discovery_default_iface",
    # CHAP + mutual CHAP
    "export_chap", "chap_in_configfs", "chap_instructions_no_secret",
    "chap_wrong_secret_refused", "chap_no_auth_refused", "chap_wrong_mutual_refused",
    "chap_login", "chap_size",
    # discovery authentication
    "discovery_auth_on", "discovery_without_creds_refused", "discovery_with_creds",
    "discovery_auth_off",
    # list, resize, shell
    "list_text", "list_json", "resize", "resize_image", "resize_lun",
    "resize_seen_by_initiator", "resize_unit_attention", "shell_rbd_list",
    "shell_tree_has_rbd",
    # persistence
    "logged_out_before_save", "saveconfig", "trbd_save", "clearconfig", "daemon_restart", "restoreconfig",
    "restored_serial", "restored_defaults", "restored_login", "restored_vpd_serial",
    "restored_data", "restored_chap_login", "logged_out_after_restore",
    "secret_files_private",
    # unexport, secrets, teardown
    "unexport_chap", "unexport_idempotent", "unexport_last",
    "secrets_not_in_output_or_logs", "teardown", "lio_empty_at_end",
]

VM_TIMEOUT = 20 * 60
GUEST_ENV = {"TCMU_DAEMON": os.environ.get("TCMU_DAEMON", "tcmu-rbd")}
