"""``python -m tcmu_rbd``: the daemon (same as the ``tcmu-rbd`` command)."""

import sys

from .daemon import main

sys.exit(main())
