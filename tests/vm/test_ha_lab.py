"""Two gateways, one LUN, in one VM boot (tests/vm/guest/ha.sh): real kernel, real
Ceph (with a mgr for the service map), real initiator on dm-multipath.

gw1 (TPG 1, 127.0.0.1:3260) and gw2 (TPG 2, 127.0.0.2:3260) each have their own
user:rbd backstore on the same image with the same WWN, served by its own worker
process and cluster client; the layout is written once in the shared configuration
(RADOS) by targetcli-rbd and applied by each gateway's `targetcli-rbd sync`.
Checks: one disk with two ALUA paths and I/O through the owner; the owner dies (TPG
off, worker kill -9, no restart) and I/O goes on through gw2 with the lock, with the
failover time printed; a restarted worker loses nothing; a partitioned owner's
queued write is refused after the takeover and the returning gateway does not steal
the lock; round-robin over both paths moves the lock at most once per grace period;
a configuration change reaches the other gateway within a second; a killed writer
does not block the next one past the lease; the service map follows the owner.
Every I/O step is fio write + verify (crc32c, verify_fatal).
"""

from pathlib import Path

import pytest
from _guest_checks import (  # noqa: F401 (collected here, in this order)
    daemon_logs,
    test_check,
    test_guest_script_completed,
    test_every_guest_check_is_asserted,
)

GUEST = Path(__file__).parent / "guest" / "ha.sh"

pytestmark = pytest.mark.timeout(3600)

CHECKS = [
    "ceph_up", "dbus", "kernel_target", "daemon_start",
    "shared_layout", "sync_applied", "same_wwn", "alua_groups",
    "multipath_up", "login_127.0.0.1", "login_127.0.0.2", "multipath_map",
    "multipath_one_disk_two_paths", "io_through_owner", "service_map_owner_gw1",
    "owner_dies_io_continues", "service_map_owner_gw2", "returning_gateway_serves_as_non_owner",
    "service_map_both_owner_gw2", "list_shows_owner_and_paths",
    "worker_crash_restart_nothing_lost", "service_map_after_crash",
    "partition_old_owner_writes_refused", "service_map_after_partition",
    "round_robin_lock_does_not_ping_pong", "service_map_after_round_robin",
    "config_change_reaches_other_gateway", "killed_writer_does_not_block",
    "teardown", "daemon_log_clean",
]

VM_TIMEOUT = 25 * 60

guest_logs = daemon_logs  # appended to a failed check
