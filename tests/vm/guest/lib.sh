# Guest-side check library (sourced by the guest scripts that tcmu_rbd_lab.vm
# runs inside the VM). Each step/check appends one JSON object per line to
# $TCMU_RBD_RESULTS/results.jsonl:
#   {"kind": "step"|"check", "name": ..., "ok": bool, "rc": int, "seconds": float,
#    "output": "<tail of stdout+stderr>"}
#   {"kind": "fact", "name": ..., "value": "..."}
# The host-side pytest asserts on those records (tcmu_rbd_lab.vm.GuestRun).
#   step NAME CMD...   a precondition: records, and on failure ends the script (rc 1)
#   check NAME CMD...  records and carries on; the test fails on the host
#   fact NAME VALUE    a measured value (timings, device names, sizes)
# The stdout of the last step/check is in $OUT.

: "${TCMU_RBD_RESULTS:?run me through tcmu_rbd_lab.vm}"
RESULTS_JSONL=$TCMU_RBD_RESULTS/results.jsonl
LAB=${LAB_SCRIPTS:?}
_t=$(mktemp -d /tmp/checks.XXXXXX)

json_str() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; s=${s//$'\r'/}
  s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037\177')
  printf '"%s"' "$s"
}

fact() {
  printf '{"kind": "fact", "name": %s, "value": %s}\n' "$(json_str "$1")" "$(json_str "$2")" >>"$RESULTS_JSONL"
  echo "FACT $1 = $2"
}

_record() {  # kind name rc seconds
  local ok=false; [ "$3" -eq 0 ] && ok=true
  local outp; outp=$(cat "$_t/out" "$_t/err" | tail -c 3000)
  printf '{"kind": "%s", "name": %s, "ok": %s, "rc": %d, "seconds": %s, "output": %s}\n' \
    "$1" "$(json_str "$2")" "$ok" "$3" "$4" "$(json_str "$outp")" >>"$RESULTS_JSONL"
  if [ "$ok" = true ]; then echo "PASS $1 $2 (${4}s)"; else
    echo "FAIL $1 $2 rc=$3 (${4}s)"; sed 's/^/    | /' "$_t/out" "$_t/err" | tail -n 30; fi
}

_run() {  # kind name cmd...: sets RUN_RC, returns 0 (CHECK_SHELL=same: see below)
  # The command runs in a subshell with set -e and outside any || or && list:
  # bash ignores set -e in everything called from such a list (even a subshell
  # that sets it again), which would let a check fail only on its last command.
  local kind=$1 name=$2; shift 2
  local t0=$EPOCHREALTIME errexit=
  case $- in *e*) errexit=1 ;; esac
  if [ "${CHECK_SHELL:-subshell}" = same ]; then
    # (scsi.sh: its checks set the suite's globals, which a subshell would lose;
    # each is written so that its last command decides)
    RUN_RC=0; "$@" >"$_t/out" 2>"$_t/err" </dev/null || RUN_RC=$?
  else
    set +e
    ( set -e; "$@" ) >"$_t/out" 2>"$_t/err" </dev/null
    RUN_RC=$?
    [ -n "$errexit" ] && set -e
  fi
  local secs; secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
  OUT=$(cat "$_t/out")
  _record "$kind" "$name" "$RUN_RC" "$secs"
}

# the lab's system D-Bus with the project's policy files (packaging/): `step dbus start_dbus`
start_dbus() {
  local args=() p
  for p in "${TCMU_RBD_REPO:?}"/packaging/*.conf; do
    [ -f "$p" ] && grep -q "<busconfig>" "$p" && args+=(--policy "$p")
  done
  "$LAB/dbus.sh" ${args[@]+"${args[@]}"}
}
# the pids of our daemon's worker processes, space-separated ("" when none)
our_workers() { { pgrep -f -- '-m [t]cmu_rbd[.]worker' || true; } | paste -sd' ' -; }

step() { _run step "$@"; [ "$RUN_RC" -eq 0 ] || { echo "step $1 failed: ending the guest script"; exit 1; }; }
check() { _run check "$@"; }

# assertion helpers for checks
expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]" >&2; return 1; }; echo "$1"; }
