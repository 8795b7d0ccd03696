#!/usr/bin/env bash
# Guest side of tests/vm/test_hosts_lab.py: worker hosts (luns_per_worker = 2) in the
# real kernel, one VM boot, through open-iscsi on 127.0.0.1: three LUNs on two host
# processes, each LUN with its own cluster client; data written through each reads back;
# a host killed with SIGKILL under write + verify restarts both LUNs it served and
# nothing written is lost; a LUN removed leaves the others serving, untouched.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/hosts.sh --timeout 900
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DAEMON=tcmu-rbd
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:hosts
W=$(mktemp -d /tmp/hosts.XXXXXX)

# --- set-up ------------------------------------------------------------------------------
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=256M \
  --image rbd/img1=256M --image rbd/img2=256M
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
printf '[daemon]\nluns_per_worker = 2\n' >"$W/tcmu-rbd.conf"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON" -- --config "$W/tcmu-rbd.conf"
DLOG=$LAB_LOG_DIR/$DAEMON.log
lun_disk() { "$LAB/initiator.sh" disk --target "$TGT" --initiator-name "$INITIATOR" --lun "$1"; }
# the uioN of backstore diskN, and the pid of the process holding /dev/uioN
uio_of() { basename "$(grep -l "/disk$1/" /sys/class/uio/uio*/name | head -n1 | xargs dirname)"; }
holder_of() {
  local p
  for p in $(our_workers); do
    ls -l "/proc/$p/fd" 2>/dev/null | grep -q " /dev/$1\$" && { echo "$p"; return 0; }
  done
  return 1
}

export_lun() {  # export_lun N: backstore diskN on image imgN, LUN N of the target
  "$LAB/export.sh" add --backstore "user:rbd/disk$1" --arg size=256M --arg "cfgstring=rbd/img$1" \
    --target "$TGT" --acl "$INITIATOR"
}
step export_disk0 export_lun 0
step export_disk1 export_lun 1
step export_disk2 export_lun 2
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
step lun0_disk lun_disk 0
disk0=$OUT; fact disk0 "$disk0"
step lun1_disk lun_disk 1
disk1=$OUT; fact disk1 "$disk1"
step lun2_disk lun_disk 2
disk2=$OUT; fact disk2 "$disk2"

# --- placement: two hosts, 2 + 1 LUNs, each LUN its own client -------------------------
placement() {
  local pids h0 h1 h2
  pids=$(our_workers); echo "worker processes: $pids"
  for p in $pids; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done
  h0=$(holder_of "$(uio_of 0)") h1=$(holder_of "$(uio_of 1)") h2=$(holder_of "$(uio_of 2)")
  echo "disk0 in $h0, disk1 in $h1, disk2 in $h2"
  expect_eq "$(wc -w <<<"$pids")" 2
  expect_eq "$(for p in $pids; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done | grep -c -- '-m tcmu_rbd.worker --host --ctl-fd')" 2
  [ "$h0" = "$h1" ] && [ "$h2" != "$h0" ]
  echo "$h0" >"$W/host01"; echo "$h2" >"$W/host2"
}
check three_luns_two_hosts placement
own_clients() {  # each image watched by a client of its own (rbd status: its watcher)
  local i ids=""
  for i in 0 1 2; do
    ids+="$(rbd status "rbd/img$i" --format json | python3 -c 'import json,sys; print(" ".join(str(w["client"]) for w in json.load(sys.stdin)["watchers"]))') "
  done
  echo "watcher client ids: $ids"
  expect_eq "$(wc -w <<<"$ids")" 3
  expect_eq "$(tr ' ' '\n' <<<"$ids" | grep . | sort -u | wc -l)" 3
  expect_eq "$(grep -cE 'serving rbd/rbd/img[012] ' "$DLOG")" 3
}
check each_lun_its_own_client own_clients

# --- data through every LUN ------------------------------------------------------------
dd if=/dev/urandom of="$W/data" bs=1M count=8 status=none
write_all() {
  local i d
  for i in 0 1 2; do
    eval "d=\$disk$i"
    dd if="$W/data" of="$d" bs=1M oflag=direct status=none &
  done
  wait
}
check write_all_luns_at_once write_all
verify() {  # verify DISK...: the first 8 MiB of each read back as written
  local d want; want=$(md5sum <"$W/data")
  for d in "$@"; do
    expect_eq "$(head -c 8M "$d" | md5sum)" "$want" >/dev/null || { echo "$d differs"; return 1; }
    echo "$d ok"
  done
}
check read_back_all_luns verify "$disk0" "$disk1" "$disk2"

# --- a host killed under I/O: each of its LUNs restarts, nothing lost ------------------
kill_host() {
  local h f0 f1 rc=0 n0 p0 p1; h=$(cat "$W/host01") n0=$(($(wc -l <"$DLOG") + 1))
  echo "killing host pid $h (disk0, disk1) under fio write + verify on both"
  fio_verify "$disk0" 24M --offset=64M >"$W/fio0.log" 2>&1 & f0=$!
  fio_verify "$disk1" 24M --offset=64M >"$W/fio1.log" 2>&1 & f1=$!
  sleep 4
  kill -0 "$f0" && kill -0 "$f1" || { cat "$W"/fio?.log; echo "I/O ended before the kill"; return 1; }
  kill -9 "$h"
  wait "$f0" || { echo "fio on disk0 exited $?"; rc=1; }
  wait "$f1" || { echo "fio on disk1 exited $?"; rc=1; }
  grep -h "fio errors=" "$W/fio0.log" "$W/fio1.log"
  log_since "$n0" | grep -E 'exited|restart|ready|served by' | tr -s ' ' | cut -c1-200
  p0=$(holder_of "$(uio_of 0)") p1=$(holder_of "$(uio_of 1)")
  echo "disk0 now in $p0, disk1 in $p1"
  [ -n "$p0" ] && [ -n "$p1" ] && [ "$p0" != "$h" ] && [ "$p1" != "$h" ] || { echo "not both served anew"; rc=1; }
  log_since "$n0" | grep -qE "worker host pid $h exited \(killed by SIGKILL\) serving uio[0-9]+, uio[0-9]+" || { echo "no host exit line"; rc=1; }
  [ "$(log_since "$n0" | grep -cE 'device=disk[01] .*worker pid [0-9]+ ready')" = 2 ] || { echo "not two ready lines"; rc=1; }
  return $rc
}
log_since() { tail -n +"$1" "$DLOG"; }
check host_kill9_restarts_both_luns_nothing_lost kill_host
check after_kill_data_intact verify "$disk0" "$disk1" "$disk2"

# --- a LUN removed: the LUNs beside it go on, untouched ---------------------------------
remove_one() {
  local n0 before after; n0=$(($(wc -l <"$DLOG") + 1))
  before="$(holder_of "$(uio_of 1)") $(holder_of "$(uio_of 2)")"
  "$LAB/export.sh" remove --backstore user:rbd/disk0 --target "$TGT"
  after="$(holder_of "$(uio_of 1)") $(holder_of "$(uio_of 2)")"
  echo "disk1, disk2 in: $before -> $after"
  expect_eq "$after" "$before"
  verify "$disk1" "$disk2"
  dd_roundtrip "$disk1" 160 && dd_roundtrip "$disk2" 160
  ! log_since "$n0" | grep -E 'died|restarting the worker|killing'
}
check lun_removed_others_untouched remove_one

# --- teardown ---------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
