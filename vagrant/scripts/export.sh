#!/usr/bin/env bash
# Export a backstore over iSCSI with stock targetcli (all of it in one targetcli process:
# each start costs 5-10 s under TCG). Usage:
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
# tcli_batch CMD...: one targetcli process runs the commands, one per line (its
# interactive mode reading stdin; a failed command is logged and the next one runs)
tcli_batch() {
  [ $# -gt 0 ] || return 0
  local rc=0
  BATCH_OUT=$(printf '%s\n' "$@" | tcli 2>&1) || rc=$?
  printf '%s\n' "$BATCH_OUT"
  [ $rc -eq 0 ] || { echo "targetcli: failed (rc=$rc): $BATCH_OUT" >&4; exit 2; }
}
# expect WHAT CHECK: after the batch, CHECK must hold, else targetcli's output is the reason
expect() {
  eval "$2" && return 0
  # (its prompts, "/> ", prefix the lines it printed; the banner says nothing)
  echo "targetcli did not $1: $(sed -E 's#^(/[^ ]*> )+##' <<<"$BATCH_OUT" |
    grep -vE '^(targetcli shell version|Copyright|For help|exit)|^\s*$')" >&4
  exit 2
}

case $action in
  add)
    [ -n "$acl" ] || die "--acl is required"
    cmds=()
    bs_dir >/dev/null || cmds+=("/backstores/$type create name=$name ${args[*]+${args[*]}}")
    [ -d "$CONFIGFS_TARGET/iscsi/$target" ] || cmds+=("/iscsi create $target")
    [ -d "$tpg/np/$portal:$port" ] || cmds+=("/iscsi/$target/tpg1/portals create $portal $port")
    # before the ACL: a new ACL takes the TPG's default queue depth
    [ "$(cat "$tpg/attrib/default_cmdsn_depth" 2>/dev/null)" = "$depth" ] ||
      cmds+=("/iscsi/$target/tpg1 set attribute default_cmdsn_depth=$depth")
    lun_of >/dev/null || cmds+=("/iscsi/$target/tpg1/luns create /backstores/$type/$name")
    [ -d "$tpg/acls/$acl" ] || cmds+=("/iscsi/$target/tpg1/acls create $acl")
    tcli_batch ${cmds[@]+"${cmds[@]}"}
    ! bs_dir >/dev/null || remember backstores "$type/$name"     # for teardown.sh
    [ ! -d "$tpg" ] || remember targets "$target"
    expect "create backstore $type/$name" 'bs_dir >/dev/null'
    expect "create target $target" '[ -d "$tpg" ]'
    expect "create portal $portal:$port" '[ -d "$tpg/np/$portal:$port" ]'
    expect "set default_cmdsn_depth=$depth" '[ "$(cat "$tpg/attrib/default_cmdsn_depth")" = "$depth" ]'
    expect "map $type/$name to a LUN" 'lun_of >/dev/null'
    expect "create ACL $acl" '[ -d "$tpg/acls/$acl" ]'
    [ "$(cat "$tpg/enable")" = 1 ] || echo 1 >"$tpg/enable"
    lun=$(lun_of)
    ls -l "$tpg/acls/$acl"/ "$tpg/np"
    result "${lun#lun_}"
    ;;
  remove)
    cmds=()
    if lun=$(lun_of); then cmds+=("/iscsi/$target/tpg1/luns delete ${lun#lun_}"); fi
    bs_dir >/dev/null && cmds+=("/backstores/$type delete $name")
    tcli_batch ${cmds[@]+"${cmds[@]}"}
    expect "delete the LUN of $type/$name" '! lun_of >/dev/null'
    expect "delete backstore $type/$name" '! bs_dir >/dev/null'
    sed -i "\\|^$type/$name\$|d" "$LAB_STATE_DIR/backstores" 2>/dev/null || true
    result removed
    ;;
  *) die "usage: export.sh add|remove ..." ;;
esac
