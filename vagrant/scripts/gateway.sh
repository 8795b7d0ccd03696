#!/usr/bin/env bash
# What a real gateway host needs beyond the other lab scripts (the one-VM test runs
# its daemon and `targetcli-rbd sync` by hand instead). Usage:
#   gateway.sh install --ceph DIR [--deb FILE]
#       /etc/ceph from DIR (ceph.conf + *.keyring, as ceph-client.sh wrote them on
#       the cluster's host); the daemon as packaged (README "Installing on a
#       gateway"): the tcmu-rbd .deb (FILE, else built from this tree with
#       scripts/build-deb) installed with apt-get: /usr/bin/tcmu-rbd and
#       targetcli-rbd, tcmu-rbd.service enabled, the D-Bus policy and activation
#       files, /etc/tcmu-rbd/tcmu-rbd.conf, tcmu-runner removed; the LIO modules
#       loaded at boot (then start it with dbus.sh, kernel-target.sh, tcmu-daemon.sh).
#   gateway.sh sync --gateway NAME [--target IQN --tag N]
#       targetcli-rbd-sync.service running `targetcli-rbd sync --gateway NAME`
#       (this host's LIO objects from the shared configuration), enabled and
#       started; with --target/--tag, waits until that TPG is enabled with a LUN.
# Needs systemd. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action=${1:-}; shift || true
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
ceph= deb= gw= target= tag=
while [ $# -gt 0 ]; do
  case $1 in
    --ceph) ceph=$2; shift 2 ;;
    --deb) deb=$2; shift 2 ;;
    --gateway) gw=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
have_systemd || die "gateway.sh installs systemd units: this host has no systemd"

case $action in
  install)
    [ -n "$ceph" ] || die "--ceph DIR is required"
    [ -s "$ceph/ceph.conf" ] || die "no ceph.conf in $ceph (bring the cluster's host up first)"
    keyrings=("$ceph"/*.keyring)
    [ -s "${keyrings[0]}" ] || die "no keyring in $ceph"
    if [ -z "$deb" ]; then
      deb=$("$repo/scripts/build-deb" "$LAB_STATE_DIR/deb") || die "scripts/build-deb failed (run scripts/setup first)"
    fi
    [ -f "$deb" ] || die "no package $deb"
    install -d /etc/ceph
    install -m 0644 "$ceph/ceph.conf" /etc/ceph/ceph.conf
    for k in "${keyrings[@]}"; do install -m 0600 "$k" /etc/ceph/; done
    printf 'target_core_user\niscsi_target_mod\n' >/etc/modules-load.d/tcmu-rbd.conf
    # Conflicts + Replaces: apt removes tcmu-runner; the unit is enabled and started
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$(realpath "$deb")"
    # a unit left in /etc by this script's venv installs of old would hide the package's
    rm -f /etc/systemd/system/tcmu-rbd.service
    systemctl daemon-reload
    systemctl is-enabled tcmu-rbd.service
    result "installed $(dpkg-query -W -f='${Version}' tcmu-rbd)"
    ;;
  sync)
    [ -n "$gw" ] || die "--gateway NAME is required"
    { [ -n "$target" ] && [ -n "$tag" ]; } || [ -z "$target$tag" ] || die "--target and --tag go together"
    cat >/etc/systemd/system/targetcli-rbd-sync.service <<EOF
[Unit]
Description=targetcli-rbd sync: gateway $gw's LIO objects from the shared configuration
Requires=tcmu-rbd.service
After=tcmu-rbd.service network-online.target
Wants=network-online.target

[Service]
Environment=TARGETCLI_HOME=/root/.targetcli
ExecStart=/usr/bin/targetcli-rbd sync --gateway $gw
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
    systemctl daemon-reload
    systemctl enable targetcli-rbd-sync.service
    systemctl restart targetcli-rbd-sync.service
    if [ -n "$target" ]; then
      tpg=$CONFIGFS_TARGET/iscsi/$target/tpgt_$tag
      applied() { [ -d "$tpg/lun/lun_0" ] && [ "$(cat "$tpg/enable" 2>/dev/null)" = 1 ]; }
      wait_until 120 "TPG $tag of $target (targetcli-rbd sync --gateway $gw)" applied
      ls -l "$tpg/lun/lun_0" "$tpg/np"
    fi
    result "$(systemctl show -p MainPID --value targetcli-rbd-sync.service)"
    ;;
  *) die "usage: gateway.sh install|sync ..." ;;
esac
