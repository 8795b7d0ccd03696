#!/usr/bin/env bash
# The system D-Bus (targetcli finds user:* handlers over it). Usage:
#   dbus.sh [--policy FILE]...
# Installs each policy file into /etc/dbus-1/system.d first; starts dbus-daemon if
# no system bus answers (a lab VM: then without bus activation, see below), else
# reloads its configuration (systemd hosts).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

policies=()
while [ $# -gt 0 ]; do
  case $1 in
    --policy) policies+=("$2"); shift 2 ;;
    *) die "usage: dbus.sh [--policy FILE]..." ;;
  esac
done

for p in ${policies[@]+"${policies[@]}"}; do
  [ -f "$p" ] || die "policy file $p not found"
  install -D -m 0644 "$p" "/etc/dbus-1/system.d/$(basename "$p")"
done

bus_up() {
  dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.GetId >/dev/null 2>&1
}

if bus_up; then
  if [ ${#policies[@]} -gt 0 ]; then
    dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.ReloadConfig
  fi
  result running
  exit 0
fi
if have_systemd; then
  systemctl start dbus.service
else
  # The lab starts its daemons itself: bus activation is off. Otherwise the first
  # targetcli run (it asks the bus for org.kernel.TCMUService1) makes dbus-daemon
  # start tcmu-runner through Debian's activation file, racing the lab's daemon.
  conf=$LAB_STATE_DIR/dbus-system.conf
  sed -e '/<standard_system_servicedirs\/>/d' -e '/<servicehelper>/d' -e '/<fork\/>/d' \
      -e '/<pidfile>/d' -e '/<syslog\/>/d' \
      -e 's|<includedir>system.d</includedir>|<includedir>/usr/share/dbus-1/system.d</includedir>|' \
      -e 's|contexts/dbus_contexts|/usr/share/dbus-1/contexts/dbus_contexts|' \
      /usr/share/dbus-1/system.conf >"$conf"
  mkdir -p /run/dbus
  rm -f /run/dbus/system_bus_socket
  spawn dbus dbus-daemon --config-file="$conf" --nofork --nopidfile
fi
wait_until 30 "the system bus" bus_up
result started
