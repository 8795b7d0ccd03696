#!/usr/bin/env bash
# LIO + TCMU kernel side: modules, configfs, targetcli's db_root (with pr/ for
# persistent reservations) and targetcli's global settings (no 0.0.0.0 portal, no
# auto-save). Needs the system bus (dbus.sh) for targetcli. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

modprobe target_core_user
modprobe iscsi_target_mod
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
[ -d "$CONFIGFS_TARGET" ] || die "$CONFIGFS_TARGET missing after modprobe"

# targetcli lists user:* handlers over the system bus at every start, and fails
# ("g-io-error-quark: Could not connect") without one
dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
  org.freedesktop.DBus.GetId >/dev/null || die "no system D-Bus: run dbus.sh first (targetcli needs it)"
# the kernel's default db_root and rtslib-fb's preferred one (Debian); rtslib switches
# the kernel to the latter on its first run (below) if the directory exists
mkdir -p /etc/target /etc/rtslib-fb-target
out=$(tcli set global auto_save_on_exit=false auto_add_default_portal=false 2>&1)
echo "$out"
# already-set values print nothing: confirm with `get` then (its output: "name=value ")
grep -q "auto_add_default_portal is now 'false'" <<<"$out" \
  || tcli get global auto_add_default_portal | grep -qx 'auto_add_default_portal=false *' \
  || die "targetcli did not take auto_add_default_portal=false"
dbroot=$(cat "$CONFIGFS_TARGET/dbroot")
# without <db_root>/pr every PERSISTENT RESERVE OUT fails (LOGICAL UNIT COMMUNICATION FAILURE)
mkdir -p "$dbroot/pr" "$dbroot/alua"
result "$dbroot"
