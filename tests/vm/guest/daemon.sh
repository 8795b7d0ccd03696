#!/usr/bin/env bash
# Guest side of tests/vm/test_daemon_lab.py: OUR daemon (tcmu-rbd, started as
# "$PYTHON -m tcmu_rbd --foreground", its D-Bus policy from packaging/) serving
# user:rbd backstores made by stock targetcli, exported over iSCSI on 127.0.0.1 with
# an ACL, used through open-iscsi; one VM boot, the same records as every module
# (guest/lib.sh). The issue's checks, in order: identity (size, vendor, serial, VPD),
# filesystem + fio verify, unmap/write same reach the image, resize, a second LUN
# under I/O, kill -9 + restart under I/O, OSD stop/start under I/O, bad configs fail
# fast with the daemon's message; plus the kernel interface (netlink replies,
# targetcli listing, SIGTERM under I/O) and teardown.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/daemon.sh --timeout 900
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DAEMON=${TCMU_DAEMON:-tcmu-rbd}
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:daemon
REPO=${TCMU_RBD_REPO:?}

# bluestore: the OSD restart check needs data that survives a stopped OSD
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=1G \
  --image rbd/img1=256M -- --objectstore bluestore
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
DLOG=$LAB_LOG_DIR/$DAEMON.log
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
# daemon log lines since line $1
log_since() { tail -n +"$1" "$DLOG"; }

# --- the kernel interface ----------------------------------------------------------
check netlink_set_features sh -c "grep -E 'SET_FEATURES accepted' '$DLOG' && dmesg | grep 'tcmu daemon: command reply support 1'"
check targetcli_lists_user_rbd sh -c "targetcli ls /backstores 1 | tee /dev/stderr | grep -q 'user:rbd'"
check targetcli_help_create_configdesc sh -c "targetcli /backstores/user:rbd help create | tee /dev/stderr | grep -q 'pool\[/namespace\]/image' && targetcli /backstores/user:rbd help create | grep -q 'osd_op_timeout='"

step export_disk0 "$LAB/export.sh" add --backstore user:rbd/disk0 --arg size=1G \
  --arg 'cfgstring=rbd/img0;osd_op_timeout=30' --arg hw_max_sectors=1024 \
  --arg control=max_data_area_mb=8 --target "$TGT" --acl "$INITIATOR"
check added_device_done grep -E 'device=disk0 .*ADDED_DEVICE_DONE status 0' "$DLOG"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
disk=$OUT
fact disk0 "$disk"
bsdir=$(ls -d /sys/kernel/config/target/core/user_*/disk0)

# --- 1. identity: size, vendor, serial, VPD ------------------------------------------
check size expect_eq "$(blockdev --getsize64 "$disk")" 1073741824
check inquiry sh -c "sg_inq '$disk' | grep -E 'Vendor identification: +LIO-ORG' && sg_inq '$disk' | grep -E 'Product identification: +TCMU device'"
check readcap sh -c "sg_readcap -l '$disk' | grep -q 'Number of logical blocks=2097152' && sg_readcap -l '$disk' | grep 'Logical block length=512 bytes'"
check readcap16_lbpme sh -c "sg_readcap -l '$disk' | grep -E 'Logical block provisioning: lbpme=1'"
check vpd_serial sh -c "serial=\$(cat '$bsdir/wwn/vpd_unit_serial' | sed 's/.*: //'); echo \"configfs \$serial\"; [ -n \"\$serial\" ] && sg_vpd -p sn '$disk' | tee /dev/stderr | grep -qi \"\$serial\""
check vpd_device_id sh -c "sg_vpd -p di '$disk' | tee /dev/stderr | grep -qi 'designator type: NAA' && sg_vpd -p di '$disk' | grep -qi '0x6001405'"
check vpd_block_limits sh -c "sg_vpd -p bl '$disk' | tee /dev/stderr | grep -Eq 'Maximum transfer length: 1024'"
check vpd_lbp sh -c "sg_vpd -p lbpv '$disk' | tee /dev/stderr | grep -Eq 'Unmap command supported \\(LBPU\\): 1'"

