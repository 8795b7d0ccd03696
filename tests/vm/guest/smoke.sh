#!/usr/bin/env bash
# Guest side of tests/vm/test_lab_smoke.py: proves the lab plumbing with the real
# kernel (LIO, TCMU), targetcli, open-iscsi and Ceph, in one VM boot:
#   1. Ceph up + an image; LIO; D-Bus
#   2. a kernel ramdisk backstore exported on 127.0.0.1:3260 with an ACL, logged in,
#      size / INQUIRY / READ CAPACITY / dd write+read checked
#   3. a user:rbd backstore served by our daemon (tcmu-rbd, "$PYTHON -m tcmu_rbd",
#      its D-Bus policy from packaging/) through the same scripts
#   4. teardown, and nothing left behind
set -euo pipefail
. "$(dirname "$0")/lib.sh"

INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
T_RD=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:ramdisk
T_RBD=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:rbd
DAEMON=tcmu-rbd

step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=1G
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
check configfs_mounted mountpoint -q /sys/kernel/config
check dbroot_pr_dir test -d "$(cat /sys/kernel/config/target/dbroot)/pr"
# targetcli's saved preferences (a pickle), read without another 4 s targetcli start
tcli_prefs() { python3 -c 'import pickle,sys; p=pickle.load(open(sys.argv[1],"rb")); print(p); sys.exit(not (p["auto_add_default_portal"] is False and p["auto_save_on_exit"] is False))' "$TARGETCLI_HOME/prefs.bin"; }
check targetcli_prefs tcli_prefs
# Debian's activation file would start tcmu-runner on the first targetcli run
check no_bus_activation sh -c '! pgrep -ax tcmu-runner'


# --- a kernel backstore over iSCSI -----------------------------------------------
step export_ramdisk "$LAB/export.sh" add --backstore ramdisk/rd0 --arg size=64M \
  --target "$T_RD" --acl "$INITIATOR"
check export_lun_number expect_eq "$OUT" 0
portals() { ss -Hltn 'sport = :3260' | awk '{print $4}' | sort -u | tr '\n' ' '; }
check portal_loopback_only expect_eq "$(portals)" "127.0.0.1:3260 "
check acl_cmdsn_depth expect_eq \
  "$(cat /sys/kernel/config/target/iscsi/$T_RD/tpgt_1/acls/$INITIATOR/cmdsn_depth)" 128
step login_ramdisk "$LAB/initiator.sh" login --target "$T_RD" --initiator-name "$INITIATOR"
disk=$OUT
fact ramdisk_disk "$disk"
check ramdisk_size expect_eq "$(blockdev --getsize64 "$disk")" 67108864
check ramdisk_inquiry_vendor sh -c "sg_inq '$disk' | grep -E 'Vendor identification: +LIO-ORG'"
check ramdisk_readcap sh -c "sg_readcap -l '$disk' | tee /dev/stderr | grep -q 'Logical block length=512 bytes' && sg_readcap -l '$disk' | grep -q 'Number of logical blocks=131072'"

# write 4 MiB of random data at 8 MiB with O_DIRECT, read it back, compare
dd_roundtrip() {
  local dev=$1 pat; pat=$(mktemp /tmp/pat.XXXXXX)
  dd if=/dev/urandom of="$pat" bs=1M count=4 status=none
  dd if="$pat" of="$dev" bs=1M seek=8 oflag=direct conv=fsync status=none
  echo 3 >/proc/sys/vm/drop_caches
  dd if="$dev" bs=1M skip=8 count=4 iflag=direct status=none | cmp - "$pat"
  rm -f "$pat"; echo "4 MiB written and read back"
}
check ramdisk_dd_roundtrip dd_roundtrip "$disk"
check ramdisk_session_count expect_eq "$(iscsiadm -m session | wc -l)" 1

# --- user:rbd through our daemon ---------------------------------------------------
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
step export_rbd "$LAB/export.sh" add --backstore user:rbd/disk0 \
  --arg size=1G --arg cfgstring=rbd/img0 --arg hw_max_sectors=1024 \
  --arg control=max_data_area_mb=8 --target "$T_RBD" --acl "$INITIATOR"
check rbd_uio_name sh -c "cat /sys/class/uio/uio*/name | grep -x 'tcm-user/[0-9]*/disk0/rbd/rbd/img0'"
step login_rbd "$LAB/initiator.sh" login --target "$T_RBD" --initiator-name "$INITIATOR"
rdisk=$OUT
fact rbd_disk "$rdisk"
check rbd_size expect_eq "$(blockdev --getsize64 "$rdisk")" 1073741824
check rbd_inquiry sh -c "sg_inq '$rdisk' | grep -E 'Vendor identification: +LIO-ORG' && sg_inq '$rdisk' | grep -E 'Product identification: +TCMU device'"
check rbd_dd_roundtrip dd_roundtrip "$rdisk"
rbd_used_at_least() {
  local u; u=$(rbd du rbd/img0 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])')
  echo "used_size=$u"; [ "$u" -ge "$1" ]
}
check rbd_written_reaches_image rbd_used_at_least 4194304
check sessions_two expect_eq "$(iscsiadm -m session | wc -l)" 2

# --- teardown ------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check no_sessions sh -c '! iscsiadm -m session'
check lio_empty sh -c 'ls /sys/kernel/config/target/iscsi | grep -v -e discovery_auth -e lio_version ; [ -z "$(ls /sys/kernel/config/target/iscsi | grep iqn)" ] && [ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -ax iscsid && ! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax tcmu-runner && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
