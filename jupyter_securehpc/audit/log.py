"""Append-only, hash-chained audit log: every decision that matters, in a file an admin can check.

Data owners answer under GDPR for who saw which data; hub admins must show which decisions the platform
took (logins, spawns, key releases, denials, shares, releases). Both need a record that cannot be changed
quietly afterwards, so each event is one JSON line that carries the hash of the line before it.

Format, one line per event, written in canonical JSON (``sort_keys``, no spaces, UTF-8)::

    {"action":..., "actor":..., "details":{...}, "hash":..., "object":..., "on_behalf_of":..., "outcome":...,
     "prev":..., "project":..., "reason":..., "seq":1, "time":"2026-01-01T12:00:00.000000Z"}

``seq`` counts from 1 without gaps, ``prev`` is the previous event's ``hash`` (64 zeros for the first event),
and ``hash`` is the sha256 of the canonical JSON of the event without its ``hash`` field.

What ``verify`` detects: an edited line, a deleted line (except the last ones, see below), an inserted or
duplicated line, reordered lines, a truncated or unterminated line, a blank or non-JSON line, an edited
``prev``, a line edited by hand into a different JSON spelling (duplicate keys, spaces), and a line that was
edited and rehashed (the next line's ``prev`` no longer matches).

Limits, on purpose written down:

- The chain has no secret. Whoever can write the file can delete its last lines, or edit the last line and
  recompute its hash, or rewrite the whole chain from some line on, and the file alone still verifies. Only
  something kept elsewhere catches that: record ``head()`` (seq, hash) outside the hub from time to time
  (a ticket, an e-mail to the data owners, another host) and pass it to ``verify(path, anchor=...)``.
- Locks are ``fcntl.flock`` locks, advisory: they order our own writers (hub, CLI), not other programs.
- On Linux, ``chattr +a`` makes the file append-only even for root (until root clears the flag); this module
  works with it, as it only appends (it cuts off nothing but a line it failed to write completely itself).

Secrets never belong in the log: ``append`` refuses details whose *key names* look like secrets (see
``secret_key_problem``), so a caller cannot log a token by passing ``token=...`` by accident. Values are
not inspected: a secret under an innocent name is the caller's bug, and guessing at values would refuse
hashes and ids that look random.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

GENESIS = "0" * 64
OUTCOMES = frozenset({"allowed", "denied", "failed", "ok"})
# One event must stay small enough that reading the end of the log is cheap; large lists (file names of a
# release request) belong in a file whose hash is logged.
MAX_EVENT_BYTES = 1 << 20

# A details key is refused when one of its words (split at ``_``, ``-``, ``.``, spaces and camelCase) is
# one of these, singular or plural, or ends with one of the suffixes (``accesstoken``, ``dbpassword``,
# ``sshkey``). Refusing ``monkey`` too is the price of catching ``privatekey``: callers rename, secrets stay out.
SECRET_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "credential",
        "key",
        "passphrase",
        "passwd",
        "password",
        "secret",
        "token",
        "wrapping",
    }
)
SECRET_SUFFIXES = ("key", "passphrase", "passwd", "password", "secret", "token")
# Policy fields about keys are not keys: how long a key lives and which version was released are exactly
# what a data owner needs to read in the log. Exact names only, so ``project_key`` stays refused.
ALLOWED_DETAIL_KEYS = frozenset({"key_ttl", "key_version"})

_FIELDS: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "time": (str,),
    "actor": (str,),
    "on_behalf_of": (str, type(None)),
    "action": (str,),
    "object": (str,),
    "project": (str, type(None)),
    "outcome": (str,),
    "reason": (str, type(None)),
    "details": (dict,),
    "prev": (str,),
    "hash": (str,),
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_CHUNK = 8192


class AuditError(Exception):
    """The audit log cannot take or give events: refused content, damaged or unreadable file."""


class AuditLogDamaged(AuditError):
    """The end of the log does not verify; appending would hide the damage behind a fresh chain."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(
            f"audit log {path} is damaged at line {line}: {problem}. Nothing more is appended to it: run "
            "`securehpc audit verify` to see what happened, keep the file as evidence, and move it aside to start a "
            "new log."
        )


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``.

    ``lines`` counts the events that verified before the first problem (all of them when ``ok``);
    ``first_bad_line`` is 1-based. When an anchor names events past the end of the file, the first missing
    line (``lines + 1``) is the bad one.
    """

    ok: bool
    lines: int
    first_bad_line: int | None
    problem: str | None


class AuditLog:
    """One append-only audit log file, shared by the hub and the CLI (each may append concurrently)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def append(
        self,
        *,
        actor: str,
        action: str,
        obj: str,
        outcome: str,
        on_behalf_of: str | None = None,
        project: str | None = None,
        reason: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Write one event durably at the end of the chain and return it as written.

        Everything is checked before the file is touched, so a refused event leaves no trace. Raises
        ``ValueError`` for bad arguments, ``AuditError`` for secret-looking details keys and for a log whose
        end is damaged (never start a new chain silently after a broken one).
        """
        fields = _event_fields(
            actor=actor,
            action=action,
            obj=obj,
            outcome=outcome,
            on_behalf_of=on_behalf_of,
            project=project,
            reason=reason,
            details=details,
        )
        _ensure_folder(self.path.parent)
        fd, created = _open_for_append(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            event = _append_locked(fd, self.path, fields)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return event

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last event, to record as an anchor elsewhere."""
        return head(self.path)

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` events, oldest first."""
        return tail(self.path, n)

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole chain (and the anchor, if given)."""
        return verify(self.path, anchor=anchor)

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event, oldest first (for searching the log; see ``events``)."""
        return events(self.path)

    def events_newest_first(self) -> Iterator[dict[str, Any]]:
        """Every event, newest first, read back from the end (see ``events_newest_first``)."""
        return events_newest_first(self.path)


def secret_key_problem(name: str) -> str | None:
    """Say why a details key name looks like a secret, or None when it does not.

    Key names only: a rule on names is predictable for callers and cannot be fooled into logging a value
    just because it does not look random.
    """
    if name.lower() in ALLOWED_DETAIL_KEYS:
        return None
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", spaced).lower()
    for word in re.split(r"[^a-z0-9]+", spaced):
        singular = word[:-1] if word.endswith("s") else word
        if word in SECRET_WORDS or singular in SECRET_WORDS or singular.endswith(SECRET_SUFFIXES):
            return f"details key {name!r} looks like a secret ({word!r}); audit events must not hold secrets"
    return None


def verify(path: Path, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Check every line of the log and, with ``anchor=(seq, hash)``, that this event is still in the chain.

    Returns instead of raising: a damaged log is an answer the admin needs to read, not a crash.
    """
    path = Path(path)
    wanted = _check_anchor(anchor)
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return VerifyResult(False, 0, None, f"{path} does not exist (wrong path, or the log was deleted?)")
    except (OSError, AuditError) as err:
        return VerifyResult(False, 0, None, f"cannot read {path}: {err}")
    with os.fdopen(fd, "rb") as handle:
        size = _size_between_appends(fd)
        return _verify_lines(_iter_lines(handle, size), wanted)


def events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of the log, oldest first, each line checked on its own; a missing log has none.

    For reading and searching (the portal's audit viewer): raises ``AuditLogDamaged`` at the first line that is
    not a valid event rather than show it. Whether the lines still form one chain is ``verify``'s question.
    """
    path = Path(path)
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as handle:
        size = _size_between_appends(fd)
        for number, raw in enumerate(_iter_lines(handle, size), start=1):
            event, problem = _parse_line(raw)
            if problem is not None:
                raise AuditLogDamaged(path, number, problem)
            yield event


def events_newest_first(path: Path) -> Iterator[dict[str, Any]]:
    """Every event of the log, newest first, each line checked on its own; a missing log has none.

    Reads back from the end in chunks, so that a page of the newest events (the portal's audit viewer) costs
    what it shows, not the whole log; close the iterator (or exhaust it) to release the file. Raises
    ``AuditLogDamaged`` at the first line, counted from the end, that is not a valid event.
    """
    path = Path(path)
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        size = _size_between_appends(fd)
        for offset, raw in _lines_backwards(fd, size):
            event, problem = _parse_line(raw)
            if problem is not None:
                raise AuditLogDamaged(path, _line_number(fd, offset), problem)
            yield event
    finally:
        os.close(fd)


def head(path: Path) -> tuple[int, str]:
    """``(seq, hash)`` of the last event, ``(0, GENESIS)`` for an empty log; reads only the end of the file."""
    events = _read_end(Path(path), 1)
    if not events:
        return 0, GENESIS
    return events[-1]["seq"], events[-1]["hash"]


def tail(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` events, oldest first, each checked and linked to the one before it.

    Reads only the end of the file. Raises ``AuditError`` rather than show an event that does not verify.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"tail needs a number of events >= 0, got {n!r}")
    if n == 0:
        return []
    return _read_end(Path(path), n)


