#!/usr/bin/env bash
# The guest side of scripts/demo (runs inside the lab VM, as root): a throwaway Ceph
# cluster, LIO, the tcmu-rbd daemon, `targetcli-rbd export`, an open-iscsi login,
# a partition, a filesystem, files written and read back, cleanup. Prints each step
# with its timing to stdout and to $TCMU_RBD_RESULTS/demo.log (the host shows it
# live). Exits 0 only if every step worked. Everything listens on 127.0.0.1 only.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAB=${LAB_SCRIPTS:-$here}
R=${TCMU_RBD_RESULTS:-/tmp}
LOG=$R/demo.log
LAB_DIR=${LAB_DIR:-/tmp/lab}
export LAB_LOG_DIR=${LAB_LOG_DIR:-$R/logs}
mkdir -p "$LAB_DIR" "$LAB_LOG_DIR"
: >"$LOG"

IMAGE=rbd/demo
SIZE=1G
TARGET=iqn.2003-01.org.linux-iscsi.tcmu-rbd-demo:rbd
INITIATOR=iqn.2024-01.org.tcmu-rbd.demo:initiator
STEPS=10
n=0
T_START=$EPOCHREALTIME

say() { printf '%s\n' "$*" | tee -a "$LOG"; }
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }
fail() {
  say ""
  say "FAILED at step $n: $*"
  say "  logs of every component: $LAB_LOG_DIR (on the host: results/demo/logs)"
  [ -n "${2:-}" ] && [ -f "$2" ] && { say "  last lines of $2:"; tail -n 25 "$2" | sed 's/^/  | /' | tee -a "$LOG"; }
  cleanup quiet
  exit 1
}
# step "what" CMD...: run CMD, keep its stdout in $OUT, print the timing
step() {
  local what=$1; shift
  n=$((n + 1))
  say ""
  say "[$n/$STEPS] $what"
  local t0=$EPOCHREALTIME rc=0
  # to files, not $(...): the lab scripts start daemons that inherit their stdout,
  # and a command substitution would wait for those daemons to exit
  "$@" >"$LAB_DIR/step.out" 2>"$LAB_DIR/step.err" </dev/null || rc=$?
  OUT=$(cat "$LAB_DIR/step.out")
  if [ $rc -ne 0 ]; then
    sed 's/^/  | /' "$LAB_DIR/step.err" | tail -n 20 | tee -a "$LOG"
    return $rc
  fi
  say "      done in $(secs "$t0") s"
}
indent() { sed 's/^/      /' | tee -a "$LOG"; }

cleaned=0
cleanup() {
  [ $cleaned = 1 ] && return 0
  cleaned=1
  mountpoint -q /tmp/demo-mnt 2>/dev/null && umount /tmp/demo-mnt
  iscsiadm -m node --logoutall=all >/dev/null 2>&1 || true
  iscsiadm -m node -o delete >/dev/null 2>&1 || true
  targetcli-rbd unexport "$IMAGE" >/dev/null 2>&1 || true
  "$LAB/teardown.sh" >/dev/null 2>&1 || { [ "${1:-}" = quiet ] || return 1; }
}

say "tcmu-rbd demo: Ceph RBD image -> LIO (user:rbd, served by tcmu-rbd) -> iSCSI on 127.0.0.1 -> open-iscsi -> ext4"
say "kernel $(uname -r), $(nproc) CPUs (QEMU without KVM: everything is slower than on real hardware)"

step "starting a throwaway Ceph cluster (1 monitor, 1 OSD, on 127.0.0.1) and creating image $IMAGE ($SIZE)" \
  "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image "$IMAGE=$SIZE" || fail "Ceph did not start" "$LAB_LOG_DIR/ceph.log"
export CEPH_CONF=$OUT
say "      cluster config: $CEPH_CONF"