# --- 2. a filesystem; fio write + verify -----------------------------------------------
fs_roundtrip() {
  local dev=$1 mnt=/tmp/mnt0
  local part; part=$("$LAB/initiator.sh" partition --disk "$dev" --end 257MiB)
  mkfs.ext4 -q -F "$part"
  mkdir -p "$mnt"; mount "$part" "$mnt"
  for i in 1 2 3 4; do dd if=/dev/urandom of="$mnt/f$i" bs=1M count=8 status=none; done
  (cd "$mnt" && md5sum f* >/tmp/fs.md5)
  umount "$mnt"; echo 3 >/proc/sys/vm/drop_caches
  fs_intact "$dev"
}
parts() { fact "partitions_$1" "$(awk 'NR>2{print $4}' /proc/partitions | tr '\n' ' ')"; }
fs_intact() {  # the files written by fs_roundtrip, read back after a fresh mount
  local dev=$1 mnt=/tmp/mnt0
  echo 3 >/proc/sys/vm/drop_caches
  [ -b "${dev}1" ] || { echo "no ${dev}1:"; cat /proc/partitions; ls -l "$dev"*; }
  mount "${dev}1" "$mnt"; local rc=0
  (cd "$mnt" && md5sum -c /tmp/fs.md5) || rc=$?
  umount "$mnt"; return $rc
}
check fs_ext4_roundtrip fs_roundtrip "$disk"

# disk0's map (every check its own region, so later checks can prove earlier data
# intact): GPT + ext4 partition 0-257M | fio 300M+16M | discard 512M+64M | write same
# 768M+32M, 900M+1M | (after the resize to 2G) LUN-change I/O 1G+16M | kill -9 1280M+64M
# | OSD 1536M+64M | blocklist 1650M+32M | SIGTERM 1792M+48M | dd 1900M, 1910M, 1920M, 1930M
check fio_write_verify fio_verify "$disk" 8M --offset=300M

# --- 3. discard / write same reach the image --------------------------------------------
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
# The device advertises its MAXIMUM WRITE SAME LENGTH in VPD B0; a longer WRITE SAME is
# ILLEGAL REQUEST by SBC (initiators split by it): one command of that many blocks.
max_write_same() {
  sg_vpd -p bl "$disk" | sed -n 's/.*Maximum write same length: *\(0x[0-9a-fA-F]*\|[0-9]*\) blocks.*/\1/p'
}
write_same_unmap_drops_usage() {
  local lba=$(( (768 << 20) / 512 )) n before after
  n=$(( $(max_write_same) )); echo "max write same length: $n blocks"
  [ "$n" -gt 0 ] || return 1
  [ "$n" -le 65536 ] || n=65536
  dd if=/dev/urandom of="$disk" bs=4M seek=192 count=8 oflag=direct status=none
  before=$(rbd_used)
  sg_write_same --16 --unmap --lba="$lba" --num="$n" --in=/dev/zero "$disk"
  after=$(rbd_used); echo "used before=$before after=$after ($n blocks unmapped)"
  [ "$after" -le $((before - n * 512 / 2)) ] && cmp -n $((n * 512)) /dev/zero <(dd if="$disk" bs=4M skip=192 count=8 iflag=direct status=none)
}
check write_same_unmap_reaches_image write_same_unmap_drops_usage
parts after_write_same
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

# --- 4. resize: image, then dev_size (RECONFIG_DEVICE), rescan ----------------------------
resize_seen() {
  rbd resize --size 2G rbd/img0
  echo $((2 << 30)) >"$bsdir/attrib/dev_size"
  echo 1 >"/sys/block/$(basename "$disk")/device/rescan"
  for _ in $(seq 60); do [ "$(blockdev --getsize64 "$disk")" = $((2 << 30)) ] && break; sleep 0.5; done
  sg_readcap -l "$disk"; expect_eq "$(blockdev --getsize64 "$disk")" $((2 << 30))
}
check resize_seen_by_initiator resize_seen
parts after_resize
check reconfig_device_done grep -E 'device=disk0 .*RECONFIG_DEVICE_DONE status 0' "$DLOG"

