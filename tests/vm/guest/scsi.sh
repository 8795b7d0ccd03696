#!/usr/bin/env bash
# Guest side of tests/vm/test_scsi_lab.py: issue 11's SCSI answers from OUR daemon
# through the real kernel (LIO, TCMU) and initiator (open-iscsi; SG_IO via sg3-utils) on
# two LUNs: "stock" (stock targetcli, kernel defaults: hw_max_sectors 128, exported by
# vagrant/scripts/export.sh) and "ext" (`targetcli-rbd export`, the project's defaults).
# Each runs the same suite, checks named "<lun>_<what>": 1. large READ/WRITE, VPD B0;
# 2. LBA range before length; 3. EDTL != CDB length; 4. UNMAP zeroes; 5. INQUIRY;
# 6. EXTENDED COPY / RECEIVE COPY RESULTS; 7. new opcodes, RSOC; COMPARE AND WRITE and
# VERIFY through their tools. Sense comes from the raw bytes sg3-utils print with -v/-vv.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/scsi.sh --timeout 900
# shellcheck disable=SC2046  # CDB bytes from the cdb* helpers are split into words on purpose
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# the suite's checks set globals (HWMAX, NB, MAX_UNMAP...): run them in this shell
CHECK_SHELL=same

DAEMON=${TCMU_DAEMON:-tcmu-rbd}
REPO=${TCMU_RBD_REPO:?}
INIT=iqn.2024-01.org.tcmu-rbd.lab:initiator
T_STOCK=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:scsi-stock
T_EXT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:scsi-ext
CFS=/sys/kernel/config/target
W=/tmp/scsi              # pattern and data files (tmpfs)
BS=512                   # the LUNs' block size (checked in <lun>_identity)
MB=$((1048576 / BS))     # blocks per MiB
mkdir -p "$W"

