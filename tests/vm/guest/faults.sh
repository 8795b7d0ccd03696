#!/usr/bin/env bash
# Guest side of tests/vm/test_faults_lab.py: faults that must end in recovery with
# nothing lost, on a LUN made the stock way (`targetcli /backstores/user:rbd create`
# with the kernel's defaults: cmd_time_out 30 s) and used through open-iscsi with the
# initiator's defaults (disk timeout 30 s, replacement_timeout 120 s).
#   - the only OSD stopped (SIGSTOP) for 45 s, longer than osd_op_timeout and the
#     kernel's 30 s timer, under fio write + verify: no I/O error, the LUN serves as
#     soon as the OSD is back;
#   - kill -9 of the LUN's worker (not the supervisor) under fio write + verify and a
#     COMPARE AND WRITE counter: restarted, retries succeed, the dead worker's client
#     is fenced (blocklisted) before the new one writes, the counter never skips.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/faults.sh --timeout 900
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DAEMON=tcmu-rbd
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:faults
W=$(mktemp -d /tmp/faults.XXXXXX)

step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=1G
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
DLOG=$LAB_LOG_DIR/$DAEMON.log
log_since() { tail -n +"$1" "$DLOG"; }
osd_pid() {
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); p=d.get("pids",d); print([v for k,v in p.items() if k.startswith("osd")][0])' "$LAB_DIR/ceph/cluster.json"
}

# stock targetcli: no attribute set, so the kernel's defaults (cmd_time_out 30)
step export_stock "$LAB/export.sh" add --backstore user:rbd/disk0 --arg size=1G \
  --arg cfgstring=rbd/img0 --target "$TGT" --acl "$INITIATOR"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
disk=$OUT
fact disk0 "$disk"
bsdir=$(ls -d /sys/kernel/config/target/core/user_*/disk0)
fact initiator_timeouts "disk $(cat "/sys/block/${disk#/dev/}/device/timeout") s, replacement_timeout $(iscsiadm -m node -T "$TGT" | awk -F' = ' '/replacement_timeout/{print $2}') s"

# --- the daemon owns command timeouts: the kernel's 30 s timer is off ------------------
check kernel_timer_off sh -c "cat '$bsdir/attrib/cmd_time_out'; [ \$(cat '$bsdir/attrib/cmd_time_out') = 0 ] && grep -E 'device=disk0 .*kernel command timer \\(30 s\\) off' '$DLOG'"

# --- the only OSD stopped for 45 s under write + verify ----------------------------------
# librbd ends each op after osd_op_timeout (30 s): BUSY, which the initiator retries
# (for up to (retries + 1) x disk timeout = 180 s); the kernel no longer answers NOT
# READY at 30 s. Region 0-24M.
osd_pause() {
  local pid f t0 t1 rc=0 n0 k0; pid=$(osd_pid); n0=$(($(wc -l <"$DLOG") + 1))
  k0=$(dmesg | wc -l)
  fio_verify "$disk" 24M >"$W/fio-pause.log" 2>&1 & f=$!
  sleep 2
  kill -0 "$f" || { cat "$W/fio-pause.log"; echo "fio ended before the OSD stopped: nothing tested"; exit 1; }
  kill -STOP "$pid"; echo "osd $pid stopped at $(date +%T)"
  sleep 45
  kill -0 "$f" || { kill -CONT "$pid"; cat "$W/fio-pause.log"; echo "fio ended while the OSD was stopped"; exit 1; }
  kill -CONT "$pid"; t0=$EPOCHREALTIME; echo "osd $pid resumed at $(date +%T)"
  # a read elsewhere on the LUN: served as soon as the OSD is back
  timeout 120 dd if="$disk" of=/dev/null bs=4k count=1 skip=$((900 * 256)) iflag=direct status=none
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "a read answered %.1f s after the OSD resumed\n", b-a}'
  fact osd_pause_read_after_resume_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')"
  wait "$f" || rc=$?
  cat "$W/fio-pause.log"
  log_since "$n0" | grep -cE 'BUSY|ETIMEDOUT|timed out' | sed 's/^/daemon log lines on timeouts: /' || true
  if dmesg | tail -n +$((k0 + 1)) | grep -E "${disk#/dev/}.*(I/O error|critical|timing out)|blk_update_request|Buffer I/O error"; then
    echo "the initiator's kernel reported an I/O error"; rc=1
  fi
  return $rc
}
check osd_stopped_45s_no_io_error osd_pause
check serves_after_osd_outage dd_roundtrip "$disk" 950

