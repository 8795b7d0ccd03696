#!/usr/bin/env bash
# Guest side of tests/vm/test_ha_lab.py: two gateways serving one LUN in one VM.
#   gw1: TPG 1 on 127.0.0.1:3260, backstore gw1.rbd.ha0; gw2: TPG 2 on
#   127.0.0.2:3260, backstore gw2.rbd.ha0; same image, same WWN; each backstore
#   served by its own worker process with its own cluster client.  The initiator
#   runs dm-multipath (multipathd, ALUA priorities).  Every step runs under fio
#   write + verify (crc32c, verify_fatal).
# What one kernel shares that two hosts would not: see README "Several gateways".
set -euo pipefail
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/ha_lib.sh"
GRACE=10

ha_cluster_up
printf '[rbd]\nlock_grace = %s\n' "$GRACE" >"$W/tcmu-rbd.conf"
step daemon_start "$LAB/tcmu-daemon.sh" start -- --config "$W/tcmu-rbd.conf"

# --- the topology, written once in RADOS and applied by each gateway's sync ------------
step shared_layout shared_layout
start_syncs
step sync_applied wait_until 60 "both gateways' LIO objects" lio_ready
bs1=$(ls -d "$CFS"/core/user_*/gw1.rbd.ha0); bs2=$(ls -d "$CFS"/core/user_*/gw2.rbd.ha0)
check same_wwn expect_eq "$(cat "$bs1/wwn/vpd_unit_serial")" "$(cat "$bs2/wwn/vpd_unit_serial")"
check alua_groups bash -c "set -e; for b in $bs1 $bs2; do
  [ \$(cat \$b/alua/gw1/tg_pt_gp_id) = 1 ]; [ \$(cat \$b/alua/gw2/tg_pt_gp_id) = 2 ]
  grep -qx Implicit \$b/alua/gw1/alua_access_type; grep -qx Implicit \$b/alua/gw2/alua_access_type; done
  cat $bs1/alua/gw1/members $bs2/alua/gw2/members
  grep -q tpgt_1 $bs1/alua/gw1/members; grep -q tpgt_2 $bs2/alua/gw2/members
  [ -z \"\$(cat $bs1/alua/gw2/members)\" ]; echo ok"

# --- the initiator: dm-multipath with ALUA ---------------------------------------------
step multipath_up "$LAB/initiator.sh" multipath --policy group_by_prio
for p in 127.0.0.1 127.0.0.2; do
  step "login_$p" "$LAB/initiator.sh" login --target "$T" --initiator-name "$INIT" --portal "$p:3260"
done
sd1=$(path_of 127.0.0.1); sd2=$(path_of 127.0.0.2)
fact paths "gw1=$sd1 gw2=$sd2"
step multipath_map wait_until 60 "one map over both paths" mp_ready
mp=$(mp_device)
fact mpath "$mp"

one_disk_two_paths() (
  set -e
  multipath -ll
  [ "$(multipath -ll | grep -c 'LIO-ORG')" = 1 ]
  multipath -ll | grep -E 'prio=50' | grep -q active
  multipath -ll | grep -qE 'prio=10'
)
check multipath_one_disk_two_paths one_disk_two_paths
io_through_owner() (
  set -e
  local a b
  a=$(writes_of "$sd1"); b=$(writes_of "$sd2")
  fio_verify owner 10
  echo "writes gw1 +$(( $(writes_of "$sd1") - a )) gw2 +$(( $(writes_of "$sd2") - b ))"
  [ $(( $(writes_of "$sd1") - a )) -gt 100 ] && [ $(( $(writes_of "$sd2") - b )) -eq 0 ]
  expect_eq "$(owner_of)" gw1
  expect_eq "$(state_of "$bs1" gw1)$(state_of "$bs1" gw2)" 01
  expect_eq "$(state_of "$bs2" gw1)$(state_of "$bs2" gw2)" 01
)
check io_through_owner io_through_owner
check service_map_owner_gw1 "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --service-map rbd/ha0 gw1 --all

# --- the owner dies: TPG off, worker kill -9, not restarted ------------------------------
owner_dies() (
  set -e
  local sup w1 a t0 t1
  sup=$(supervisor_pid); w1=$(worker_of gw1)
  fio_verify dies 40 &
  local fp=$!
  sleep 8
  trap 'kill -CONT "$sup"' EXIT
  kill -STOP "$sup" "$(cat "$W/sync-gw1.pid")"   # a dead host restarts and re-applies nothing
  echo 0 >"$CFS/iscsi/$T/tpgt_1/enable"
  t0=$EPOCHREALTIME
  kill -9 "$w1"
  fact failover_seconds "$(first_write_after "$sd2" "$t0")"
  local rc=0; wait $fp || rc=$?
  kill -CONT "$sup"
  grep -E "err=|verify|WRITE:" "$W/dies.fio" || true
  [ $rc = 0 ]
  expect_eq "$(owner_of)" gw2
)
check owner_dies_io_continues owner_dies
check service_map_owner_gw2 "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --service-map rbd/ha0 gw2
returns_as_non_owner() (
  set -e
  # ([t]: the pattern must not match this bash -c's own command line)
  wait_until 60 "gw1's worker restarted" bash -c "[ \"\$(pgrep -fc -- '-m [t]cmu_rbd[.]worker --uio')\" = 2 ]"
  kill -CONT "$(cat "$W/sync-gw1.pid")"
  echo 1 >"$CFS/iscsi/$T/tpgt_1/enable"
  "$LAB/initiator.sh" login --target "$T" --initiator-name "$INIT" --portal 127.0.0.1:3260 >/dev/null || true
  wait_until 60 "both paths back" both_paths_up
  fio_verify back 10
  multipath -ll
  expect_eq "$(owner_of)" gw2
  expect_eq "$(state_of "$bs1" gw1)$(state_of "$bs1" gw2)" 10
)
check returning_gateway_serves_as_non_owner returns_as_non_owner
check service_map_both_owner_gw2 "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --service-map rbd/ha0 gw2 --all
list_owner_and_paths() (
  set -e
  targetcli-rbd list | tee "$W/list.txt"
  grep -E "rbd/ha0 .*owner gw2" "$W/list.txt"
  grep -E "gw2 \(127\.0\.0\.2:3260 tpg 2\) active/optimized" "$W/list.txt"
  grep -E "gw1 \(127\.0\.0\.1:3260 tpg 1\) active/non-optimized" "$W/list.txt"
)
check list_shows_owner_and_paths list_owner_and_paths

# --- a worker crashes on a live gateway and is restarted ---------------------------------
worker_crash() (
  set -e
  local w2 n0
  w2=$(worker_of gw2)
  fio_verify crash 30 &
  local fp=$!
  sleep 8; kill -9 "$w2"
  wait $fp
)
check worker_crash_restart_nothing_lost worker_crash
svc_follows_owner() ( "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --service-map rbd/ha0 "$(owner_of)" --all )
check service_map_after_crash svc_follows_owner

# --- partition: the old owner's in-flight write must not land after the new owner's -----
partition_stale_write() (
  set -e
  local own other sdo sdn wo t
  own=$(owner_of); if [ "$own" = gw1 ]; then other=gw2 sdo=$sd1 sdn=$sd2; else other=gw1 sdo=$sd2 sdn=$sd1; fi
  t=$([ "$own" = gw1 ] && echo 1 || echo 2)
  wo=$(worker_of "$own")
  head -c 1M /dev/zero | tr '\0' 'O' >"$W/old"; head -c 1M /dev/zero | tr '\0' 'N' >"$W/new"
  dd if="$W/old" of="/dev/$sdo" bs=1M count=1 seek=700 oflag=direct status=none   # owner writes once
  kill -STOP "$(cat "$W/sync-$own.pid")"
  kill -STOP "$wo"                   # the owner is cut off with a write queued
  dd if="$W/old" of="/dev/$sdo" bs=1M count=1 seek=800 oflag=direct status=none 2>/dev/null &
  local ddp=$!
  sleep 1
  (echo 0 >"$CFS/iscsi/$T/tpgt_$t/enable") &
  local dis=$!
  sleep 2
  dd if="$W/new" of="/dev/$sdn" bs=1M count=1 seek=800 oflag=direct status=none   # via the other: takes over
  kill -CONT "$wo"                   # the stale write reaches librbd now: refused
  wait $dis || true; wait $ddp || true
  sleep 3
  cmp <(dd if="/dev/$sdn" bs=1M count=1 skip=800 iflag=direct status=none) "$W/new"
  expect_eq "$(owner_of)" "$other"
  kill -CONT "$(cat "$W/sync-$own.pid")"
  echo 1 >"$CFS/iscsi/$T/tpgt_$t/enable"
  "$LAB/initiator.sh" login --target "$T" --initiator-name "$INIT" --portal "127.0.0.$t:3260" >/dev/null || true
  wait_until 60 "both paths back" both_paths_up
  fio_verify after_partition 10
  expect_eq "$(owner_of)" "$other"    # the returning gateway did not steal it
)
check partition_old_owner_writes_refused partition_stale_write
check service_map_after_partition svc_follows_owner

# --- both paths active (multibus round robin): the lock does not ping-pong --------------
round_robin() (
  set -e
  local before after n
  "$LAB/initiator.sh" multipath --policy multibus
  wait_until 30 "one path group" bash -c "multipath -ll | grep -q 'round-robin\|service-time' && [ \$(multipath -ll | grep -c 'policy=') = 1 ]"
  multipath -ll
  before=$(transfers)
  fio_verify rr 60
  after=$(transfers); n=$((after - before))
  fact lock_transfers_60s "$n"
  grep -E "WRITE:" "$W/rr.fio"
  fact round_robin_write "$(grep -oE 'WRITE: bw=[^,]*' "$W/rr.fio")"
  [ "$n" -le $((60 / GRACE + 2)) ]
  "$LAB/initiator.sh" multipath --policy group_by_prio
)
transfers() { grep -hcE "owns the lock \((break|acquire)" "$LAB_LOG_DIR/tcmu-rbd.log" || true; }
check round_robin_lock_does_not_ping_pong round_robin
check service_map_after_round_robin svc_follows_owner

# --- configuration shared in RADOS --------------------------------------------------------
config_propagates() (
  set -e
  local t0 acl=iqn.2024-01.org.tcmu-rbd.lab:second
  local t1
  t0=$EPOCHREALTIME
  targetcli-rbd export rbd/ha0 --shared --target "$T" --initiator "$acl" --no-chap "${CFGARGS[@]}"
  t1=$EPOCHREALTIME                  # the change is written and notified
  wait_until 10 "the ACL on gw2" test -d "$CFS/iscsi/$T/tpgt_2/acls/$acl"
  local now=$EPOCHREALTIME
  fact config_cli_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
  fact config_propagation_seconds "$(awk -v a="$t1" -v b="$now" 'BEGIN{printf "%.2f", b-a}')"
  test -d "$CFS/iscsi/$T/tpgt_1/acls/$acl"
  awk -v a="$t1" -v b="$now" 'BEGIN{exit !(b-a <= 1.0)}'
)
check config_change_reaches_other_gateway config_propagates
check killed_writer_does_not_block "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --killed-writer

# --- teardown -----------------------------------------------------------------------------
teardown() (
  set -e
  stop_syncs
  "$LAB/initiator.sh" multipath --stop || true
  "$LAB/initiator.sh" logout
  "$LAB/teardown.sh"
)
check teardown teardown
check daemon_log_clean bash -c "! grep -E 'Traceback|CRITICAL' $LAB_LOG_DIR/tcmu-rbd.log"
