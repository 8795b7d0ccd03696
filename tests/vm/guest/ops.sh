#!/usr/bin/env bash
# Guest side of tests/vm/test_ops_lab.py: what operators use around the data path,
# on our daemon in the real kernel, one VM boot, used through open-iscsi on 127.0.0.1:
#   - snapshots and namespaces through stock targetcli (issue 14.4): a snapshot LUN
#     is read-only (the disk comes up write-protected, a write that reaches it anyway
#     is refused with DATA PROTECT, mount -o ro works and shows the snapshot's point
#     in time); an image in a namespace works end to end;
#   - per-LUN QoS (issue 14.2), the local block device (14.3), Prometheus metrics
#     (14.1): their own sections below.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/ops.sh --timeout 1200
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DAEMON=tcmu-rbd
INITIATOR=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:ops
W=$(mktemp -d /tmp/ops.XXXXXX)

# --- set-up ------------------------------------------------------------------------------
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=512M
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
DLOG=$LAB_LOG_DIR/$DAEMON.log
# the sdX of LUN N, once the initiator sees it
lun_disk() { "$LAB/initiator.sh" disk --target "$TGT" --initiator-name "$INITIATOR" --lun "$1"; }

# --- snapshots (issue 14.4): a snapshot LUN is read-only ---------------------------------
step export_img0 "$LAB/export.sh" add --backstore user:rbd/disk0 --arg size=512M \
  --arg cfgstring=rbd/img0 --target "$TGT" --acl "$INITIATOR"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INITIATOR"
disk0=$OUT; fact disk0 "$disk0"
MNT=/tmp/mnt-ops; mkdir -p "$MNT"
fs_write() {  # a file system on disk0 with one file of known content, cleanly unmounted
  mkfs.ext4 -q -F "$disk0"; mount "$disk0" "$MNT"
  dd if=/dev/urandom of="$MNT/before" bs=1M count=4 status=none
  md5sum "$MNT/before" | cut -d' ' -f1 >"$W/before.md5"
  umount "$MNT"
}
step fs_on_img0 fs_write
step snap_create rbd snap create rbd/img0@s1
# the image moves on after the snapshot: the snapshot LUN must not see it
after_snap() { mount "$disk0" "$MNT"; echo changed >"$MNT/after"; dd if=/dev/urandom of="$MNT/before" bs=1M count=4 conv=notrunc status=none; umount "$MNT"; }
check img0_changed_after_snapshot after_snap
check snap_export sh -c "'$LAB/export.sh' add --backstore user:rbd/snap0 --arg size=512M --arg cfgstring=rbd/img0@s1 --target '$TGT' --acl '$INITIATOR' | tee /dev/stderr | grep -qx 1"
check snap_disk lun_disk 1
snap=$OUT; fact snap_dev "$snap"
snap_ro() {  # the kernel saw the write-protect bit of MODE SENSE
  local ro; ro=$(cat "/sys/block/${snap#/dev/}/ro"); echo "ro=$ro"
  dmesg | grep -E "${snap#/dev/}\] Write Protect is on"
  [ "$ro" = 1 ] && grep -qE 'device=snap0 .*read-only snapshot' "$DLOG"
}
check snap_write_protected snap_ro
snap_write_refused() {  # past the block layer's ro: WRITE(10) of one block on the sg node
  local sg out rc=0; sg=/dev/$(ls "/sys/block/${snap#/dev/}/device/scsi_generic"); echo "$snap is $sg"
  out=$(sg_raw -v -s 512 -i /dev/zero "$sg" 2a 00 00 00 00 10 00 00 01 00 2>&1) || rc=$?
  echo "$out"; echo "sg_raw exit $rc"
  [ "$rc" != 0 ] && grep -qi 'data protect' <<<"$out" && grep -qiE 'write protected' <<<"$out"
}
check snap_write_refused_data_protect snap_write_refused
snap_mount_ro() {  # the point in time of the snapshot: the old content, no "after"
  mount -o ro "$snap" "$MNT"; local rc=0
  [ "$(md5sum "$MNT/before" | cut -d' ' -f1)" = "$(cat "$W/before.md5")" ] || { echo "content differs"; rc=1; }
  [ ! -e "$MNT/after" ] || { echo "a file written after the snapshot is there"; rc=1; }
  umount "$MNT"; return $rc
}
check snap_mount_ro_point_in_time snap_mount_ro
check snap_unchanged_by_use sh -c "rbd diff rbd/img0@s1 --from-snap s1 --format json | tee /dev/stderr | grep -qx '\[\]'"

