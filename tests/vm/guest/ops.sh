#!/usr/bin/env bash
# Guest side of tests/vm/test_ops_lab.py: what operators use around the data path,
# on our daemon in the real kernel, one VM boot, used through open-iscsi on 127.0.0.1:
#   - snapshots and namespaces through stock targetcli (issue 14.4): a snapshot LUN
#     is read-only (the disk comes up write-protected, a write that reaches it anyway
#     is refused with DATA PROTECT, mount -o ro works and shows the snapshot's point
#     in time); an image in a namespace works end to end;
#   - per-LUN QoS (issue 14.2), the local block device (14.3), Prometheus metrics
#     (14.1): their own sections below.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/ops.sh --timeout 1200
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DAEMON=tcmu-rbd
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:ops
W=$(mktemp -d /tmp/ops.XXXXXX)

# --- set-up ------------------------------------------------------------------------------
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=512M
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
DLOG=$LAB_LOG_DIR/$DAEMON.log
# the sdX of LUN N, once the initiator sees it
lun_disk() { "$LAB/initiator.sh" disk --target "$TGT" --initiator-name "$INITIATOR" --lun "$1"; }

# --- snapshots (issue 14.4): a snapshot LUN is read-only ---------------------------------
step export_img0 "$LAB/export.sh" add --backstore user:rbd/disk0 --arg size=512M \
  --arg cfgstring=rbd/img0 --target "$TGT" --acl "$INITIATOR"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
disk0=$OUT; fact disk0 "$disk0"
MNT=/tmp/mnt-ops; mkdir -p "$MNT"
fs_write() {  # a file system on disk0 with one file of known content, cleanly unmounted
  mkfs.ext4 -q -F "$disk0"; mount "$disk0" "$MNT"
  dd if=/dev/urandom of="$MNT/before" bs=1M count=4 status=none
  md5sum "$MNT/before" | cut -d' ' -f1 >"$W/before.md5"
  umount "$MNT"
}
step fs_on_img0 fs_write
step snap_create rbd snap create rbd/img0@s1
# the image moves on after the snapshot: the snapshot LUN must not see it
after_snap() { mount "$disk0" "$MNT"; echo changed >"$MNT/after"; dd if=/dev/urandom of="$MNT/before" bs=1M count=4 conv=notrunc status=none; umount "$MNT"; }
check img0_changed_after_snapshot after_snap
check snap_export sh -c "'$LAB/export.sh' add --backstore user:rbd/snap0 --arg size=512M --arg cfgstring=rbd/img0@s1 --target '$TGT' --acl '$INITIATOR' | tee /dev/stderr | grep -qx 1"
check snap_disk lun_disk 1
snap=$OUT; fact snap_dev "$snap"
snap_ro() {  # the kernel saw the write-protect bit of MODE SENSE
  local ro; ro=$(cat "/sys/block/${snap#/dev/}/ro"); echo "ro=$ro"
  dmesg | grep -E "${snap#/dev/}\] Write Protect is on"
  [ "$ro" = 1 ] && grep -qE 'device=snap0 .*read-only snapshot' "$DLOG"
}
check snap_write_protected snap_ro
snap_write_refused() {  # past the block layer's ro: WRITE(10) of one block on the sg node
  local sg out rc=0; sg=/dev/$(ls "/sys/block/${snap#/dev/}/device/scsi_generic"); echo "$snap is $sg"
  out=$(sg_raw -v -s 512 -i /dev/zero "$sg" 2a 00 00 00 00 10 00 00 01 00 2>&1) || rc=$?
  echo "$out"; echo "sg_raw exit $rc"
  [ "$rc" != 0 ] && grep -qi 'data protect' <<<"$out" && grep -qiE 'write protected' <<<"$out"
}
check snap_write_refused_data_protect snap_write_refused
snap_mount_ro() {  # the point in time of the snapshot: the old content, no "after"
  mount -o ro "$snap" "$MNT"; local rc=0
  [ "$(md5sum "$MNT/before" | cut -d' ' -f1)" = "$(cat "$W/before.md5")" ] || { echo "content differs"; rc=1; }
  [ ! -e "$MNT/after" ] || { echo "a file written after the snapshot is there"; rc=1; }
  umount "$MNT"; return $rc
}
check snap_mount_ro_point_in_time snap_mount_ro
check snap_unchanged_by_use sh -c "rbd diff rbd/img0@s1 --from-snap s1 --format json | tee /dev/stderr | grep -qx '\[\]'"

# --- namespaces (issue 14.4): an image in a namespace, end to end --------------------------
step ns_create sh -c "rbd namespace create --pool rbd --namespace ns1 && rbd create --size 256M rbd/ns1/img2"
check ns_export sh -c "'$LAB/export.sh' add --backstore user:rbd/disk2 --arg size=256M --arg cfgstring=rbd/ns1/img2 --target '$TGT' --acl '$INITIATOR' | tee /dev/stderr | grep -qx 2"
check ns_disk lun_disk 2
nsdisk=$OUT; fact ns_dev "$nsdisk"
check ns_fio_verify fio_verify "$nsdisk" 16M
ns_data_where_it_belongs() {  # written into rbd/ns1/img2, not into an image of the default namespace
  local used; used=$(rbd du rbd/ns1/img2 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])')
  echo "rbd/ns1/img2 used: $used"; [ "$used" -gt 0 ] && ! rbd info rbd/img2 2>/dev/null
}
check ns_data_in_namespace ns_data_where_it_belongs
check ns_snapshot_read_only sh -c "rbd snap create rbd/ns1/img2@n1 && '$LAB/export.sh' add --backstore user:rbd/snap2 --arg size=256M --arg cfgstring=rbd/ns1/img2@n1 --target '$TGT' --acl '$INITIATOR' >/dev/null && d=\$('$LAB/initiator.sh' disk --target '$TGT' --initiator-name '$INITIATOR' --lun 3) && cmp -n 1048576 \"\$d\" '$nsdisk' && [ \$(cat /sys/block/\${d#/dev/}/ro) = 1 ]"

# --- per-LUN QoS (issue 14.2) -------------------------------------------------------------

# --- the local block device (issue 14.3) ----------------------------------------------------

# --- Prometheus metrics (issue 14.1) --------------------------------------------------------

# --- teardown ---------------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
