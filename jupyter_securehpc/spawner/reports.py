"""What a job may tell the hub, and with which credential, decided strictly: anything but the exact shape is a
``ReportError``.

Reports come from the node launcher with the session's report secret, which never enters the sandbox. They
are still untrusted input: the job runs on a node the user's code shares, and a stolen secret must not be
worth more than that session's own reports. So: small, allow-listed fields, no control characters, nothing
that becomes a spawner attribute by name, and every forwarded audit event bound to the session's user and
project (``bind_events``). ``RefusalLimiter`` keeps refused posts from growing the audit log without bound.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..audit import OUTCOMES

MAX_PORT_BODY = 64
MAX_STAGE_BODY = 64
MAX_ACTIVITY_BODY = 16
MAX_AUDIT_BODY = 64 * 1024
MAX_AUDIT_EVENTS = 100

# ``Authorization: securehpc-report <secret>``: a scheme of its own, so that no hub token (``token``,
# ``bearer``) is ever taken for a report credential, nor the report secret for a hub token. JupyterHub
# scrubs Authorization headers from its logs; the secret is never in a URL.
REPORT_SCHEME = "securehpc-report"
# What ``secrets.token_urlsafe(32)`` gives (43 characters); bounded so that hashing costs nothing.
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
# The actor a server extension names when it refused a request that carried no identity.
ANONYMOUS = "anonymous"

# In the order a session goes through them; the spawner turns them into progress messages.
STAGES = ("key", "mounting", "starting")

# The fields of an event in the session's own audit log (``jupyter_securehpc.audit``). The chain fields
# (seq, time, prev, hash) belong to that log; the hub keeps seq and time as details and chains anew.
SESSION_EVENT_FIELDS = frozenset(
    {"seq", "time", "actor", "on_behalf_of", "action", "object", "project", "outcome", "reason", "details",
     "prev", "hash"}
)  # fmt: skip
_ACTION = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_ROLE = re.compile(r"[a-z][a-z_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_TEXT = 1024


class ReportError(ValueError):
    """The report is not exactly what this endpoint takes; the message says what was wrong."""


@dataclass(frozen=True)
class SessionEvent:
    """One audit event reported by a session's server extension, checked field by field."""

    actor: str
    action: str
    obj: str
    outcome: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    project: str | None = None  # as the session named it; bind_events requires the server's own


