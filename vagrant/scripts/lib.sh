# Shared helpers of the lab scripts (sourced, never run). Every script logs all of
# its output (commands traced with timestamps) to $LAB_LOG_DIR/<script>.log; only
# its result goes to stdout. On failure the tail of that log goes to stderr.
#
# Environment (all optional):
#   LAB_LOG_DIR    where logs go              (default /var/log/tcmu-rbd-lab)
#   LAB_STATE_DIR  pid files, what was created (default /run/tcmu-rbd-lab)
#   PYTHON         the Python that has tcmu_rbd installed (default python3)
#   TARGETCLI_HOME targetcli's preferences dir (must be writable)

LAB_LOG_DIR=${LAB_LOG_DIR:-/var/log/tcmu-rbd-lab}
LAB_STATE_DIR=${LAB_STATE_DIR:-/run/tcmu-rbd-lab}
PYTHON=${PYTHON:-python3}
export LAB_LOG_DIR LAB_STATE_DIR PYTHON
mkdir -p "$LAB_LOG_DIR" "$LAB_STATE_DIR"
LAB_NAME=$(basename "$0" .sh)
LAB_LOG=$LAB_LOG_DIR/$LAB_NAME.log

exec 3>&1 4>&2 >>"$LAB_LOG" 2>&1
PS4='+ ${EPOCHREALTIME} ${LAB_NAME}: '
echo "=== ${EPOCHREALTIME} $LAB_NAME $*"
set -x

_lab_exit() {
  local rc=$?
  set +x
  if [ "$rc" -ne 0 ]; then
    echo "=== $LAB_NAME FAILED rc=$rc"
    { echo "$LAB_NAME: FAILED (rc=$rc); last lines of $LAB_LOG:"
      tail -n 40 "$LAB_LOG" | sed 's/^/  | /'; } >&4
  else
    echo "=== ${EPOCHREALTIME} $LAB_NAME done"
  fi
}
trap _lab_exit EXIT

die() { echo "ERROR: $*"; echo "$LAB_NAME: $*" >&4; exit 1; }
# result: the only thing a script prints on its stdout
result() { printf '%s\n' "$*" >&3; echo "result: $*"; }

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

have_systemd() { [ -d /run/systemd/system ]; }

# spawn NAME CMD...: start a daemon in its own session, log to $LAB_LOG_DIR/NAME.log,
# remember its pid in $LAB_STATE_DIR/NAME.pid
spawn() {
  local name=$1; shift
  # 3>&- 4>&-: a daemon must not inherit the caller's capture fds (a $(...) around
  # a script that starts one would otherwise wait for the daemon to exit)
  setsid "$@" >>"$LAB_LOG_DIR/$name.log" 2>&1 </dev/null 3>&- 4>&- &
  echo $! >"$LAB_STATE_DIR/$name.pid"
  echo "spawned $name pid $!: $*"
}

pid_of() { local f=$LAB_STATE_DIR/$1.pid; [ -f "$f" ] && cat "$f"; }
# running: the pid exists and is not a zombie (daemons outlive the script that
# spawned them, and the guest's init may be slow to reap them)
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
alive() { local p; p=$(pid_of "$1") && running "$p"; }

# stop NAME [SIGNAL] [SECONDS]: signal the pid we started, wait, then SIGKILL
stop() {
  local name=$1 sig=${2:-TERM} secs=${3:-20} p
  p=$(pid_of "$name") || { echo "stop $name: not started by the lab"; return 0; }
  if running "$p"; then
    kill -s "$sig" "$p" || true
    local end=$(( $(date +%s) + secs ))
    while running "$p" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
    if running "$p"; then echo "stop $name: still alive, SIGKILL"; kill -9 "$p" || true; fi
  fi
  rm -f "$LAB_STATE_DIR/$name.pid"
}

# remember LIST LINE: append LINE to $LAB_STATE_DIR/LIST once (for teardown)
remember() { grep -qxF -- "$2" "$LAB_STATE_DIR/$1" 2>/dev/null || printf '%s\n' "$2" >>"$LAB_STATE_DIR/$1"; }

# targetcli with a writable home: its arguments as one command, or commands on stdin,
# one per line.  targetcli may print an error and still exit 0: callers check the
# configfs result themselves.
tcli() {
  export TARGETCLI_HOME=${TARGETCLI_HOME:-$HOME/.targetcli}
  mkdir -p "$TARGETCLI_HOME"
  targetcli "$@"
}

CONFIGFS_TARGET=/sys/kernel/config/target
