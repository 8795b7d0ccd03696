#!/usr/bin/env bash
# Export a backstore over iSCSI with targetcli (one command per invocation). Usage:
#   export.sh add --backstore TYPE/NAME [--arg K=V]... --target IQN --acl INITIATOR_IQN
#                 [--portal 127.0.0.1] [--port 3260] [--cmdsn-depth 128]
#   export.sh remove --backstore TYPE/NAME --target IQN
# TYPE is targetcli's node name: fileio, block, ramdisk, user:rbd...; each --arg is one
# create parameter (quote values with ';': --arg 'cfgstring=rbd/img0;osd_op_timeout=30').
# `add` is idempotent (existing objects are kept) and prints the LUN number; a second
# backstore added to an existing target becomes the next LUN (mapped into the ACLs).
# `remove` deletes that LUN, then the backstore.
# A failed create exits 2 and prints targetcli's message (the daemon's reason) on stderr.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action=${1:-}; shift || true
bs= target= acl= portal=127.0.0.1 port=3260 depth=128 args=()
while [ $# -gt 0 ]; do
  case $1 in
    --backstore) bs=$2; shift 2 ;;
    --arg) args+=("$2"); shift 2 ;;
    --target) target=$2; shift 2 ;;
    --acl) acl=$2; shift 2 ;;
    --portal) portal=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --cmdsn-depth) depth=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$bs" ] && [ -n "$target" ] || die "--backstore and --target are required"
type=${bs%%/*} name=${bs#*/}
[ "$type" != "$bs" ] && [ -n "$name" ] || die "--backstore wants TYPE/NAME, got $bs"
case $type in
  fileio) hba=fileio ;; block) hba=iblock ;; ramdisk) hba=rd_mcp ;; pscsi) hba=pscsi ;;
  user:*) hba=user ;; *) die "unknown backstore type $type" ;;
esac
[ "$portal" != 0.0.0.0 ] || die "0.0.0.0 portals are not allowed in the lab"

tpg=$CONFIGFS_TARGET/iscsi/$target/tpgt_1
bs_dir() { local d; for d in "$CONFIGFS_TARGET"/core/"$hba"_*/"$name"; do [ -d "$d" ] && { echo "$d"; return 0; }; done; return 1; }
# lun_of: the lun_N directory of $tpg whose storage object is the backstore
lun_of() {
  local want l link
  want=$(bs_dir) || return 1
  for l in "$tpg"/lun/lun_*; do
    for link in "$l"/*; do
      [ -L "$link" ] && [ "$(readlink -f "$link")" = "$(readlink -f "$want")" ] && { basename "$l"; return 0; }
    done
  done
  return 1
}
# run a targetcli command and check its effect (targetcli can print an error and exit 0)
tcli_checked() {
  local check=$1; shift
  local out rc=0
  out=$(tcli "$@" 2>&1) || rc=$?
  echo "$out"
  if [ $rc -ne 0 ] || ! eval "$check"; then
    echo "targetcli $*: failed (rc=$rc): $out" >&4
    exit 2
  fi
}

case $action in
  add)
    [ -n "$acl" ] || die "--acl is required"
    if ! bs_dir >/dev/null; then
      tcli_checked 'bs_dir >/dev/null' "/backstores/$type" create "name=$name" ${args[@]+"${args[@]}"}
    fi
    remember backstores "$type/$name"
    if [ ! -d "$CONFIGFS_TARGET/iscsi/$target" ]; then
      tcli_checked '[ -d "$tpg" ]' /iscsi create "$target"
    fi
    remember targets "$target"
    if [ ! -d "$tpg/np/$portal:$port" ]; then
      tcli_checked '[ -d "$tpg/np/$portal:$port" ]' "/iscsi/$target/tpg1/portals" create "$portal" "$port"
    fi
    # an ACL copies default_cmdsn_depth when it is created: set it first
    echo "$depth" >"$tpg/attrib/default_cmdsn_depth"
    if ! lun_of >/dev/null; then
      tcli_checked 'lun_of >/dev/null' "/iscsi/$target/tpg1/luns" create "/backstores/$type/$name"
    fi
    if [ ! -d "$tpg/acls/$acl" ]; then
      tcli_checked '[ -d "$tpg/acls/$acl" ]' "/iscsi/$target/tpg1/acls" create "$acl"
    fi
    [ "$(cat "$tpg/enable")" = 1 ] || echo 1 >"$tpg/enable"
    lun=$(lun_of)
    ls -l "$tpg/acls/$acl"/ "$tpg/np"
    result "${lun#lun_}"
    ;;
  remove)
    if lun=$(lun_of); then
      # targetcli wants the LUN's number, not configfs' lun_N
      tcli_checked '! lun_of >/dev/null' "/iscsi/$target/tpg1/luns" delete "${lun#lun_}"
    fi
    if bs_dir >/dev/null; then
      tcli_checked '! bs_dir >/dev/null' "/backstores/$type" delete "$name"
    fi
    sed -i "\\|^$type/$name\$|d" "$LAB_STATE_DIR/backstores" 2>/dev/null || true
    result removed
    ;;
  *) die "usage: export.sh add|remove ..." ;;
esac
