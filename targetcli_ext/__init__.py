"""targetcli-rbd: one-step exports of Ceph RBD images over iSCSI with LIO (rtslib-fb)
(or, ``--local``, as a SCSI disk of the gateway through LIO's loopback fabric)
and the tcmu-rbd daemon, as a CLI (``targetcli-rbd``), a library (:mod:`.gateway`)
and a ``/rbd`` node in targetcli's shell (``targetcli-rbd shell``).

Layers, each importing only those below it:

- front ends: ``cli`` (argparse, output, exit status; ``shell`` goes to
  ``launcher``), ``launcher`` (targetcli's shell with the node), ``shell`` (the
  ``/rbd`` node);
- ``commands``: the verbs both front ends call (options -> requests, secrets
  loaded from files/environment, targetcli's lock);
- ``gateway``: the operations and their order (check, plan, probe, daemon,
  cluster, apply or dry run);
- ``plan`` (pure: request + LIO snapshot -> ExportPlan), ``apply`` (rtslib
  writes, rollback), ``state`` (rtslib -> snapshot), ``status`` (list),
  ``localdisk`` (sysfs: the /dev/sdX of a ``--local`` loopback LUN),
  ``daemon`` (D-Bus), ``cluster`` (librbd);
- ``spec``: pure parsing and formatting.
"""

__all__ = ["spec", "state", "plan", "apply", "status", "localdisk", "daemon", "cluster",
           "gateway", "commands", "cli", "shell", "launcher"]
