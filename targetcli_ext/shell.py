"""targetcli's own shell with a ``/rbd`` node (``targetcli-rbd shell``).

targetcli-fb has no plugin mechanism, so this loads Debian's ``/usr/bin/targetcli``
script as a module, replaces its ``UIRoot`` with a subclass whose ``refresh()`` also
adds ``/rbd``, and calls its ``main()``: the prompt, preferences, lock file, history,
saveconfig-on-exit and one-shot mode (``targetcli-rbd shell /rbd list``) are all
targetcli's own. The ``/rbd`` commands take the same options as the CLI verbs, in
configshell's ``key=value`` form, lists comma-separated::

    /rbd export rbd/disk1 initiator=iqn.1994-05.com.redhat:c1,iqn.1994-05.com.redhat:c2
    /rbd export rbd/disk2 initiator=IQN chap_user=alice chap_secret_file=/root/alice.secret
    /rbd list
    /rbd resize rbd/disk1 +10G
    /rbd unexport rbd/disk1

Secrets are never parameters (targetcli keeps a command history): only files or the
environment.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

TARGETCLI_SCRIPTS = ("/usr/bin/targetcli", "/usr/sbin/targetcli",
                     "/usr/local/bin/targetcli")


def _ui_node_base():
    from targetcli.ui_node import UINode
    return UINode


def make_rbd_node_class():
    from configshell_fb import ExecutionError

    UINode = _ui_node_base()

    class UIRbd(UINode):
        """/rbd: one-step RBD exports (targetcli-rbd)."""

        def __init__(self, parent):
            super().__init__("rbd", parent)
            self._gw = None

        @property
        def gw(self):
            if self._gw is None:
                from .core import Gateway
                self._gw = Gateway()
            return self._gw

        def summary(self):
            try:
                n = len(self.gw.rbd_backstores())
            except Exception:
                return ("?", None)
            return (f"rbd exports: {n}", True)

        def _run(self, argv: list[str], changes: bool = True):
            from .cli import build_parser, run
            from .spec import ExtError
            try:
                a = build_parser().parse_args(argv)
            except SystemExit:
                raise ExecutionError(f"bad arguments: {' '.join(argv)}") from None
            try:
                rep = run(a, gw=self.gw, lock=False)
            except ExtError as e:
                raise ExecutionError(str(e)) from None
            for line in rep.lines:
                self.shell.con.display(line)
            if changes and rep.changed:
                try:
                    self.get_root().refresh()
                except Exception:
                    pass

        @staticmethod
        def _opts(pairs) -> list[str]:
            out = []
            for flag, value in pairs:
                if value is None or value == "":
                    continue
                if isinstance(value, bool):
                    if value:
                        out.append(flag)
                    continue
                out += [flag, str(value)]
            return out

        @staticmethod
        def _list(flag, value) -> list[tuple[str, str]]:
            return [(flag, v.strip()) for v in str(value or "").split(",") if v.strip()]

        def ui_command_export(self, image, target=None, portal=None, initiator=None,
                              chap_user=None, chap_secret_file=None, mutual_user=None,
                              mutual_secret_file=None, auth_file=None, name=None,
                              lun=None, wwn=None, demo_mode="false", conf=None, id=None,
                              keyring=None, max_data_area_mb=None, hw_max_sectors=None,
                              cmd_time_out=None, qfull_time_out=None, cmdsn_depth=None,
                              osd_op_timeout=None):
            '''
            Exports an RBD image over iSCSI in one step: the user:rbd backstore
            (validated by the TCMU daemon), target, TPG, portals, LUN and ACLs.

            image: pool/image, pool/namespace/image, or ...@snapshot (read-only).
            portal, initiator: comma-separated lists (portal default 127.0.0.1:3260).
            CHAP secrets come from chap_secret_file / mutual_secret_file / auth_file
            or the environment, never from the command line.
            demo_mode=true lets ANY initiator log in (labs only).
            '''
            self.assert_root()
            demo = self.ui_eval_param(demo_mode, "bool", False)
            argv = ["export", image]
            argv += self._opts([("--target", target), ("--chap-user", chap_user),
                                ("--chap-secret-file", chap_secret_file),
                                ("--mutual-user", mutual_user),
                                ("--mutual-secret-file", mutual_secret_file),
                                ("--auth-file", auth_file), ("--name", name),
                                ("--lun", lun), ("--wwn", wwn), ("--demo-mode", demo),
                                ("--conf", conf), ("--id", id), ("--keyring", keyring),
                                ("--max-data-area-mb", max_data_area_mb),
                                ("--hw-max-sectors", hw_max_sectors),
                                ("--cmd-time-out", cmd_time_out),
                                ("--qfull-time-out", qfull_time_out),
                                ("--cmdsn-depth", cmdsn_depth),
                                ("--osd-op-timeout", osd_op_timeout)])
            argv += self._opts(self._list("--portal", portal))
            argv += self._opts(self._list("--initiator", initiator))
            if demo:
                self.shell.log.warning("demo_mode: ANY initiator may log in and write "
                                       "to this LUN (no ACL, no CHAP): labs only")
            self._run(argv)

        def ui_command_unexport(self, image=None, name=None, keep_target="false"):
            '''
            Removes an image's LUN and backstore, and the target once it has no LUN.
            '''
            self.assert_root()
            argv = ["unexport"] + ([image] if image else [])
            argv += self._opts([("--name", name),
                                ("--keep-target",
                                 self.ui_eval_param(keep_target, "bool", False))])
            self._run(argv)

        def ui_command_list(self):
            '''
            Lists the rbd exports: image, size, serial, LUN, target, portals, ACLs,
            sessions and whether the daemon serves the device.
            '''
            self._run(["list"], changes=False)

        def ui_command_resize(self, image, size):
            '''
            Grows an image (20G, or +5G) and its LUN; initiators see the new capacity.
            '''
            self.assert_root()
            self._run(["resize", image, size])

        def ui_command_discovery_auth(self, user=None, secret_file=None,
                                      mutual_user=None, mutual_secret_file=None,
                                      disable="false"):
            '''
            CHAP for SendTargets discovery (secrets from files), or disable=true.
            '''
            self.assert_root()
            argv = ["discovery-auth"] + self._opts([
                ("--user", user), ("--secret-file", secret_file),
                ("--mutual-user", mutual_user), ("--mutual-secret-file", mutual_secret_file),
                ("--disable", self.ui_eval_param(disable, "bool", False))])
            self._run(argv)

    return UIRbd


def make_root_class(base):
    """A UIRoot subclass whose tree also has /rbd."""
    UIRbd = make_rbd_node_class()

    class UIRootWithRbd(base):
        def refresh(self):
            super().refresh()
            UIRbd(self)

    UIRootWithRbd.__name__ = "UIRoot"
    return UIRootWithRbd


def load_targetcli_script(path: str | None = None):
    """Debian's targetcli script as a module (its main() is behind __main__)."""
    for p in ([path] if path else TARGETCLI_SCRIPTS):
        if p and os.path.isfile(p):
            loader = importlib.machinery.SourceFileLoader("targetcli_script", p)
            spec = importlib.util.spec_from_loader("targetcli_script", loader)
            mod = importlib.util.module_from_spec(spec)
            loader.exec_module(mod)
            return mod
    raise FileNotFoundError("targetcli (targetcli-fb) is not installed: "
                            "apt-get install targetcli-fb")


def main(argv: list[str]) -> int:
    try:
        mod = load_targetcli_script()
    except FileNotFoundError as e:
        print(f"targetcli-rbd shell: {e}", file=sys.stderr)
        return 1
    mod.UIRoot = make_root_class(mod.UIRoot)
    sys.argv = ["targetcli"] + list(argv)
    try:
        mod.main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