def _json(body: bytes, limit: int) -> Any:
    if len(body) > limit:
        raise ReportError(f"the report is longer than {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ReportError("the report is not JSON") from None


def parse_port_report(body: bytes) -> int:
    """The port in a report, or ReportError. Deliberately strict: one key, one JSON integer."""
    data = _json(body, MAX_PORT_BODY)
    if not isinstance(data, dict) or list(data) != ["port"]:
        raise ReportError('the report must be exactly {"port": N}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ReportError("the port must be an integer from 1 to 65535")
    return port


def parse_stage_report(body: bytes) -> str:
    """The stage in ``{"stage": NAME}``, NAME one of STAGES."""
    data = _json(body, MAX_STAGE_BODY)
    if not isinstance(data, dict) or list(data) != ["stage"]:
        raise ReportError('the report must be exactly {"stage": NAME}')
    if data["stage"] not in STAGES:
        raise ReportError(f"the stage must be one of {', '.join(STAGES)}")
    return data["stage"]


def _text(event: dict, name: str, *, optional: bool = False) -> str | None:
    value = event.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or _CONTROL.search(value):
        raise ReportError(f"event field {name!r} must be text of 1 to {MAX_TEXT} printable characters")
    return value


def _details(raw: Any) -> dict[str, Any]:
    """The details a server extension's refusal carries: the request's method, the role, the HTTP status."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not set(raw) <= {"method", "role", "status"}:
        raise ReportError("event details may only hold method, role and status")
    details: dict[str, Any] = {}
    if "method" in raw:
        if not isinstance(raw["method"], str) or not _METHOD.fullmatch(raw["method"]):
            raise ReportError("event detail 'method' must be an HTTP method")
        details["method"] = raw["method"]
    if "role" in raw:
        if not isinstance(raw["role"], str) or not _ROLE.fullmatch(raw["role"]):
            raise ReportError("event detail 'role' must be a role name")
        details["role"] = raw["role"]
    if "status" in raw:
        status = raw["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ReportError("event detail 'status' must be an HTTP status code")
        details["status"] = status
    return details


def _event(raw: Any) -> SessionEvent:
    if not isinstance(raw, dict):
        raise ReportError("each event must be a JSON object")
    unknown = set(raw) - SESSION_EVENT_FIELDS
    if unknown:
        raise ReportError(f"unknown event fields: {', '.join(sorted(map(str, unknown)))[:200]}")
    action = raw.get("action")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise ReportError("event field 'action' must be a lower-case action name such as contents.download")
    if raw.get("outcome") not in OUTCOMES:
        raise ReportError(f"event field 'outcome' must be one of {', '.join(sorted(OUTCOMES))}")
    details = _details(raw.get("details"))
    seq = raw.get("seq")
    if seq is not None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ReportError("event field 'seq' must be a non-negative integer")
        details["session_seq"] = seq
    if raw.get("time") is not None:
        details["session_time"] = _text(raw, "time")
    if raw.get("on_behalf_of") is not None:
        # A session acts for its own user only; nobody else's name may enter the central log through it.
        raise ReportError("event field 'on_behalf_of' must be empty: a session acts for its own user only")
    return SessionEvent(
        actor=_text(raw, "actor"),
        action=action,
        obj=_text(raw, "object"),
        outcome=raw["outcome"],
        reason=_text(raw, "reason", optional=True),
        details=details,
        project=_text(raw, "project", optional=True),
    )


def parse_audit_report(body: bytes) -> list[SessionEvent]:
    """The events of ``{"events": [...]}``: 1 to MAX_AUDIT_EVENTS session audit events, all valid or none."""
    data = _json(body, MAX_AUDIT_BODY)
    if not isinstance(data, dict) or list(data) != ["events"]:
        raise ReportError('the report must be exactly {"events": [...]}')
    events = data["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_AUDIT_EVENTS:
        raise ReportError(f"the report must carry 1 to {MAX_AUDIT_EVENTS} events")
    return [_event(raw) for raw in events]


def parse_activity_report(body: bytes) -> None:
    """``{}`` and nothing else: the hub records its own clock, so a client cannot send a time (no covert channel
    through timestamps, no dates in the future that keep an idle server alive)."""
    data = _json(body, MAX_ACTIVITY_BODY)
    if not isinstance(data, dict) or data:
        raise ReportError("the report must be exactly {}: the hub records the time itself")


class ForgedEvent(ReportError):
    """A session's event names someone or something other than that session (its user, its project)."""


def _named(value: str) -> str:
    """A name from untrusted input, quoted and shortened, safe to put into a reason."""
    return repr(value[:64] + ("..." if len(value) > 64 else ""))


def bind_events(events: list[SessionEvent], user: str, project: str) -> list[SessionEvent]:
    """The events unchanged if every one is the session's own, else ForgedEvent naming the first forgery.

    A session speaks for its user (or for an unauthenticated request its server refused, ``anonymous``) in its
    project: an event in another actor's name or about another project would let a kernel that got hold of
    the channel write someone else's record."""
    for event in events:
        if event.actor not in (user, ANONYMOUS):
            raise ForgedEvent(
                f"an event names actor {_named(event.actor)}; a session of {user!r} may only report events of "
                f"{user!r} or {ANONYMOUS!r}"
            )
        if event.project is not None and event.project != project:
            raise ForgedEvent(f"an event names project {_named(event.project)}; this session is in project {project!r}")
    return events


# --- the report credential -------------------------------------------------------------------------------


def new_report_secret() -> tuple[str, str]:
    """A fresh secret for one start of a server and its SHA-256 (hex), which is all the hub keeps."""
    secret = secrets.token_urlsafe(32)
    return secret, report_secret_hash(secret)


def report_secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_from_authorization(header: str | None) -> str | None:
    """The secret of ``securehpc-report <secret>``, or None for anything else (another scheme, a hub token,
    extra words, a malformed secret)."""
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != REPORT_SCHEME or not _SECRET.fullmatch(secret):
        return None
    return secret


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    """Whether ``secret`` is the one whose hash the server keeps, compared in constant time."""
    if not stored_hash:
        return False
    return hmac.compare_digest(report_secret_hash(secret), stored_hash)


# --- refused posts: bounded audit, bounded work ------------------------------------------------------------

AUDIT = "audit"  # record this refusal as an event of its own
SUMMARY = "summary"  # record one event for this source's further refusals in this minute
SUMMARY_ALL = "summary-all"  # record one event for all sources' further refusals in this minute
QUIET = "quiet"  # count only


@dataclass
class RefusalLimiter:
    """How refused posts are recorded, per source address and minute.

    Each source's first ``audited_per_source`` refusals in a minute are audited one by one, the next one
    gives a single summary event, later ones are only counted; from ``reject_after`` refusals on, the source
    is answered 429 before anything is parsed or looked up (``blocked``). Sources are counted by the address
    the hub sees; a client that reaches the hub directly can vary ``X-Forwarded-For`` (JupyterHub trusts it),
    so ``audited_all_sources`` bounds the audited refusals of all sources together (then one summary), and at
    most ``max_sources`` addresses are tracked (the rest share one count)."""

    audited_per_source: int = 10
    reject_after: int = 100
    audited_all_sources: int = 200
    max_sources: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _window: float = field(default=float("-inf"), init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False)
    _audited: int = field(default=0, init=False)
    _summarised: set[str] = field(default_factory=set, init=False)
    _summarised_all: bool = field(default=False, init=False)

    OVERFLOW = "(further sources)"

    def _tick(self) -> None:
        now = self.clock()
        if now - self._window >= 60:
            self._window = now
            self._counts.clear()
            self._summarised.clear()
            self._audited = 0
            self._summarised_all = False

    def _key(self, source: str) -> str:
        if source in self._counts or len(self._counts) < self.max_sources:
            return source
        return self.OVERFLOW

    def blocked(self, source: str) -> bool:
        """Whether this source refused so often this minute that it gets 429 without any work."""
        self._tick()
        return self._counts.get(self._key(source), 0) >= self.reject_after

    def refusal(self, source: str) -> str:
        """Count one refusal of ``source``; say how to record it (AUDIT, SUMMARY, SUMMARY_ALL or QUIET)."""
        self._tick()
        key = self._key(source)
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if self._audited >= self.audited_all_sources:
            if self._summarised_all:
                return QUIET
            self._summarised_all = True
            return SUMMARY_ALL
        if count <= self.audited_per_source:
            self._audited += 1
            return AUDIT
        if key in self._summarised:
            return QUIET
        self._summarised.add(key)
        self._audited += 1
        return SUMMARY
