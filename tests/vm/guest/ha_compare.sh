#!/usr/bin/env bash
# tcmu-rbd next to tcmu-runner in the same two-gateway topology, same VM (figures, not
# checks):  python -m tcmu_rbd_lab.vm tests/vm/guest/ha_compare.sh [--env PAIRS=2]
# For each daemon in turn (A B A B ...): the layout from the shared configuration
# (targetcli-rbd sync), dm-multipath with ALUA, then
#   failover: under fio write+verify, the active/optimized path's TPG is disabled (the
#     one failure both daemons can be given: tcmu-runner serves both gateways from one
#     process); time until the other path completes a write; fio's verify result;
#   round robin: multibus over both paths, 30 s of fio write+verify; lock holder
#     changes (polled every 50 ms) and fio's write rate.
# Facts: <daemon>_<pass>_failover_s, _failover_verify, _rr_transfers, _rr_write.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

. "$(dirname "$0")/ha_lib.sh"
PAIRS=${PAIRS:-2}
RR_SECONDS=${RR_SECONDS:-30}

ha_cluster_up
printf '[rbd]\nlock_grace = 10\n' >"$W/tcmu-rbd.conf"
step shared_layout shared_layout
step multipath_up "$LAB/initiator.sh" multipath --policy group_by_prio

one_pass() (  # daemon pass
  set -e
  local d=$1 n=$2 t0 fp rc=0 ao tag
  if [ "$d" = tcmu-rbd ]; then
    "$LAB/tcmu-daemon.sh" start --daemon tcmu-rbd -- --config "$W/tcmu-rbd.conf" >/dev/null
  else
    "$LAB/tcmu-daemon.sh" start --daemon tcmu-runner >/dev/null
  fi
  start_syncs
  wait_until 120 "both gateways' LIO objects" lio_ready
  for p in 127.0.0.1 127.0.0.2; do
    "$LAB/initiator.sh" login --target "$T" --initiator-name "$INIT" --portal "$p:3260" >/dev/null
  done
  sd1=$(path_of 127.0.0.1); sd2=$(path_of 127.0.0.2)
  wait_until 60 "one map over both paths" mp_ready
  wait_until 60 "both paths up" both_paths_up
  mp=$(mp_device)
  fio_verify "warm_${d}_$n" 10
  ao=$(ao_path); tag=$([ "$ao" = "$sd1" ] && echo 1 || echo 2)
  local other=$([ "$tag" = 1 ] && echo "$sd2" || echo "$sd1")
  fio_verify "fail_${d}_$n" 40 &
  fp=$!
  sleep 8
  t0=$EPOCHREALTIME
  echo 0 >"$CFS/iscsi/$T/tpgt_$tag/enable"
  fact "${d}_${n}_failover_s" "$(first_write_after "$other" "$t0")"
  wait $fp || rc=$?
  fact "${d}_${n}_failover_verify" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc")"
  echo 1 >"$CFS/iscsi/$T/tpgt_$tag/enable"
  "$LAB/initiator.sh" login --target "$T" --initiator-name "$INIT" --portal "127.0.0.$tag:3260" >/dev/null || true
  wait_until 90 "both paths back" both_paths_up
  "$LAB/initiator.sh" multipath --policy multibus >/dev/null
  sleep 3
  "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" --watch-owner rbd/ha0 "$RR_SECONDS" >"$W/rr_$n" &
  local wp=$!
  rc=0; fio_verify "rr_${d}_$n" "$RR_SECONDS" || rc=$?
  wait $wp
  fact "${d}_${n}_rr_transfers" "$(cat "$W/rr_$n")"
  fact "${d}_${n}_rr_write" "$(grep -oE 'WRITE: bw=[^,]*' "$W/rr_${d}_$n.fio" | head -1) verify=$([ $rc = 0 ] && echo ok || echo FAILED)"
  "$LAB/initiator.sh" multipath --policy group_by_prio >/dev/null
  "$LAB/initiator.sh" logout >/dev/null
  multipath -F >/dev/null 2>&1 || true
  stop_syncs
  sleep 1
  targetcli clearconfig confirm=True >/dev/null
  "$LAB/tcmu-daemon.sh" stop --daemon "$d" >/dev/null
)
for i in $(seq 1 "$PAIRS"); do
  check "tcmu-rbd_$i" one_pass tcmu-rbd "$i"
  check "tcmu-runner_$i" one_pass tcmu-runner "$i"
done
teardown() ( "$LAB/initiator.sh" multipath --stop && "$LAB/teardown.sh" )
check teardown teardown
