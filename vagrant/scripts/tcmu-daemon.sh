#!/usr/bin/env bash
# The TCMU daemon that serves user:rbd backstores. Usage:
#   tcmu-daemon.sh start|stop|kill|status [--daemon tcmu-rbd|tcmu-runner] [--unit FILE]
#                  [-- ARGS...]
# TCMU_DAEMON selects the default daemon (tcmu-rbd: the project's, started as
# "$PYTHON -m tcmu_rbd"; tcmu-runner: the reference/peer). --unit FILE: the daemon
# as packaged, on a host without systemd: started by FILE's ExecStart= command (the
# .deb's /lib/systemd/system/tcmu-rbd.service runs /usr/bin/tcmu-rbd). `start` waits until
# org.kernel.TCMUService1 has an owner on the system bus (its D-Bus policy must be
# installed: dbus.sh --policy). `kill` is SIGKILL (crash tests); `stop` is SIGTERM.
# On a systemd host with a <daemon>.service unit, systemctl is used instead.
# CEPH_CONF is exported to the daemon from the lab's cluster if ceph.sh ran here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action=${1:-}; shift || true
daemon=${TCMU_DAEMON:-tcmu-rbd} extra=() unit=
while [ $# -gt 0 ]; do
  case $1 in
    --daemon) daemon=$2; shift 2 ;;
    --unit) unit=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
done
case $daemon in
  tcmu-rbd) cmd=("$PYTHON" -m tcmu_rbd --foreground) ;;
  tcmu-runner) cmd=(tcmu-runner --tcmu-log-dir "$LAB_LOG_DIR") ;;
  *) die "unknown daemon $daemon" ;;
esac
if [ -n "$unit" ]; then
  [ -f "$unit" ] || die "no unit file $unit"
  read -r -a cmd <<<"$(sed -n 's/^ExecStart=//p' "$unit" | tail -n 1)"
  [ ${#cmd[@]} -gt 0 ] || die "$unit has no ExecStart= line"
fi
cmd+=(${extra[@]+"${extra[@]}"})

if [ -z "${CEPH_CONF:-}" ] && [ -f "$LAB_STATE_DIR/ceph_dir" ]; then
  CEPH_CONF=$(cat "$LAB_STATE_DIR/ceph_dir")/ceph.conf
  export CEPH_CONF
fi

use_systemd() { have_systemd && systemctl cat "$daemon.service" >/dev/null 2>&1; }
owned() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.kernel.TCMUService1 2>/dev/null \
    | grep -q 'boolean true'
}
ready() {
  if ! use_systemd && ! alive "$daemon"; then
    die "$daemon exited while starting; last lines of $LAB_LOG_DIR/$daemon.log:
$(tail -n 30 "$LAB_LOG_DIR/$daemon.log" 2>/dev/null)"
  fi
  owned
}

case $action in
  start)
    if use_systemd; then
      systemctl start "$daemon.service"
    elif alive "$daemon"; then
      echo "$daemon already running"
    else
      owned && die "org.kernel.TCMUService1 is already owned by another daemon"
      spawn "$daemon" "${cmd[@]}"
    fi
    wait_until 60 "$daemon to own org.kernel.TCMUService1" ready
    result "$(pid_of "$daemon" || systemctl show -p MainPID --value "$daemon.service")"
    ;;
  stop)
    if use_systemd; then systemctl stop "$daemon.service"; else stop "$daemon" TERM 30; fi
    result stopped
    ;;
  kill)
    if use_systemd; then systemctl kill -s KILL "$daemon.service"
    else
      p=$(pid_of "$daemon") || die "$daemon was not started by the lab"
      kill -9 "$p"
      while running "$p"; do sleep 0.1; done
      rm -f "$LAB_STATE_DIR/$daemon.pid"
    fi
    result killed
    ;;
  status)
    if owned; then result running; else result stopped; exit 3; fi
    ;;
  *) die "usage: tcmu-daemon.sh start|stop|kill|status [--daemon NAME]" ;;
esac
