# Shared by the two-gateway guest scripts (ha.sh: the checks; ha_compare.sh: tcmu-rbd
# next to tcmu-runner). Sourced after lib.sh: the names both use, and ha_cluster_up.
# The layout: gw1 = TPG 1 on 127.0.0.1:3260, gw2 = TPG 2 on 127.0.0.2:3260, both
# written once into the shared configuration and applied by each gateway's sync.

REPO=${TCMU_RBD_REPO:?}
INIT=iqn.2024-01.org.tcmu-rbd.lab:initiator
T=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:ha
CFS=/sys/kernel/config/target
W=$LAB_DIR/work; mkdir -p "$W"

ha_cluster_up() {  # steps: Ceph with a mgr, the system D-Bus with our policy, LIO
  step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/ha0=1G -- --mgr
  export CEPH_CONF=$OUT
  CFGARGS=(--conf "$CEPH_CONF")
  step dbus start_dbus
  step kernel_target "$LAB/kernel-target.sh"
}

wait_until() {  # secs what cmd...: poll until cmd succeeds
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}
supervisor_pid() { pgrep -f -- "-m tcmu_rbd --foreground" | head -1; }
shared_layout() {  # the two gateways and the export, in RADOS
  targetcli-rbd gateway add gw1 --portal 127.0.0.1:3260 --tag 1 "${CFGARGS[@]}" &&
  targetcli-rbd gateway add gw2 --portal 127.0.0.2:3260 --tag 2 "${CFGARGS[@]}" &&
  targetcli-rbd export rbd/ha0 --shared --target "$T" --gateways gw1,gw2 \
    --initiator "$INIT" --no-chap "${CFGARGS[@]}"
}
start_syncs() {
  local g
  for g in gw1 gw2; do
    targetcli-rbd sync --gateway "$g" "${CFGARGS[@]}" --state-dir "$W/sync-$g" \
      >>"$LAB_LOG_DIR/sync-$g.log" 2>&1 &
    echo $! >"$W/sync-$g.pid"
  done
}
stop_syncs() { local g; for g in gw1 gw2; do kill "$(cat "$W/sync-$g.pid")" 2>/dev/null || true; done; }
lio_ready() { [ -d "$CFS/iscsi/$T/tpgt_1/lun/lun_0" ] && [ -d "$CFS/iscsi/$T/tpgt_2/lun/lun_0" ] &&
  [ "$(cat "$CFS/iscsi/$T/tpgt_1/enable")" = 1 ] && [ "$(cat "$CFS/iscsi/$T/tpgt_2/enable")" = 1 ]; }
path_of() {  # the sdX of the session to portal $1
  iscsiadm -m session -P3 2>/dev/null | awk -v p="$1:3260" '
    /Current Portal:/ { cur = ($3 ~ "^" p) } /Attached scsi disk/ { if (cur) { print $4; exit } }'
}
mp_ready() { multipath -ll 2>/dev/null | grep -q "$sd1" && multipath -ll | grep -q "$sd2"; }
mp_device() { echo "/dev/mapper/$(multipath -ll | awk 'NR==1 {print $1}')"; }
both_paths_up() { [ "$(multipath -ll | grep -cE 'active ready running')" = 2 ]; }
ao_path() {  # the sdX in the path group with the highest priority (ALUA active/optimized)
  multipath -ll | awk '/prio=/ { match($0, /prio=[0-9]+/); p = substr($0, RSTART+5, RLENGTH-5) }
    / sd[a-z]+ / { for (i = 1; i <= NF; i++) if ($i ~ /^sd[a-z]+$/) print p, $i }' | sort -rn | awk 'NR==1 {print $2}'
}
writes_of() { awk '{print $5}' "/sys/block/$1/stat"; }
worker_of() {  # pid of the worker serving backstore $1 (gw1|gw2)
  local u
  for u in /sys/class/uio/uio*; do
    if grep -q "/$1.rbd.ha0/" "$u/name"; then
      pgrep -f "tcmu_rbd.worker --uio $(basename "$u") " | head -1; return; fi
  done
}
owner_of() { "$PYTHON" "$REPO/tests/vm/guest/ha_owner.py" rbd/ha0; }
state_of() { cat "$1/alua/$2/alua_access_state"; }
fio_verify() {  # name seconds [extra fio args]: random writes, verified (crc32c, fatal)
  local n=$1 s=$2; shift 2
  fio --name="$n" --filename="$mp" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
    --bs=4k --size=256M --time_based --runtime="$s" --verify=crc32c --verify_fatal=1 \
    --verify_backlog=256 --do_verify=1 --output="$W/$n.fio" "$@"
}
first_write_after() {  # sdX t0: seconds from t0 until sdX completes a write
  local a; a=$(writes_of "$1")
  while [ "$(writes_of "$1")" = "$a" ]; do sleep 0.05; done
  awk -v a="$2" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'
}
