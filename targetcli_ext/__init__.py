"""targetcli-rbd: one-step exports of Ceph RBD images over iSCSI with LIO (rtslib-fb)
and the tcmu-rbd daemon, as a CLI (``targetcli-rbd``), a library (:mod:`.core`) and
a ``/rbd`` node in targetcli's shell (``targetcli-rbd shell``)."""

__all__ = ["spec", "core", "cli", "shell"]