# --- 5. a second LUN added and removed under I/O on the first ---------------------------
io_loop() {  # dev offset flag: fio write+verify passes until the flag file goes away
  local n=0
  # 4 MB/s: steady I/O without starving the 2 CPUs the LUN changes (targetcli) need
  while [ -e "$3" ]; do
    fio_verify "$1" 16M --bs=64k --offset="$2" --rate=4m || { echo "pass $n FAILED"; return 1; }
    n=$((n + 1))
  done
  echo "fio passes=$n"; [ "$n" -ge 1 ]
}
touch /tmp/io0.run
io_loop "$disk" 1G /tmp/io0.run >/tmp/fio-bg.log 2>&1 & io_pid=$!
check lun1_add "$LAB/export.sh" add --backstore user:rbd/disk1 --arg size=256M \
  --arg cfgstring=rbd/img1 --target "$TGT" --acl "$INITIATOR"
check lun1_number expect_eq "$OUT" 1
check lun1_disk "$LAB/initiator.sh" disk --target "$TGT" --lun 1
disk1=$OUT; fact disk1 "$disk1"
check lun1_io dd_roundtrip "$disk1"
# D-Bus CheckConfig from an unprivileged user, while LUN 0 is under fio: a conf that
# would make librados (as root) append to and replace files touches nothing, a flood
# is answered (refused beyond its bound), root's check still passes, the I/O goes on
checkconfig_as_nobody() (
  set -e
  d=$(mktemp -d /tmp/hostile.XXXXXX); chmod 755 "$d"
  echo precious >"$d/victim.log"; echo precious >"$d/victim.asok"
  printf '[global]\nmon host = 127.0.0.1:1\nlog file = %s\nadmin socket = %s\n' \
    "$d/victim.log" "$d/victim.asok" >"$d/evil.conf"
  chown nobody: "$d/evil.conf"
  setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c \
    "$(cat "$REPO/lab/tcmu_rbd_lab/checkconfig_flood.py")" system \
    "rbd/rbd/img0;conf=$d/evil.conf" 100 >"$d/answers.json" & local flood=$!
  sleep 1
  timeout 20 dbus-send --system --print-reply --reply-timeout=15000 \
    --dest=org.kernel.TCMUService1 /org/kernel/TCMUService1/rbd \
    org.kernel.TCMUService1.CheckConfig "string:rbd/rbd/img0;conf=$CEPH_CONF" \
    | grep -q 'boolean true' || { echo "root's CheckConfig failed during the flood"; exit 1; }
  echo "root's CheckConfig answered during the flood"
  wait "$flood" || { echo "the flood client failed"; exit 1; }
  python3 -c 'import json, sys; a = json.load(open(sys.argv[1])); print(len(a), "answers:",
    sorted({m for _, m in a})); sys.exit(len(a) != 100 or any(ok is None for ok, _ in a))' \
    "$d/answers.json" || exit 1
  [ "$(cat "$d/victim.log")" = precious ] || { echo "victim.log changed"; exit 1; }
  [ "$(cat "$d/victim.asok")" = precious ] || { echo "victim.asok changed"; exit 1; }
  [ "$(ls "$d" | sort | tr '\n' ' ')" = "answers.json evil.conf victim.asok victim.log " ] \
    || { ls -la "$d"; echo "files appeared or went"; exit 1; }
  kill -0 "$io_pid" || { echo "LUN 0's fio loop stopped"; exit 1; }
  echo "victim files untouched, I/O still running"
)
check checkconfig_as_nobody_under_io checkconfig_as_nobody
[ -n "$disk1" ] && echo 1 >"/sys/block/$(basename "$disk1")/device/delete" || true
check lun1_remove "$LAB/export.sh" remove --backstore user:rbd/disk1 --target "$TGT"
check removed_device_done grep -E 'device=disk1 .*REMOVED_DEVICE_DONE status 0' "$DLOG"
io_running=0; kill -0 "$io_pid" 2>/dev/null && io_running=1
rm -f /tmp/io0.run
io_rc=0; wait "$io_pid" || io_rc=$?
check lun0_io_during_lun_changes sh -c "cat /tmp/fio-bg.log; echo \"I/O still running when LUN 1 was removed: $io_running\"; [ $io_running = 1 ] && exit $io_rc"

