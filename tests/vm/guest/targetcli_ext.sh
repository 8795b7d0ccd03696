#!/usr/bin/env bash
# Guest side of tests/vm/test_targetcli_ext_lab.py: targetcli-rbd against the real
# kernel (LIO, TCMU), the TCMU daemon, open-iscsi and Ceph, in one VM boot:
#   errors before/after the daemon starts (daemon not running, bad IQN, missing
#   image, portal in use) leave nothing behind; export with ACLs (defaults checked
#   in configfs), idempotent re-export, login, data; initiators outside the ACL are
#   refused at discovery and login; CHAP + mutual CHAP (wrong secrets refused, right
#   ones work, secrets never printed); discovery authentication; list; resize seen
#   by the initiator; the /rbd node in targetcli's shell; saveconfig, clear, daemon
#   restart, restoreconfig -> same serial and data; unexport; teardown.
# TCMU_DAEMON selects the daemon (default tcmu-rbd; tcmu-runner validates this
# script against the reference).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DAEMON=${TCMU_DAEMON:-tcmu-rbd}
REPO=${TCMU_RBD_REPO:?}
INIT=iqn.2024-01.org.tcmu-rbd.lab:initiator
BAD=iqn.2024-01.org.tcmu-rbd.lab:intruder
T1=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:ext1
T2=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:chap
P=127.0.0.1:3260
CFS=/sys/kernel/config/target
TRBD=(targetcli-rbd)
fact daemon "$DAEMON"


step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=1G --image rbd/img1=256M
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"

# secrets, mode 0600, under the lab dir; none may ever show up in output or logs
S=$LAB_DIR/secrets; mkdir -p "$S"; chmod 700 "$S"
# secrets unique to this run: the scan below greps the whole guest (host files too, since
# the root filesystem is shared) and must find only what this run wrote
RUN_ID=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
ALICE_SECRET=alice-$RUN_ID; MUTUAL_SECRET=target-$RUN_ID; DISC_SECRET=discovery-$RUN_ID
umask 077
echo "$ALICE_SECRET" >"$S/alice"
echo "$MUTUAL_SECRET" >"$S/mutual"
echo "$DISC_SECRET" >"$S/disc"
echo "wrong-secret-$RUN_ID" >"$S/wrong"
umask 022
SECRETS=("$ALICE_SECRET" "$MUTUAL_SECRET" "$DISC_SECRET")
ALL_OUT=$LAB_DIR/all-output.txt; : >"$ALL_OUT"
# run targetcli-rbd, keep stdout+stderr for the secret scan, print both
trbd() { local rc=0; "${TRBD[@]}" "$@" >"$LAB_DIR/o" 2>&1 || rc=$?; cat "$LAB_DIR/o" >>"$ALL_OUT"; cat "$LAB_DIR/o"; return $rc; }
# expect_fail STATUS PATTERN CMD...: CMD exits STATUS and its output matches PATTERN
expect_fail() {
  local want=$1 pat=$2 rc=0; shift 2
  "$@" >"$LAB_DIR/ef" 2>&1 || rc=$?
  cat "$LAB_DIR/ef"
  [ "$rc" = "$want" ] || { echo "exit status $rc, expected $want" >&2; return 1; }
  grep -qE -- "$pat" "$LAB_DIR/ef" || { echo "output does not match /$pat/" >&2; return 1; }
}
lio_empty() { [ -z "$(ls "$CFS/iscsi" | grep '^iqn')" ] && [ -z "$(ls -d "$CFS"/core/user_*/* 2>/dev/null | grep -v /alua)" ]; }

# --- errors ---------------------------------------------------------------------------
err_daemon_not_running() {
  expect_fail 3 'systemctl start tcmu-rbd' targetcli-rbd export rbd/img0 --target "$T1" --initiator "$INIT" && lio_empty; }
err_bad_iqn() {
  expect_fail 1 'not a valid IQN' targetcli-rbd export rbd/img0 --target "$T1" --initiator iqn.bad_name && lio_empty; }
err_image_missing() {
  expect_fail 1 'nosuchimage' targetcli-rbd --json export rbd/nosuchimage --target "$T1" --initiator "$INIT" \
    && grep -q '"code": "image-missing"' "$LAB_DIR/ef" && lio_empty; }
