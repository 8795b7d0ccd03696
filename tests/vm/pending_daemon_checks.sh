#!/usr/bin/env bash
# PENDING (not collected by pytest): the VM checks of the real daemon, written ahead of
# it. Guest side, same record format as guest/smoke.sh (guest/lib.sh). Enable by
# moving it to tests/vm/guest/daemon.sh and adding a tests/vm/test_daemon.py with the
# CHECKS list below (copy tests/vm/test_lab_smoke.py: one VM boot per module).
#
# Runs today against the reference daemon, to validate the script itself:
#   .venv/bin/python -m tcmu_rbd.testing.vm tests/vm/pending_daemon_checks.sh \
#       --env TCMU_DAEMON=tcmu-runner --timeout 1500
# Switching to our daemon is the default (TCMU_DAEMON=tcmu-rbd, started as
# "$PYTHON -m tcmu_rbd --foreground"); its D-Bus policy is taken from packaging/ when present.
set -euo pipefail
. "$(dirname "$0")/guest/lib.sh"

DAEMON=${TCMU_DAEMON:-tcmu-rbd}
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:daemon
REPO=${TCMU_RBD_REPO:?}
policy_args=()
for p in "$REPO"/packaging/*.conf "$REPO"/packaging/dbus/*.conf; do
  [ -f "$p" ] && grep -q "<busconfig>" "$p" && policy_args+=(--policy "$p")
done

# bluestore: the OSD restart check needs data that survives a stopped OSD
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=1G \
  --image rbd/img1=256M -- --objectstore bluestore
export CEPH_CONF=$OUT
step dbus "$LAB/dbus.sh" ${policy_args[@]+"${policy_args[@]}"}
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
step export_disk0 "$LAB/export.sh" add --backstore user:rbd/disk0 --arg size=1G \
  --arg 'cfgstring=rbd/img0;osd_op_timeout=30' --arg hw_max_sectors=1024 \
  --arg control=max_data_area_mb=8 --target "$TGT" --acl "$INITIATOR"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
disk=$OUT
fact disk0 "$disk"
bsdir=$(ls -d /sys/kernel/config/target/core/user_*/disk0)

# --- identity: size, vendor, serial, VPD -------------------------------------------
check inquiry sh -c "sg_inq '$disk' | grep -E 'Vendor identification: +LIO-ORG' && sg_inq '$disk' | grep -E 'Product identification: +TCMU device'"
check readcap sh -c "sg_readcap -l '$disk' | grep -q 'Number of logical blocks=2097152' && sg_readcap -l '$disk' | grep 'Logical block length=512 bytes'"
check readcap16_lbpme sh -c "sg_readcap -l '$disk' | grep -E 'Logical block provisioning: lbpme=1'"
check vpd_serial sh -c "serial=\$(cat '$bsdir/wwn/vpd_unit_serial' | sed 's/.*: //'); echo \"configfs \$serial\"; sg_vpd -p sn '$disk' | tee /dev/stderr | grep -qi \"\$serial\""
check vpd_device_id sh -c "sg_vpd -p di '$disk' | tee /dev/stderr | grep -qi 'designator type: NAA' && sg_vpd -p di '$disk' | grep -qi '0x6001405'"
check vpd_block_limits sh -c "sg_vpd -p bl '$disk' | tee /dev/stderr | grep -Eq 'Maximum transfer length: 1024'"
check vpd_lbp sh -c "sg_vpd -p lbpv '$disk' | tee /dev/stderr | grep -Eq 'Unmap command supported \\(LBPU\\): 1'"

# --- a filesystem -------------------------------------------------------------------
fs_roundtrip() {
  local dev=$1 mnt=/tmp/mnt0
  parted -s "$dev" mklabel gpt mkpart p1 ext4 1MiB 257MiB
  partprobe "$dev" || blockdev --rereadpt "$dev" || true
  local part=${dev}1
  for _ in $(seq 40); do [ -b "$part" ] && break; sleep 0.5; done
  mkfs.ext4 -q -F "$part"
  mkdir -p "$mnt"; mount "$part" "$mnt"
  for i in 1 2 3 4; do dd if=/dev/urandom of="$mnt/f$i" bs=1M count=8 status=none; done
  (cd "$mnt" && md5sum f* >/tmp/fs.md5)
  umount "$mnt"; echo 3 >/proc/sys/vm/drop_caches
  mount "$part" "$mnt"; (cd "$mnt" && md5sum -c /tmp/fs.md5); umount "$mnt"
}
check fs_ext4_roundtrip fs_roundtrip "$disk"

