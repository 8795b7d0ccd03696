"""``targetcli-rbd shell``: targetcli's own shell, with the ``/rbd`` node.

targetcli-fb has no plugin mechanism, so this loads Debian's ``/usr/bin/targetcli``
script as a module, replaces its ``UIRoot`` with a subclass whose ``refresh()`` also
adds ``/rbd`` (shell.py), and calls its ``main()``: the prompt, preferences, lock
file, history, saveconfig-on-exit and one-shot mode (``targetcli-rbd shell /rbd
list``) are all targetcli's own.

Belongs here: finding and loading that script, and the root class.  Not here: the
/rbd node's commands (shell.py), the command line's verbs (cli.py).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

from .shell import make_rbd_node_class

TARGETCLI_SCRIPTS = ("/usr/bin/targetcli", "/usr/sbin/targetcli",
                     "/usr/local/bin/targetcli")


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
