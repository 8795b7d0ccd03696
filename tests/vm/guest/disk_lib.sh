# Disk helpers for the single-gateway guest scripts (daemon.sh, faults.sh), sourced
# after lib.sh: data written and verified through the initiator's block device.
# (ha_lib.sh has its own, over the multipath device.)

fio_verify() {  # dev size [extra fio args]: the report to stderr, its errors= to stdout
  local dev=$1 size=$2 out rc=0; shift 2
  # the report goes to a file, then to our stderr as it is (tee /dev/stderr reopens
  # the stderr file and failed with EBUSY when two ran in the background)
  out=$(mktemp /tmp/fio-verify.XXXXXX)
  fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 \
    --rw=randwrite --bs=4k --size="$size" --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --verify_backlog=1024 --output-format=terse --minimal "$@" --output="$out" \
    || rc=$?   # under check's set -e too: the report is shown before the failure
  cat "$out" >&2; awk -F';' '{print "fio errors="$5}' "$out"; rm -f "$out"
  return $rc
}
dd_roundtrip() {  # dev [MiB offset]: disk0's ext4 partition is 1-257 MiB, keep clear
  local dev=$1 at=${2:-8} pat; pat=$(mktemp /tmp/pat.XXXXXX)
  dd if=/dev/urandom of="$pat" bs=1M count=4 status=none
  dd if="$pat" of="$dev" bs=1M seek="$at" oflag=direct conv=fsync status=none
  dd if="$dev" bs=1M skip="$at" count=4 iflag=direct status=none | cmp - "$pat"
  local rc=$?; rm -f "$pat"; [ $rc -eq 0 ] && echo "4 MiB written and read back"; return $rc
}
