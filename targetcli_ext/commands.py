"""The verbs of targetcli-rbd, shared by both front ends: the command line
(cli.py) and the /rbd node in targetcli's shell (shell.py).

Belongs here: one function per verb (export, unexport, list, resize, save,
restore, discovery-auth) taking plain option values and a :class:`~.gateway.Gateway`
and returning its Report; turning options into requests (image specs, portals,
CHAP credentials loaded from files, the environment or a prompt, never from an
option value); targetcli's lock around changes (the shell holds it already:
``lock=False``).

Not here: argv and argparse, printing and exit statuses (cli.py), configshell's
parameters (shell.py), what the operations do (gateway.py and below).  No front
end is imported here.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from dataclasses import dataclass, field

from .plan import ExportRequest
from .spec import (
    ENV_CHAP_SECRET, ENV_DISCOVERY_MUTUAL_SECRET, ENV_DISCOVERY_SECRET, ENV_MUTUAL_SECRET,
    Chap, Defaults, ExtError, Report, load_secret, parse_auth_file, parse_image,
    parse_portal,
)

TARGETCLI_LOCK = "/var/run/targetcli.lock"


@contextlib.contextmanager
def targetcli_lock(path: str | None = None):
    """targetcli's own lock: a concurrent targetcli waits for us and vice versa."""
    try:
        fd = open(path or TARGETCLI_LOCK, "w+")
    except OSError:
        yield
        return
    with fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _locked(lock: bool):
    return targetcli_lock() if lock else contextlib.nullcontext()


def chap_from_options(user, secret_file, mutual_user, mutual_file, *, env, mutual_env,
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


@dataclass
class ExportOptions:
    """An export as the operator wrote it (strings; secrets only as file names)."""

    image: str
    target: str | None = None
    portals: list[str] = field(default_factory=list)
    initiators: list[str] = field(default_factory=list)
    chap_user: str | None = None
    chap_secret_file: str | None = None
    mutual_user: str | None = None
    mutual_secret_file: str | None = None
    auth_file: str | None = None
    name: str | None = None
    lun: int | None = None
    wwn: str | None = None
    demo_mode: bool = False
    conf: str | None = None
    client_id: str | None = None
    keyring: str | None = None
    defaults: Defaults = field(default_factory=Defaults)
    dry_run: bool = False


def export_request(o: ExportOptions, environ=None) -> ExportRequest:
    """The ExportRequest of ``o`` (loads the CHAP secrets; no configfs)."""
    d = o.defaults
    d.check()
    ref = parse_image(o.image, osd_op_timeout=d.osd_op_timeout, conf=o.conf,
                      client_id=o.client_id, keyring=o.keyring)
    portals = [parse_portal(p) for p in o.portals]
    initiators = list(o.initiators)
    chap: dict = {}
    hints: dict = {}
    one = chap_from_options(o.chap_user, o.chap_secret_file, o.mutual_user,
                            o.mutual_secret_file, env=ENV_CHAP_SECRET,
                            mutual_env=ENV_MUTUAL_SECRET, environ=environ)
    if one is not None:
        if not initiators:
            raise ExtError("--chap-user needs the --initiator(s) it applies to", "bad-chap")
        for i in initiators:
            chap[i] = one
            hints[i] = (f"CHAP secret from {one.secret.source}",
                        f"mutual secret from {one.mutual_secret.source}"
                        if one.mutual else None)
    if o.auth_file:
        for i, c in parse_auth_file(o.auth_file).items():
            if i in chap:
                raise ExtError(f"{i} has credentials from both --chap-user and "
                               f"--auth-file", "bad-chap")
            chap[i] = c
            hints[i] = (f"CHAP secret of {i} in {o.auth_file}",
                        f"mutual secret of {i} in {o.auth_file}" if c.mutual else None)
            if i not in initiators:
                initiators.append(i)
    if o.demo_mode and initiators:
        raise ExtError("--demo-mode allows any initiator: do not combine it with "
                       "--initiator/--auth-file", "bad-option")
    return ExportRequest(image=ref, target=o.target, portals=portals,
                         initiators=initiators, chap=chap, name=o.name, lun=o.lun,
                         wwn=o.wwn, demo_mode=o.demo_mode, defaults=d,
                         secret_hints=hints)


def export(gw, o: ExportOptions, *, environ=None, lock: bool = True) -> Report:
    req = export_request(o, environ)
    if req.demo_mode:
        print("WARNING: --demo-mode: ANY initiator that can reach the portal may log "
              "in and write to this LUN (no ACL, no CHAP). Use it only in a lab.",
              file=sys.stderr)
    with _locked(lock):
        return gw.export(req, dry_run=o.dry_run)


def unexport(gw, image: str | None = None, *, name: str | None = None,
             keep_target: bool = False, force: bool = False, lock: bool = True) -> Report:
    if not image and not name:
        raise ExtError("give the image (<pool>/<image>) or --name", "usage", 2)
    ref = parse_image(image, osd_op_timeout=None, check_files=False) if image else None
    with _locked(lock):
        return gw.unexport(ref, name=name, keep_target=keep_target, force=force)


def list_exports(gw) -> Report:
    return gw.list()


def resize(gw, image: str, size: str, *, conf=None, client_id=None, keyring=None,
           lock: bool = True) -> Report:
    ref = parse_image(image, osd_op_timeout=None, conf=conf, client_id=client_id,
                      keyring=keyring)
    with _locked(lock):
        return gw.resize(ref, size)


def save(gw, file: str | None = None, *, lock: bool = True) -> Report:
    with _locked(lock):
        return gw.save(file)


def restore(gw, file: str | None = None, *, clear: bool = False, lock: bool = True) -> Report:
    with _locked(lock):
        return gw.restore(file, clear=clear)


def discovery_auth(gw, *, user=None, secret_file=None, mutual_user=None,
                   mutual_secret_file=None, disable: bool = False, environ=None,
                   lock: bool = True) -> Report:
    if disable:
        if user:
            raise ExtError("--disable and --user exclude each other", "usage", 2)
        chap = None
    else:
        if not user:
            raise ExtError("give --user (and --secret-file or $"
                           f"{ENV_DISCOVERY_SECRET}), or --disable", "usage", 2)
        chap = chap_from_options(user, secret_file, mutual_user, mutual_secret_file,
                                 env=ENV_DISCOVERY_SECRET,
                                 mutual_env=ENV_DISCOVERY_MUTUAL_SECRET,
                                 what="discovery CHAP", environ=environ)
    with _locked(lock):
        return gw.discovery_auth(chap)
