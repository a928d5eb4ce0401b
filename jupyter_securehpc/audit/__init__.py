"""The audit log: every decision that matters, append-only and hash-chained so that changes show."""

from jupyter_securehpc.audit.log import (
    ALLOWED_DETAIL_KEYS,
    GENESIS,
    OUTCOMES,
    AuditError,
    AuditLog,
    AuditLogDamaged,
    VerifyResult,
    events,
    events_newest_first,
    head,
    secret_key_problem,
    tail,
    verify,
)

__all__ = [
    "ALLOWED_DETAIL_KEYS",
    "GENESIS",
    "OUTCOMES",
    "AuditError",
    "AuditLog",
    "AuditLogDamaged",
    "VerifyResult",
    "events",
    "events_newest_first",
    "head",
    "secret_key_problem",
    "tail",
    "verify",
]
