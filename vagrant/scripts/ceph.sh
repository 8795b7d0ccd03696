#!/usr/bin/env bash
# The throwaway Ceph cluster of the lab, via the project's own module
# (python -m tcmu_rbd_lab.ceph). Usage:
#   ceph.sh up   --dir DIR [--image POOL/NAME=SIZE]... [-- MODULE ARGS...]
#   ceph.sh down [--dir DIR]
# SIZE is what `rbd create --size` takes (1G, 512M); the module's `up` creates the images
# in-process (one already there with that size is fine). MODULE ARGS go to the module's
# `up` (e.g. --objectstore bluestore). `up` prints the path of the cluster's ceph.conf;
# `down` copies the cluster's logs into $LAB_LOG_DIR/ceph, then stops and removes it. The directory is remembered in
# $LAB_STATE_DIR/ceph_dir for teardown.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action=${1:-}; shift || true
dir= images=() extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --image) images+=("$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$dir" ] || dir=$(cat "$LAB_STATE_DIR/ceph_dir" 2>/dev/null) || die "--dir is required"

case $action in
  up)
    image_args=()
    for spec in ${images[@]+"${images[@]}"}; do
      [ "${spec%%=*}" != "$spec" ] || die "--image wants POOL/NAME=SIZE, got $spec"
      image_args+=(--image "$spec")
    done
    mkdir -p "$dir"
    echo "$dir" >"$LAB_STATE_DIR/ceph_dir"
    up_out=$("$PYTHON" -m tcmu_rbd_lab.ceph up --dir "$dir" ${image_args[@]+"${image_args[@]}"} \
      ${extra[@]+"${extra[@]}"})
    echo "$up_out"
    conf=$(sed -n 's/^conf=//p' <<<"$up_out")
    [ -n "$conf" ] && [ -f "$conf" ] || die "no ceph.conf after the cluster came up"
    result "$conf"
    ;;
  down)
    # the module removes DIR: keep the Ceph logs with the lab's
    if [ -d "$dir/log" ]; then mkdir -p "$LAB_LOG_DIR/ceph"; cp -a "$dir/log/." "$LAB_LOG_DIR/ceph/" || true; fi
    "$PYTHON" -m tcmu_rbd_lab.ceph down --dir "$dir"
    rm -f "$LAB_STATE_DIR/ceph_dir"
    result down
    ;;
  *) die "usage: ceph.sh up|down --dir DIR" ;;
esac
