"""The ``/rbd`` node in targetcli's shell (started by launcher.py).

Its commands are the CLI's verbs (commands.py) with the same options in
configshell's ``key=value`` form, lists comma-separated::

    /rbd export rbd/disk1 initiator=iqn.1994-05.com.redhat:c1,iqn.1994-05.com.redhat:c2
    /rbd export rbd/disk2 initiator=IQN chap_user=alice chap_secret_file=/root/alice.secret
    /rbd export rbd/disk3 initiator=IQN dry_run=true
    /rbd list
    /rbd resize rbd/disk1 +10G
    /rbd unexport rbd/disk1
    /rbd gateway add gw1 portal=192.0.2.11:3260          # several gateways:
    /rbd export rbd/disk1 target=IQN initiator=IQN shared=true
    /rbd gateway list

Belongs here: the node class, turning configshell's parameters into the verbs'
options, showing a Report on targetcli's console.  Not here: what the verbs do
(commands.py and below), loading targetcli (launcher.py), the command line
(cli.py).  Secrets are never parameters (targetcli keeps a command history): only
files or the environment.
"""

from __future__ import annotations

from dataclasses import replace

from . import commands
from .gateway import Gateway
from .spec import Defaults, ExtError

def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _list(value) -> list[str]:
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def make_rbd_node_class():
    from configshell_fb import ExecutionError
    from targetcli.ui_node import UINode

    class UIRbd(UINode):
        """/rbd: one-step RBD exports (targetcli-rbd)."""

        def __init__(self, parent):
            super().__init__("rbd", parent)
            self._gw = None

        @property
        def gw(self):
            if self._gw is None:
                self._gw = Gateway()
            return self._gw

        def summary(self):
            try:
                n = len(self.gw.rbd_backstores())
            except Exception:
                return ("?", None)
            return (f"rbd exports: {n}", True)

        def _run(self, verb, changes: bool = True):
            """Run ``verb(gateway)`` and show its report (targetcli holds its lock)."""
            try:
                rep = verb(self.gw)
            except ExtError as e:
                raise ExecutionError(str(e)) from None
            for line in rep.lines:
                self.shell.con.display(line)
            if changes and rep.changed:
                try:
                    self.get_root().refresh()
                except Exception:
                    pass

        def _flag(self, value) -> bool:
            return self.ui_eval_param(value, "bool", False)

        def ui_command_export(self, image, target=None, portal=None, initiator=None,
                              chap_user=None, chap_secret_file=None, mutual_user=None,
                              mutual_secret_file=None, auth_file=None, name=None,
                              lun=None, wwn=None, demo_mode="false", conf=None, id=None,
                              keyring=None, max_data_area_mb=None, hw_max_sectors=None,
                              cmd_time_out=None, qfull_time_out=None, cmdsn_depth=None,
                              osd_op_timeout=None, dry_run="false", shared="false",
                              gateways=None, config_pool=None, config_object=None,
                              local="false"):
            '''
            Exports an RBD image over iSCSI in one step: the user:rbd backstore
            (validated by the TCMU daemon), target, TPG, portals, LUN and ACLs.

            image: pool/image, pool/namespace/image, or ...@snapshot (read-only).
            portal, initiator: comma-separated lists (portal default 127.0.0.1:3260).
            CHAP secrets come from chap_secret_file / mutual_secret_file / auth_file
            or the environment, never from the command line.
            demo_mode=true lets ANY initiator log in (labs only).
            dry_run=true shows what would be created or changed, and changes nothing.
            shared=true puts it into the shared configuration of several gateways
            (gateways=gw1,gw2; config_pool, config_object) for their sync.
            local=true makes a SCSI disk of this host instead (LIO's loopback fabric,
            no target, portal, initiator or CHAP).
            '''
            self.assert_root()
            given = {"max_data_area_mb": max_data_area_mb, "hw_max_sectors": hw_max_sectors,
                     "cmd_time_out": cmd_time_out, "qfull_time_out": qfull_time_out,
                     "cmdsn_depth": cmdsn_depth, "osd_op_timeout": osd_op_timeout}
            tuning = {k: self.ui_eval_param(v, "number", None) for k, v in given.items()}
            o = commands.ExportOptions(
                image=image, target=_text(target), portals=_list(portal),
                initiators=_list(initiator), chap_user=_text(chap_user),
                chap_secret_file=_text(chap_secret_file), mutual_user=_text(mutual_user),
                mutual_secret_file=_text(mutual_secret_file), auth_file=_text(auth_file),
                name=_text(name), lun=self.ui_eval_param(lun, "number", None),
                wwn=_text(wwn), demo_mode=self._flag(demo_mode), local=self._flag(local),
                conf=_text(conf),
                client_id=_text(id), keyring=_text(keyring),
                defaults=replace(Defaults(), **{k: v for k, v in tuning.items()
                                                if v is not None}),
                dry_run=self._flag(dry_run))
            if self._flag(shared):
                self._shared(lambda st: commands.export_shared(st, o, _list(gateways) or None),
                             config_pool, config_object, conf, id, keyring)
                return
            if o.demo_mode:
                self.shell.log.warning("demo_mode: ANY initiator may log in and write "
                                       "to this LUN (no ACL, no CHAP): labs only")
            self._run(lambda gw: commands.export(gw, o, lock=False))

        def ui_command_unexport(self, image=None, name=None, keep_target="false",
                                shared="false", config_pool=None, config_object=None,
                                conf=None, id=None, keyring=None, local="false"):
            '''
            Removes an image's LUN and backstore, and the target once it has no LUN.
            shared=true removes it from the shared configuration (several gateways).
            local=true removes only its local disk (its iSCSI LUNs stay).
            '''
            self.assert_root()
            keep = self._flag(keep_target)
            if self._flag(shared):
                self._shared(lambda st: commands.unexport_shared(st, _text(image),
                                                                 keep_target=keep),
                             config_pool, config_object, conf, id, keyring)
                return
            self._run(lambda gw: commands.unexport(gw, _text(image), name=_text(name),
                                                   keep_target=keep, local=self._flag(local),
                                                   lock=False))

        def _shared(self, verb, config_pool, config_object, conf, id, keyring):
            """Run ``verb(store)`` on the shared configuration."""
            o = commands.StoreOptions(_text(config_pool), _text(config_object), _text(conf),
                                      _text(id), _text(keyring))

            def run(_gw):
                st = commands.open_store(o)
                try:
                    return verb(st)
                finally:
                    st.close()
            self._run(run, changes=False)

        def ui_command_gateway(self, action, name=None, portal=None, tag=None,
                               dry_run="false", config_pool=None, config_object=None,
                               conf=None, id=None, keyring=None):
            '''
            The gateways of the shared configuration (each runs targetcli-rbd sync):
            action=add name=gw1 portal=IP[:PORT] [tag=N] | action=remove name=gw1 |
            action=list. dry_run=true shows the change only.
            '''
            dry = self._flag(dry_run)
            if action == "list":
                verb = commands.gateway_list
            elif action in ("add", "remove") and name:
                if action == "add" and not portal:
                    raise ExecutionError("gateway add needs portal=IP[:PORT]")
                n = self.ui_eval_param(tag, "number", None)
                verb = (lambda st: commands.gateway_add(st, name, portal, n, dry_run=dry)) \
                    if action == "add" else \
                    (lambda st: commands.gateway_remove(st, name, dry_run=dry))
            else:
                raise ExecutionError("action=add|remove|list (add and remove need name=)")
            self._shared(verb, config_pool, config_object, conf, id, keyring)

        def ui_command_list(self):
            '''
            Lists the rbd exports: image, size, serial, LUN, target, portals, ACLs,
            sessions and whether the daemon serves the device.
            '''
            self._run(commands.list_exports, changes=False)

        def ui_command_resize(self, image, size):
            '''
            Grows an image (20G, or +5G) and its LUN; initiators see the new capacity.
            '''
            self.assert_root()
            self._run(lambda gw: commands.resize(gw, image, size, lock=False))

        def ui_command_discovery_auth(self, user=None, secret_file=None,
                                      mutual_user=None, mutual_secret_file=None,
                                      disable="false"):
            '''
            CHAP for SendTargets discovery (secrets from files), or disable=true.
            '''
            self.assert_root()
            off = self._flag(disable)
            self._run(lambda gw: commands.discovery_auth(
                gw, user=_text(user), secret_file=_text(secret_file),
                mutual_user=_text(mutual_user), mutual_secret_file=_text(mutual_secret_file),
                disable=off, lock=False))

    return UIRbd
