"""tcmu-rbd: a TCMU userspace handler for Linux LIO that serves Ceph RBD images.

Layers (one module per concern):
  ring      the TCMU command ring (over the cffi shim in native/)
  scsi      SCSI emulation, pure functions over bytes
  backends  where data lives: memory, file, rbd (librbd's C API, asynchronous)
  handler   the per-device loop: ring -> scsi -> backend -> ring
  config    the rbd config string and its validation
  netlink, dbus_service, daemon   the control plane that meets the kernel and targetcli
"""

__version__ = "0.1.0"