# --- namespaces (issue 14.4): an image in a namespace, end to end --------------------------
step ns_create sh -c "rbd namespace create --pool rbd --namespace ns1 && rbd create --size 256M rbd/ns1/img2"
check ns_export sh -c "'$LAB/export.sh' add --backstore user:rbd/disk2 --arg size=256M --arg cfgstring=rbd/ns1/img2 --target '$TGT' --acl '$INITIATOR' | tee /dev/stderr | grep -qx 2"
check ns_disk lun_disk 2
nsdisk=$OUT; fact ns_dev "$nsdisk"
check ns_fio_verify fio_verify "$nsdisk" 8M
ns_data_where_it_belongs() {  # written into rbd/ns1/img2, not into an image of the default namespace
  local used; used=$(rbd du rbd/ns1/img2 --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])')
  echo "rbd/ns1/img2 used: $used"; [ "$used" -gt 0 ] && ! rbd info rbd/img2 2>/dev/null
}
check ns_data_in_namespace ns_data_where_it_belongs
check ns_snapshot_read_only sh -c "rbd snap create rbd/ns1/img2@n1 && '$LAB/export.sh' add --backstore user:rbd/snap2 --arg size=256M --arg cfgstring=rbd/ns1/img2@n1 --target '$TGT' --acl '$INITIATOR' >/dev/null && d=\$('$LAB/initiator.sh' disk --target '$TGT' --initiator-name '$INITIATOR' --lun 3) && cmp -n 1048576 \"\$d\" '$nsdisk' && [ \$(cat /sys/block/\${d#/dev/}/ro) = 1 ]"