# --- building an event -------------------------------------------------------------------------------------


def _event_fields(
    *,
    actor: str,
    action: str,
    obj: str,
    outcome: str,
    on_behalf_of: str | None,
    project: str | None,
    reason: str | None,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """Validate the caller's values and return the event without seq, time, prev and hash."""
    for name, value in (("actor", actor), ("action", action), ("obj", obj)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"audit {name} must be a non-empty string, got {value!r}")
    for name, value in (("on_behalf_of", on_behalf_of), ("project", project), ("reason", reason)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"audit {name} must be a string or None, got {value!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r} is not one of {', '.join(sorted(OUTCOMES))}")
    fields = {
        "actor": actor,
        "on_behalf_of": on_behalf_of,
        "action": action,
        "object": obj,
        "project": project,
        "outcome": outcome,
        "reason": reason,
        "details": _plain_details(details),
    }
    size = len(_encode(fields))
    if size + 512 > MAX_EVENT_BYTES:  # 512: room for seq, time, prev and hash
        raise ValueError(f"audit event is {size} bytes, the limit is {MAX_EVENT_BYTES}: log a file's hash instead")
    return fields


def _plain_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Return details as plain JSON values (what ``verify`` will read back), refusing secrets and odd types."""
    try:
        text = json.dumps(details, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(
            f"audit details must be plain JSON values (str, int, float, bool, None, lists, dicts): {err}"
        ) from err
    _refuse_secret_keys(details)
    return json.loads(text)


def _refuse_secret_keys(value: Any) -> None:
    """Walk dicts and lists (``json.dumps`` already refused cycles) and refuse secret-looking key names."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"audit details keys must be strings, got {key!r}")
            problem = secret_key_problem(key)
            if problem:
                raise AuditError(problem)
            _refuse_secret_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_secret_keys(item)


def _encode(obj: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes: the one spelling that is hashed and written."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"audit event holds text that is not valid Unicode: {err}") from err


def _hash(event: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of the event without its own ``hash``."""
    return hashlib.sha256(_encode({k: v for k, v in event.items() if k != "hash"})).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- writing -----------------------------------------------------------------------------------------------


def _ensure_folder(folder: Path) -> None:
    """Create the log's folder private to the hub user; an existing folder is left as the admin made it."""
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        return
    os.chmod(folder, 0o700)  # mkdir's mode is reduced by the umask
    _fsync_dir(folder.parent)


def _open_for_append(path: Path) -> tuple[int, bool]:
    """Open for reading the end and appending; say whether this call created the file."""
    flags = os.O_RDWR | os.O_APPEND
    for _attempt in range(3):  # another process may create or remove the file between the two opens
        try:
            fd = _open_regular(path, flags | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            try:
                return _open_regular(path, flags), False
            except FileNotFoundError:
                continue
        os.fchmod(fd, 0o600)  # O_CREAT's mode is reduced by the umask; make it exact
        return fd, True
    raise AuditError(f"audit log {path} keeps appearing and disappearing; is something rotating it?")


def _open_regular(path: Path, flags: int) -> int:
    """Open ``path`` without blocking on a FIFO, and refuse anything but a regular file."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise AuditError(f"{path} is not a regular file")
    return fd


def _append_locked(fd: int, path: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """With the exclusive lock held: continue the chain from the last line, write, fsync."""
    size = os.fstat(fd).st_size
    last = _checked_end(fd, path, 1, size)
    seq, prev = (last[-1]["seq"], last[-1]["hash"]) if last else (0, GENESIS)
    event = {"seq": seq + 1, "time": _now(), **fields, "prev": prev}
    event["hash"] = _hash(event)
    line = _encode(event) + b"\n"
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write: {written} of {len(line)} bytes")
        os.fsync(fd)
    except OSError as err:
        _undo_partial_write(fd, size)
        raise AuditError(f"could not write to audit log {path}, the event was not recorded: {err}") from err
    return event


def _undo_partial_write(fd: int, size: int) -> None:
    """Cut off what a failed write left, so the next append does not find a damaged line of our own making."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass  # e.g. chattr +a: the damage stays visible to `verify`, which is the honest outcome


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable, not only the file's content."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -----------------------------------------------------------------------------------------------


def _size_between_appends(fd: int) -> int:
    """Size of the file at a moment no append is half done; bytes before it never change under our writers."""
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        return os.fstat(fd).st_size
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_end(path: Path, count: int) -> list[dict[str, Any]]:
    """The last ``count`` checked events; a shared lock keeps appends out while the end is read."""
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        raise AuditError(f"no audit log at {path} (nothing logged yet, or a wrong path?)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _checked_end(fd, path, count, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _checked_end(fd: int, path: Path, count: int, size: int) -> list[dict[str, Any]]:
    """Parse the last ``count`` lines (plus one to link the first to) or raise ``AuditLogDamaged``."""
    window = _last_lines(fd, count + 1, size)
    events: list[dict[str, Any]] = []
    before: dict[str, Any] | None = None
    for index, (offset, raw) in enumerate(window):
        event, problem = _parse_line(raw)
        linkable = index > 0 or offset == 0  # the first line of the file links to GENESIS
        if problem is None and linkable and _link_problem(event, before, 0) is not None:
            problem = _link_problem(event, before, _line_number(fd, offset))
        if problem is not None:
            raise AuditLogDamaged(path, _line_number(fd, offset), problem)
        events.append(event)
        before = event
    return events[-count:]


def _last_lines(fd: int, count: int, size: int) -> list[tuple[int, bytes]]:
    """The last ``count`` lines of the first ``size`` bytes with their offsets, reading back from the end.

    A line longer than any event may be is returned (cut) instead of being read whole, so that a damaged
    file cannot make this read everything.
    """
    budget = count * (MAX_EVENT_BYTES + 2)
    pos, buf, step = size, b"", _CHUNK
    while pos > 0 and buf[:-1].count(b"\n") < count and len(buf) <= budget:
        step = min(step * 2, pos)
        pos -= step
        buf = _pread_exact(fd, step, pos) + buf
    lines, offset = [], pos
    for piece in _split_lines(buf):
        lines.append((offset, piece))
        offset += len(piece)
    if pos > 0 and lines and len(lines[0][1]) <= MAX_EVENT_BYTES + 1:
        lines = lines[1:]  # starts before what was read: not a whole line
    return lines[-count:]


def _lines_backwards(fd: int, size: int, chunk: int = 1 << 16) -> Iterator[tuple[int, bytes]]:
    """The lines of the first ``size`` bytes with their offsets, last line first, read in ``chunk``-byte steps
    back from the end. A line longer than any event may be is returned (cut) once it outgrows that, so that a
    damaged file cannot make this hold everything in memory."""
    pos, rest = size, b""  # rest: the start of the read that may continue a line that begins further back
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        pieces = _split_lines(_pread_exact(fd, step, pos) + rest)
        rest = pieces.pop(0) if pos > 0 else b""
        offsets, offset = [], pos + len(rest)
        for piece in pieces:
            offsets.append(offset)
            offset += len(piece)
        yield from reversed(list(zip(offsets, pieces, strict=True)))
        if len(rest) > MAX_EVENT_BYTES + 1:
            yield pos, rest
            return


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise AuditError("the audit log shrank while it was read")
    return data


def _split_lines(data: bytes) -> list[bytes]:
    """Split at b"\\n" only, keeping it: ``bytes.splitlines`` would also split at a stray ``\\r``."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _iter_lines(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """Lines of the first ``size`` bytes, each cut after MAX_EVENT_BYTES + 2 bytes."""
    remaining = size
    while remaining > 0:
        raw = handle.readline(min(remaining, MAX_EVENT_BYTES + 2))
        if not raw:
            return
        remaining -= len(raw)
        yield raw


def _line_number(fd: int, offset: int) -> int:
    """1-based number of the line holding ``offset``; only used to report damage, so reading is fine."""
    number, pos = 1, 0
    while pos < offset:
        chunk = os.pread(fd, min(1 << 20, offset - pos), pos)
        if not chunk:
            break
        number += chunk.count(b"\n")
        pos += len(chunk)
    return number


# --- checking ----------------------------------------------------------------------------------------------


def _verify_lines(lines: Iterator[bytes], wanted: tuple[int, str] | None) -> VerifyResult:
    """Walk the chain line by line; stop at the first problem."""
    before: dict[str, Any] | None = None
    count = 0
    for number, raw in enumerate(lines, start=1):
        event, problem = _parse_line(raw)
        if problem is None:
            problem = _link_problem(event, before, number)
        if problem is None and wanted and event["seq"] == wanted[0] and event["hash"] != wanted[1]:
            problem = f"hash differs from the anchor recorded for seq {wanted[0]} (edited and rehashed, or rewritten?)"
        if problem is not None:
            return VerifyResult(False, count, number, f"line {number}: {problem}")
        before, count = event, number
    if wanted and wanted[0] > count:
        problem = (
            f"line {count + 1}: missing; the anchor records seq {wanted[0]} but the log ends at seq {count} "
            "(last lines deleted, or the log replaced?)"
        )
        return VerifyResult(False, count, count + 1, problem)
    return VerifyResult(True, count, None, None)


def _parse_line(raw: bytes) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """The event on one raw line (with its newline), or why that line is not a valid event."""
    if len(raw) > MAX_EVENT_BYTES + 1:
        return None, f"longer than {MAX_EVENT_BYTES} bytes (garbage?)"
    if not raw.endswith(b"\n"):
        return None, "incomplete, no newline at its end (truncated?)"
    if not raw.strip():
        return None, "blank line"
    try:
        event = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "not valid JSON (garbage, or a partly written line?)"
    if not isinstance(event, dict):
        return None, "not a JSON object"
    problem = _field_problem(event)
    if problem is not None:
        return None, problem
    try:
        if event["hash"] != _hash(event):
            return None, "hash does not match its content (edited?)"
        if _encode(event) + b"\n" != raw:
            return None, "not in the canonical JSON form this log writes (edited by hand?)"
    except ValueError:
        return None, "holds values this log never writes (forged?)"
    return event, None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _field_problem(event: dict[str, Any]) -> str | None:
    """Why the fields of a parsed line do not make an event, or None."""
    missing = [name for name in _FIELDS if name not in event]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name, types in _FIELDS.items():
        if not isinstance(event[name], types) or isinstance(event[name], bool):
            return f"field {name!r} has the wrong type"
    if event["seq"] < 1:
        return f"seq {event['seq']} is not a positive number"
    if event["outcome"] not in OUTCOMES:
        return f"outcome {event['outcome']!r} is not one of {', '.join(sorted(OUTCOMES))}"
    if not _TIME.fullmatch(event["time"]):
        return f"time {event['time']!r} is not UTC ISO-8601 with microseconds"
    for name in ("prev", "hash"):
        if not _HEX64.fullmatch(event[name]):
            return f"{name} is not a sha256 hex digest"
    return None


def _link_problem(event: dict[str, Any], before: dict[str, Any] | None, number: int) -> str | None:
    """Why ``event`` (on line ``number``) does not follow ``before`` (None: it is the first line)."""
    seq = event["seq"]
    if before is None:
        if seq != 1:
            return f"seq {seq} on the first line, expected 1 (first lines deleted, or lines reordered?)"
        if event["prev"] != GENESIS:
            return "prev of the first line is not 64 zeros (lines deleted, or inserted before it?)"
        return None
    if seq != before["seq"] + 1:
        hint = "lines deleted or reordered?" if seq > before["seq"] else "line inserted, duplicated or reordered?"
        return f"seq {seq} follows {before['seq']} ({hint})"
    if event["prev"] != before["hash"]:
        return (
            f"prev does not match line {number - 1}'s hash "
            f"(line {number - 1} edited and rehashed, or lines inserted or reordered?)"
        )
    return None


def _check_anchor(anchor: tuple[int, str] | None) -> tuple[int, str] | None:
    """Refuse an anchor that cannot have come from ``head()``: better than a verify that proves nothing."""
    if anchor is None:
        return None
    try:
        seq, digest = anchor
    except (TypeError, ValueError):
        raise ValueError(f"anchor must be (seq, hash) as given by head(), got {anchor!r}") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"anchor seq must be an integer >= 0, got {seq!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest.lower()):
        raise ValueError(f"anchor hash must be 64 hex digits, got {digest!r}")
    if seq == 0 and digest.lower() != GENESIS:
        raise ValueError("anchor seq 0 (an empty log) goes with a hash of 64 zeros")
    return seq, digest.lower()