parts after_lun_changes
# --- 6. kill -9 the daemon during write+verify, restart it at once ------------------------
# (its workers follow it: PR_SET_PDEATHSIG; the new daemon stops any still holding
# /dev/uioN before the restart recovery: block_dev, reset_ring, open, unblock)
daemon_crash() {
  local n0; n0=$(($(wc -l <"$DLOG") + 1))
  fio_verify "$disk" 64M --bs=64k --offset=1280M >/tmp/fio-crash.log 2>&1 & local f=$!
  sleep 8
  kill -0 "$f" 2>/dev/null || { cat /tmp/fio-crash.log; echo "fio ended before the kill: nothing tested"; return 1; }
  local old; old=$(our_workers); echo "workers before the kill: $old"
  "$LAB/tcmu-daemon.sh" kill --daemon "$DAEMON"
  "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
  local rc=0; timeout 600 tail --pid="$f" -f /dev/null || rc=$?; wait "$f" || rc=$?
  cat /tmp/fio-crash.log
  log_since "$n0" | grep -E 'stale worker|recovering|ready' || true
  for p in $old; do running "$p" && { echo "old worker $p still running"; rc=1; }; done
  log_since "$n0" | grep -q 'device=disk0 .*worker pid [0-9]* ready' || { echo "disk0 not recovered"; rc=1; }
  return $rc
}
check daemon_kill9_restart_io_resumes daemon_crash
check after_restart_dd dd_roundtrip "$disk" 1900

parts after_kill9
# --- 7. stop and start the OSD during I/O (bluestore) -------------------------------------
osd_bounce() {  # the OSD's own command line, from cluster.json's pid
  local pid cmdline
  pid=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d.get("pids",d); print([v for k,v in p.items() if k.startswith("osd")][0])' "$LAB_DIR/ceph/cluster.json")
  mapfile -d '' cmdline <"/proc/$pid/cmdline"
  fio_verify "$disk" 64M --bs=64k --offset=1536M >/tmp/fio-osd.log 2>&1 & local f=$!
  sleep 5
  kill -0 "$f" 2>/dev/null || { cat /tmp/fio-osd.log; echo "fio ended before the OSD stopped: nothing tested"; return 1; }
  kill -9 "$pid"; echo "osd pid $pid killed"; sleep 10
  kill -0 "$f" 2>/dev/null || { cat /tmp/fio-osd.log; echo "fio ended while the OSD was down"; return 1; }
  setsid "${cmdline[@]}" >>"$LAB_LOG_DIR/osd-restarted.log" 2>&1 </dev/null &
  local new=$!
  python3 -c 'import json,sys; f=sys.argv[1]; d=json.load(open(f)); p=d.get("pids",d); k=[k for k in p if k.startswith("osd")][0]; p[k]=int(sys.argv[2]); json.dump(d,open(f,"w"))' "$LAB_DIR/ceph/cluster.json" "$new"
  echo "osd restarted: pid $new"
  local rc=0; wait "$f" || rc=$?
  cat /tmp/fio-osd.log; return $rc
}
check osd_restart_no_data_lost osd_bounce
check osd_restart_fs_intact fs_intact "$disk"

