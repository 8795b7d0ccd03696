"""Logging (tcmu_rbd.logs): the daemon's log file, per-device context, redaction,
and log levels as text between a worker and its supervisor."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcmu_rbd import lio, logs
from tcmu_rbd import settings as st

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def saved_root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    for hd in root.handlers[:]:
        root.removeHandler(hd)
        hd.close()
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_sighup_reopens_log_file(tmp_path, saved_root_logger):
    logf = tmp_path / "d.log"
    s = st.Settings(log_target=str(logf))
    logs.setup_logging(s)
    logging.getLogger("tcmu_rbd.t").info("one")
    os.rename(logf, tmp_path / "d.log.1")
    logs.reopen()
    logging.getLogger("tcmu_rbd.t").info("two")
    assert "one" in (tmp_path / "d.log.1").read_text()
    assert "two" in logf.read_text()


def test_redact():
    assert logs.redact("rbd/p/i;id=x;key=AQBsecret==;keyring=/etc/k;secret=s") == \
        "rbd/p/i;id=x;key=***;keyring=/etc/k;secret=***"
    assert logs.redact("rbd/p/i") == "rbd/p/i"


def test_devlog_context(caplog):
    dev = lio.TcmuDevice("uio3", lio.UioName.parse("tcm-user/1/disk0/rbd/pool/img;key=s"))
    logs.DevLog(logging.getLogger("tcmu_rbd.t"), dev).warning("hello %d", 5)
    assert caplog.records[-1].getMessage() == \
        "device=disk0 uio=uio3 image=pool/img: hello 5"  # options (secrets) never shown


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING,
                                   logging.ERROR, logging.CRITICAL])
def test_worker_prefix_round_trips_through_the_relay(level):
    rec = logging.LogRecord("tcmu_rbd.worker", level, __file__, 1, "disk0(uio0): msg", None, None)
    line = logs.PrioFormatter("%(name)s: %(message)s").format(rec)
    assert logs.relayed_level(line) == (level, "tcmu_rbd.worker: disk0(uio0): msg")


def test_multiline_records_keep_their_level_on_every_line():
    rec = logging.LogRecord("w", logging.ERROR, __file__, 1, "a\nb", None, None)
    lines = logs.PrioFormatter("%(message)s").format(rec).splitlines()
    assert [logs.relayed_level(x) for x in lines] == [(logging.ERROR, "a"), (logging.ERROR, "b")]


@pytest.mark.parametrize("text,level", [
    ("<0>emergency", logging.CRITICAL),
    ("<5>notice", logging.INFO),
    ("2026-01-01 10:00:00,000 tcmu_rbd.worker[7] WARNING disk0: slow", logging.WARNING),
    ("ERROR:root:boom", logging.ERROR),
    ("Traceback (most recent call last):", logging.INFO),
    ("an ERRORless line", logging.INFO),
])
def test_relayed_level_of_other_formats(text, level):
    got, rest = logs.relayed_level(text)
    assert got == level
    assert rest == (text[3:] if text.startswith("<") else text)


def test_configure_worker_logging_writes_prefixed_lines():
    code = ("import logging; from tcmu_rbd import logs; logs.configure_worker_logging('debug');"
            "logging.getLogger('tcmu_rbd.worker').debug('d');"
            "logging.getLogger('tcmu_rbd.worker').error('e')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.stderr.splitlines() == ["<7>tcmu_rbd.worker: d", "<3>tcmu_rbd.worker: e"]
