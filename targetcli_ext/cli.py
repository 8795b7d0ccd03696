"""``targetcli-rbd``: one-step RBD exports over iSCSI (LIO + the tcmu-rbd daemon).

    targetcli-rbd export rbd/disk1 --initiator iqn.1994-05.com.redhat:client1
    targetcli-rbd export rbd/disk1 --initiator IQN --chap-user alice --chap-secret-file /root/alice.secret
    targetcli-rbd list
    targetcli-rbd resize rbd/disk1 +10G
    targetcli-rbd unexport rbd/disk1
    targetcli-rbd save            # = targetcli saveconfig
    targetcli-rbd shell           # targetcli's own shell, with a /rbd node

Exit status: 0 done (or nothing to do), 1 error, 2 bad usage, 3 the TCMU daemon is
not running. Secrets (CHAP) are read from files, the environment or a prompt, never
from the command line, and never printed or logged.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import sys

from .spec import (
    DEFAULT_PORTAL, ENV_CHAP_SECRET, ENV_DISCOVERY_MUTUAL_SECRET, ENV_DISCOVERY_SECRET,
    ENV_MUTUAL_SECRET, Chap, Defaults, ExtError, load_secret, parse_auth_file,
    parse_image, parse_portal,
)

TARGETCLI_LOCK = "/var/run/targetcli.lock"


def _add_ceph_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster access (also written into the LUN's config for "
                             "the daemon)")
    g.add_argument("--conf", help="ceph.conf path (default: librados' search, "
                                  "$CEPH_CONF, /etc/ceph/ceph.conf)")
    g.add_argument("--id", dest="client_id", help="cephx user without 'client.' "
                                                  "(default admin)")
    g.add_argument("--keyring", help="keyring path (default: the one ceph.conf names)")


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
    ex.add_argument("--name", help="backstore name (default <pool>.<image>)")
    ex.add_argument("--lun", type=int, help="LUN number (default: the next free)")
    ex.add_argument("--wwn", help="unit serial to report (default: generated; give the "
                                  "same one on every gateway of a multipath LUN)")
    ex.add_argument("--demo-mode", action="store_true",
                    help="let ANY initiator log in without an ACL (labs only)")
    ex.add_argument("--osd-op-timeout", type=int, default=d.osd_op_timeout,
                    help=f"seconds (default {d.osd_op_timeout})")
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
    _add_ceph_opts(ex)

    un = sub.add_parser("unexport", help="remove an image's LUN and backstore (and the "
                                         "target once it has no LUN)")
    un.add_argument("image", nargs="?", help="<pool>/<image>[@<snap>]")
    un.add_argument("--name", help="the backstore name instead of the image")
    un.add_argument("--keep-target", action="store_true",
                    help="keep the target even when it has no LUN left")
    un.add_argument("--force", action="store_true",
                    help="do not require the daemon (the kernel may then wait for it)")

    sub.add_parser("list", help="exports: image, size, serial, LUN, target, portals, "
                                "ACLs, sessions, device state")

    rs = sub.add_parser("resize", help="grow an image and its LUN (initiators see the "
                                       "new capacity)")
    rs.add_argument("image")
    rs.add_argument("size", help="new size (20G) or growth (+5G)")
    _add_ceph_opts(rs)

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


def chap_from_args(user, secret_file, mutual_user, mutual_file, *, env, mutual_env,
                   what="CHAP", environ=None) -> Chap | None:
    """CHAP credentials from options; None when no user is given."""
    if not user:
        if secret_file or mutual_user or mutual_file:
            raise ExtError(f"{what}: a secret or mutual user without a user "
                           f"(--chap-user / --user)", "bad-chap")
        return None
    secret = load_secret(file=secret_file, env=env, environ=environ,
                         prompt=f"{what} secret for {user}: ", what=f"{what} secret")
    msec = None
    if mutual_user:
        msec = load_secret(file=mutual_file, env=mutual_env, environ=environ,
                           prompt=f"mutual {what} secret for {mutual_user}: ",
                           what=f"mutual {what} secret")
    elif mutual_file:
        raise ExtError(f"{what}: --mutual-secret-file without --mutual-user", "bad-chap")
    return Chap(user, secret, mutual_user, msec)


def export_request(a, environ=None):
    """An ExportRequest from parsed `export` arguments (pure: no configfs)."""
    from .core import ExportRequest
    d = defaults_from_args(a)
    d.check()
    ref = parse_image(a.image, osd_op_timeout=a.osd_op_timeout, conf=a.conf,
                      client_id=a.client_id, keyring=a.keyring)
    portals = [parse_portal(p) for p in a.portal]
    initiators = list(a.initiator)
    chap: dict = {}
    hints: dict = {}
    one = chap_from_args(a.chap_user, a.chap_secret_file, a.mutual_user,
                         a.mutual_secret_file, env=ENV_CHAP_SECRET,
                         mutual_env=ENV_MUTUAL_SECRET, environ=environ)
    if one is not None:
        if not initiators:
            raise ExtError("--chap-user needs the --initiator(s) it applies to", "bad-chap")
        for i in initiators:
            chap[i] = one
            hints[i] = (f"CHAP secret from {one.secret.source}",
                        f"mutual secret from {one.mutual_secret.source}"
                        if one.mutual else None)
    if a.auth_file:
        for i, c in parse_auth_file(a.auth_file).items():
            if i in chap:
                raise ExtError(f"{i} has credentials from both --chap-user and "
                               f"--auth-file", "bad-chap")
            chap[i] = c
            hints[i] = (f"CHAP secret of {i} in {a.auth_file}",
                        f"mutual secret of {i} in {a.auth_file}" if c.mutual else None)
            if i not in initiators:
                initiators.append(i)
    if a.demo_mode and initiators:
        raise ExtError("--demo-mode allows any initiator: do not combine it with "
                       "--initiator/--auth-file", "bad-option")
    return ExportRequest(image=ref, target=a.target, portals=portals,
                         initiators=initiators, chap=chap, name=a.name, lun=a.lun,
                         wwn=a.wwn, demo_mode=a.demo_mode, defaults=d,
                         secret_hints=hints)


@contextlib.contextmanager
def targetcli_lock(path: str = TARGETCLI_LOCK):
    """targetcli's own lock: a concurrent targetcli waits for us and vice versa."""
    try:
        fd = open(path, "w+")
    except OSError:
        yield
        return
    with fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def run(a, gw=None, environ=None, lock: bool = True):
    """Execute a parsed command; returns a Report. ``lock=False`` inside targetcli's
    shell (which holds targetcli's lock already)."""
    from .core import Gateway
    gw = gw or Gateway()
    targetcli_lock_ = targetcli_lock if lock else (lambda: contextlib.nullcontext())
    v = a.verb
    if v == "export":
        req = export_request(a, environ)
        if req.demo_mode:
            print("WARNING: --demo-mode: ANY initiator that can reach the portal may log "
                  "in and write to this LUN (no ACL, no CHAP). Use it only in a lab.",
                  file=sys.stderr)
        with targetcli_lock_():
            return gw.export(req)
    if v == "unexport":
        if not a.image and not a.name:
            raise ExtError("give the image (<pool>/<image>) or --name", "usage", 2)
        ref = parse_image(a.image, osd_op_timeout=None, check_files=False) if a.image \
            else None
        with targetcli_lock_():
            return gw.unexport(ref, name=a.name, keep_target=a.keep_target, force=a.force)
    if v == "list":
        return gw.list()
    if v == "resize":
        ref = parse_image(a.image, osd_op_timeout=None, conf=a.conf,
                          client_id=a.client_id, keyring=a.keyring)
        with targetcli_lock_():
            return gw.resize(ref, a.size)
    if v == "save":
        with targetcli_lock_():
            return gw.save(a.file)
    if v == "restore":
        with targetcli_lock_():
            return gw.restore(a.file, clear=a.clear)
    if v == "discovery-auth":
        if a.disable:
            if a.user:
                raise ExtError("--disable and --user exclude each other", "usage", 2)
            chap = None
        else:
            if not a.user:
                raise ExtError("give --user (and --secret-file or $"
                               f"{ENV_DISCOVERY_SECRET}), or --disable", "usage", 2)
            chap = chap_from_args(a.user, a.secret_file, a.mutual_user,
                                  a.mutual_secret_file, env=ENV_DISCOVERY_SECRET,
                                  mutual_env=ENV_DISCOVERY_MUTUAL_SECRET,
                                  what="discovery CHAP", environ=environ)
        with targetcli_lock_():
            return gw.discovery_auth(chap)
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


def main(argv: list[str] | None = None, gw=None) -> int:
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
        from .shell import main as shell_main
        return shell_main(argv[1:])
    ap = build_parser()
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING,
                        format="targetcli-rbd: %(levelname)s %(message)s")
    try:
        rep = run(a, gw=gw)
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