policies=()
for p in "${TCMU_RBD_REPO:-$here/../..}"/packaging/*.conf; do grep -q "<busconfig>" "$p" 2>/dev/null && policies+=(--policy "$p"); done
kernel() { "$LAB/dbus.sh" ${policies[@]+"${policies[@]}"} >/dev/null && "$LAB/kernel-target.sh"; }
step "system D-Bus, LIO kernel modules (target_core_user, iscsi_target_mod), configfs" kernel \
  || fail "LIO set-up failed" "$LAB_LOG_DIR/kernel-target.log"

step "starting the tcmu-rbd daemon (tcmu-rbd --foreground; on a gateway: systemctl start tcmu-rbd)" \
  "$LAB/tcmu-daemon.sh" start --daemon tcmu-rbd || fail "the daemon did not start" "$LAB_LOG_DIR/tcmu-rbd.log"
say "      daemon pid $OUT owns org.kernel.TCMUService1 on the system bus"

say ""
say "      \$ targetcli-rbd export $IMAGE --target $TARGET --initiator $INITIATOR --portal 127.0.0.1:3260"
step "exporting the image over iSCSI in one step (backstore, target, portal, LUN, ACL)" \
  targetcli-rbd export "$IMAGE" --target "$TARGET" --initiator "$INITIATOR" --portal 127.0.0.1:3260 \
  || fail "targetcli-rbd export failed" "$LAB_LOG_DIR/tcmu-rbd.log"
printf '%s\n' "$OUT" | indent

step "logging in with open-iscsi (discovery, then login as $INITIATOR)" \
  "$LAB/initiator.sh" login --target "$TARGET" --initiator-name "$INITIATOR" \
  || fail "iSCSI login failed" "$LAB_LOG_DIR/initiator.log"
disk=$OUT
say "      the LUN is $disk: $(blockdev --getsize64 "$disk") bytes, $(sg_inq "$disk" 2>/dev/null | sed -n 's/ *Vendor identification: *//p') $(sg_inq "$disk" 2>/dev/null | sed -n 's/ *Product identification: *//p'), serial $(sg_vpd -p sn "$disk" 2>/dev/null | sed -n 's/ *Unit serial number: *//p')"

part() {
  "$LAB/initiator.sh" partition --disk "$disk" >/dev/null && parted -s "$disk" print
}
step "partitioning $disk (GPT, one partition)" part || fail "partitioning failed" "$LAB_LOG_DIR/initiator.log"
printf '%s\n' "$OUT" | indent

step "creating an ext4 filesystem on ${disk}1" mkfs.ext4 -q -F "${disk}1" || fail "mkfs failed"

mnt=/tmp/demo-mnt
files() {
  mkdir -p "$mnt" && mount "${disk}1" "$mnt" || return 1
  for i in 1 2 3 4; do dd if=/dev/urandom of="$mnt/file$i" bs=1M count=16 status=none || return 1; done
  (cd "$mnt" && sha256sum file* >"$LAB_DIR/demo.sha256") || return 1
  umount "$mnt" && echo 3 >/proc/sys/vm/drop_caches || return 1
  mount "${disk}1" "$mnt" && (cd "$mnt" && sha256sum -c "$LAB_DIR/demo.sha256") || return 1
  df -h "$mnt" | tail -n 1
  umount "$mnt"
}
step "writing 4 files (64 MiB) to it, unmounting, dropping caches, mounting again and checking every checksum" \
  files || fail "the data did not read back" "$LAB_LOG_DIR/tcmu-rbd.log"
printf '%s\n' "$OUT" | indent
used=$(rbd du "$IMAGE" --format json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])' 2>/dev/null || echo "?")
say "      the data is in Ceph: rbd du $IMAGE reports $used bytes used"

step "what is exported now (targetcli-rbd list)" targetcli-rbd list || fail "targetcli-rbd list failed"
printf '%s\n' "$OUT" | indent

unexp() {
  iscsiadm -m node -T "$TARGET" --logout >/dev/null && iscsiadm -m node -T "$TARGET" -o delete || return 1
  targetcli-rbd unexport "$IMAGE" || return 1
  cleanup
}
step "cleaning up: iSCSI logout, targetcli-rbd unexport, stop the daemon, D-Bus and Ceph" unexp \
  || fail "cleanup failed" "$LAB_LOG_DIR/teardown.log"
printf '%s\n' "$OUT" | indent

say ""
say "Everything worked in $(secs "$T_START") s. Next: README.md (\"Installing on a gateway\"),"
say "targetcli-rbd --help, and scripts/test for the whole test suite."
exit 0