# --- 7b. the worker's cluster client blocklisted during I/O (ceph osd blocklist add) ------
# its I/O fails ESHUTDOWN: BUSY (retried), a new client, its own stale entry removed,
# the dead client's lock broken before the next write (the same device's predecessor)
blocklisted() (
  set -e
  local n0 addr f; n0=$(($(wc -l <"$DLOG") + 1))
  addr=$(rbd status rbd/img0 --format json | python3 -c \
    'import json, sys; print(json.load(sys.stdin)["watchers"][0]["address"])')
  echo "the worker's client: $addr"
  fio_verify "$disk" 32M --bs=64k --offset=1650M >/tmp/fio-bl.log 2>&1 & f=$!
  sleep 5
  [ -n "$addr" ] || exit 1
  kill -0 "$f" || { cat /tmp/fio-bl.log; echo "fio ended before the blocklist"; exit 1; }
  ceph osd blocklist add "$addr" || exit 1
  wait "$f" || { cat /tmp/fio-bl.log; exit 1; }
  cat /tmp/fio-bl.log
  for _ in $(seq 60); do log_since "$n0" | grep -q 'serving again as a non-owner' && break; sleep 1; done
  dd_roundtrip "$disk" 1930 || exit 1   # a write after the reopen: the lock is taken back
  log_since "$n0" | grep -E 'reopening|released the lock|serving again|owns the lock' \
    | tr -s ' ' | cut -c1-200
  log_since "$n0" | grep -q 'serving again as a non-owner' || { echo "not served again"; exit 1; }
  # its dead client's lock released at the reopen: the write acquires, no second blocklist
  log_since "$n0" | grep -q 'owns the lock (acquire' || { echo "lock not acquired"; exit 1; }
  if ceph osd blocklist ls 2>/dev/null | grep -F "$addr"; then
    echo "its stale blocklist entry is still there"; exit 1
  fi
)
check blocklisted_client_reopens_and_serves blocklisted

