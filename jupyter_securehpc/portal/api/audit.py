"""``/audit``: the audit log, newest first, filtered and paged (hub admins: all of it; data owners: their
project's events, with ``project=``). ``/audit/verify``: whether the hash chain holds, and its head (admins)."""

from __future__ import annotations

import datetime as dt

from ...audit import OUTCOMES
from ...projects.service import MAX_AUDIT_PAGE
from ..base import APIHandler
from ..errors import ApiError
from . import common

PARAMETERS = ("project", "user", "action", "outcome", "since", "until", "before", "limit")


def _time(name: str, text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {text!r}") from None
    if value.tzinfo is None:
        raise ApiError(400, f"{name} needs a time zone (Z for UTC), got {text!r}")
    return value.astimezone(dt.timezone.utc)


def _count(name: str, text: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


class AuditHandler(APIHandler):
    async def get(self) -> None:
        args = common.query(self, PARAMETERS)
        filters: dict = {}
        if "project" in args:
            filters["project"] = common.project_name(args["project"])
        if "user" in args:
            filters["user"] = common.user_name(args["user"])
        if "action" in args:
            action = args["action"]
            if not 1 <= len(action) <= 64 or not all(c.isalnum() or c in "._-" for c in action):
                raise ApiError(400, f"action must be an event name such as member.add, got {action[:70]!r}")
            filters["action"] = action
        if "outcome" in args:
            if args["outcome"] not in OUTCOMES:
                raise ApiError(400, f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
            filters["outcome"] = args["outcome"]
        for name in ("since", "until"):
            if name in args:
                filters[name] = _time(name, args[name])
        if "before" in args:
            filters["before"] = _count("before", args["before"], 1, 2**53)
        filters["limit"] = _count("limit", args["limit"], 1, MAX_AUDIT_PAGE) if "limit" in args else 100
        self.reply(await self.call("read_audit", **filters, about=filters.get("project")))


class AuditVerifyHandler(APIHandler):
    async def get(self) -> None:
        common.query(self, ())
        self.reply(await self.call("verify_audit"))