err_portal_in_use() {
  expect_fail 1 'in use by another program' targetcli-rbd export rbd/img0 --target "$T1" --initiator "$INIT" \
    --portal 127.0.0.1:3261 && lio_empty; }
check err_daemon_not_running err_daemon_not_running
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
check err_bad_iqn err_bad_iqn
check err_image_missing err_image_missing
# a non-LIO listener on 127.0.0.1:3261
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",3261)); s.listen(); time.sleep(600)' &
squatter=$!
sleep 1
check err_portal_in_use err_portal_in_use
kill $squatter; wait $squatter 2>/dev/null || true

# --- export with ACLs ------------------------------------------------------------------
t0=$EPOCHREALTIME
step export_acl trbd export rbd/img0 --target "$T1" --initiator "$INIT"
fact export_seconds "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')"
check export_prints_iscsiadm bash -c "grep -F 'iscsiadm -m node -T $T1 -p $P --login' <<'EOF'
$OUT
EOF"
bs=$(ls -d "$CFS"/core/user_*/rbd.img0)
tpg=$CFS/iscsi/$T1/tpgt_1
fact backstore "$bs"
check lun_defaults bash -c "
  set -e
  grep -q 'MaxDataAreaMB: 64' $bs/info; grep -q 'HwMaxSectors: 1024' $bs/info
  [ \$(cat $bs/attrib/hw_max_sectors) = 1024 ]
  [ \$(cat $bs/attrib/cmd_time_out) = 0 ]; [ \$(cat $bs/attrib/qfull_time_out) = 5 ]
  grep -q 'Config: rbd/rbd/img0;osd_op_timeout=30' $bs/info
  cat $bs/info"
check tpg_defaults bash -c "
  set -e; cd $tpg
  [ \$(cat attrib/generate_node_acls) = 0 ]; [ \$(cat attrib/demo_mode_write_protect) = 1 ]
  [ \$(cat attrib/demo_mode_discovery) = 0 ]; [ \$(cat attrib/default_cmdsn_depth) = 128 ]
  [ \$(cat attrib/authentication) = 0 ]; [ \$(cat enable) = 1 ]
  [ \$(cat param/ImmediateData) = Yes ]; [ \$(cat param/InitialR2T) = Yes ]
  [ \$(cat param/MaxBurstLength) = 524288 ]; [ \$(cat param/FirstBurstLength) = 262144 ]
  [ \$(cat param/MaxRecvDataSegmentLength) = 262144 ]; [ \$(cat param/MaxXmitDataSegmentLength) = 262144 ]
  [ \$(cat acls/$INIT/cmdsn_depth) = 128 ]
  [ -L acls/$INIT/lun_0/lun_0 ] || ls -l acls/$INIT/lun_0
  echo ok"
portals() { ss -Hltn 'sport = :3260' | awk '{print $4}' | sort -u | tr '\n' ' '; }
check portal_loopback_only expect_eq "$(portals)" "127.0.0.1:3260 "
check export_idempotent bash -c "targetcli-rbd export rbd/img0 --target $T1 --initiator $INIT | tee /dev/stderr | grep -q 'nothing to change'"
err_already_exported() { expect_fail 1 'already exported' targetcli-rbd export rbd/img0 --target "$T2" --initiator "$INIT" && [ ! -d "$CFS/iscsi/$T2" ]; }
check err_already_exported err_already_exported

step login_acl "$LAB/initiator.sh" login --target "$T1" --initiator-name "$INIT"
disk=$OUT
fact disk "$disk"
serial=$(sed 's/.*: //' "$bs/wwn/vpd_unit_serial")
fact serial "$serial"
check size_1g expect_eq "$(blockdev --getsize64 "$disk")" 1073741824
check vpd_serial bash -c "sg_vpd -p sn '$disk' | tee /dev/stderr | grep -qi '$serial'"
# 4 MiB of random data at 8 MiB, read back with O_DIRECT; kept for the restore check
dd if=/dev/urandom of="$LAB_DIR/pattern" bs=1M count=4 status=none
write_and_check() {
  dd if="$LAB_DIR/pattern" of="$1" bs=1M seek=8 oflag=direct conv=fsync status=none
  echo 3 >/proc/sys/vm/drop_caches
  dd if="$1" bs=1M skip=8 count=4 iflag=direct status=none | cmp - "$LAB_DIR/pattern" && echo "4 MiB written and read back"
}
check data_roundtrip write_and_check "$disk"