# ---- bytes -------------------------------------------------------------------------
hex_of() {  # FILE [OFFSET [COUNT]]: those bytes as one lowercase hex string
  od -An -v -tx1 ${2:+-j "$2"} ${3:+-N "$3"} "$1" | tr -d ' \n'
}
be_of() {  # FILE OFFSET COUNT: a big-endian unsigned field, decimal
  local h; h=$(hex_of "$1" "$2" "$3"); echo $((16#${h:-0}))
}
hex_to_file() {  # HEX FILE: write the bytes (printf's \xHH escapes)
  # shellcheck disable=SC2059,SC2001  # the format is the data: \xHH escapes only
  printf "$(sed 's/../\\x&/g' <<<"$1")" >"$2"
}
bytes_be() {  # N WIDTH: N as WIDTH big-endian bytes, "00 00 04 00" (-1 with WIDTH 8: all ff)
  printf "%0$(($2 * 2))x" "$1" | sed 's/../& /g; s/ $//'
}
# CDBs: OP BYTE1 LBA N
cdb10() { echo "$1 $2 $(bytes_be "$3" 4) 00 $(bytes_be "$4" 2) 00"; }        # LBA 2-5, length 7-8
cdb12() { echo "$1 $2 $(bytes_be "$3" 4) $(bytes_be "$4" 4) 00 00"; }       # LBA 2-5, length 6-9
cdb16() { echo "$1 $2 $(bytes_be "$3" 8) $(bytes_be "$4" 4) 00 00"; }       # LBA 2-9, length 10-13
cdb_caw() { echo "89 00 $(bytes_be "$1" 8) 00 00 00 $(bytes_be "$2" 1) 00 00"; }  # LBA NoLB

# ---- sense ------------------------------------------------------------------------------
raw_sense_hex() {  # FILE: the first sense data sg3-utils printed after "Raw sense data", as hex
  awk 'done { next }
       /Raw sense data/ { on = 1; next }
       on && /^[[:space:]]+[0-9a-f][0-9a-f]([[:space:]]+[0-9a-f][0-9a-f])*[[:space:]]*$/ {
         gsub(/[[:space:]]/, ""); s = s $0; next }
       on { done = 1 }
       END { print s }' "$1"
}
sense_fields() {  # HEX: sets R_SENSE (KK/AA/QQ), R_INFO (INFORMATION, decimal) and R_SKS
  # (sense-key specific bytes, hex, when SKSV), "-" for what the sense data lacks
  local h=$1 i t l k; local -a b=()
  R_SENSE=- R_INFO=- R_SKS=-
  for ((i = 0; i + 1 < ${#h}; i += 2)); do b+=($((16#${h:i:2}))); done
  local n=${#b[@]}; ((n >= 4)) || return 0
  case $((b[0] & 0x7f)) in
    112 | 113)  # fixed format
      if ((n < 14)); then return 0; fi
      R_SENSE=$(printf '%02x/%02x/%02x' $((b[2] & 15)) "${b[12]}" "${b[13]}")
      if ((b[0] & 0x80)); then R_INFO=$(((b[3] << 24) | (b[4] << 16) | (b[5] << 8) | b[6])); fi
      if ((n >= 18 && (b[15] & 0x80))); then R_SKS=$(printf '%02x%02x%02x' "${b[15]}" "${b[16]}" "${b[17]}"); fi
      ;;
    114 | 115)  # descriptor format: INFORMATION (type 0) and sense-key specific (type 2)
      R_SENSE=$(printf '%02x/%02x/%02x' $((b[1] & 15)) "${b[2]}" "${b[3]}")
      i=8
      while ((i + 1 < n)); do
        t=${b[i]} l=${b[i + 1]}
        if ((t == 0 && l >= 10 && i + 11 < n)); then
          R_INFO=0; for ((k = 4; k < 12; k++)); do R_INFO=$(((R_INFO << 8) | b[i + k])); done
        elif ((t == 2 && l >= 6 && i + 6 < n && (b[i + 4] & 0x80))); then
          R_SKS=$(printf '%02x%02x%02x' "${b[i + 4]}" "${b[i + 5]}" "${b[i + 6]}")
        fi
        i=$((i + 2 + l))
      done
      ;;
  esac
}
sgraw_report() {  # FILE (sg_raw -v's output): sets R_STATUS, R_IN and the sense fields
  R_STATUS=$(sed -n 's/^SCSI Status: *//p' "$1" | sed 's/ *$//' | tail -n 1); : "${R_STATUS:=none}"
  R_IN=$(sed -n 's/^\(Writing\|Received\) \([0-9][0-9]*\) bytes of data.*/\2/p' "$1" | tail -n 1); : "${R_IN:=0}"
  sense_fields "$(raw_sense_hex "$1")"
}
sgraw() {  # SG_RAW_ARGS...: one `sg_raw -v` (its -o file removed first); prints its report
  local rc=0 a prev=''
  for a in "$@"; do if [ "$prev" = -o ]; then rm -f "$a"; fi; prev=$a; done
  sg_raw -v "$@" >"$W/sg_raw.out" 2>&1 || rc=$?
  cat "$W/sg_raw.out"
  sgraw_report "$W/sg_raw.out"
  echo "=> sg_raw exit $rc: status=$R_STATUS sense=$R_SENSE info=$R_INFO sks=$R_SKS bytes_in=$R_IN"
}
expect_scsi() {  # GOOD|KK/AA/QQ SG_RAW_ARGS...: GOOD, or CHECK CONDITION with that sense
  local want=$1 got; shift
  sgraw "$@"
  case $R_STATUS in Good) got=GOOD ;; "Check Condition") got=$R_SENSE ;; *) got=$R_STATUS ;; esac
  [ "$got" = "$want" ] || { echo "expected $want, got $R_STATUS $R_SENSE" >&2; return 1; }
}
expect_in() { [ "$R_IN" = "$1" ] || { echo "received $R_IN bytes, expected $1" >&2; return 1; }; }
expect_info() { [ "$R_INFO" = "$1" ] || { echo "INFORMATION $R_INFO, expected $1" >&2; return 1; }; }
expect_hex() {  # WHAT GOT WANT
  [ "$2" = "$3" ] || { echo "$1: got [$2], expected [$3]" >&2; return 1; }; echo "$1: $2"
}
expect_tool() {  # RC KK/AA/QQ|- CMD...: an sg3-utils tool (give it -vv) exits RC with that sense
  local want_rc=$1 want=$2 rc=0; shift 2
  run_to "$W/tool.out" "$@" || rc=$?
  sense_fields "$(raw_sense_hex "$W/tool.out")"
  echo "=> $1 exit $rc: sense=$R_SENSE info=$R_INFO"
  [ "$rc" = "$want_rc" ] || { echo "exit status $rc, expected $want_rc" >&2; return 1; }
  [ "$want" = - ] || [ "$R_SENSE" = "$want" ] || { echo "sense $R_SENSE, expected $want" >&2; return 1; }
}

run_to() {  # FILE CMD...: CMD's output into FILE, and printed
  local f=$1 rc=0; shift; "$@" >"$f" 2>&1 || rc=$?; cat "$f"; return $rc
}

# ---- data ------------------------------------------------------------------------------
pattern() { head -c "$2" /dev/urandom >"$W/$1"; echo "$W/$1"; }   # NAME BYTES -> path
read_back() {  # LBA N FILE: N blocks at LBA through the block layer (O_DIRECT)
  dd if="$D" of="$3" iflag=direct,skip_bytes,count_bytes bs=1M skip=$(($1 * BS)) \
    count=$(($2 * BS)) status=none
}
holds() {  # FILE LBA N [FILE_BLOCK]: the N blocks at LBA equal FILE's from block FILE_BLOCK (0)
  read_back "$2" "$3" "$B/rb" || return 1
  cmp -n $(($3 * BS)) -i "0:$((${4:-0} * BS))" "$B/rb" "$1" \
    && echo "LBA $2+$3 holds $(basename "$1") from block ${4:-0}"
}
is_zero() {  # LBA N
  read_back "$1" "$2" "$B/rb" && cmp -n $(($2 * BS)) "$B/rb" /dev/zero && echo "LBA $1+$2 reads zero"
}
flipped() {  # FILE OFFSET OUT: a copy of FILE with the byte at OFFSET inverted
  local x; x=$(hex_of "$1" "$2" 1)
  cp "$1" "$3"
  hex_to_file "$(printf '%02x' $((16#$x ^ 0xff)))" "$W/byte"
  dd if="$W/byte" of="$3" bs=1 seek="$2" conv=notrunc status=none
}

# patterns shared by both LUNs (each LUN has its own image)
P64K=$(pattern p64k $((128 * BS)))
P256A=$(pattern p256a $((256 * BS))); P256B=$(pattern p256b $((256 * BS))); P256X=$(pattern p256x $((256 * BS)))
P256V=$(pattern p256v $((256 * BS))); P256W=$(pattern p256w $((256 * BS)))
BAD_AT=$((200 * BS + 77)); P256V_BAD=$W/p256v_bad; flipped "$P256V" "$BAD_AT" "$P256V_BAD"
P2048A=$(pattern p2048a $((2048 * BS))); P2048B=$(pattern p2048b $((2048 * BS))); P2048X=$(pattern p2048x $((2048 * BS)))
PBLK_OLD=$(pattern blk_old "$BS"); PBLK_NEW=$(pattern blk_new "$BS"); PBLK_NEXT=$(pattern blk_next "$BS")
UNMAP_BLOCKS=$((28 * MB))                                # the UNMAP zone: LBA 0 - 28 MiB
PUNMAP=$(pattern unmap $((UNMAP_BLOCKS * BS)))
# each LUN's map (LBA): UNMAP zone 0-28M | READ/WRITE 32M-37M | EDTL 38M | CAW 40M |
# VERIFY 42M | WAV 44M, 45M | XCOPY source 48M, destinations 50M-56M
R_RW10_256=$((32 * MB)); R_RW10_2048=$((33 * MB)); R_RW16_256=$((35 * MB)); R_RW16_2048=$((36 * MB))
R_EDTL=$((38 * MB)); R_CAW=$((40 * MB)); R_VER=$((42 * MB)); R_WAV12=$((44 * MB)); R_WAV10=$((45 * MB))
R_XSRC=$((48 * MB)); R_XDST=$((50 * MB)); R_X2=$((52 * MB)); R_X11=$((53 * MB)); R_X16=$((54 * MB))
R_XERR=$((55 * MB)); R_XFIRST=$((56 * MB))

# ---- per-LUN state -------------------------------------------------------------------------
declare -A DISK_OF BSDIR_OF NAA_OF NB_OF
L='' D='' B='' NB=0 NAA='' HWMAX=0 MAX_UNMAP=0 MAX_WS=0
X_MAXCSCD=2 X_MAXSEG=16 X_MAXLEN=1024   # RCR OPERATING PARAMETERS (read in <lun>_rcr_params)
use_lun() {  # LUN: the globals the checks below work on
  L=$1 D=${DISK_OF[$1]} B=$W/$1 NB=${NB_OF[$1]:-0} NAA=${NAA_OF[$1]:-}
  mkdir -p "$B"
}
other_lun() { if [ "$1" = stock ]; then echo ext; else echo stock; fi; }

naa_of() {  # FILE (VPD 83h): the NAA designator (16 bytes, LU association), hex
  local h; h=$(hex_of "$1")
  local end=$((4 + 16#${h:4:4})) pos=4 b1 dl
  while ((pos + 4 <= end && (pos + 4) * 2 <= ${#h})); do
    b1=$((16#${h:(pos + 1) * 2:2})) dl=$((16#${h:(pos + 3) * 2:2}))
    if (((b1 & 0x0f) == 3 && (b1 & 0x30) == 0 && dl == 16)); then echo "${h:(pos + 4) * 2:32}"; return 0; fi
    pos=$((pos + 4 + dl))
  done
  return 1
}
identity() {  # LUN: block size, capacity and NAA designator (VPD 83h) of its disk
  use_lun "$1"
  local bs size naa
  bs=$(blockdev --getss "$D"); size=$(blockdev --getsize64 "$D")
  echo "$D: block size $bs, $size bytes"
  [ "$bs" = "$BS" ] || { echo "block size $bs, the checks assume $BS" >&2; return 1; }
  NB_OF[$1]=$((size / BS))
  expect_scsi GOOD -r 255 -o "$B/vpd83" "$D" 12 01 83 00 ff 00 || return 1
  naa=$(naa_of "$B/vpd83") || { echo "no NAA designator in VPD 83h" >&2; return 1; }
  NAA_OF[$1]=$naa; fact "${1}_num_blocks" "${NB_OF[$1]}"; fact "${1}_naa" "$naa"
}

# ---- 1. large transfers ------------------------------------------------------------------------
hw_max() {  # [EXPECTED]: the backstore's hw_max_sectors (configfs)
  HWMAX=$(cat "${BSDIR_OF[$L]}/attrib/hw_max_sectors")
  fact "${L}_hw_max_sectors" "$HWMAX"
  echo "configfs hw_max_sectors=$HWMAX"
  if [ -n "${1:-}" ]; then expect_eq "$HWMAX" "$1"; else [ "$HWMAX" -gt 0 ]; fi
}
vpd_b0_mtl() {  # MAXIMUM = OPTIMAL TRANSFER LENGTH = hw_max_sectors
  expect_scsi GOOD -r 64 -o "$B/b0" "$D" 12 01 b0 00 40 00 || return 1
  local mtl otl; mtl=$(be_of "$B/b0" 8 4); otl=$(be_of "$B/b0" 12 4)
  MAX_UNMAP=$(be_of "$B/b0" 20 4); MAX_WS=$(be_of "$B/b0" 36 8)
  echo "MTL $mtl OTL $otl (hw_max_sectors $HWMAX); max unmap $MAX_UNMAP, max write same $MAX_WS"
  [ "$mtl" = "$HWMAX" ] && [ "$otl" = "$HWMAX" ]
}
rw_cdb() {  # 10|16 OP10 OP16 LBA N: the READ/WRITE CDB of that size
  if [ "$1" = 10 ]; then cdb10 "$2" 00 "$4" "$5"; else cdb16 "$3" 00 "$4" "$5"; fi
}
write_blocks() {  # 10|16 LBA N FILE: WRITE(10/16) of N blocks from FILE: GOOD
  expect_scsi GOOD -s $(($3 * BS)) -i "$4" "$D" $(rw_cdb "$1" 2a 8a "$2" "$3")
}
read_blocks() {  # 10|16 LBA N FILE: READ(10/16) of N blocks: GOOD, the N blocks of FILE
  expect_scsi GOOD -r $(($3 * BS)) -o "$B/in" "$D" $(rw_cdb "$1" 28 88 "$2" "$3") && expect_in $(($3 * BS)) \
    && cmp "$B/in" "$4" && echo "read back what was written"
}

# ---- 3. EDTL vs CDB transfer length (S = 128 blocks at R_EDTL, holding P64K) -------------------------
read_edtl() {  # EDTL_BYTES EXPECTED_BYTES_IN: READ(10) of 128 blocks with that EDTL: GOOD
  local args=()
  if [ "$1" -gt 0 ]; then args=(-r "$1" -o "$B/in"); fi
  expect_scsi GOOD "${args[@]}" "$D" $(cdb10 28 00 "$R_EDTL" 128) && expect_in "$2" || return 1
  if [ "$2" -gt 0 ]; then cmp -n "$2" "$B/in" "$P64K" && echo "$2 bytes of the data (residual $(($1 - $2)))"; fi
}
write_edtl() {  # OPCODE BYTE1 EDTL_BYTES: Data-Out, 128 blocks, that EDTL: 05/0E/03, nothing written
  local size=10
  if [ "$1" = 8a ]; then size=16; fi
  expect_scsi 05/0e/03 -s "$3" -i "$P2048B" "$D" $("cdb$size" "$1" "$2" "$R_EDTL" 128) && holds "$P64K" "$R_EDTL" 128
}
caw_edtl() {  # COMPARE AND WRITE of 1 block with a 1-block buffer: 05/0E/03, block unchanged
  write_blocks 10 "$R_CAW" 1 "$PBLK_OLD" >/dev/null || return 1
  expect_scsi 05/0e/03 -s "$BS" -i "$PBLK_NEW" "$D" $(cdb_caw "$R_CAW" 1) && holds "$PBLK_OLD" "$R_CAW" 1
}

# ---- 4. UNMAP / WRITE SAME UNMAP (the zone holds PUNMAP) ---------------------------------------------
zeroed() {  # LBA N: the range reads zero, the blocks just before and after it are unchanged
  local lba=$1 n=$2
  read_back $((lba - 1)) $((n + 2)) "$B/rb" || return 1
  cmp -n $((n * BS)) -i "$BS:0" "$B/rb" /dev/zero || { echo "LBA $lba+$n not all zero" >&2; return 1; }
  cmp -n "$BS" -i "0:$(((lba - 1) * BS))" "$B/rb" "$PUNMAP" || { echo "LBA $((lba - 1)) changed" >&2; return 1; }
  cmp -n "$BS" -i "$(((n + 1) * BS)):$(((lba + n) * BS))" "$B/rb" "$PUNMAP" \
    || { echo "LBA $((lba + n)) changed" >&2; return 1; }
  echo "LBA $lba+$n zero; LBA $((lba - 1)) and $((lba + n)) unchanged"
}
unmap_zone() { dd if="$PUNMAP" of="$D" bs=1M oflag=direct conv=notrunc,fsync status=none && echo "$UNMAP_BLOCKS blocks written"; }
unmap() {  # LBA,LBA.. N,N..: one UNMAP with these descriptors; each range zeroed
  local i; local -a lbas nums
  IFS=, read -ra lbas <<<"$1"; IFS=, read -ra nums <<<"$2"
  for i in "${!nums[@]}"; do
    [ "${nums[i]}" -le "$MAX_UNMAP" ] || { echo "${nums[i]} blocks > MAXIMUM UNMAP LBA COUNT $MAX_UNMAP" >&2; return 1; }
  done
  sg_unmap -v --force --lba="$1" --num="$2" "$D" || return 1
  for i in "${!lbas[@]}"; do zeroed "${lbas[i]}" "${nums[i]}" || return 1; done
}
ws_unmap() {  # 10|16 LBA N: WRITE SAME with UNMAP (a zero block); the range zeroed
  [ "$3" -le "$MAX_WS" ] || { echo "$3 blocks > MAXIMUM WRITE SAME LENGTH $MAX_WS" >&2; return 1; }
  sg_write_same -v --"$1" --unmap --lba="$2" --num="$3" "$D" && zeroed "$2" "$3"
}

# ---- 5. standard INQUIRY ---------------------------------------------------------------------------
inquiry_96() {
  expect_scsi GOOD -r 96 -o "$B/inq" "$D" 12 00 00 00 60 00 && expect_in 96 || return 1
  local h; h=$(hex_of "$B/inq"); fold -w 32 <<<"$h"
  expect_hex VERSION "${h:4:2}" 06 && expect_hex "ADDITIONAL LENGTH" "${h:8:2}" 5b \
    && expect_hex "version descriptors (58-65)" "${h:116:16}" 00a00960046004c0 \
    && expect_hex "bytes 36-57" "${h:72:44}" "$(printf '%044d' 0)" \
    && expect_hex "bytes 66-95" "${h:132:60}" "$(printf '%060d' 0)"
}
inquiry_alloc36() {  # truncated to the allocation length; ADDITIONAL LENGTH still 91
  expect_scsi GOOD -r 96 -o "$B/inq" "$D" 12 00 00 00 24 00 && expect_in 36 || return 1
  local h; h=$(hex_of "$B/inq")
  expect_hex VERSION "${h:4:2}" 06 && expect_hex "ADDITIONAL LENGTH" "${h:8:2}" 5b
}
sg_inq_descriptors() {
  run_to "$B/sg_inq" sg_inq -d "$D" || return 1
  grep -Eq 'version=0x06 +\[SPC-4\]' "$B/sg_inq" || { echo "not version 0x06 [SPC-4]" >&2; return 1; }
  expect_hex descriptors "$(sed -n '/Version descriptors:/,$p' "$B/sg_inq" | sed -n '2,5p' | sed 's/^ *//' | paste -sd '|')" \
    "SAM-5 (no version claimed)|iSCSI (no version claimed)|SPC-4 (no version claimed)|SBC-3 (no version claimed)"
}

# ---- 6. EXTENDED COPY (LID1) ---------------------------------------------------------------------------
cscd() {  # NAA [TYPE]: a 32-byte CSCD descriptor: identification (E4h), NAA designator of LU
  # association, block device with DISK BLOCK LENGTH = BS
  printf '%s000000%s%s0000000000%06x' "${2:-e4}" 01030010 "$1" "$BS"
}
seg() {  # SRC_INDEX DST_INDEX N SRC_LBA DST_LBA: a block->block segment descriptor (02h, 28 bytes)
  printf '02000018%04x%04x0000%04x%016x%016x' "$@"
}
xlist() {  # LIST_ID USAGE CSCDS_HEX SEGMENTS_HEX [INLINE_HEX]: a parameter list, hex
  local inline=${5:-}
  printf '%02x%02x%04x00000000%08x%08x%s%s%s' "$1" $(($2 << 3)) $((${#3} / 2)) $((${#4} / 2)) \
    $((${#inline} / 2)) "$3" "$4" "$inline"
}
xcopy() {  # GOOD|KK/AA/QQ LIST_HEX: EXTENDED COPY (LID1) with this parameter list
  local len=$((${#2} / 2))
  hex_to_file "$2" "$B/xlist"
  expect_scsi "$1" -s "$len" -i "$B/xlist" "$D" 83 00 00 00 00 00 00 00 00 00 $(bytes_be "$len" 4) 00 00
}
ours() { echo "$(cscd "$NAA")$(cscd "$NAA")"; }   # CSCD 0 = source, 1 = destination: this LUN
status_hex() { printf '0000000801%04x00%08x' "$1" "$2"; }   # SEGMENTS BYTES: a completed COPY STATUS
copy_status() {  # LIST_ID ALLOC: RECEIVE COPY RESULTS / COPY STATUS (SA 00h) into $B/cs
  expect_scsi GOOD -r 64 -o "$B/cs" "$D" 84 00 $(bytes_be "$1" 1) 00 00 00 00 00 00 00 $(bytes_be "$2" 4) 00 00
}
rcr_params() {  # OPERATING PARAMETERS (SA 03h): the limits the crafted lists are built against
  expect_scsi GOOD -r 64 -o "$B/rcr" "$D" 84 03 00 00 00 00 00 00 00 00 00 00 00 40 00 00 || return 1
  X_MAXCSCD=$(be_of "$B/rcr" 8 2); X_MAXSEG=$(be_of "$B/rcr" 10 2); X_MAXLEN=$(be_of "$B/rcr" 12 4)
  echo "MAXIMUM CSCD $X_MAXCSCD, SEGMENT $X_MAXSEG descriptors, DESCRIPTOR LIST LENGTH $X_MAXLEN," \
    "SEGMENT LENGTH $(be_of "$B/rcr" 16 4)"
  [ "$X_MAXCSCD" -ge 2 ] && [ "$X_MAXSEG" -ge 2 ] && [ "$X_MAXLEN" -ge 92 ]
}
sg_xcopy_2048() {  # sg_xcopy within the LUN (LIST ID USAGE 10b, list id 1): the copy reads back
  dd if="$P2048X" of="$D" bs=1M seek=$((R_XSRC * BS)) oflag=direct,seek_bytes conv=notrunc,fsync status=none || return 1
  sg_xcopy -v if="$D" of="$D" bs="$BS" skip="$R_XSRC" seek="$R_XDST" count=2048 || return 1
  holds "$P2048X" "$R_XDST" 2048
}
sg_copy_results_status() {  # sg_copy_results --status for list id 1: completed, 1 segment, 1 MiB
  run_to "$B/scr" sg_copy_results --status --list_id=1 "$D" || return 1
  grep -q 'Copy manager status: Operation completed without errors' "$B/scr" \
    && grep -q 'Segments processed: 1$' "$B/scr" && grep -q 'Transfer count units: 0$' "$B/scr" \
    && grep -q "Transfer count: $((2048 * BS))\$" "$B/scr"
}
xcopy_two_segments() {  # list id 0x42, usage 00b: two segments of 16 blocks
  xcopy GOOD "$(xlist 0x42 0 "$(ours)" "$(seg 0 1 16 "$R_XSRC" "$R_X2")$(seg 0 1 16 $((R_XSRC + 100)) $((R_X2 + 64)))")" \
    && holds "$P2048X" "$R_X2" 16 0 && holds "$P2048X" $((R_X2 + 64)) 16 100
}
xcopy_status_bytes() {  # COPY STATUS of list 0x42: completed, 2 segments, 16 KiB in bytes
  copy_status 0x42 12 && expect_in 12 && expect_hex "COPY STATUS" "$(hex_of "$B/cs")" "$(status_hex 2 $((32 * BS)))"
}
xcopy_status_alloc6() {
  copy_status 0x42 6 && expect_in 6 && expect_hex "COPY STATUS (6 bytes)" "$(hex_of "$B/cs")" 000000080100
}
sg_xcopy_usage11() {  # LIST ID USAGE 11b (no list identifier): copies
  sg_xcopy -v if="$D" of="$D" bs="$BS" skip="$R_XSRC" seek="$R_X11" count=64 id_usage=disable list_id=0 \
    && holds "$P2048X" "$R_X11" 64
}
xcopy_keeps_last_16() {  # 17 copies (list ids 0x50-0x60): the oldest is forgotten, the last 16 are not
  local k
  for k in $(seq 0 16); do
    xcopy GOOD "$(xlist $((0x50 + k)) 0 "$(ours)" "$(seg 0 1 1 $((R_XSRC + k)) $((R_X16 + k)))")" >/dev/null \
      || { cat "$W/sg_raw.out"; echo "copy with list id $((0x50 + k)) failed" >&2; return 1; }
  done
  holds "$P2048X" "$R_X16" 17 || return 1
  expect_scsi 05/24/00 -r 12 "$D" 84 00 50 00 00 00 00 00 00 00 00 00 00 0c 00 00 || return 1
  copy_status 0x51 12 && expect_hex "COPY STATUS 0x51" "$(hex_of "$B/cs")" "$(status_hex 1 "$BS")" \
    && copy_status 0x60 12 && expect_hex "COPY STATUS 0x60" "$(hex_of "$B/cs")" "$(status_hex 1 "$BS")"
}
xcopy_list_too_long() {  # CSCD + segment descriptors beyond MAXIMUM DESCRIPTOR LIST LENGTH: 1A/00
  # first (the list also has more segments than MAXIMUM SEGMENT COUNT)
  local ns=$(((X_MAXLEN - 64) / 28 + 1)) segs='' i
  for ((i = 0; i < ns; i++)); do segs+=$(seg 0 1 1 $((R_XSRC + i)) $((R_XERR + i))); done
  echo "2 CSCDs + $ns segments: $((64 + 28 * ns)) bytes > $X_MAXLEN"
  xcopy 05/1a/00 "$(xlist 0x10 0 "$(ours)" "$segs")"
}
xcopy_too_many_cscd() {  # MAXIMUM CSCD DESCRIPTOR COUNT + 1: 26/06
  local c='' i
  for ((i = 0; i <= X_MAXCSCD; i++)); do c+=$(cscd "$NAA"); done
  xcopy 05/26/06 "$(xlist 0x11 0 "$c" "$(seg 0 1 1 "$R_XSRC" "$R_XERR")")"
}
xcopy_too_many_segments() {  # MAXIMUM SEGMENT DESCRIPTOR COUNT + 1 (within the list length): 26/08
  local ns=$((X_MAXSEG + 1)) segs='' i
  [ $((64 + 28 * ns)) -le "$X_MAXLEN" ] || { echo "$ns segments exceed the list length" >&2; return 1; }
  for ((i = 0; i < ns; i++)); do segs+=$(seg 0 1 1 $((R_XSRC + i)) $((R_XERR + i))); done
  xcopy 05/26/08 "$(xlist 0x12 0 "$(ours)" "$segs")"
}
xcopy_cscd_type() {  # a CSCD of type E0h: 26/07
  xcopy 05/26/07 "$(xlist 0x13 0 "$(cscd "$NAA" e0)$(cscd "$NAA")" "$(seg 0 1 1 "$R_XSRC" "$R_XERR")")"
}
xcopy_cscd_list_len() {  # CSCD DESCRIPTOR LIST LENGTH 48 (not a multiple of 32): 26/07
  xcopy 05/26/07 "$(xlist 0x14 0 "$(cscd "$NAA")$(printf '%032d' 0)" "$(seg 0 0 1 "$R_XSRC" "$R_XERR")")"
}
xcopy_segment_type() {  # a stream->stream segment (03h, 20 bytes): 26/09
  xcopy 05/26/09 "$(xlist 0x15 0 "$(ours)" "0300001000000001$(printf '%024d' 0)")"
}
xcopy_aborted() {  # LIST_ID CSCDS_HEX SEGMENTS_HEX: COPY ABORTED / COPY TARGET DEVICE NOT REACHABLE
  xcopy 0a/0d/02 "$(xlist "$1" 0 "$2" "$3")"
}
xcopy_inline() {  # INLINE DATA LENGTH 4: 26/00 pointing at byte 12 of the parameter list
  xcopy 05/26/00 "$(xlist 0x1a 0 "$(ours)" "$(seg 0 1 1 "$R_XSRC" "$R_XERR")" deadbeef)" || return 1
  if [ "$R_SKS" = - ] || [ $((16#${R_SKS:0:2} & 0xc0)) != $((0x80)) ] || [ "${R_SKS:2:4}" != 000c ]; then
    echo "sense-key specific $R_SKS: expected SKSV, parameter list (C/D 0), byte 12" >&2; return 1
  fi
  echo "field pointer: parameter list byte 12"
}
xcopy_validated_first() {  # a good segment then one beyond the end: COPY ABORTED, nothing copied
  xcopy_aborted 0x1b "$(ours)" "$(seg 0 1 8 "$R_XSRC" "$R_XFIRST")$(seg 0 1 8 $((NB - 4)) $((R_XFIRST + 8)))" \
    && is_zero "$R_XFIRST" 16
}

# ---- 7. PRE-FETCH, VERIFY(12), WRITE AND VERIFY(12), READ DEFECT DATA, RSOC -----------------------
verify12_miscompare() {  # VERIFY(12) BYTCHK=1, the data differs at BAD_AT: MISCOMPARE, INFORMATION
  expect_scsi 0e/1d/00 -s $((256 * BS)) -i "$P256V_BAD" "$D" $(cdb12 af 02 "$R_VER" 256) && expect_info "$BAD_AT"
}
rdd() {  # EDTL WANT_HEX SG_RAW_CDB...: READ DEFECT DATA: GOOD with exactly these bytes
  local edtl=$1 want=$2; shift 2
  expect_scsi GOOD -r "$edtl" -o "$B/rdd" "$D" "$@" && expect_in $((${#want} / 2)) \
    && expect_hex "defect data" "$(hex_of "$B/rdd")" "$want"
}
rsoc_lists() {  # sg_opcodes lists the new opcodes with their CDB length
  run_to "$B/ops" sg_opcodes "$D" || return 1
  local x bad=0
  for x in 34:10 90:16 af:12 ae:12 37:10 b7:12; do
    grep -Eq "^ ${x%:*} +${x#*:} " "$B/ops" || { echo "opcode ${x%:*} (${x#*:}-byte CDB) not listed" >&2; bad=1; }
  done
  return $bad
}
rsoc_mask() {  # OPCODE MASK: sg_opcodes -o answers this usage data
  run_to "$B/op1" sg_opcodes -o "0x$1" "$D" || return 1
  grep -qF "Usage data: $2 " "$B/op1" || { echo "usage data is not [$2]" >&2; return 1; }
}

# ---- COMPARE AND WRITE, VERIFY(10/16), WRITE AND VERIFY(10) through the sg3-utils tools -------------------
caw_match() {  # the block holds OLD: compare OLD, write NEW: GOOD, the block holds NEW
  write_blocks 10 "$R_CAW" 1 "$PBLK_OLD" >/dev/null || return 1
  cat "$PBLK_OLD" "$PBLK_NEW" >"$B/caw"
  expect_tool 0 - sg_compare_and_write -v --in="$B/caw" --lba="$R_CAW" --num=1 --xferlen=$((2 * BS)) "$D" \
    && holds "$PBLK_NEW" "$R_CAW" 1
}
caw_miscompare() {  # the compare half differs at byte 300: MISCOMPARE, INFORMATION 300, nothing written
  flipped "$PBLK_NEW" 300 "$B/cmp"
  cat "$B/cmp" "$PBLK_NEXT" >"$B/caw"
  expect_tool 14 0e/1d/00 sg_compare_and_write -vv --in="$B/caw" --lba="$R_CAW" --num=1 --xferlen=$((2 * BS)) "$D" \
    && expect_info 300 && grep -q 'Miscompare at byte offset: 300 ' "$W/tool.out" && holds "$PBLK_NEW" "$R_CAW" 1
}
verify_tool() {  # 10|16 BYTCHK(0|1) [FILE [WANT_INFO]]: sg_verify of the 256 blocks at R_VER (holding P256V)
  local v=() rc=0 sense=-
  if [ "$1" = 16 ]; then v=(--16); fi
  if [ "$2" = 1 ]; then v+=(--ndo=$((256 * BS)) --in="${3:-$P256V}"); fi
  if [ -n "${4:-}" ]; then rc=14 sense=0e/1d/00; fi
  expect_tool "$rc" "$sense" sg_verify -vv ${v[@]+"${v[@]}"} --lba="$R_VER" --count=256 --bpc=256 "$D" || return 1
  if [ -n "${4:-}" ]; then expect_info "$4"; fi
}

# ---- one LUN's suite ----------------------------------------------------------------------------------------
lun_suite() {  # LUN
  use_lun "$1"
  local t0=$EPOCHREALTIME
  echo "=== $L: $D (${BSDIR_OF[$L]}), $NB blocks"
  sg_raw "$D" 00 00 00 00 00 00 >/dev/null 2>&1 || true   # any pending unit attention

  # 1. transfers above hw_max_sectors (stock: 128) are served
  local want_hw=''
  if [ "$L" = stock ]; then want_hw=128; fi   # the kernel's default; ext: targetcli-rbd's
  check "${L}_hw_max_sectors" hw_max "$want_hw"
  check "${L}_vpd_b0_mtl" vpd_b0_mtl
  check "${L}_write10_256" write_blocks 10 "$R_RW10_256" 256 "$P256A"
  check "${L}_read10_256" read_blocks 10 "$R_RW10_256" 256 "$P256A"
  check "${L}_write10_2048" write_blocks 10 "$R_RW10_2048" 2048 "$P2048A"
  check "${L}_read10_2048" read_blocks 10 "$R_RW10_2048" 2048 "$P2048A"
  check "${L}_write16_256" write_blocks 16 "$R_RW16_256" 256 "$P256B"
  check "${L}_read16_256" read_blocks 16 "$R_RW16_256" 256 "$P256B"
  check "${L}_write16_2048" write_blocks 16 "$R_RW16_2048" 2048 "$P2048B"
  check "${L}_read16_2048" read_blocks 16 "$R_RW16_2048" 2048 "$P2048B"
  check "${L}_wav10_256" sg_write_verify -v --bytchk=1 --lba="$R_WAV10" --num=256 --in="$P256X" "$D"
  check "${L}_wav10_256_data" holds "$P256X" "$R_WAV10" 256

  # 2. LBA out of range whatever the length, and before the EDTL check
  check "${L}_read10_beyond_end_2048" expect_scsi 05/21/00 -r $((2048 * BS)) "$D" $(cdb10 28 00 $((NB + 16)) 2048)
  check "${L}_read10_crosses_end_2048" expect_scsi 05/21/00 -r $((2048 * BS)) "$D" $(cdb10 28 00 $((NB - 1024)) 2048)
  check "${L}_read16_lba_wraps" expect_scsi 05/21/00 -r $((2 * BS)) "$D" $(cdb16 88 00 -1 2)
  check "${L}_write10_beyond_end_2048" expect_scsi 05/21/00 -s $((2048 * BS)) -i "$P2048A" "$D" $(cdb10 2a 00 $((NB + 16)) 2048)
  check "${L}_read10_beyond_end_edtl_short" expect_scsi 05/21/00 -r "$BS" "$D" $(cdb10 28 00 $((NB + 16)) 2048)
  check "${L}_write16_beyond_end_edtl_short" expect_scsi 05/21/00 -s "$BS" -i "$P2048A" "$D" $(cdb16 8a 00 $((NB + 16)) 2048)

  # 3. EDTL vs CDB length (128 blocks = 64 KiB at R_EDTL)
  check "${L}_write10_128" write_blocks 10 "$R_EDTL" 128 "$P64K"
  check "${L}_read10_edtl_long" read_edtl $((256 * BS)) $((128 * BS))
  check "${L}_read10_edtl_short" read_edtl $((32 * BS)) $((32 * BS))
  check "${L}_read10_edtl_zero" read_edtl 0 0
  check "${L}_write10_edtl_long" write_edtl 2a 00 $((256 * BS))
  check "${L}_write10_edtl_short" write_edtl 2a 00 $((64 * BS))
  check "${L}_write16_edtl_long" write_edtl 8a 00 $((256 * BS))
  check "${L}_wav10_edtl_long" write_edtl 2e 00 $((256 * BS))
  check "${L}_verify10_bytchk_edtl_short" write_edtl 2f 02 $((8 * BS))
  check "${L}_caw_edtl_short" caw_edtl

  # 4. UNMAP and WRITE SAME UNMAP zero exactly their range (4 MiB objects = 8192 blocks)
  check "${L}_unmap_zone_written" unmap_zone
  check "${L}_unmap_1" unmap 1 1
  check "${L}_unmap_7" unmap 3 7
  check "${L}_unmap_8" unmap 1001 8
  check "${L}_unmap_127" unmap 5005 127
  check "${L}_unmap_129_across_objects" unmap 8150 129
  check "${L}_unmap_3_descriptors" unmap 9001,9100,16380 3,50,10
  check "${L}_unmap_20000" unmap 35001 20000
  check "${L}_ws16_unmap_1000" ws_unmap 16 12345 1000
  check "${L}_ws10_unmap_16000" ws_unmap 10 17001 16000

  # 5. standard INQUIRY
  check "${L}_inquiry_96" inquiry_96
  check "${L}_inquiry_alloc36" inquiry_alloc36
  check "${L}_inquiry_sg_inq_descriptors" sg_inq_descriptors

  # 6. EXTENDED COPY and RECEIVE COPY RESULTS
  check "${L}_rcr_params" rcr_params
  check "${L}_sg_xcopy_2048" sg_xcopy_2048
  check "${L}_sg_copy_results_status" sg_copy_results_status
  check "${L}_xcopy_two_segments" xcopy_two_segments
  check "${L}_xcopy_status_bytes" xcopy_status_bytes
  check "${L}_xcopy_status_alloc6" xcopy_status_alloc6
  check "${L}_sg_xcopy_usage11" sg_xcopy_usage11
  check "${L}_xcopy_usage11_not_recorded" expect_scsi 05/24/00 -r 12 "$D" 84 00 00 00 00 00 00 00 00 00 00 00 00 0c 00 00
  check "${L}_xcopy_status_unknown_list_id" expect_scsi 05/24/00 -r 12 "$D" 84 00 ee 00 00 00 00 00 00 00 00 00 00 0c 00 00
  check "${L}_xcopy_keeps_last_16" xcopy_keeps_last_16
  check "${L}_xcopy_list_too_long" xcopy_list_too_long
  check "${L}_xcopy_too_many_cscd" xcopy_too_many_cscd
  check "${L}_xcopy_too_many_segments" xcopy_too_many_segments
  check "${L}_xcopy_cscd_type" xcopy_cscd_type
  check "${L}_xcopy_cscd_list_len" xcopy_cscd_list_len
  check "${L}_xcopy_segment_type" xcopy_segment_type
  check "${L}_xcopy_src_beyond_end" xcopy_aborted 0x16 "$(ours)" "$(seg 0 1 8 $((NB - 4)) "$R_XERR")"
  check "${L}_xcopy_dst_beyond_end" xcopy_aborted 0x17 "$(ours)" "$(seg 0 1 8 "$R_XSRC" $((NB - 4)))"
  check "${L}_xcopy_cscd_index_outside" xcopy_aborted 0x18 "$(ours)" "$(seg 0 5 1 "$R_XSRC" "$R_XERR")"
  check "${L}_xcopy_other_lun" xcopy_aborted 0x19 "$(cscd "${NAA_OF[$(other_lun "$L")]:-}")$(cscd "$NAA")" \
    "$(seg 0 1 1 "$R_XSRC" "$R_XERR")"
  check "${L}_xcopy_inline_data" xcopy_inline
  check "${L}_xcopy_validated_first" xcopy_validated_first

  # 7. PRE-FETCH, VERIFY(12), WRITE AND VERIFY(12), READ DEFECT DATA, RSOC
  check "${L}_prefetch10" expect_scsi GOOD "$D" $(cdb10 34 00 "$R_RW10_256" 8)
  check "${L}_prefetch10_immed" expect_scsi GOOD "$D" $(cdb10 34 02 "$R_RW10_256" 8)
  check "${L}_prefetch16" expect_scsi GOOD "$D" $(cdb16 90 00 "$R_RW10_256" 8)
  check "${L}_prefetch16_immed" expect_scsi GOOD "$D" $(cdb16 90 02 "$R_RW10_256" 8)
  check "${L}_prefetch10_whole_lun" expect_scsi GOOD "$D" $(cdb10 34 00 0 0)
  check "${L}_prefetch10_last_lba" expect_scsi GOOD "$D" $(cdb10 34 00 $((NB - 1)) 0)
  check "${L}_prefetch10_beyond_end" expect_scsi 05/21/00 "$D" $(cdb10 34 00 "$NB" 0)
  check "${L}_prefetch16_crosses_end" expect_scsi 05/21/00 "$D" $(cdb16 90 00 $((NB - 4)) 8)
  check "${L}_prefetch16_lba_wraps" expect_scsi 05/21/00 "$D" $(cdb16 90 00 -1 1)
  check "${L}_write16_verify_zone" write_blocks 16 "$R_VER" 256 "$P256V"
  check "${L}_verify12" expect_scsi GOOD "$D" $(cdb12 af 00 "$R_VER" 256)
  check "${L}_verify12_bytchk" expect_scsi GOOD -s $((256 * BS)) -i "$P256V" "$D" $(cdb12 af 02 "$R_VER" 256)
  check "${L}_verify12_miscompare" verify12_miscompare
  check "${L}_wav12_256" expect_scsi GOOD -s $((256 * BS)) -i "$P256W" "$D" $(cdb12 ae 00 "$R_WAV12" 256)
  check "${L}_wav12_256_data" holds "$P256W" "$R_WAV12" 256
  check "${L}_rdd10" rdd 4 00180000 37 00 18 00 00 00 00 00 04 00
  check "${L}_rdd10_alloc2" rdd 4 0018 37 00 18 00 00 00 00 00 02 00
  check "${L}_rdd12" rdd 8 001c000000000000 b7 1c 00 00 00 00 00 00 00 08 00 00
  check "${L}_rsoc_lists_new" rsoc_lists
  check "${L}_rsoc_mask_34" rsoc_mask 34 "34 02 ff ff ff ff 00 ff ff 00"
  check "${L}_rsoc_mask_90" rsoc_mask 90 "90 02 ff ff ff ff ff ff ff ff ff ff ff ff 00 00"
  check "${L}_rsoc_mask_af" rsoc_mask af "af 16 ff ff ff ff ff ff ff ff 00 00"
  check "${L}_rsoc_mask_ae" rsoc_mask ae "ae 12 ff ff ff ff ff ff ff ff 00 00"
  check "${L}_rsoc_mask_37" rsoc_mask 37 "37 00 1f 00 00 00 00 ff ff 00"
  check "${L}_rsoc_mask_b7" rsoc_mask b7 "b7 1f ff ff ff ff ff ff ff ff 00 00"

  # COMPARE AND WRITE, VERIFY(10/16) BYTCHK 0/1 through the tools (R_VER holds P256V)
  check "${L}_caw_match" caw_match
  check "${L}_caw_miscompare" caw_miscompare
  check "${L}_verify10_bytchk0_256" verify_tool 10 0
  check "${L}_verify16_bytchk0_256" verify_tool 16 0
  check "${L}_verify10_bytchk1_256" verify_tool 10 1
  check "${L}_verify16_bytchk1_256" verify_tool 16 1
  check "${L}_verify10_miscompare" verify_tool 10 1 "$P256V_BAD" "$BAD_AT"
  check "${L}_verify16_miscompare" verify_tool 16 1 "$P256V_BAD" "$BAD_AT"

  fact "${L}_suite_seconds" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')"
}

# ---- set-up: Ceph, D-Bus, LIO, the daemon, the two LUNs, the initiator --------------------------------------
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/stock=256M --image rbd/ext=256M
export CEPH_CONF=$OUT
step dbus start_dbus
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --daemon "$DAEMON"
DLOG=$LAB_LOG_DIR/$DAEMON.log
# stock targetcli: no hw_max_sectors, no control string (kernel defaults)
step export_stock "$LAB/export.sh" add --backstore user:rbd/stock --arg size=256M \
  --arg cfgstring=rbd/stock --target "$T_STOCK" --acl "$INIT"
step export_ext targetcli-rbd export rbd/ext --target "$T_EXT" --initiator "$INIT"
BSDIR_OF[stock]=$(ls -d "$CFS"/core/user_*/stock)
BSDIR_OF[ext]=$(ls -d "$CFS"/core/user_*/rbd.ext)
step login_stock "$LAB/initiator.sh" login --target "$T_STOCK" --initiator-name "$INIT"
DISK_OF[stock]=$OUT
step login_ext "$LAB/initiator.sh" login --target "$T_EXT" --initiator-name "$INIT"
DISK_OF[ext]=$OUT
fact stock_disk "${DISK_OF[stock]}"; fact ext_disk "${DISK_OF[ext]}"
# sg_xcopy opens a block device through /dev/block/MAJ:MIN (udev's links)
for d in "${DISK_OF[@]}"; do
  mm=$(cat "/sys/block/$(basename "$d")/dev")
  [ -e "/dev/block/$mm" ] || { mkdir -p /dev/block; ln -sf "$d" "/dev/block/$mm"; }
done

# both identities first: each LUN's EXTENDED COPY checks name the other's NAA
check stock_identity identity stock
check ext_identity identity ext
lun_suite stock
lun_suite ext

# ---- teardown ----------------------------------------------------------------------------------------------
check logout "$LAB/initiator.sh" logout
check unexport_ext targetcli-rbd unexport rbd/ext
step teardown "$LAB/teardown.sh"
# shellcheck disable=SC2016  # expanded by that sh
check lio_empty sh -c '[ -z "$(ls -d /sys/kernel/config/target/core/*/* 2>/dev/null | grep -v /alua)" ]'
check daemons_stopped sh -c "! pgrep -af -- '-m [t]cmu_rbd' && ! pgrep -ax tcmu-runner && ! pgrep -ax ceph-osd && ! pgrep -ax ceph-mon"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
check dmesg_no_tcmu_errors sh -c "! dmesg | grep -Ei 'tcmu.*(could not find|unexpected|invalid|broken)|ring (broken|corrupt)'"
