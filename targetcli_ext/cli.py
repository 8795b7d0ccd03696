"""``targetcli-rbd``: one-step RBD exports over iSCSI (LIO + the tcmu-rbd daemon).

    targetcli-rbd export rbd/disk1 --initiator iqn.1994-05.com.redhat:client1
    targetcli-rbd export rbd/disk1 --initiator IQN --chap-user alice --chap-secret-file /root/alice.secret
    targetcli-rbd export rbd/disk1 --initiator IQN --dry-run   # the plan; changes nothing
    targetcli-rbd export rbd/disk2 --local    # a /dev/sdX of this host (LIO loopback)
    targetcli-rbd list
    targetcli-rbd resize rbd/disk1 +10G
    targetcli-rbd qos rbd/disk1 --iops 500 --bps 50M   # live; `qos rbd/disk1` shows them
    targetcli-rbd unexport rbd/disk1
    targetcli-rbd save            # = targetcli saveconfig
    targetcli-rbd shell           # targetcli's own shell, with a /rbd node

Several gateways (the configuration shared in RADOS, applied by each gateway's sync):

    targetcli-rbd gateway add gw1 --portal 192.0.2.11:3260     # tag 1
    targetcli-rbd gateway add gw2 --portal 192.0.2.12:3260     # tag 2
    targetcli-rbd export rbd/disk1 --shared --target IQN --initiator IQN
    targetcli-rbd sync --gateway gw1     # on gw1 (a service); --once: apply and exit

Exit status: 0 done (or nothing to do), 1 error, 2 bad usage, 3 the TCMU daemon is
not running. Secrets (CHAP) are read from files, the environment or a prompt, never
from the command line, and never printed or logged.

Belongs here: the argument parser, refusing secrets in argv, turning parsed
arguments into the verbs' options (commands.py; the shared configuration's verbs
get a ConfigStore opened from --config-pool/--config-object/--conf/--id/--keyring),
printing a Report (text or --json) and the exit status.  ``targetcli-rbd shell ...`` goes to launcher.py.
Not here: what a verb does (commands.py, gateway.py), the /rbd node (shell.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import commands, launcher
from .commands import open_store
from .gateway import Gateway
from .spec import (
    DEFAULT_PORTAL, ENV_CHAP_SECRET, ENV_DISCOVERY_SECRET, ENV_MUTUAL_SECRET, Defaults,
    ExtError, Report,
)


def _add_ceph_opts(p: argparse.ArgumentParser,
                   title: str = "cluster access (also written into the LUN's config for "
                                "the daemon)") -> None:
    g = p.add_argument_group(title)
    g.add_argument("--conf", help="ceph.conf path (default: librados' search, "
                                  "$CEPH_CONF, /etc/ceph/ceph.conf)")
    g.add_argument("--id", dest="client_id", help="cephx user without 'client.' "
                                                  "(default admin)")
    g.add_argument("--keyring", help="keyring path (default: the one ceph.conf names)")


def _add_store_opts(p: argparse.ArgumentParser, ceph: bool = True) -> None:
    from .store import DEFAULT_OBJECT, DEFAULT_POOL
    g = p.add_argument_group("the shared configuration (several gateways)")
    g.add_argument("--config-pool", help=f"its pool (default {DEFAULT_POOL})")
    g.add_argument("--config-object", help=f"its object (default {DEFAULT_OBJECT})")
    if ceph:
        _add_ceph_opts(p, "cluster access (for the shared configuration; for export, "
                          "also written into the LUN's config for the daemon)")


def store_options(a) -> commands.StoreOptions:
    return commands.StoreOptions(a.config_pool, a.config_object, a.conf, a.client_id,
                                 a.keyring)


def _add_shared_verbs(sub) -> None:
    gw = sub.add_parser("gateway", help="the gateways in the shared configuration")
    gsub = gw.add_subparsers(dest="gateway_verb", required=True, metavar="ACTION")
    ga = gsub.add_parser("add", help="add a gateway (or change its portal/tag)")
    ga.add_argument("name", help="the gateway's name (letters, digits, - _; e.g. its "
                                 "host name)")
    ga.add_argument("--portal", "-p", required=True, help="IP[:PORT] initiators reach "
                                                          "this gateway at")
    ga.add_argument("--tag", type=int, help="its TPG tag and ALUA group id (default: the "
                                            "lowest free, from 1)")
    gr = gsub.add_parser("remove", help="remove a gateway (its disks get new owners)")
    gr.add_argument("name")
    gl = gsub.add_parser("list", help="the gateways, their targets and owned disks")
    for p in (ga, gr):
        p.add_argument("--dry-run", action="store_true", help="print the change only")
    for p in (ga, gr, gl):
        _add_store_opts(p)

    sy = sub.add_parser("sync", help="apply the shared configuration to this gateway's "
                                     "LIO, and keep it applied",
                        description="Reads the shared configuration, makes this "
                        "gateway's LIO match it, then watches it and applies every "
                        "change within a second (and re-reads every --interval s) until "
                        "SIGTERM. Each change is logged in one line on stderr.")
    sy.add_argument("--gateway", "-g", required=True, help="this gateway's name")
    sy.add_argument("--once", action="store_true", help="apply once and exit (1 on "
                                                        "errors)")
    sy.add_argument("--interval", type=float, help="seconds between re-reads "
                                                   "(default 30)")
    sy.add_argument("--state-dir", help="where sync remembers the targets it serves "
                                        "(default /var/lib/tcmu-rbd)")
    sy.add_argument("--dry-run", action="store_true",
                    help="print what this gateway must have, and change nothing")
    _add_store_opts(sy)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="targetcli-rbd",
        description="Export Ceph RBD images over iSCSI with LIO and the tcmu-rbd daemon, "
                    "in one step.",
        epilog="Exit status: 0 ok, 1 error, 2 usage, 3 TCMU daemon not running.",
        allow_abbrev=False)
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug log on stderr")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, allow_abbrev=False, **k)  # type: ignore

    d = Defaults()
    ex = sub.add_parser("export", help="export an image as an iSCSI LUN (one step)",
                        description="Create the user:rbd backstore (validated by the "
                        "daemon), target, TPG, portals, LUN and ACLs, then print how an "
                        "initiator connects. Re-running the same export changes nothing.")
    ex.add_argument("image", help="<pool>/<image>, <pool>/<namespace>/<image>, or "
                                  "...@<snapshot> (read-only LUN)")
    ex.add_argument("--target", "-t", help="target IQN (default iqn.2003-01.org."
                                           "linux-iscsi.<hostname>:rbd)")
    ex.add_argument("--portal", "-p", action="append", default=[],
                    help=f"IP[:PORT] to listen on, repeatable (default {DEFAULT_PORTAL}: "
                         f"local initiators only; 0.0.0.0 only if given explicitly)")
    ex.add_argument("--initiator", "-i", action="append", default=[],
                    help="initiator IQN allowed to log in (an ACL), repeatable")
    ex.add_argument("--chap-user", help="CHAP user for the --initiator ACLs (secret: "
                                        "--chap-secret-file, $" + ENV_CHAP_SECRET +
                                        " or a prompt)")
    ex.add_argument("--chap-secret-file", help="file whose first line is the CHAP secret")
    ex.add_argument("--mutual-user", help="mutual CHAP: the user the target answers with")
    ex.add_argument("--mutual-secret-file", help="file whose first line is the mutual "
                                                 "secret (or $" + ENV_MUTUAL_SECRET + ")")
    ex.add_argument("--auth-file", help="per-initiator CHAP: lines '<initiator iqn> <user> "
                                        "<secret> [<mutual user> <mutual secret>]' "
                                        "(mode 0600); adds those initiators' ACLs")
    ex.add_argument("--no-chap", action="store_true",
                    help="the --initiator ACLs have no CHAP (the default, said explicitly)")
    ex.add_argument("--name", help="backstore name (default <pool>.<image>)")
    ex.add_argument("--lun", type=int, help="LUN number (default: the next free)")
    ex.add_argument("--wwn", help="unit serial to report (default: generated; give the "
                                  "same one on every gateway of a multipath LUN)")
    ex.add_argument("--demo-mode", action="store_true",
                    help="let ANY initiator log in without an ACL (labs only)")
    ex.add_argument("--local", action="store_true",
                    help="a SCSI disk of this host instead of an iSCSI LUN (LIO's loopback "
                         "fabric: /dev/sdX with UNMAP, WRITE SAME, GET LBA STATUS); no "
                         "target, portal, initiator or CHAP options")
    ex.add_argument("--shared", action="store_true",
                    help="put the export into the shared configuration (every gateway of "
                         "--target serves it, through its sync) instead of this LIO")
    ex.add_argument("--gateways", help="with --shared: the target's gateways, comma-"
                                       "separated (default: all; added to an existing "
                                       "target's)")
    ex.add_argument("--dry-run", action="store_true",
                    help="print what the export would create or change (with --json: "
                         "the plan as JSON), and change nothing")
    ex.add_argument("--osd-op-timeout", type=int, default=d.osd_op_timeout,
                    help=f"seconds (default {d.osd_op_timeout})")
    qg = ex.add_argument_group("QoS (librbd's limiter; set as the image's settings, "
                               "like `targetcli-rbd qos`)")
    qg.add_argument("--qos-iops", metavar="N", help="at most N I/O requests per second "
                                                    "(0: no limit)")
    qg.add_argument("--qos-bps", metavar="BYTES", help="at most BYTES per second, K/M/G/T "
                                                       "binary (50M = 50 MiB/s)")
    tun = ex.add_argument_group("LUN/TPG tuning (proven defaults)")
    tun.add_argument("--max-data-area-mb", type=int, default=d.max_data_area_mb,
                     help=f"ring data area per LUN (default {d.max_data_area_mb}: 128 "
                          f"commands of hw_max_sectors in flight)")
    tun.add_argument("--hw-max-sectors", type=int, default=d.hw_max_sectors)
    tun.add_argument("--cmd-time-out", type=int, default=d.cmd_time_out)
    tun.add_argument("--qfull-time-out", type=int, default=d.qfull_time_out)
    tun.add_argument("--cmdsn-depth", type=int, default=d.cmdsn_depth)
    tun.add_argument("--max-burst-length", type=int, default=d.max_burst_length)
    tun.add_argument("--first-burst-length", type=int, default=d.first_burst_length)
    tun.add_argument("--max-recv-data-segment-length", type=int,
                     default=d.max_recv_data_segment_length)
    tun.add_argument("--max-xmit-data-segment-length", type=int,
                     default=d.max_xmit_data_segment_length)
    tun.add_argument("--no-immediate-data", action="store_true")
    tun.add_argument("--no-initial-r2t", action="store_true")
    _add_store_opts(ex)

    un = sub.add_parser("unexport", help="remove an image's LUN and backstore (and the "
                                         "target once it has no LUN)")
    un.add_argument("image", nargs="?", help="<pool>/<image>[@<snap>]")
    un.add_argument("--name", help="the backstore name instead of the image")
    un.add_argument("--keep-target", action="store_true",
                    help="keep the target even when it has no LUN left")
    un.add_argument("--force", action="store_true",
                    help="do not require the daemon (the kernel may then wait for it; a "
                         "local disk is set offline first)")
    un.add_argument("--local", action="store_true",
                    help="remove only the image's local disk (its iSCSI LUNs stay)")
    un.add_argument("--shared", action="store_true",
                    help="remove the image from the shared configuration (every gateway's "
                         "sync then removes its LUN)")
    un.add_argument("--dry-run", action="store_true", help="with --shared: print the "
                                                           "change only")
    _add_store_opts(un)

    sub.add_parser("list", help="exports: image, size, serial, LUN, target, portals, "
                                "ACLs, sessions, device state")

    rs = sub.add_parser("resize", help="grow an image and its LUN (initiators see the "
                                       "new capacity)")
    rs.add_argument("image")
    rs.add_argument("size", help="new size (20G) or growth (+5G)")
    _add_ceph_opts(rs)
    _add_qos_verb(sub)

    sv = sub.add_parser("save", help="save the LIO configuration (targetcli saveconfig)")
    sv.add_argument("file", nargs="?", help="default /etc/rtslib-fb-target/saveconfig.json")
    rt = sub.add_parser("restore", help="restore a saved configuration (targetcli "
                                        "restoreconfig); the daemon must run")
    rt.add_argument("file", nargs="?")
    rt.add_argument("--clear", action="store_true",
                    help="replace the current configuration")

    da = sub.add_parser("discovery-auth", help="CHAP for SendTargets discovery")
    da.add_argument("--user", help="discovery CHAP user (secret: --secret-file or $"
                                   + ENV_DISCOVERY_SECRET + ")")
    da.add_argument("--secret-file")
    da.add_argument("--mutual-user")
    da.add_argument("--mutual-secret-file")
    da.add_argument("--disable", action="store_true", help="turn discovery auth off")

    _add_shared_verbs(sub)

    sub.add_parser("shell", help="targetcli's shell with a /rbd node (args: a targetcli "
                                 "command to run)", add_help=False)
    return ap


def defaults_from_args(a) -> Defaults:
    return Defaults(
        max_data_area_mb=a.max_data_area_mb, hw_max_sectors=a.hw_max_sectors,
        cmd_time_out=a.cmd_time_out, qfull_time_out=a.qfull_time_out,
        cmdsn_depth=a.cmdsn_depth, osd_op_timeout=a.osd_op_timeout,
        immediate_data=not a.no_immediate_data, initial_r2t=not a.no_initial_r2t,
        max_burst_length=a.max_burst_length, first_burst_length=a.first_burst_length,
        max_recv_data_segment_length=a.max_recv_data_segment_length,
        max_xmit_data_segment_length=a.max_xmit_data_segment_length)


def export_options(a) -> commands.ExportOptions:
    """The ExportOptions of parsed `export` arguments."""
    return commands.ExportOptions(
        image=a.image, target=a.target, portals=list(a.portal),
        initiators=list(a.initiator), chap_user=a.chap_user,
        chap_secret_file=a.chap_secret_file, mutual_user=a.mutual_user,
        mutual_secret_file=a.mutual_secret_file, auth_file=a.auth_file,
        no_chap=a.no_chap, name=a.name,
        lun=a.lun, wwn=a.wwn, demo_mode=a.demo_mode, local=a.local, conf=a.conf,
        client_id=a.client_id, keyring=a.keyring, defaults=defaults_from_args(a),
        dry_run=a.dry_run, qos={"iops": a.qos_iops, "bps": a.qos_bps})


def _add_qos_verb(sub) -> None:
    from tcmu_rbd.qos import NAMES, PRECEDENCE, is_bytes
    qs = sub.add_parser(
        "qos", help="show or change an image's QoS limits (live: no restart)",
        description="Without limits: print the QoS limits that apply to the image's LUNs "
        "and where each comes from (image, pool, the LUN's config string, client). With "
        "limits: write them as the image's own settings (image metadata conf_rbd_qos_*, "
        "as `rbd config image set` does): every open LUN of the image, on every gateway, "
        "applies them within a second. 0 means no limit (and, set on the image, "
        "overrides a pool's or config string's limit); --clear removes the image's own "
        "settings, so the pool's and the config string's apply again.",
        epilog=PRECEDENCE + " IOPS: whole requests per second. Bytes: per second, with "
        "an optional binary suffix K, M, G, T (10M = 10MiB = 10485760); 10MB and 10Mb are "
        "refused as ambiguous. A burst lets the LUN exceed its limit up to the burst for "
        "rbd_qos_*_burst_seconds (1 s); it must not be below its limit.")
    qs.add_argument("image", help="<pool>/<image> or <pool>/<namespace>/<image>")
    for n in NAMES:
        what = "bytes per second" if is_bytes(n) else "I/O requests per second"
        qs.add_argument(f"--{n.replace('_', '-')}", dest=f"qos_{n}",
                        metavar="BYTES" if is_bytes(n) else "N",
                        help=("burst: up to " if n.endswith("_burst") else "limit: at most ")
                        + ("BYTES " if is_bytes(n) else "N ") + what
                        + (f" ({n.split('_')[0]}s only)" if n.startswith(("read", "write"))
                           else ""))
    qs.add_argument("--clear", action="store_true",
                    help="remove the image's own QoS settings first")
    qs.add_argument("--dry-run", action="store_true", help="print the change only")
    _add_ceph_opts(qs, "cluster access (default: the LUN's own, else librados' search)")


SHARED_VERBS = ("gateway", "sync")


def uses_store(a) -> bool:
    return a.verb in SHARED_VERBS or getattr(a, "shared", False)


def run_shared(a, store, environ=None) -> Report:
    """The verbs of the shared configuration, with ``store``."""
    v = a.verb
    if v == "gateway":
        if a.gateway_verb == "add":
            return commands.gateway_add(store, a.name, a.portal, a.tag, dry_run=a.dry_run)
        if a.gateway_verb == "remove":
            return commands.gateway_remove(store, a.name, dry_run=a.dry_run)
        return commands.gateway_list(store)
    if v == "export":
        gws = [g.strip() for g in a.gateways.split(",") if g.strip()] if a.gateways \
            else None
        return commands.export_shared(store, export_options(a), gws, environ=environ)
    if v == "unexport":
        if not a.image or a.name or a.local:
            raise ExtError("unexport --shared takes the image (<pool>/<image>), without "
                           "--name or --local", "usage", 2)
        return commands.unexport_shared(store, a.image, keep_target=a.keep_target,
                                        dry_run=a.dry_run)
    if v == "sync":
        return commands.sync(store, a.gateway, once=a.once, interval=a.interval,
                             state_dir=a.state_dir, dry_run=a.dry_run)
    raise ExtError(f"unknown verb {v}", "usage", 2)


def run(a, gw, environ=None) -> Report:
    """Execute parsed arguments with ``gw``; returns the verb's Report."""
    v = a.verb
    if v == "export":
        if a.gateways:
            raise ExtError("--gateways needs --shared", "usage", 2)
        return commands.export(gw, export_options(a), environ=environ)
    if v == "unexport":
        if a.dry_run:
            raise ExtError("unexport --dry-run needs --shared", "usage", 2)
        return commands.unexport(gw, a.image, name=a.name, keep_target=a.keep_target,
                                 force=a.force, local=a.local)
    if v == "list":
        return commands.list_exports(gw)
    if v == "qos":
        from tcmu_rbd.qos import NAMES
        return commands.qos(gw, a.image, {n: getattr(a, f"qos_{n}") for n in NAMES},
                            clear=a.clear, dry_run=a.dry_run, conf=a.conf,
                            client_id=a.client_id, keyring=a.keyring)
    if v == "resize":
        return commands.resize(gw, a.image, a.size, conf=a.conf, client_id=a.client_id,
                               keyring=a.keyring)
    if v == "save":
        return commands.save(gw, a.file)
    if v == "restore":
        return commands.restore(gw, a.file, clear=a.clear)
    if v == "discovery-auth":
        return commands.discovery_auth(gw, user=a.user, secret_file=a.secret_file,
                                       mutual_user=a.mutual_user,
                                       mutual_secret_file=a.mutual_secret_file,
                                       disable=a.disable, environ=environ)
    raise ExtError(f"unknown verb {v}", "usage", 2)