# --- a long VERIFY (one command over the whole LUN, BYTCHK=0) ends at a LUN reset --------
# (attrib/tmr_notification=1: the reset reaches the handler, which stops the command at
# its next step instead of LIO waiting for all of it)
verify_reset() (
  set -e
  local blocks n0 v t0 t1; n0=$(($(wc -l <"$DLOG") + 1))
  blocks=$(( $(blockdev --getsize64 "$disk") / 512 ))
  echo "tmr_notification=$(cat "$bsdir/attrib/tmr_notification")"
  sg_verify --16 --lba=0 --count="$blocks" --bpc="$blocks" -v "$disk" >/tmp/verify.log 2>&1 & v=$!
  sleep 3
  kill -0 "$v" || { cat /tmp/verify.log; echo "VERIFY ended before the reset: nothing tested"; exit 1; }
  t0=$(date +%s.%N)
  sg_reset -d "$disk" || true
  timeout 30 tail --pid="$v" -f /dev/null || { echo "VERIFY still running 30 s after the reset"; exit 1; }
  t1=$(date +%s.%N)
  wait "$v" || true
  cat /tmp/verify.log
  log_since "$n0" | grep -E 'task management' | tr -s ' ' | cut -c1-200
  log_since "$n0" | grep -q 'task management 5 ' || { echo "no LUN RESET in the log"; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN{d=b-a; printf "VERIFY ended %.1f s after the reset\n", d; exit !(d < 10)}' \
    || exit 1
  dd_roundtrip "$disk" 1920                              # and the LUN serves on
)
check long_verify_ends_at_lun_reset verify_reset

# --- 8. bad configurations fail fast with the daemon's message ----------------------------
bad_create() {  # cfgstring expected-message-regex  (CheckConfig refuses it)
  local rc=0 out
  out=$(timeout 120 "$LAB/export.sh" add --backstore user:rbd/bad0 --arg size=64M \
    --arg "cfgstring=$1" --target "$TGT" --acl "$INITIATOR" 2>&1) || rc=$?
  echo "rc=$rc: $out"
  [ "$rc" -ne 124 ] || { echo "targetcli create HUNG"; return 1; }
  [ "$rc" -ne 0 ] || { echo "create succeeded"; return 1; }
  ! ls -d /sys/kernel/config/target/core/user_*/bad0 2>/dev/null || { echo "bad0 left in configfs"; return 1; }
  grep -Eqi -- "$2" <<<"$out"
}
check bad_cfgstring_missing_image bad_create rbd/no_such_image 'no_such_image.*(not exist|No such)'
check bad_cfgstring_syntax bad_create 'noslash' 'cfgstring invalid: .*noslash'
check bad_cfgstring_pool bad_create nopool/img0 "pool 'nopool' does not exist"
# The same missing image enabled through configfs directly (what rtslib does after
# CheckConfig; here CheckConfig is bypassed): the worker fails, ADDED_DEVICE_DONE
# carries its negative status, the kernel fails the enable write with it.
added_device_fails_enable() {
  local hba=/sys/kernel/config/target/core/user_97 d rc=0 n0 out
  d=$hba/bad1; n0=$(($(wc -l <"$DLOG") + 1))
  mkdir -p "$d"
  echo "dev_config=rbd/rbd/no_such_image,dev_size=67108864" >"$d/control"
  out=$(timeout 120 bash -c "echo 1 >'$d/enable'" 2>&1) || rc=$?
  echo "enable: rc=$rc $out"
  local en; en=$(cat "$d/enable")
  rmdir "$d" "$hba" || true
  log_since "$n0"
  [ "$rc" -ne 124 ] || { echo "enable HUNG"; return 1; }
  [ "$rc" -ne 0 ] && [ "$en" = 0 ] || { echo "enable succeeded"; return 1; }
  grep -qi 'No such file' <<<"$out" || { echo "not the daemon's ENOENT"; return 1; }
  log_since "$n0" | grep -E "device=bad1 .*no_such_image.*(does not exist|No such file)" \
    && log_since "$n0" | grep -E "device=bad1 .*ADDED_DEVICE_DONE status -2"
}
check added_device_failure_fails_enable added_device_fails_enable
check daemon_still_serving dd_roundtrip "$disk" 1910
check no_bad_devices_left sh -c '! ls -d /sys/kernel/config/target/core/user_*/bad* 2>/dev/null && ! grep -l "bad[01]" /sys/class/uio/uio*/name 2>/dev/null'

# --- daemon SIGTERM under I/O: in-flight work completes, clean exit, restart resumes ------
daemon_sigterm() {
  local pid n0 rc=0 t0
  pid=$(cat "$LAB_STATE_DIR/$DAEMON.pid"); n0=$(($(wc -l <"$DLOG") + 1))
  fio_verify "$disk" 48M --bs=64k --offset=1792M >/tmp/fio-term.log 2>&1 & local f=$!
  sleep 6
  kill -0 "$f" 2>/dev/null || { cat /tmp/fio-term.log; echo "fio ended before SIGTERM: nothing tested"; return 1; }
  t0=$EPOCHREALTIME
  kill -TERM "$pid"
  for _ in $(seq 300); do running "$pid" || break; sleep 0.2; done
  if running "$pid"; then echo "daemon pid $pid still running 60 s after SIGTERM"; rc=1; fi
  echo "daemon exited $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s after SIGTERM"
  log_since "$n0" | grep -E 'signal received|shutting down|stopped|exiting|killing|giving up' || true
  log_since "$n0" | grep -q 'device=disk0 .*worker pid [0-9]* stopped (exit code 0)' || { echo "worker did not stop cleanly"; rc=1; }
  log_since "$n0" | grep -q 'INFO exiting' || { echo "no clean exit"; rc=1; }
  ! log_since "$n0" | grep -E 'killing it|giving up|Traceback' || rc=1
  [ -z "$(our_workers)" ] || { echo "workers left: $(our_workers)"; rc=1; }
  "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON" || rc=1
  local frc=0; timeout 600 tail --pid="$f" -f /dev/null || frc=$?; wait "$f" || frc=$?
  cat /tmp/fio-term.log; [ $frc -eq 0 ] || rc=1
  return $rc
}
check daemon_sigterm_under_io daemon_sigterm
check after_sigterm_fs_intact fs_intact "$disk"

# --- teardown ---------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check no_sessions sh -c '! iscsiadm -m session'
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax tcmu-runner && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
check dmesg_no_tcmu_errors sh -c "! dmesg | grep -Ei 'tcmu.*(could not find|unexpected|invalid|broken)|ring (broken|corrupt)'"