# --- kill -9 of the worker with writes and COMPARE AND WRITE in flight ------------------
# A counter in one block, advanced only by COMPARE AND WRITE (compare n, write n+1):
# a retried CAW whose first attempt landed before the kill miscompares against n+1
# (the initiator cannot know it landed); anything else is lost or stale data.
blk() { printf '%-512s' "counter $1"; }
caw_loop() {  # lba: until $W/caw.stop exists
  local lba=$1 v=0 good=0 amb=0 rc cur
  blk 0 | dd of="$disk" bs=512 seek="$lba" oflag=direct status=none
  while [ ! -e "$W/caw.stop" ]; do
    { blk "$v"; blk $((v + 1)); } >"$W/caw.in"
    rc=0; sg_compare_and_write -q --in="$W/caw.in" --lba="$lba" --num=1 --xferlen=1024 "$disk" || rc=$?
    case $rc in
      0) v=$((v + 1)); good=$((good + 1)) ;;
      14) cur=$(dd if="$disk" bs=512 skip="$lba" count=1 iflag=direct status=none | tr -d ' ')
          [ "$cur" = "counter$((v + 1))" ] || { echo "miscompare: block holds [$cur], expected counter $v"; exit 1; }
          v=$((v + 1)); amb=$((amb + 1)); echo "counter $v: a retried CAW whose first attempt had landed" ;;
      *) echo "COMPARE AND WRITE failed (sg exit $rc) at counter $v"; exit 1 ;;
    esac
  done
  cur=$(dd if="$disk" bs=512 skip="$lba" count=1 iflag=direct status=none | tr -d ' ')
  [ "$cur" = "counter$v" ] || { echo "the block holds [$cur], not counter $v"; exit 1; }
  [ "$amb" -le 1 ] || { echo "$amb ambiguous CAWs for one kill"; exit 1; }
  echo "COMPARE AND WRITE: $good good, $amb retried after landing, counter at $v"
}
worker_kill9() {
  local old new addr f c rc=0 n0; n0=$(($(wc -l <"$DLOG") + 1))
  old=$(our_workers); echo "worker before: $old"
  [ "$(echo "$old" | wc -w)" = 1 ] || { echo "expected one worker"; exit 1; }
  rm -f "$W/caw.stop"
  caw_loop $((1000 * 2048)) >"$W/caw.log" 2>&1 & c=$!
  fio_verify "$disk" 32M --offset=256M >"$W/fio-kill.log" 2>&1 & f=$!
  sleep 4
  addr=$(rbd lock ls rbd/img0 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  echo "lock holder before the kill: $addr"
  kill -0 "$f" && kill -0 "$c" || { cat "$W/fio-kill.log" "$W/caw.log"; echo "I/O ended before the kill"; exit 1; }
  kill -9 $old
  for _ in $(seq 120); do new=$(our_workers); [ -n "$new" ] && [ "$new" != "$old" ] && break; sleep 0.5; done
  [ -n "$new" ] && [ "$new" != "$old" ] || { echo "no new worker"; exit 1; }
  sleep 8; touch "$W/caw.stop"
  wait "$c" || rc=$?
  wait "$f" || rc=$?
  cat "$W/caw.log" "$W/fio-kill.log"
  log_since "$n0" | grep -E 'exited|restart|ready|owns the lock|break' | tr -s ' ' | cut -c1-200
  log_since "$n0" | grep -qE "device=disk0 .*worker pid $new ready" || { echo "worker $new not ready"; rc=1; }
  # fenced: the dead worker's client is on the blocklist, so none of its writes lands
  ceph osd blocklist ls 2>/dev/null | grep -F "$addr" || { echo "the dead worker's client $addr is not blocklisted"; rc=1; }
  return $rc
}
check worker_kill9_caw_nothing_lost worker_kill9
check serves_after_worker_kill dd_roundtrip "$disk" 960

# --- teardown ---------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
