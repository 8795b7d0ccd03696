"""Where a LUN's data lives.  Every backend implements `base.Backend`."""

from tcmu_rbd.backends.base import Backend  # noqa: F401
