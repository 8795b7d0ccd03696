#!/usr/bin/env bash
# Tear the lab down in reverse order (best effort; exits 1 if any step failed):
# logout + delete node records, stop iscsid, delete the targets, then the backstores
# while the TCMU daemon still runs (it closes the images, releasing their locks),
# stop the TCMU daemon, the D-Bus we started, and the Ceph cluster.
# Only what the lab scripts started or created (pid/state files in $LAB_STATE_DIR) is
# touched; --all also clears any other LIO configuration (targetcli clearconfig).
# Usage: teardown.sh [--all] [--keep-ceph]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

all=0 keep_ceph=0
while [ $# -gt 0 ]; do
  case $1 in
    --all) all=1; shift ;;
    --keep-ceph) keep_ceph=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
failed=()
step() { local what=$1; shift; "$@" || { echo "teardown step failed: $what"; failed+=("$what"); }; }
here=$(dirname "$0")

if command -v iscsiadm >/dev/null && { alive iscsid || have_systemd; }; then
  if iscsiadm -m session >/dev/null 2>&1; then
    step "iscsi logout" iscsiadm -m node --logoutall=all
  fi
  iscsiadm -m node -o delete 2>/dev/null || true
fi
if alive iscsid; then step "stop iscsid" stop iscsid TERM 15; fi

if [ -d "$CONFIGFS_TARGET" ]; then
  # one targetcli process for all of it (each start costs 5-10 s under TCG)
  cmds=() targets=()
  if [ -f "$LAB_STATE_DIR/targets" ]; then
    while read -r t; do
      [ -d "$CONFIGFS_TARGET/iscsi/$t" ] && { cmds+=("/iscsi delete $t"); targets+=("$t"); }
    done < <(tac "$LAB_STATE_DIR/targets")
  fi
  if [ -f "$LAB_STATE_DIR/backstores" ]; then
    while read -r b; do cmds+=("/backstores/${b%%/*} delete ${b#*/}"); done \
      < <(tac "$LAB_STATE_DIR/backstores")
  fi
  [ $all = 0 ] || cmds+=("clearconfig confirm=True")
  [ ${#cmds[@]} = 0 ] || printf '%s\n' "${cmds[@]}" | tcli || true
  for t in ${targets[@]+"${targets[@]}"}; do
    [ ! -d "$CONFIGFS_TARGET/iscsi/$t" ] || { echo "target $t still there"; failed+=("delete targets"); }
  done
  rm -f "$LAB_STATE_DIR/targets" "$LAB_STATE_DIR/backstores"
  left=$(find "$CONFIGFS_TARGET/core" -mindepth 2 -maxdepth 2 -type d 2>/dev/null | grep -v '/alua$' || true)
  [ $all = 0 ] || [ -z "$left" ] || { echo "backstores left: $left"; failed+=("backstores left"); }
fi

for d in tcmu-rbd tcmu-runner; do
  if alive "$d"; then step "stop $d" stop "$d" TERM 30; fi
done
if alive dbus; then step "stop dbus" stop dbus TERM 10; fi
if [ $keep_ceph = 0 ] && [ -f "$LAB_STATE_DIR/ceph_dir" ]; then
  step "ceph down" "$here/ceph.sh" down
fi

if [ ${#failed[@]} -gt 0 ]; then die "failed steps: ${failed[*]}"; fi
result "torn down"
