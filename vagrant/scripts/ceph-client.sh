#!/usr/bin/env bash
# The client side of the lab's cluster, for gateways on other hosts. Usage:
#   ceph-client.sh --out DIR [--conf CEPH_CONF] [--id admin]
# Writes DIR/ceph.conf (`ceph config generate-minimal-conf`: fsid + mon_host) and
# DIR/ceph.client.<id>.keyring (mode 0600) and prints DIR. --conf defaults to the
# cluster ceph.sh started on this host. Refuses a cluster whose monitors listen on
# loopback only: no other host could reach it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

out= conf= id=admin
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --conf) conf=$2; shift 2 ;;
    --id) id=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -n "$out" ] || die "--out DIR is required"
if [ -z "$conf" ]; then
  conf=$(cat "$LAB_STATE_DIR/ceph_dir" 2>/dev/null)/ceph.conf || die "no --conf and no cluster started by ceph.sh here"
fi
[ -f "$conf" ] || die "$conf not found"

install -d -m 0700 "$out"
ceph -c "$conf" config generate-minimal-conf >"$out/ceph.conf.new"
mon=$(sed -n 's/^[[:space:]]*mon_host[[:space:]]*=[[:space:]]*//p' "$out/ceph.conf.new")
[ -n "$mon" ] || die "no mon_host in the generated conf"
ips=$(grep -oE '([0-9]{1,3}\.){3}[0-9]{1,3}' <<<"$mon" || true)
[ -n "$ips" ] || die "no IPv4 monitor address in mon_host ($mon)"
# LAB_ALLOW_LOOPBACK=1: the boxes share one host (tests): a loopback address is fine
[ "${LAB_ALLOW_LOOPBACK:-}" = 1 ] || grep -qv '^127\.' <<<"$ips" \
  || die "the monitors listen on loopback only ($mon): start the cluster on a public address"
mv "$out/ceph.conf.new" "$out/ceph.conf"
chmod 0644 "$out/ceph.conf"
( umask 077; ceph -c "$conf" auth get "client.$id" >"$out/ceph.client.$id.keyring" )
result "$out"