# --- fio write + verify ---------------------------------------------------------------
fio_verify() {  # dev size [extra fio args]
  local dev=$1 size=$2; shift 2
  fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 \
    --rw=randwrite --bs=4k --size="$size" --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --verify_backlog=1024 --output-format=terse --minimal "$@" \
    | tee /dev/stderr | awk -F';' '{print "fio errors="$5}' ; return "${PIPESTATUS[0]}"
}
check fio_write_verify fio_verify "$disk" 16M

# --- discard / write same reach the image ---------------------------------------------
rbd_used() { rbd du rbd/img0 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'; }
discard_drops_usage() {
  local off=$((512 << 20)) len=$((64 << 20)) before after
  dd if=/dev/urandom of="$disk" bs=4M seek=$((off >> 22)) count=$((len >> 22)) oflag=direct status=none
  before=$(rbd_used)
  blkdiscard -o "$off" -l "$len" "$disk"
  after=$(rbd_used); echo "used before=$before after=$after"
  [ "$after" -le $((before - len / 2)) ]
}
check blkdiscard_reaches_image discard_drops_usage
write_same_unmap_drops_usage() {
  local lba=$(( (768 << 20) / 512 )) n=$(( (32 << 20) / 512 )) before after
  dd if=/dev/urandom of="$disk" bs=4M seek=192 count=8 oflag=direct status=none
  before=$(rbd_used)
  sg_write_same --16 --unmap --lba="$lba" --num="$n" --in=/dev/zero "$disk"
  after=$(rbd_used); echo "used before=$before after=$after"
  [ "$after" -lt "$before" ] && cmp -n $((32 << 20)) /dev/zero <(dd if="$disk" bs=4M skip=192 count=8 iflag=direct status=none)
}
check write_same_unmap_reaches_image write_same_unmap_drops_usage
write_same_pattern() {
  local lba=$(( (900 << 20) / 512 ))
  head -c 512 /dev/urandom >/tmp/blk
  sg_write_same --16 --lba="$lba" --num=2048 --in=/tmp/blk "$disk"
  for i in 0 1000 2047; do
    cmp /tmp/blk <(dd if="$disk" bs=512 skip=$((lba + i)) count=1 iflag=direct status=none) || return 1
  done
  echo "pattern repeated over 2048 blocks"
}
check write_same_pattern write_same_pattern

# --- resize ---------------------------------------------------------------------------
resize_seen() {
  rbd resize --size 2G rbd/img0
  echo $((2 << 30)) >"$bsdir/attrib/dev_size"
  echo 1 >"/sys/block/$(basename "$disk")/device/rescan"
  for _ in $(seq 60); do [ "$(blockdev --getsize64 "$disk")" = $((2 << 30)) ] && break; sleep 0.5; done
  sg_readcap -l "$disk"; expect_eq "$(blockdev --getsize64 "$disk")" $((2 << 30))
}
check resize_seen_by_initiator resize_seen

# --- a second LUN added and removed under I/O on the first ---------------------------
fio_verify "$disk" 48M --bs=64k --offset=1G >/tmp/fio-bg.log 2>&1 & fio_pid=$!
check lun1_add "$LAB/export.sh" add --backstore user:rbd/disk1 --arg size=256M \
  --arg cfgstring=rbd/img1 --target "$TGT" --acl "$INITIATOR"
check lun1_number expect_eq "$OUT" 1
check lun1_disk "$LAB/initiator.sh" disk --target "$TGT" --lun 1
disk1=$OUT; fact disk1 "$disk1"
dd_roundtrip() {
  local dev=$1 pat; pat=$(mktemp /tmp/pat.XXXXXX)
  dd if=/dev/urandom of="$pat" bs=1M count=4 status=none
  dd if="$pat" of="$dev" bs=1M seek=8 oflag=direct conv=fsync status=none
  dd if="$dev" bs=1M skip=8 count=4 iflag=direct status=none | cmp - "$pat"
}
check lun1_io dd_roundtrip "$disk1"
[ -n "$disk1" ] && echo 1 >"/sys/block/$(basename "$disk1")/device/delete" || true
check lun1_remove "$LAB/export.sh" remove --backstore user:rbd/disk1 --target "$TGT"
fio_rc=0; wait "$fio_pid" || fio_rc=$?
check lun0_io_during_lun_changes sh -c "cat /tmp/fio-bg.log; exit $fio_rc"

# --- kill -9 the daemon during write+verify, restart it -------------------------------
daemon_crash() {
  fio_verify "$disk" 64M --bs=64k --offset=1280M >/tmp/fio-crash.log 2>&1 & local f=$!
  sleep 8
  "$LAB/tcmu-daemon.sh" kill --daemon "$DAEMON"
  sleep 3
  "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
  local rc=0; timeout 600 tail --pid="$f" -f /dev/null || rc=$?; wait "$f" || rc=$?
  cat /tmp/fio-crash.log; return $rc
}
check daemon_kill9_restart_io_resumes daemon_crash
check after_restart_dd dd_roundtrip "$disk"

# --- stop and start the OSD during I/O ------------------------------------------------
osd_bounce() {  # the OSD's own command line, from cluster.json's pid
  local pid cmdline
  pid=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d.get("pids",d); print([v for k,v in p.items() if k.startswith("osd")][0])' "$LAB_DIR/ceph/cluster.json")
  mapfile -d '' cmdline <"/proc/$pid/cmdline"
  fio_verify "$disk" 64M --bs=64k --offset=1536M >/tmp/fio-osd.log 2>&1 & local f=$!
  sleep 5; kill -9 "$pid"; sleep 10
  setsid "${cmdline[@]}" >>"$LAB_LOG_DIR/osd-restarted.log" 2>&1 </dev/null &
  local rc=0; wait "$f" || rc=$?
  cat /tmp/fio-osd.log; return $rc
}
check osd_restart_no_data_lost osd_bounce

# --- bad configurations fail fast with the daemon's message -------------------------
bad_create() {  # cfgstring expected-message-regex
  local rc=0 out
  out=$(timeout 120 "$LAB/export.sh" add --backstore user:rbd/bad0 --arg size=64M \
    --arg "cfgstring=$1" --target "$TGT" --acl "$INITIATOR" 2>&1) || rc=$?
  echo "rc=$rc: $out"
  [ "$rc" -ne 124 ] || { echo "targetcli create HUNG"; return 1; }
  [ "$rc" -ne 0 ] || { echo "create succeeded"; return 1; }
  ! ls -d /sys/kernel/config/target/core/user_*/bad0 2>/dev/null || { echo "bad0 left in configfs"; return 1; }
  grep -Eqi -- "$2" <<<"$out"
}
check bad_cfgstring_missing_image bad_create rbd/no_such_image 'no_such_image|not exist|No such|ENOENT'
check bad_cfgstring_syntax bad_create 'noslash' 'cfgstring invalid|invalid'
check bad_cfgstring_pool bad_create nopool/img0 'nopool|not exist|No such|ENOENT'
check daemon_still_serving dd_roundtrip "$disk"

# --- teardown ---------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check no_sessions sh -c '! iscsiadm -m session'
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -f 'tcmu_rbd|tcmu-runner' && ! pgrep -x ceph-osd && ! pgrep -x ceph-mon"

# CHECKS (for the host-side test module):
# ceph_up dbus kernel_target daemon_start export_disk0 login inquiry readcap
# readcap16_lbpme vpd_serial vpd_device_id vpd_block_limits vpd_lbp fs_ext4_roundtrip
# fio_write_verify blkdiscard_reaches_image write_same_unmap_reaches_image
# write_same_pattern resize_seen_by_initiator lun1_add lun1_number lun1_disk lun1_io
# lun1_remove lun0_io_during_lun_changes daemon_kill9_restart_io_resumes
# after_restart_dd osd_restart_no_data_lost bad_cfgstring_missing_image
# bad_cfgstring_syntax bad_cfgstring_pool daemon_still_serving teardown no_sessions
# lio_empty daemons_stopped
