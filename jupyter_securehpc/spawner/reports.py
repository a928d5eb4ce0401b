"""What the hub does with a job's reports: the report credential, events bound to their session, bounded refusals.

The payloads themselves (their kinds, the start stages, the strict parsers) are the session contract's
(``jupyter_securehpc.session.reports``); they are imported here for ``api.py``. Reports come from the node
launcher with the session's report secret, which never enters the sandbox. They are still untrusted input: a
stolen secret must not be worth more than that session's own reports, so every forwarded audit event is bound to
the session's user and project (``bind_events``), and ``RefusalLimiter`` keeps refused posts from growing the
audit log without bound.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..session.reports import (
    MAX_ACTIVITY_BODY,
    MAX_AUDIT_BODY,
    MAX_AUDIT_EVENTS,
    MAX_PORT_BODY,
    MAX_STAGE_BODY,
    REPORT_SCHEME,
    STAGES,
    ReportError,
    SessionEvent,
    parse_activity_report,
    parse_audit_report,
    parse_port_report,
    parse_stage_report,
)

__all__ = [
    "MAX_ACTIVITY_BODY", "MAX_AUDIT_BODY", "MAX_AUDIT_EVENTS", "MAX_PORT_BODY", "MAX_STAGE_BODY", "REPORT_SCHEME",
    "STAGES", "ForgedEvent", "RefusalLimiter", "ReportError", "SessionEvent", "bind_events", "new_report_secret",
    "parse_activity_report", "parse_audit_report", "parse_port_report", "parse_stage_report", "report_secret_hash",
    "secret_from_authorization", "secret_matches",
]  # fmt: skip

# What ``secrets.token_urlsafe(32)`` gives (43 characters); bounded so that hashing costs nothing.
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
# The actor a server extension names when it refused a request that carried no identity.
ANONYMOUS = "anonymous"


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