# --- an initiator outside the ACL ----------------------------------------------------------
iscsiadm -m iface -I intruder -o new >/dev/null 2>&1 || true
iscsiadm -m iface -I intruder -o update -n iface.initiatorname -v "$BAD" >/dev/null
check acl_discovery_hides_target bash -c "out=\$(iscsiadm -m discovery -t st -p $P -I intruder -o nonpersistent 2>&1); echo \"\$out\"; ! grep -q '$T1' <<<\"\$out\""
check acl_login_refused bash -c "
  iscsiadm -m node -o new -T $T1 -p $P -I intruder >/dev/null
  if iscsiadm -m node -T $T1 -p $P -I intruder --login; then echo 'login from $BAD succeeded' >&2; exit 1; fi
  ! iscsiadm -m session | grep -q intruder; iscsiadm -m node -T $T1 -p $P -I intruder -o delete; true"
check acl_session_count expect_eq "$(iscsiadm -m session | wc -l)" 1
# forget the intruder: open-iscsi binds a portal's discovery record to the ifaces used
iscsiadm -m node -I intruder -o delete >/dev/null 2>&1 || true
iscsiadm -m iface -I intruder -o delete >/dev/null 2>&1 || true
check discovery_default_iface bash -c "iscsiadm -m discovery -t st -p $P -I default | grep '$T1'"

# --- CHAP + mutual CHAP ----------------------------------------------------------------------
step export_chap trbd export rbd/img1 --target "$T2" --initiator "$INIT" --chap-user alice \
  --chap-secret-file "$S/alice" --mutual-user tgt --mutual-secret-file "$S/mutual"
CHAP_OUT=$OUT
check chap_in_configfs bash -c "set -e; cd $CFS/iscsi/$T2/tpgt_1
  [ \$(cat attrib/authentication) = 1 ]; [ \$(cat param/AuthMethod) = CHAP ]
  [ \$(cat acls/$INIT/auth/userid) = alice ]; [ \$(cat acls/$INIT/auth/password) = $ALICE_SECRET ]
  [ \$(cat acls/$INIT/auth/userid_mutual) = tgt ]; echo ok"
check chap_instructions_no_secret bash -c "grep -F 'node.session.auth.password -v' <<'EOF'
$CHAP_OUT
EOF"
iscsiadm -m discovery -t st -p "$P" >/dev/null || true
node2() { iscsiadm -m node -T "$T2" -p "$P" "$@"; }
set_auth() { node2 -o update -n node.session.auth.authmethod -v CHAP && node2 -o update -n node.session.auth.username -v alice \
  && node2 -o update -n node.session.auth.password -v "$1" && node2 -o update -n node.session.auth.username_in -v tgt \
  && node2 -o update -n node.session.auth.password_in -v "$2"; }
chap_login_fails() { set_auth "$1" "$2" >/dev/null; if node2 --login; then echo "login succeeded" >&2; node2 --logout; return 1; fi; echo "refused as expected"; }
check chap_wrong_secret_refused chap_login_fails "$(cat "$S/wrong")" "$(cat "$S/mutual")"
chap_no_auth_refused() { node2 -o update -n node.session.auth.authmethod -v None; if node2 --login; then node2 --logout; return 1; fi; echo refused; }
check chap_no_auth_refused chap_no_auth_refused
check chap_wrong_mutual_refused chap_login_fails "$(cat "$S/alice")" "$(cat "$S/wrong")"
chap_login() { iscsiadm -m discovery -t st -p "$P" >/dev/null || true; set_auth "$(cat "$S/alice")" "$(cat "$S/mutual")" >/dev/null && node2 --login && "$LAB/initiator.sh" disk --target "$T2"; }
check chap_login chap_login
disk2=$(iscsiadm -m session -P3 | awk -v t="$T2" '/^Target: /{x=($2==t)} x&&/Attached scsi disk/{print "/dev/"$4; exit}')
fact chap_disk "$disk2"
check chap_size expect_eq "$(blockdev --getsize64 "$disk2" 2>/dev/null)" 268435456