_SECRET_WORDS = ("secret", "password", "passwd")


def secret_on_command_line(argv: list[str]) -> str | None:
    """The name of an option that looks like it carries a secret on the command line
    (``--chap-secret X``, ``--password=X``), or None. Only ``...-secret-file``
    options and ``--auth-file`` are allowed."""
    for arg in argv:
        if not arg.startswith("-"):
            continue
        name = arg.split("=", 1)[0].lower()
        if any(w in name for w in _SECRET_WORDS) and not name.endswith("-file"):
            return name
    return None


def main(argv: list[str] | None = None, gw=None, store=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = secret_on_command_line(argv[1:] if argv[:1] == ["shell"] else argv)
    if bad:
        # never echo the value: it would be in the terminal, ps and shell history
        print(f"targetcli-rbd: {bad}: secrets are not accepted on the command line (ps and "
              f"shell history show them): put the secret in a file (mode 0600) and pass "
              f"--chap-secret-file / --mutual-secret-file / --auth-file, or set "
              f"${ENV_CHAP_SECRET} / ${ENV_MUTUAL_SECRET}", file=sys.stderr)
        return 2
    if argv[:1] == ["shell"]:
        return launcher.main(argv[1:])
    ap = build_parser()
    a = ap.parse_args(argv)
    level = logging.DEBUG if a.verbose else \
        logging.INFO if a.verb == "sync" else logging.WARNING
    logging.basicConfig(level=level, format="targetcli-rbd: %(levelname)s %(message)s")
    try:
        if uses_store(a):
            own = store is None
            st = open_store(store_options(a)) if own else store
            try:
                rep = run_shared(a, st)
            finally:
                if own:
                    st.close()
        else:
            rep = run(a, gw or Gateway())
    except ExtError as e:
        if a.json:
            print(json.dumps({"ok": False, "error": str(e), "code": e.code}))
        print(f"targetcli-rbd {a.verb}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if a.json:
        print(json.dumps({"ok": True, **rep.data}, indent=1, default=str))
    else:
        print("\n".join(rep.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
