#!/usr/bin/env bash
# Guest side of `python -m tcmu_rbd_lab.bench vm` (run by tcmu_rbd_lab.vm inside
# Debian's kernel): one Ceph cluster and image, then the same fio jobs through every
# path, one after the other, each row appended to $TCMU_RBD_RESULTS/bench.jsonl:
#   fio rbd (before)  fio --ioengine=rbd on the image: direct librbd
#   tcmu-rbd          iSCSI disk (LIO + TCMU) served by our daemon    } same LIO and
#   tcmu-runner       the same disk served by Debian's tcmu-runner    } initiator settings
#   rbd-nbd           the image through the kernel's nbd driver
#   fio rbd (after)   direct librbd again (the OSD's speed drifts: compare to the mean)
# The TCMU daemons are served in alternation, A B A B A B (BENCH_DAEMONS); each pass
# also runs 1, 2, 4 LUNs at once (one iSCSI session each) and reads the daemon's
# memory with 1 and with 4 LUNs.
# Knobs (environment): BENCH_SET full|quick, BENCH_SECONDS, BENCH_RAMP, BENCH_LUNS
# (the most LUNs at once), BENCH_DAEMONS (tcmu-rbd:N: ours with luns_per_worker = N), BENCH_PROFILE=1 (perf of the whole VM during
# the scaling job on each path: profile-<path>.txt), BENCH_MANY=N (after the passes,
# N LUNs on one gateway, once per daemon: bench/many.py).
set -euo pipefail
: "${TCMU_RBD_RESULTS:?run me through tcmu_rbd_lab.vm}"
LAB=${LAB_SCRIPTS:?}
REPO=${TCMU_RBD_REPO:?}
OUTF=$TCMU_RBD_RESULTS/bench.jsonl
SET=${BENCH_SET:-full} SECS=${BENCH_SECONDS:-10} RAMP=${BENCH_RAMP:-2}
LUNS=${BENCH_LUNS:-4} PROFILE=${BENCH_PROFILE:-0} MANY=${BENCH_MANY:-0}
# A B A B A B: the OSD's speed drifts; the host pairs the passes next to each other
DAEMONS=${BENCH_DAEMONS:-tcmu-rbd tcmu-runner tcmu-rbd tcmu-runner tcmu-rbd tcmu-runner}
INIT=iqn.2024-01.org.tcmu-rbd.lab:bench
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:bench
# equal for every path: the target's and the initiator's settings.  BENCH_CONFIG: the
# backstore's, as the project's targetcli-rbd sets them (project), as ceph-iscsi does
# (hw_max_sectors 1024, an 8 MiB data area), or a stock `targetcli /backstores/user:rbd
# create` (stock: the kernel's defaults, none given)
CONFIG=${BENCH_CONFIG:-project}
case $CONFIG in
  project) HW_MAX_SECTORS=2048 DATA_AREA_MB=64 ;;
  ceph-iscsi) HW_MAX_SECTORS=1024 DATA_AREA_MB=8 ;;
  stock) HW_MAX_SECTORS="" DATA_AREA_MB="" ;;
  *) echo "unknown BENCH_CONFIG $CONFIG"; exit 2 ;;
esac
CMDSN_DEPTH=128 CMDS_MAX=128 QUEUE_DEPTH=128
CFS=/sys/kernel/config/target

log() { echo "[bench] $(date +%T) $*"; }
G() { "$PYTHON" -m tcmu_rbd_lab.bench.guest "$@" --out "$OUTF"; }
# memory is read idle, 3 s after the last job: our workers give freed memory back on
# their first idle second (tcmu-runner keeps it).  Read at once, the 1-LUN figure held
# LUN 0's heap from the 1M jobs (17 MB private; every worker held 7.3-8.1 at the 8-LUN
# reading), so the added LUNs, the 8-LUN figure less it, looked cheaper than they are.
memory() { sleep 3; G memory "$@"; }
job_args=(--seconds "$SECS" --ramp "$RAMP")
profile() {  # profile NAME TARGET...
  [ "$PROFILE" = 1 ] || return 0
  "$PYTHON" -m tcmu_rbd_lab.bench.guest profile --path "$1" --seconds "$SECS" \
    --out "$TCMU_RBD_RESULTS/profile-${1// /_}.txt" "${@:2}"
}

