#!/usr/bin/env bash
# open-iscsi initiator of the lab. Usage:
#   initiator.sh login --target IQN --initiator-name IQN [--portal 127.0.0.1:3260]
#                      [--cmds-max 128] [--queue-depth 128] [--lun 0]
#   initiator.sh disk  --target IQN [--lun N]     (rescan, wait for the LUN's disk)
#   initiator.sh logout [--target IQN]            (all sessions without --target)
#   initiator.sh partition --disk /dev/sdX [--end 100%]
#                      a new GPT with one partition from 1 MiB; prints its path
#                      once the kernel and udev are done with it
#   initiator.sh multipath [--policy group_by_prio|multibus] [--stop]
#                      dm-multipath over the sessions' disks (ALUA priorities;
#                      multipathd in the foreground; udevd started if none runs)
# login/disk print the disk's path (/dev/sdX) once its size is non-zero.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action=${1:-}; shift || true
target= iname= portal=127.0.0.1:3260 cmds_max=128 qdepth=128 lun=0 wait_s=90
policy=group_by_prio stop_mp= disk= end=100%
while [ $# -gt 0 ]; do
  case $1 in
    --target) target=$2; shift 2 ;;
    --initiator-name) iname=$2; shift 2 ;;
    --portal) portal=$2; shift 2 ;;
    --cmds-max) cmds_max=$2; shift 2 ;;
    --queue-depth) qdepth=$2; shift 2 ;;
    --lun) lun=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --stop) stop_mp=1; shift ;;
    --disk) disk=$2; shift 2 ;;
    --end) end=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
case $portal in *:*) ;; *) portal=$portal:3260 ;; esac
case $portal in 0.0.0.0:*) die "0.0.0.0 is not a portal" ;; esac

iscsid_up() { iscsiadm -m session >/dev/null 2>&1 || [ $? -eq 21 ]; }  # 21: no sessions
start_iscsid() {
  if have_systemd; then systemctl start iscsid.service
  elif ! alive iscsid; then
    spawn iscsid iscsid -f
  fi
  wait_until 30 iscsid iscsid_up
}

# the sdX of LUN $lun in the session to $target (from iscsiadm -m session -P3)
disk_of() {
  iscsiadm -m session -P3 2>/dev/null | awk -v t="$target" -v l="$lun" '
    /^Target: / { intgt = ($2 == t) }
    /Lun: / { n = $NF; sub(/.*Lun: /, "", n) ; curlun = n }
    intgt && /Attached scsi disk/ && curlun == l { print $4; exit }'
}
disk_ready() {
  local d; d=$(disk_of) && [ -n "$d" ] && [ -e "/sys/block/$d/size" ] \
    && [ "$(cat "/sys/block/$d/size")" -gt 0 ] && [ -b "/dev/$d" ]
}

case $action in
  login)
    [ -n "$target" ] && [ -n "$iname" ] || die "--target and --initiator-name are required"
    mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi/nodes /var/lib/iscsi/send_targets
    if [ "$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi 2>/dev/null)" != "$iname" ]; then
      echo "InitiatorName=$iname" >/etc/iscsi/initiatorname.iscsi
      if have_systemd && systemctl -q is-active iscsid.service; then systemctl restart iscsid.service; fi
      if alive iscsid; then stop iscsid; fi
    fi
    start_iscsid
    iscsiadm -m discovery -t sendtargets -p "$portal"
    # one session per portal and target (several portals: multipath)
    if ! iscsiadm -m session 2>/dev/null | grep -qE "\] ${portal//./\\.},[0-9]+ $target( |\$)"; then
      # node settings take effect only if written after discovery and before login
      iscsiadm -m node -T "$target" -p "$portal" -o update -n node.session.cmds_max -v "$cmds_max"
      iscsiadm -m node -T "$target" -p "$portal" -o update -n node.session.queue_depth -v "$qdepth"
      iscsiadm -m node -T "$target" -p "$portal" --login
    fi
    wait_until "$wait_s" "the disk of LUN $lun" disk_ready
    iscsiadm -m session -P3
    result "/dev/$(disk_of)"
    ;;
  disk)
    [ -n "$target" ] || die "--target is required"
    disk_ready || iscsiadm -m session --rescan
    wait_until "$wait_s" "the disk of LUN $lun" disk_ready
    result "/dev/$(disk_of)"
    ;;
  partition)
    [ -b "$disk" ] || die "--disk: '$disk' is not a block device"
    settle() { udevadm settle -t 30 || true; }
    part_ready() { [ -b "${disk}1" ]; }
    # parted tells the kernel about the partition itself (BLKPG). udevd then reads
    # the table again (BLKRRPART) because a writer closed the disk, so ${disk}1
    # goes and comes back: wait for udev before anyone uses it. A partprobe here
    # raced with that re-read and lost the partition for good (CI, 2026-12-07).
    parted -s "$disk" mklabel gpt mkpart p1 ext4 1MiB "$end"
    settle
    for _ in $(seq 20); do part_ready && break; sleep 0.5; done
    if ! part_ready; then
      echo "no ${disk}1 after parted: $(tr -s ' \n' ' ' </proc/partitions)"; dmesg | tail -n 10
      partprobe "$disk" || blockdev --rereadpt "$disk" || true
      settle
    fi
    wait_until 30 "${disk}1" part_ready
    settle
    result "${disk}1"
    ;;
  logout)
    if [ -n "$target" ]; then
      iscsiadm -m node -T "$target" --logout || true
      iscsiadm -m node -T "$target" -o delete || true
    else
      iscsiadm -m node --logoutall=all || true
      iscsiadm -m node -o delete || true
    fi
    result "logged out"
    ;;
  multipath)
    if [ -n "$stop_mp" ]; then
      if alive multipathd; then multipathd shutdown || stop multipathd; fi
      multipath -F || true
      result "multipath stopped"; exit 0
    fi
    case $policy in group_by_prio|multibus) ;; *) die "--policy group_by_prio|multibus" ;; esac
    modprobe dm-multipath; modprobe scsi_dh_alua || true
    cat >/etc/multipath.conf <<EOF
defaults {
    user_friendly_names yes
    find_multipaths no
    polling_interval 2
}
blacklist {
    devnode "^(ram|loop|fd|md|dm-|sr|scd|st|vd|nbd|rbd|zram)[0-9]*"
}
devices {
    device {
        vendor "LIO-ORG"
        product ".*"
        hardware_handler "1 alua"
        path_grouping_policy $policy
        path_selector "round-robin 0"
        rr_min_io_rq 1
        path_checker tur
        prio alua
        failback immediate
        no_path_retry queue
    }
}
EOF
    if ! pgrep -x systemd-udevd >/dev/null; then
      /lib/systemd/systemd-udevd --daemon
      udevadm trigger --subsystem-match=block --action=add; udevadm settle -t 30 || true
    fi
    if alive multipathd; then
      multipathd reconfigure
    else
      spawn multipathd multipathd -d -s -v 3
      wait_until 30 multipathd multipathd show status
    fi
    multipath -r >/dev/null 2>&1 || true
    result "multipath $policy"
    ;;
  *) die "usage: initiator.sh login|disk|logout|partition|multipath ..." ;;
esac
