"""Logging for both processes: where the daemon's log goes, and log levels as text.

Belongs here: the daemon's log target (stderr, syslog or a file, reopened on
SIGHUP), per-device context on log lines (:class:`DevLog`), keeping secrets
out of logged dev_configs (:func:`redact`), and the two directions of "a
level as text" between a worker and its supervisor: the worker writes each
line with an sd-daemon ``<N>`` priority prefix (:func:`configure_worker_logging`)
and the supervisor turns each line it relays back into a level
(:func:`relayed_level`).

Not here: which level and target are configured (settings.py), and reading
a worker's stderr pipe (worker_process.py).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from .settings import ENV_LOG_LEVEL, LOG_LEVELS, Settings

log = logging.getLogger("tcmu_rbd.daemon")

# --- levels as text ----------------------------------------------------------

#: logging level -> sd-daemon priority (syslog's numbers)
_SYSLOG_PRIO = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
#: sd-daemon priority -> logging level (emerg, alert and crit are all CRITICAL)
_PRIO_LEVEL = {0: 50, 1: 50, 2: 50, 3: 40, 4: 30, 5: 20, 6: 20, 7: 10}
#: level words of Python's default formats, most severe first
_LEVEL_WORDS = (("CRITICAL", logging.CRITICAL), ("ERROR", logging.ERROR),
                ("WARNING", logging.WARNING), ("DEBUG", logging.DEBUG), ("INFO", logging.INFO))


class PrioFormatter(logging.Formatter):
    """Every line prefixed ``<N>`` (sd-daemon): read by the journal and by the
    supervisor's relay of worker output."""

    def format(self, record):
        prio = _SYSLOG_PRIO.get(record.levelno, 6 if record.levelno > logging.DEBUG else 7)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def relayed_level(text: str) -> tuple[int, str]:
    """(level, text) of one line a worker wrote on stderr: its ``<N>`` prefix
    (stripped), else the level word of Python's default formats ("... ERROR
    ..." / "ERROR:name:..."), else INFO.  The word check covers worker
    commands that are not ours (settings.worker_command)."""
    if len(text) > 2 and text[0] == "<" and text[2] == ">" and text[1].isdigit():
        return _PRIO_LEVEL[int(text[1])], text[3:]
    head = text[:100]
    for name, level in _LEVEL_WORDS:
        if f" {name} " in f" {head} " or head.startswith(name + ":"):
            return level, text
    return logging.INFO, text


def configure_worker_logging(level: str | None = None) -> None:
    """For ``tcmu_rbd.worker``: log to stderr with sd-daemon ``<N>`` priority
    prefixes; the supervisor relays each line into its own log (file, syslog
    or journal) with the device context and the right level."""
    level = level or os.environ.get(ENV_LOG_LEVEL) or "info"
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(PrioFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(LOG_LEVELS.get(level.lower(), logging.INFO))


# --- the daemon's log ----------------------------------------------------------


class _FileReopener:
    """Holds the handler of a log file so SIGHUP can reopen it (logrotate)."""

    handler: logging.FileHandler | None = None

    @classmethod
    def reopen(cls) -> None:
        h = cls.handler
        if h is None:
            return
        h.acquire()
        try:
            if h.stream:
                h.stream.close()
            h.stream = h._open()
        finally:
            h.release()


def setup_logging(s: Settings) -> None:
    """The daemon's root logger: one handler for ``s.log_target``."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    _FileReopener.handler = None
    target = s.log_target
    if target == "syslog":
        h = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        h.setFormatter(logging.Formatter("tcmu-rbd[%(process)d]: %(levelname)s %(message)s"))
    elif target == "stderr":
        h = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
            # under systemd: the journal stamps time; <N> carries the priority
            h.setFormatter(PrioFormatter("%(levelname)s %(message)s"))
        else:
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        h = logging.FileHandler(target, encoding="utf-8", delay=False)
        h.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s"))
        _FileReopener.handler = h
    root.addHandler(h)
    root.setLevel(s.log_level_no)


def reopen() -> None:
    """SIGHUP: reopen the log file (after logrotate moved it)."""
    _FileReopener.reopen()
    log.info("log reopened")


# --- what goes into log lines --------------------------------------------------

_SECRET_OPTS = ("key", "secret", "password", "passwd", "token")


def redact(dev_config: str) -> str:
    """A dev_config with secret-looking option values replaced (never log a
    key; keyring *paths* are fine)."""
    parts = dev_config.split(";")
    out = [parts[0]]
    for opt in parts[1:]:
        k, sep, v = opt.partition("=")
        kl = k.strip().lower()
        if sep and kl != "keyring" and any(s in kl for s in _SECRET_OPTS):
            out.append(f"{k}=***")
        else:
            out.append(opt)
    return ";".join(out)


class DevLog(logging.LoggerAdapter):
    """Per-device log lines: ``device=<name> uio=<uioN> image=<pool/image>: ...``
    (for a :class:`tcmu_rbd.lio.TcmuDevice`)."""

    def __init__(self, logger, device):
        super().__init__(logger, {
            "ctx": f"device={device.name.name} uio={device.uio} image={device.name.image}"})

    def process(self, msg, kwargs):
        return f"{self.extra['ctx']}: {msg}", kwargs