# --- discovery authentication ------------------------------------------------------------------
check discovery_auth_on trbd discovery-auth --user disc --secret-file "$S/disc"
check discovery_without_creds_refused bash -c "if iscsiadm -m discovery -t st -p $P -o nonpersistent; then exit 1; fi; echo refused"
check discovery_with_creds bash -c "
  iscsiadm -m discoverydb -t st -p $P -o new >/dev/null
  iscsiadm -m discoverydb -t st -p $P -o update -n discovery.sendtargets.auth.authmethod -v CHAP
  iscsiadm -m discoverydb -t st -p $P -o update -n discovery.sendtargets.auth.username -v disc
  iscsiadm -m discoverydb -t st -p $P -o update -n discovery.sendtargets.auth.password -v \$(cat $S/disc)
  iscsiadm -m discoverydb -t st -p $P --discover | grep '$T1'"
check discovery_auth_off trbd discovery-auth --disable
iscsiadm -m discoverydb -t st -p "$P" -o delete >/dev/null 2>&1 || true

# --- list ---------------------------------------------------------------------------------------
check list_text bash -c "trbd_out=\$(targetcli-rbd list); echo \"\$trbd_out\" | tee -a $ALL_OUT
  grep -q 'rbd/img0 .*serial $serial .*served by pid' <<<\"\$trbd_out\" && grep -q 'LUN 0 of $T1' <<<\"\$trbd_out\" \
  && grep -q '$INIT .*logged in from' <<<\"\$trbd_out\" && grep -q 'mutual CHAP' <<<\"\$trbd_out\""
