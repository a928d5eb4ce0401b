"""Where the guard's audit events go: the launcher's pipe in a session, a hash-chained file otherwise.

In a session the node launcher passes the write end of a pipe as ``SECUREHPC_AUDIT_FD``: nothing in the
sandbox can edit what went through it. Each event is one line of JSON written with a single ``os.write``
(lines stay under ``MAX_LINE`` bytes; the launcher reads line by line and skips longer ones),
with exactly the keys ``time`` (ISO 8601 UTC), ``actor``, ``action``, ``object``, ``project``, ``outcome``,
``reason`` and ``details`` (``method``, ``role``, ``status`` only). Texts are cut to ``MAX_TEXT`` characters
and control characters are replaced, as the hub refuses events otherwise (``spawner/reports.py``).

The same pipe carries the notebook parameter index's changes (``serverext/parameters.py``), one line each:
``{"parameters": {...}}`` in ``session.parameters``' shapes, which the launcher tells apart from events by that
one key and parses strictly. Without the pipe (tests, a server started by hand) events are appended to the
hash-chained ``AuditLog`` at ``SECUREHPC_AUDIT_LOG``, and index changes go nowhere (no launcher, no hub).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Protocol

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.session.env import AUDIT_FD_ENV, AUDIT_LOG_ENV
from jupyter_securehpc.session.parameters import PIPE_KEY

MAX_LINE = 60 * 1024
MAX_TEXT = 1024
DETAIL_KEYS = ("method", "role", "status")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class AuditSinkError(Exception):
    """The audit sink cannot be set up; the message says what to fix."""


class AuditSink(Protocol):
    """One refusal event; raises ``OSError``, ``ValueError`` or ``AuditError`` when it was not recorded."""

    where: str

    def append(
        self, *, actor: str, action: str, obj: str, outcome: str, project: str, reason: str, details: dict
    ) -> None: ...

    def parameters(self, change: dict) -> None:
        """A change of the notebook parameter index, for the launcher (``serverext/parameters.py``)."""
        ...


class FileSink:
    """The hash-chained audit log file (``jupyter_securehpc.audit``)."""

    def __init__(self, path: str) -> None:
        self.log = AuditLog(Path(path))
        self.where = str(path)

    def append(
        self, *, actor: str, action: str, obj: str, outcome: str, project: str, reason: str, details: dict
    ) -> None:
        self.log.append(actor=actor, action=action, obj=obj, outcome=outcome, project=project, reason=reason, **details)

    def parameters(self, change: dict) -> None:
        """No launcher reads this file: the hub's index is kept by sessions that have one."""


class PipeSink:
    """JSON lines on the launcher's pipe, one ``os.write`` each (a line is never interleaved with another)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.where = f"the launcher's pipe (fd {fd})"
        self._lock = threading.Lock()

    def append(
        self, *, actor: str, action: str, obj: str, outcome: str, project: str, reason: str, details: dict
    ) -> None:
        self._write(encode_event(actor, action, obj, outcome, project, reason, details))

    def parameters(self, change: dict) -> None:
        line = json.dumps({PIPE_KEY: change}, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_LINE:
            raise ValueError(f"a parameters change is {len(line)} bytes, the pipe takes {MAX_LINE}")
        self._write(line)

    def _write(self, line: bytes) -> None:
        with self._lock:
            written = os.write(self.fd, line)
        if written != len(line):
            raise OSError(errno.EIO, "the audit pipe took part of a line")


def encode_event(actor: str, action: str, obj: str, outcome: str, project: str, reason: str, details: dict) -> bytes:
    """One event as one line of JSON with exactly the contract's keys, under ``MAX_LINE`` bytes."""
    event = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": _text(actor) or "anonymous",
        "action": _text(action),
        "object": _text(obj) or "/",
        "project": _text(project),
        "outcome": outcome,
        "reason": _text(reason),
        "details": {key: details[key] for key in DETAIL_KEYS if key in details},
    }
    line = json.dumps(event, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:  # cannot happen with MAX_TEXT limits; refuse rather than split a line
        raise ValueError(f"audit event is {len(line)} bytes, the pipe takes {MAX_LINE}")
    return line


def _text(value: str) -> str:
    return _CONTROL.sub("?", str(value))[:MAX_TEXT]


def sink_from_environment(audit_log: str) -> AuditSink:
    """The pipe from ``$SECUREHPC_AUDIT_FD`` (made close-on-exec), else the file ``audit_log``; or raise."""
    raw = os.environ.get(AUDIT_FD_ENV)
    if raw is None:
        if not audit_log:
            raise AuditSinkError(
                f"no audit log: set ${AUDIT_FD_ENV} (the node launcher's pipe) or ${AUDIT_LOG_ENV} "
                "(or SecureHPCServerExtension.audit_log)"
            )
        return FileSink(audit_log)
    fd = parse_fd(raw, AUDIT_FD_ENV)
    try:
        mode = os.fstat(fd).st_mode
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as err:
        raise AuditSinkError(f"${AUDIT_FD_ENV}={fd} is not an open descriptor: {err.strerror}") from None
    if not stat.S_ISFIFO(mode) or flags & os.O_ACCMODE == os.O_RDONLY:
        raise AuditSinkError(f"${AUDIT_FD_ENV}={fd} must be the write end of a pipe")
    # Kernels and terminals must never hold it: they could write forged events into the session's record.
    os.set_inheritable(fd, False)
    return PipeSink(fd)


def parse_fd(raw: str, name: str) -> int:
    if not raw.isdigit() or int(raw) < 3:
        raise AuditSinkError(f"${name} must be a descriptor number of 3 or more, got {raw!r}")
    return int(raw)