# --- per-LUN QoS (issue 14.2) -------------------------------------------------------------
# librbd's own limiter on LUN 0 (rbd/img0, "$disk0", a stock targetcli export), set
# live with `targetcli-rbd qos` as the image's settings (image metadata conf_rbd_qos_*):
# fio random reads through the initiator land within 10 % of the limit, lifting it
# restores the rate, and the daemon's worker is never restarted. 64-128 MiB of disk0
# (written first: reads of unwritten objects would skip the OSD); leaves img0 unlimited.
QOS_REGION=(--offset=64M --size=64M)
qos_rate() {  # iops|bw BS SECONDS: fio random reads at QD 16 on disk0 -> IOPS or bytes/s
  local out; out=$(fio --name=qos --filename="$disk0" --direct=1 --ioengine=libaio \
    --iodepth=16 --rw=randread --bs="$2" "${QOS_REGION[@]}" --time_based --runtime="$3" \
    --ramp_time=2 --output-format=json)
  python3 -c 'import json,sys; s=sys.stdin.read(); r=json.loads(s[s.index("{"):])["jobs"][0]["read"]
print(int(r["iops"] if sys.argv[1] == "iops" else r["bw_bytes"]))' "$1" <<<"$out"
}
within_10pct() {  # MEASURED LIMIT
  echo "measured $1, limit $2"; [ $(( ($1 - $2) * 10 )) -le "$2" ] && [ $(( ($2 - $1) * 10 )) -le "$2" ]
}
qos_img_setting() { rbd config image list rbd/img0 | awk -v k="$1" '$1 == k {print $2, $3}'; }
our_workers >"$W/qos.workers"
check qos_fill dd if=/dev/urandom of="$disk0" bs=1M seek=64 count=64 oflag=direct conv=fsync status=none
qos_show_unlimited() {  # nothing set: no limit, from the client; this gateway's LUN named
  local out; out=$(targetcli-rbd qos rbd/img0); echo "$out"
  grep -q 'user:rbd/disk0 here' <<<"$out"
  grep -qE '^ +iops +0 \(no limit\) +from the client' <<<"$out"
}
check qos_show_unlimited qos_show_unlimited
qos_unlimited_iops() {
  local u; u=$(qos_rate iops 4k 10); fact qos_iops_unlimited "$u"
  # a third of it (a multiple of 10, at least 50): well below what the LUN does
  local l=$(( u / 30 * 10 )); [ "$l" -ge 50 ] || l=50; echo "$l" >"$W/qos.limit"
  fact qos_iops_limit "$l"; [ "$u" -ge $(( 3 * l )) ]
}
check qos_unlimited_iops qos_unlimited_iops
QL=$(cat "$W/qos.limit" 2>/dev/null || echo 100)
qos_set_iops() {
  targetcli-rbd qos rbd/img0 --iops "$QL" | tee /dev/stderr | grep "rbd_qos_iops_limit=$QL" >/dev/null
  expect_eq "$(qos_img_setting rbd_qos_iops_limit)" "$QL image"
}
check qos_set_iops qos_set_iops
qos_iops_limited() { local m; m=$(qos_rate iops 4k 15); fact qos_iops_limited "$m"; within_10pct "$m" "$QL"; }
check qos_iops_within_10pct qos_iops_limited
check qos_show_image_source sh -c "targetcli-rbd qos rbd/img0 | tee /dev/stderr | grep -qE '^ +iops +$QL IOPS +from the image'"
check qos_lift_iops sh -c "targetcli-rbd qos rbd/img0 --iops 0 | tee /dev/stderr | grep -q 'rbd_qos_iops_limit=$QL -> 0'"
# the lift reaches the open image on its next refresh (asynchronous): a second window
# if the first one still overlapped the old limit (seen once: 181 IOPS with 140 lifted)
qos_iops_restored() {
  local m try
  for try in 1 2; do
    m=$(qos_rate iops 4k 8); fact "qos_iops_lifted_$try" "$m"
    [ "$m" -gt $(( 2 * QL )) ] && return 0
  done
  return 1
}
check qos_iops_restored qos_iops_restored
qos_unlimited_bps() {  # 64 KiB reads; the limit: a third of the rate, in whole MiB/s
  local u; u=$(qos_rate bw 64k 8); fact qos_bps_unlimited "$u"
  local l=$(( u / 3 >> 20 )); [ "$l" -ge 1 ] || l=1; echo "$l" >"$W/qos.bps"
  fact qos_bps_limit "${l}M"; [ "$u" -ge $(( 3 * (l << 20) )) ]
}
check qos_unlimited_bps qos_unlimited_bps
QB=$(cat "$W/qos.bps" 2>/dev/null || echo 4)
qos_set_bps() {  # --clear first: the image's iops=0 goes, bps comes
  targetcli-rbd qos rbd/img0 --clear --bps "${QB}M" | tee /dev/stderr | grep "rbd_qos_bps_limit=$(( QB << 20 ))" >/dev/null
  expect_eq "$(qos_img_setting rbd_qos_bps_limit)" "$(( QB << 20 )) image"
  expect_eq "$(qos_img_setting rbd_qos_iops_limit)" "0 config"
}
check qos_set_bps qos_set_bps
qos_bps_limited() { local m; m=$(qos_rate bw 64k 15); fact qos_bps_limited "$m"; within_10pct "$m" $(( QB << 20 )); }
check qos_bps_within_10pct qos_bps_limited
qos_clear() {  # the image has no QoS setting of its own left (later sections: unlimited)
  targetcli-rbd qos rbd/img0 --clear
  ! rbd config image list rbd/img0 | grep -E '^rbd_qos_' | grep -vE ' config$'
}
check qos_clear qos_clear
qos_bps_restored() { local m; m=$(qos_rate bw 64k 8); fact qos_bps_lifted "$m"; [ "$m" -gt $(( 2 * (QB << 20) )) ]; }
check qos_bps_restored qos_bps_restored
qos_no_restart() {  # the same worker processes served it all: no restart, no reopen
  local before; before=$(cat "$W/qos.workers"); echo "workers before: $before, now: $(our_workers)"
  [ -n "$before" ] && [ "$before" = "$(our_workers)" ]
}
check qos_no_restart qos_no_restart