policy_args=()
for p in "$REPO"/packaging/*.conf; do
  [ -f "$p" ] && grep -q "<busconfig>" "$p" && policy_args+=(--policy "$p")
done
images=(--image rbd/bench0=1G)
for ((i = 1; i < LUNS; i++)); do images+=(--image "rbd/scale$i=256M"); done

log "ceph"
export CEPH_CONF
CEPH_CONF=$("$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" "${images[@]}")
log "prefill (reads of never-written objects cost nothing)"
for ((i = 0; i < LUNS; i++)); do
  img=bench0; [ "$i" -gt 0 ] && img=scale$i
  fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd --rbdname=$img --rw=write \
    --bs=4M --iodepth=8 --direct=1 >/dev/null
done
"$LAB/dbus.sh" ${policy_args[@]+"${policy_args[@]}"} >/dev/null
"$LAB/kernel-target.sh" >/dev/null

log "fio rbd (before)"
G jobs --path "fio rbd (before)" --set "$SET" "${job_args[@]}" rbd:rbd/bench0
profile "fio rbd" rbd:rbd/bench0

image_of() { if [ "$1" -eq 0 ]; then echo bench0; else echo "scale$1"; fi; }
export_lun() {  # export_lun N: image N as backstore benchN on target $TGT-N
  local size=1G args=(); [ "$1" -gt 0 ] && size=256M
  [ -n "$HW_MAX_SECTORS" ] && args+=(--arg "hw_max_sectors=$HW_MAX_SECTORS")
  [ -n "$DATA_AREA_MB" ] && args+=(--arg "control=max_data_area_mb=$DATA_AREA_MB")
  "$LAB/export.sh" add --backstore "user:rbd/bench$1" --arg "size=$size" \
    --arg "cfgstring=rbd/$(image_of "$1")" ${args[@]+"${args[@]}"} --target "$TGT-$1" --acl "$INIT" \
    --cmdsn-depth "$CMDSN_DEPTH" >/dev/null
  "$LAB/initiator.sh" login --target "$TGT-$1" --initiator-name "$INIT" \
    --cmds-max "$CMDS_MAX" --queue-depth "$QUEUE_DEPTH"
}
node_setting() { iscsiadm -m node -T "$1" -p 127.0.0.1:3260 | sed -n "s/^$2 = //p"; }
# what was in effect, read back from configfs, iscsiadm and sysfs
settings() {  # settings PATH DISK
  local bs tpg dev=${2#/dev/}
  bs=$(ls -d "$CFS"/core/user_*/bench0)
  tpg=$CFS/iscsi/$TGT-0/tpgt_1
  G settings --path "$1" "config=$CONFIG" "hw_max_sectors=$(cat "$bs/attrib/hw_max_sectors")" \
    "max_data_area_mb=$(cat "$bs/attrib/max_data_area_mb")" \
    "cmdsn_depth=$(cat "$tpg/acls/$INIT/cmdsn_depth")" \
    "node.session.cmds_max=$(node_setting "$TGT-0" node.session.cmds_max)" \
    "node.session.queue_depth=$(node_setting "$TGT-0" node.session.queue_depth)" \
    "queue_depth=$(cat "/sys/block/$dev/device/queue_depth")" \
    "max_sectors_kb=$(cat "/sys/block/$dev/queue/max_sectors_kb")" \
    "nr_requests=$(cat "/sys/block/$dev/queue/nr_requests")" \
    "scheduler=$(sed 's/.*\[\(.*\)\].*/\1/' "/sys/block/$dev/queue/scheduler")" >/dev/null
}

