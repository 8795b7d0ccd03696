#!/usr/bin/env bash
# Guest side of tests/vm/test_package_lab.py: the Debian package as an operator gets
# it. The .deb built on the host (scripts/build-deb; $TCMU_RBD_DEB) is installed with
# dpkg -i into the guest's overlays (virtme-ng mounts /usr, /etc and /var as tmpfs
# overlays over the host's read-only root: nothing reaches the host), replacing
# tcmu-runner (Conflicts + Replaces); the installed daemon is started by its unit's
# ExecStart= (no systemd in the guest), with its D-Bus policy as installed; an image
# is exported with the installed /usr/bin/targetcli-rbd, logged in with open-iscsi,
# and written and read back.
# By hand: .venv/bin/python -m tcmu_rbd_lab.vm tests/vm/guest/package.sh \
#   --env TCMU_RBD_DEB=$(scripts/build-deb) --timeout 600
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/disk_lib.sh"

DEB=${TCMU_RBD_DEB:?the .deb to install (tests/vm/test_package_lab.py builds it)}
UNIT=/lib/systemd/system/tcmu-rbd.service
INIT=iqn.2024-01.org.tcmu-rbd.lab:initiator
TGT=iqn.2003-01.org.linux-iscsi.tcmu-rbd-lab:package
DLOG=$LAB_LOG_DIR/tcmu-rbd.log

# the host's files stay as they are: every directory dpkg writes is a guest overlay
overlays() {
  local d
  for d in /usr /etc /var; do
    findmnt -n -o FSTYPE --mountpoint "$d" | grep -qx overlay || { echo "$d is not an overlay: not installing"; findmnt "$d"; exit 1; }
  done
  echo "/usr /etc /var are overlays"
}
install_deb() {
  # invoke-rc.d starts and stops nothing (tcmu-runner's removal); no man-db rebuild
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  rm -f /var/lib/man-db/auto-update
  dpkg -i "$DEB"
  dpkg-query -W -f='${Status} ${Version}\n' tcmu-rbd | grep '^install ok installed'
}
runner_replaced() {
  local st; st=$(dpkg-query -W -f='${Status}' tcmu-runner 2>/dev/null || true)
  echo "tcmu-runner: ${st:-not known to dpkg}"
  [ ! -e /usr/bin/tcmu-runner ] && [ "${st#*ok }" != installed ]
}
installed_modules() {  # Debian's python3, away from any tree (-c puts the cwd first)
  cd /
  /usr/bin/python3 -c 'import tcmu_rbd, tcmu_rbd._native, targetcli_ext; print(tcmu_rbd._native.__file__)' \
    | tee /dev/stderr | grep '^/usr/lib/python3/dist-packages/tcmu_rbd/' >/dev/null
}
unexport() {  # the installed targetcli-rbd removes the LUN, backstore and target
  /usr/bin/targetcli-rbd unexport rbd/img0
  [ ! -d "/sys/kernel/config/target/iscsi/$TGT" ] && ! ls -d /sys/kernel/config/target/core/user_*/rbd.img0 2>/dev/null
}
packaged_daemon() {  # pid: the daemon runs the installed entry point
  tr '\0' ' ' <"/proc/$1/cmdline" | tee /dev/stderr | grep '^/usr/bin/python3 /usr/bin/tcmu-rbd --foreground' >/dev/null
}

step overlays overlays
step install install_deb
check tcmu_runner_replaced runner_replaced
check installed_modules installed_modules
step ceph_up "$LAB/ceph.sh" up --dir "$LAB_DIR/ceph" --image rbd/img0=256M
export CEPH_CONF=$OUT
# the bus with the installed policy (/usr/share/dbus-1/system.d), none from the tree
step dbus "$LAB/dbus.sh"
step kernel_target "$LAB/kernel-target.sh"
step daemon_start "$LAB/tcmu-daemon.sh" start --unit "$UNIT"
check daemon_is_packaged packaged_daemon "$OUT"
step export /usr/bin/targetcli-rbd export rbd/img0 --target "$TGT" --initiator "$INIT"
step login "$LAB/initiator.sh" login --target "$TGT" --initiator-name "$INIT"
disk=$OUT
fact disk "$disk"
check data_roundtrip dd_roundtrip "$disk"
check logout "$LAB/initiator.sh" logout
check unexport unexport
step teardown "$LAB/teardown.sh"
check daemon_log_clean sh -c "! grep -E 'Traceback|internal error|CRITICAL' '$DLOG'"