# --- the local block device (issue 14.3) ----------------------------------------------------
# targetcli-rbd export --local: rbd/local0 as a SCSI disk of this host through LIO's
# loopback fabric (tcm_loop), no iSCSI; a file system on it, data read back past the
# page cache; UNMAP (blkdiscard), WRITE SAME and GET LBA STATUS as over iSCSI; a mounted
# disk is not pulled away; list, save, unexport (disk and loopback target gone); then
# rbd/img0 gets a local disk beside its iSCSI LUN (one backstore, two fabrics).
TRBD=(targetcli-rbd)
LCFS=/sys/kernel/config/target/loopback
LMNT=/tmp/mnt-local; mkdir -p "$LMNT"
used_of() { rbd du "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])'; }
json_get() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d if d is not None else "")' "$1"; }
check local_image_create rbd create --size 256M rbd/local0
local_export() {  # the disk is named in the answer; a second run changes nothing
  local out dev; out=$("${TRBD[@]}" --json export rbd/local0 --local); echo "$out"
  dev=$(json_get local.device <<<"$out"); [ -b "$dev" ]
  json_get serial <<<"$out" >"$W/local.serial"; echo "$dev" >"$W/local.dev"
  ls -d "$LCFS"/naa.*/tpgt_1/lun/lun_0
  "${TRBD[@]}" export rbd/local0 --local | tee /dev/stderr | grep 'nothing to change' >/dev/null
}
check local_export local_export
ldisk=$(cat "$W/local.dev" 2>/dev/null || echo /dev/no-local-disk); fact local_dev "$ldisk"
local_disk_is_the_image() {  # a disk of tcm_loop's SCSI host, the image's size and serial
  local d=${ldisk#/dev/} host
  host=$(basename "$(readlink -f "/sys/block/$d/device/../..")"); echo "$ldisk on $host"
  grep -q tcm_loop "/sys/class/scsi_host/$host/proc_name"
  expect_eq "$(cat "/sys/block/$d/device/vendor" | tr -d ' ')" LIO-ORG
  expect_eq "$(blockdev --getsize64 "$ldisk")" $((256 << 20))
  sg_inq -p 0x80 "$ldisk" | tee /dev/stderr | grep -F "$(cat "$W/local.serial")" >/dev/null
}
check local_disk_is_the_image local_disk_is_the_image
local_fs_roundtrip() {  # files written, caches dropped, read back from the image
  mkfs.ext4 -q -F "$ldisk"; mount "$ldisk" "$LMNT"
  dd if=/dev/urandom of="$LMNT/big" bs=1M count=32 status=none
  local i rc=0; for i in 1 2 3 4 5; do head -c $((i * 4096 + 17)) /dev/urandom >"$LMNT/small$i"; done
  (cd "$LMNT" && md5sum big small*) >"$W/local.md5"
  umount "$LMNT"; sync; echo 3 >/proc/sys/vm/drop_caches
  mount "$ldisk" "$LMNT"; (cd "$LMNT" && md5sum -c "$W/local.md5") || rc=1
  umount "$LMNT"
  local used; used=$(used_of rbd/local0); echo "rbd/local0 used: $used"
  [ "$used" -ge $((32 << 20)) ] && return $rc
}
check local_fs_roundtrip local_fs_roundtrip
local_busy_refused() {  # unexport of a mounted local disk: refused, nothing removed
  mount "$ldisk" "$LMNT"; local rc=0 out
  out=$("${TRBD[@]}" unexport rbd/local0 2>&1) && rc=1; echo "$out"
  grep -qF "in use ($ldisk mounted on $LMNT)" <<<"$out" || rc=1
  [ -b "$ldisk" ] && ls -d "$LCFS"/naa.*/tpgt_1/lun/lun_0 || rc=1
  umount "$LMNT"; return $rc
}
check local_unexport_refused_while_mounted local_busy_refused
# raw regions from here (the file system is done): discard 128M+64M, mapped 224M+8M,
# write same (unmap) 240M+4M, write same (data) 248M+1M
local_discard() {  # UNMAP: 64 MiB written, then discarded: the image's used size drops
  local off=$((128 << 20)) len=$((64 << 20)) before after
  dd if=/dev/urandom of="$ldisk" bs=4M seek=$((off >> 22)) count=$((len >> 22)) oflag=direct status=none
  before=$(used_of rbd/local0)
  blkdiscard -o "$off" -l "$len" "$ldisk"
  after=$(used_of rbd/local0); echo "used before=$before after=$after"
  [ "$after" -le $((before - len / 2)) ]
}
check local_discard_frees_space local_discard
local_lba_status() {  # GET LBA STATUS: the discarded range deallocated, a written one mapped
  local bs freed mapped; bs=$(blockdev --getss "$ldisk")
  dd if=/dev/urandom of="$ldisk" bs=4M seek=56 count=2 oflag=direct status=none
  sg_get_lba_status --lba=$(( (128 << 20) / bs )) "$ldisk"
  freed=$(sg_get_lba_status -bb --lba=$(( (128 << 20) / bs )) "$ldisk" | tr -d ' \n')
  mapped=$(sg_get_lba_status -bb --lba=$(( (224 << 20) / bs )) "$ldisk" | tr -d ' \n')
  echo "provisioning status at 128M: $freed (1 deallocated), at 224M: $mapped (0 mapped)"
  [ "$freed" = 1 ] && [ "$mapped" = 0 ]
}
check local_get_lba_status local_lba_status
local_write_same() {  # WRITE SAME with UNMAP reads back zeroes and frees; with data repeats it
  local bs n lba before after i; bs=$(blockdev --getss "$ldisk")
  n=$(( (4 << 20) / bs )); lba=$(( (240 << 20) / bs ))
  dd if=/dev/urandom of="$ldisk" bs=4M seek=60 count=1 oflag=direct status=none
  before=$(used_of rbd/local0)
  sg_write_same --16 --unmap --lba="$lba" --num="$n" --in=/dev/zero "$ldisk"
  after=$(used_of rbd/local0); echo "used before=$before after=$after"
  cmp -n $((4 << 20)) /dev/zero <(dd if="$ldisk" bs=4M skip=60 count=1 iflag=direct status=none)
  [ "$after" -lt "$before" ]
  head -c "$bs" /dev/urandom >"$W/blk"; lba=$(( (248 << 20) / bs ))
  sg_write_same --16 --lba="$lba" --num=$(( (1 << 20) / bs )) --in="$W/blk" "$ldisk"
  for i in 0 100 $(( (1 << 20) / bs - 1 )); do
    cmp "$W/blk" <(dd if="$ldisk" bs="$bs" skip=$((lba + i)) count=1 iflag=direct status=none)
  done
  echo "the block repeated over 1 MiB"
}
check local_write_same local_write_same
local_list() {  # list names the disk and its loopback target
  "${TRBD[@]}" list | tee /dev/stderr | grep -E "^  local disk $ldisk \(SCSI [0-9]+:0:1:0\)  LUN 0 of loopback target naa\." >/dev/null
  expect_eq "$("${TRBD[@]}" --json list | python3 -c 'import json,sys
e=[x for x in json.load(sys.stdin)["exports"] if x["image"]=="rbd/local0"][0]
print(e["local"][0]["device"], len(e["luns"]))')" "$ldisk 0"
}
check local_list local_list
local_saved() {  # save keeps it: a loopback target whose LUN 0 is the backstore
  "${TRBD[@]}" save "$W/saved.json"
  python3 -c 'import json,sys
c=json.load(open(sys.argv[1]))
t=[t for t in c["targets"] if t["fabric"]=="loopback"]
print([(x["wwn"], [l["storage_object"] for g in x["tpgs"] for l in g["luns"]]) for x in t])
assert any(l["storage_object"]=="/backstores/user/rbd.local0" for x in t for g in x["tpgs"] for l in g["luns"])' "$W/saved.json"
}
check local_saved local_saved
local_resize() {  # resize grows the image, and the local disk sees it (rescanned)
  "${TRBD[@]}" resize rbd/local0 320M | tee /dev/stderr | grep "local disk $ldisk .*is rescanned" >/dev/null
  local i; for i in $(seq 20); do [ "$(blockdev --getsize64 "$ldisk")" = $((320 << 20)) ] && break; sleep 0.5; done
  expect_eq "$(blockdev --getsize64 "$ldisk")" $((320 << 20))
}
check local_resize_seen local_resize
local_unexport() {  # the disk and the loopback target go, tcm_loop's nexus with them
  local d=${ldisk#/dev/}
  "${TRBD[@]}" unexport rbd/local0
  [ ! -e "/sys/block/$d" ] || { echo "$ldisk is still there"; return 1; }
  [ -z "$(ls "$LCFS" 2>/dev/null | grep '^naa\.')" ] || { echo "loopback target left: $(ls "$LCFS")"; return 1; }
  if ls -d /sys/kernel/config/target/core/user_*/rbd.local0 2>/dev/null; then echo "backstore left"; return 1; fi
  if dmesg | grep -E 'Unable to locate struct scsi_device|Unable to remove TCM_Loop I_T Nexus'; then return 1; fi
  "${TRBD[@]}" unexport rbd/local0 | grep 'not exported' >/dev/null
}
check local_unexport local_unexport
local_beside_iscsi() {  # img0 (iSCSI LUN 0 of $TGT, logged in) also gets a local disk: the same data
  local out dev; out=$("${TRBD[@]}" --json export rbd/img0 --local); echo "$out"
  dev=$(json_get local.device <<<"$out"); [ -b "$dev" ]; echo "$dev" >"$W/beside.dev"
  expect_eq "$(json_get backstore <<<"$out")" disk0
  sync; echo 3 >/proc/sys/vm/drop_caches
  cmp -n $((4 << 20)) "$disk0" "$dev"; echo "$dev reads what $disk0 reads"
  "${TRBD[@]}" list | grep -A3 '^rbd/img0 ' | tee /dev/stderr | grep "local disk $dev" >/dev/null
}
check local_beside_iscsi local_beside_iscsi
local_unexport_keeps_iscsi() {  # unexport --local: the local disk goes, the iSCSI LUN stays
  local dev; dev=$(cat "$W/beside.dev")
  "${TRBD[@]}" unexport rbd/img0 --local
  [ ! -e "/sys/block/${dev#/dev/}" ]
  [ -z "$(ls "$LCFS" 2>/dev/null | grep '^naa\.')" ]
  [ -d "/sys/kernel/config/target/iscsi/$TGT/tpgt_1/lun/lun_0" ]
  dd if="$disk0" of=/dev/null bs=1M count=4 iflag=direct status=none && echo "$disk0 still reads"
}
check local_unexport_keeps_iscsi local_unexport_keeps_iscsi

# --- Prometheus metrics (issue 14.1) --------------------------------------------------------
# The daemon serves /metrics on its default address (127.0.0.1:9289, loopback only).
# fio runs with an exact number of ios (QD1 and O_DIRECT: the block layer merges
# nothing; randread opens --readonly, so no udev probe follows) on a stretch of disk0
# nothing else uses; the scrapes around each must agree with fio's own totals
# (commands and bytes) within a few percent, every READ/WRITE must be in the latency
# histogram, and a killed worker's successor must carry the counters on.
METRICS_URL=http://127.0.0.1:9289/metrics
cat >"$W/prom.py" <<'EOF'
"""prom.py scrape URL OUT | compare BEFORE AFTER FIO KIND TOL | histogram SCRAPE |
restart BEFORE AFTER: disk0's samples of our /metrics, and the checks on them."""
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families

def load(p):
    return json.load(open(p))

def scrape(url, out):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lab = s.labels
            if lab.get("backstore") not in (None, "disk0"):
                continue
            if "backstore" in lab and (lab["pool"], lab["image"]) != ("rbd", "img0"):
                sys.exit("disk0 has labels %s, expected pool=rbd image=img0" % lab)
            key = "|".join([s.name] + ["%s=%s" % kv for kv in sorted(lab.items())
                                       if kv[0] in ("kind", "le", "state", "errno", "sense_key")])
            got[key] = s.value
    json.dump(got, open(out, "w"), indent=1, sort_keys=True)
    print({k: v for k, v in got.items() if "_bucket" not in k})

def close(what, got, want, tol):
    ok = want > 0 and abs(got - want) <= tol * want
    print("%s: metrics delta %d, fio %d (%+.2f%%): %s" % (what, got, want,
          100.0 * (got - want) / max(want, 1), "ok" if ok else "NOT within %.0f%%" % (tol * 100)))
    return ok

def compare(before, after, fio, kind, tol):
    b, a = load(before), load(after)
    job = json.load(open(fio))["jobs"][0][kind]
    d = lambda k: a.get(k, 0) - b.get(k, 0)
    ok = close(kind + " commands", d("tcmu_rbd_lun_commands_total|kind=" + kind), job["total_ios"], tol)
    ok &= close(kind + " bytes", d("tcmu_rbd_lun_bytes_total|kind=" + kind), job["io_bytes"], tol)
    ok &= close(kind + " latency count", d("tcmu_rbd_lun_latency_seconds_count|kind=" + kind),
                job["total_ios"], tol)
    sys.exit(0 if ok else 1)

def histogram(path):
    a, ok = load(path), True
    for kind in ("read", "write"):
        n = a["tcmu_rbd_lun_commands_total|kind=" + kind]
        cnt = a["tcmu_rbd_lun_latency_seconds_count|kind=" + kind]
        b = sorted((float(k.split("le=")[1].split("|")[0]), v) for k, v in a.items()
                   if k.startswith("tcmu_rbd_lun_latency_seconds_bucket|") and "kind=%s|" % kind in k + "|")
        counts = [v for _, v in b]
        print(kind, "commands", n, "histogram count", cnt, "buckets", counts)
        ok &= cnt == n == counts[-1] and counts == sorted(counts) and len(counts) > 10
    sys.exit(0 if ok else 1)

def restart(before, after):
    b, a = load(before), load(after)
    r0, r1 = b["tcmu_rbd_lun_worker_restarts_total"], a["tcmu_rbd_lun_worker_restarts_total"]
    down = [k for k in b if k.split("|")[0].endswith(("_total", "_count")) and a.get(k, 0) < b[k]]
    reads = a["tcmu_rbd_lun_commands_total|kind=read"] - b["tcmu_rbd_lun_commands_total|kind=read"]
    print("worker restarts %d -> %d; reads since %d; counters that went down: %s" % (r0, r1, reads, down))
    sys.exit(0 if r1 == r0 + 1 and not down and reads >= 64 else 1)

cmd = sys.argv[1]
if cmd == "scrape": scrape(*sys.argv[2:4])
elif cmd == "compare": compare(*sys.argv[2:6], float(sys.argv[6]))
elif cmd == "histogram": histogram(sys.argv[2])
elif cmd == "restart": restart(*sys.argv[2:4])
EOF
PROM=(/usr/bin/python3 "$W/prom.py")
metrics_served() {
  "${PROM[@]}" scrape "$METRICS_URL" "$W/m0.json"
  grep -q '"tcmu_rbd_luns|state=ready": [1-9]' "$W/m0.json"
  grep -q '"tcmu_rbd_uptime_seconds": ' "$W/m0.json"
  grep -q '"tcmu_rbd_lun_commands_total|kind=read": ' "$W/m0.json"
}
check metrics_served metrics_served
check metrics_loopback_only sh -c "ss -Hltn 'sport = :9289' | tee /dev/stderr | awk '{print \$4}' | grep -qx '127.0.0.1:9289' && [ \$(ss -Hltn 'sport = :9289' | wc -l) = 1 ]"
metrics_fio() {  # randwrite|randread tolerance: 1024 ios of 16 KiB at 448 MiB
  local rw=$1 tol=$2 kind=${1#rand} ro=(); [ "$rw" = randread ] && ro=(--readonly)
  if grep -q "^$disk0 " /proc/mounts; then echo "$disk0 is mounted: its file system's I/O would count too"; false; fi
  udevadm settle --timeout=10 2>/dev/null || true   # nothing of a previous job still probing
  "${PROM[@]}" scrape "$METRICS_URL" "$W/m_$kind.0.json" >/dev/null
  fio --name=metrics --filename="$disk0" --direct=1 --ioengine=libaio --iodepth=1 --rw="$rw" \
    --bs=16k --offset=448M --size=16M ${ro[@]+"${ro[@]}"} --output-format=json --output="$W/fio_$kind.json"
  "${PROM[@]}" scrape "$METRICS_URL" "$W/m_$kind.1.json" >/dev/null
  "${PROM[@]}" compare "$W/m_$kind.0.json" "$W/m_$kind.1.json" "$W/fio_$kind.json" "$kind" "$tol"
}
check metrics_fio_writes metrics_fio randwrite 0.02
check metrics_fio_reads metrics_fio randread 0.03
check metrics_latency_counts "${PROM[@]}" histogram "$W/m_read.1.json"
disk0_worker() {  # the pid of the worker serving disk0 ("" while none)
  local u
  for u in /sys/class/uio/uio*; do
    if grep -q '/disk0/' "$u/name" 2>/dev/null; then
      pgrep -f -- "-m [t]cmu_rbd[.]worker --uio ${u##*/} " || true
    fi
  done
}
metrics_worker_restart() {  # SIGKILL disk0's worker: its successor carries the counters on
  local pid new="" i
  "${PROM[@]}" scrape "$METRICS_URL" "$W/m_r0.json" >/dev/null
  pid=$(disk0_worker); echo "disk0's worker: pid $pid"; [ -n "$pid" ]
  kill -KILL "$pid"
  for i in $(seq 1 60); do new=$(disk0_worker); [ -n "$new" ] && [ "$new" != "$pid" ] && break; sleep 1; done
  echo "its successor: pid $new"; [ -n "$new" ] && [ "$new" != "$pid" ]
  dd if="$disk0" of=/dev/null bs=16k skip=28672 count=64 iflag=direct status=none   # waits for it
  "${PROM[@]}" scrape "$METRICS_URL" "$W/m_r1.json" >/dev/null
  "${PROM[@]}" restart "$W/m_r0.json" "$W/m_r1.json"
}
check metrics_worker_restart metrics_worker_restart

# --- teardown ---------------------------------------------------------------------------------
step teardown "$LAB/teardown.sh"
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