pattern_of() {  # the command-line pattern of a daemon's processes
  case $1 in
    tcmu-rbd|tcmu-rbd:*) echo "-m tcmu_rbd" ;;   # the daemon and its workers (or hosts)
    tcmu-runner) echo "tcmu-runner --tcmu-log-dir" ;;
    *) echo "unknown daemon $1" >&2; exit 2 ;;
  esac
}
start_daemon() {  # start_daemon DAEMON: tcmu-rbd:N is tcmu-rbd with luns_per_worker = N
  local conf
  case $1 in
    tcmu-rbd:*)
      conf=$LAB_DIR/luns-per-worker-${1#*:}.conf
      printf '[daemon]\nluns_per_worker = %s\n' "${1#*:}" >"$conf"
      "$LAB/tcmu-daemon.sh" start --daemon tcmu-rbd -- --config "$conf" >/dev/null ;;
    *) "$LAB/tcmu-daemon.sh" start --daemon "$1" >/dev/null ;;
  esac
}
stop_daemon() { "$LAB/tcmu-daemon.sh" stop --daemon "${1%%:*}" >/dev/null; }
serve() {  # serve DAEMON: the iSCSI paths, scaling and memory for one TCMU daemon
  local d=$1 pattern disks=() n i
  pattern=$(pattern_of "$d")
  log "$d"
  start_daemon "$d"
  disks+=("$(export_lun 0)")
  settings "$d" "${disks[0]}"
  G jobs --path "$d" --set "$SET" "${job_args[@]}" --cpu-of "$pattern" "${disks[0]}"
  memory --path "$d" --luns 1 --pattern "$pattern" >/dev/null
  for ((i = 1; i < LUNS; i++)); do disks+=("$(export_lun "$i")"); done
  for ((n = 1; n <= LUNS; n *= 2)); do
    log "$d: $n LUN(s) at once"
    G scaling --path "$d" "${job_args[@]}" --cpu-of "$pattern" "${disks[@]:0:n}" >/dev/null
  done
  [ "$LUNS" -gt 1 ] && memory --path "$d" --luns "$LUNS" --pattern "$pattern" >/dev/null
  profile "$d" "${disks[0]}"
  [ "$LUNS" -gt 1 ] && profile "$d x$LUNS" "${disks[@]}"
  "$LAB/initiator.sh" logout >/dev/null
  for ((i = 0; i < LUNS; i++)); do
    "$LAB/export.sh" remove --backstore "user:rbd/bench$i" --target "$TGT-$i" >/dev/null
  done
  stop_daemon "$d"
}
for d in $DAEMONS; do serve "$d"; done

many() {  # many DAEMON: $MANY LUNs on one gateway (bench/many.py); a failure is logged, not fatal
  local d=$1 pattern opt=()
  pattern=$(pattern_of "$d")
  [ -n "$HW_MAX_SECTORS" ] && opt+=(--hw-max-sectors "$HW_MAX_SECTORS")
  [ -n "$DATA_AREA_MB" ] && opt+=(--control "max_data_area_mb=$DATA_AREA_MB")
  log "$d: $MANY LUNs on one gateway"
  start_daemon "$d"
  "$PYTHON" -m tcmu_rbd_lab.bench.many up --path "$d" --out "$OUTF" --luns "$MANY" \
    --pattern "$pattern" --target "$TGT-many" --initiator "$INIT" ${opt[@]+"${opt[@]}"} \
    || log "$d: $MANY LUNs: FAILED"
  "$PYTHON" -m tcmu_rbd_lab.bench.many down --luns "$MANY" --target "$TGT-many" || true
  stop_daemon "$d"
}
if [ "$MANY" -gt 0 ]; then
  for d in $(printf "%s\n" $DAEMONS | awk '!seen[$0]++'); do many "$d"; done
fi

log "rbd-nbd"
modprobe nbd nbds_max=4
nbd=$(rbd-nbd map rbd/bench0)
G settings --path rbd-nbd "max_sectors_kb=$(cat "/sys/block/${nbd#/dev/}/queue/max_sectors_kb")" \
  "nr_requests=$(cat "/sys/block/${nbd#/dev/}/queue/nr_requests")" >/dev/null
G jobs --path rbd-nbd --set "$SET" "${job_args[@]}" --cpu-of "rbd-nbd map" "$nbd"
memory --path rbd-nbd --luns 1 --pattern "rbd-nbd map" >/dev/null
profile rbd-nbd "$nbd"
rbd-nbd unmap "$nbd"

log "fio rbd (after)"
G jobs --path "fio rbd (after)" --set "$SET" "${job_args[@]}" rbd:rbd/bench0
"$LAB/teardown.sh" >/dev/null || log "teardown reported a failure (see logs/teardown.log)"
log "done"