check list_json bash -c "targetcli-rbd --json list | tee -a $ALL_OUT | python3 -c '
import json,sys; d=json.load(sys.stdin); e={x[\"image\"]: x for x in d[\"exports\"]}
assert d[\"daemon_running\"], d
a=e[\"rbd/img0\"]; assert a[\"size\"]==1<<30 and a[\"serial\"]==\"$serial\", a
l=a[\"luns\"][0]; assert l[\"target\"]==\"$T1\" and l[\"portals\"]==[\"$P\"], l
assert l[\"acls\"][0][\"initiator\"]==\"$INIT\" and l[\"acls\"][0][\"session\"], l
print(\"ok\")'"

# --- resize ----------------------------------------------------------------------------------------
step resize trbd resize rbd/img0 +256M
check resize_image bash -c "rbd info rbd/img0 | tee /dev/stderr | grep -q 'size 1.2 GiB'"
check resize_lun bash -c "grep -q 'Size: 1342177280' $bs/info"
resized() { [ "$(blockdev --getsize64 "$disk")" = 1342177280 ]; }
seen_by_initiator() {
  iscsiadm -m session --rescan >/dev/null
  for _ in $(seq 60); do resized && { blockdev --getsize64 "$disk"; return 0; }; sleep 0.5; done
  blockdev --getsize64 "$disk"; return 1
}
check resize_seen_by_initiator seen_by_initiator
check resize_unit_attention bash -c "dmesg | grep -i 'capacity data has changed\|detected capacity change' | tail -3 | grep ."

# --- the /rbd node in targetcli's shell -------------------------------------------------------------
check shell_rbd_list bash -c "targetcli-rbd shell /rbd list | tee -a $ALL_OUT | grep -q 'rbd/img0'"
check shell_tree_has_rbd bash -c "targetcli-rbd shell ls / 1 | tee /dev/stderr | grep -q 'o- rbd'"

# --- persistence: saveconfig, clear, daemon restart, restoreconfig -----------------------------------
# log out by session (the discovery-auth checks above deleted the node records, so
# initiator.sh's `iscsiadm -m node --logoutall` would find nothing to log out)
logout_all() { iscsiadm -m session -u || true; iscsiadm -m node -o delete 2>/dev/null || true; ! iscsiadm -m session; }
check logged_out_before_save logout_all
save=$LAB_DIR/saveconfig.json
check saveconfig bash -c "targetcli saveconfig $save && [ \$(stat -c %a $save) = 600 ]"
check trbd_save bash -c "targetcli-rbd save $LAB_DIR/trbd-save.json | tee -a $ALL_OUT && python3 -c '
import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))
assert [s[\"wwn\"] for s in a[\"storage_objects\"]]==[s[\"wwn\"] for s in b[\"storage_objects\"]]; print(\"same\")' $save $LAB_DIR/trbd-save.json"
check clearconfig bash -c "targetcli clearconfig confirm=True && [ -z \"\$(ls $CFS/iscsi | grep '^iqn')\" ] && [ -z \"\$(ls -d $CFS/core/user_*/* 2>/dev/null | grep -v /alua)\" ]"
check daemon_restart bash -c "'$LAB/tcmu-daemon.sh' stop --daemon $DAEMON && '$LAB/tcmu-daemon.sh' start --daemon $DAEMON"
t0=$EPOCHREALTIME
check restoreconfig bash -c "out=\$(targetcli restoreconfig $save 2>&1); echo \"\$out\"; ! grep -qi 'error\|fail' <<<\"\$out\" && ls -d $CFS/core/user_*/rbd.img0 $CFS/core/user_*/rbd.img1 $CFS/iscsi/$T1 $CFS/iscsi/$T2"
fact restore_seconds "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')"
bs=$(ls -d "$CFS"/core/user_*/rbd.img0 2>/dev/null || echo none)
check restored_serial expect_eq "$(sed 's/.*: //' "$bs/wwn/vpd_unit_serial" 2>/dev/null)" "$serial"
check restored_defaults bash -c "grep -q 'MaxDataAreaMB: 64' $bs/info && [ \$(cat $bs/attrib/qfull_time_out) = 5 ] && [ \$(cat $CFS/iscsi/$T1/tpgt_1/acls/$INIT/cmdsn_depth) = 128 ] && grep 'Size: 1342177280' $bs/info"
check restored_login bash -c "'$LAB/initiator.sh' login --target $T1 --initiator-name $INIT"
disk=$(iscsiadm -m session -P3 | awk -v t="$T1" '/^Target: /{x=($2==t)} x&&/Attached scsi disk/{print "/dev/"$4; exit}')
check restored_vpd_serial bash -c "sg_vpd -p sn '$disk' | tee /dev/stderr | grep -qi '$serial'"
check restored_data bash -c "dd if='$disk' bs=1M skip=8 count=4 iflag=direct status=none | cmp - '$LAB_DIR/pattern' && echo same data"
check restored_chap_login chap_login
check logged_out_after_restore logout_all
# every file the gateway side wrote that holds a CHAP secret (saveconfig, logs,
# targetcli's home, runtime state) is readable by its owner only
secret_files_private() {
  local s f m n=0 bad=0
  for s in "${SECRETS[@]}"; do
    while IFS= read -r f; do
      n=$((n + 1)); m=$(stat -c %a "$f")
      if [ $((8#$m & 8#044)) -ne 0 ]; then echo "$f (mode $m) holds a secret others may read"; bad=1
      else echo "$f: mode $m"; fi
    # /run/tmp holds virtme's overlay: copies of files found under their own names
    done < <(grep -rlF -- "$s" /etc/target "$LAB_DIR" "$TARGETCLI_HOME" \
               "$LAB_LOG_DIR" /run /tmp /var/lib/tcmu-rbd /var/log 2>/dev/null | grep -v '^/run/tmp/' | sort -u)
  done
  [ "$n" -gt 0 ] || { echo "no file holds a secret: the saved configuration should"; return 1; }
  return $bad
}
check secret_files_private secret_files_private

# --- unexport ------------------------------------------------------------------------------------------
check unexport_chap bash -c "targetcli-rbd unexport rbd/img1 | tee -a $ALL_OUT && [ ! -d $CFS/iscsi/$T2 ] && ! ls -d $CFS/core/user_*/rbd.img1 2>/dev/null"
check unexport_idempotent bash -c "targetcli-rbd unexport rbd/img1 | grep -q 'not exported'"
unexport_last() { targetcli-rbd unexport rbd/img0 && lio_empty; }
check unexport_last unexport_last

# --- secrets never in output or logs ----------------------------------------------------------------------
no_secrets() {
  local s bad=0
  for s in "${SECRETS[@]}"; do
    if grep -rlF -- "$s" "$ALL_OUT" "$LAB_LOG_DIR" "$TARGETCLI_HOME" 2>/dev/null; then echo "secret found" >&2; bad=1; fi
  done
  return $bad
}
check secrets_not_in_output_or_logs no_secrets

# --- teardown -----------------------------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check lio_empty_at_end lio_empty
