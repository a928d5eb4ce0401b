"""The only ways a job tells the hub anything, under ``/hub/api/securehpc/``, each from the token of the very
server it concerns:

- ``port``: ``{"port": N}`` once the server answers (the spawner waits for it);
- ``stage``: ``{"stage": "key"|"mounting"|"starting"}`` while it starts (the user's progress messages);
- ``audit``: the server extension's audit events, into the hub's central audit log.

batchspawner's ``/api/batchspawner`` sets *any* spawner attribute named in the posted JSON (``cmd``,
``ip``, ``user_options``, ...) for any token holder. It is removed from the hub's routes when this module
is imported. Every body here is parsed strictly (``reports.py``); anything else is a 400 (or 403) and an
audit event.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..audit import AuditLog
from ..config import SecureHPC
from .reports import ReportError, parse_audit_report, parse_port_report, parse_stage_report

__all__ = ["ReportError", "install_routes", "parse_audit_report", "parse_port_report", "parse_stage_report"]


class _ServerReportHandler(APIHandler):
    """A report from a job: found by the token of the server it belongs to, refused from anyone else."""

    action = "session.report"
    # The spawner attribute that says whether it takes this kind of report now.
    accepting = "accepts_port_report"

    def _reporting_spawner(self) -> Any:
        user = self.current_user
        token = self.get_auth_token() or ""
        if user is None or not hasattr(user, "spawners") or not token:
            return None
        for candidate in user.spawners.values():
            if candidate.api_token and hmac.compare_digest(candidate.api_token, token):
                return candidate
        return None

    def _spawner_or_403(self) -> Any:
        spawner = self._reporting_spawner()
        if spawner is None or not getattr(spawner, self.accepting, False):
            # No server of this token waits for this report: not a request we take from anyone.
            self._audit(spawner, "denied", "no secure server of this token takes this report now")
            raise web.HTTPError(403, "no server of this token takes this report now")
        return spawner

    async def post(self) -> None:
        spawner = self._spawner_or_403()
        try:
            value = self.parse(self.request.body)
        except ReportError as error:
            self._audit(spawner, "denied", str(error))
            raise web.HTTPError(400, str(error)) from None
        self.apply(spawner, value)

    def parse(self, body: bytes) -> Any:  # each endpoint's strict parser (reports.py)
        raise NotImplementedError

    def apply(self, spawner: Any, value: Any) -> None:  # hand the parsed report to the spawner, answer
        raise NotImplementedError

    def _audit(self, spawner: Any, outcome: str, reason: str) -> None:
        self.log.warning("refused a %s from %s: %s", self.action, self.request.remote_ip, reason)
        user = getattr(self.current_user, "name", None) or "anonymous"
        site = SecureHPC(config=self.settings.get("config"))
        AuditLog(Path(site.audit_log)).append(
            actor=user,
            action=self.action,
            obj=f"server:{user}/{getattr(spawner, 'name', '') or '?'}",
            outcome=outcome,
            reason=reason,
            remote_ip=self.request.remote_ip,
        )


class PortReportHandler(_ServerReportHandler):
    action = "session.port"
    parse = staticmethod(parse_port_report)

    def apply(self, spawner: Any, port: int) -> None:
        spawner.report_port(port)
        self.set_status(201)
        self.finish(json.dumps({"port": port}))


class StageReportHandler(_ServerReportHandler):
    action = "session.stage"
    parse = staticmethod(parse_stage_report)

    def apply(self, spawner: Any, stage: str) -> None:
        spawner.report_stage(stage)
        self.set_status(204)
        self.finish()


class AuditReportHandler(_ServerReportHandler):
    action = "session.audit"
    accepting = "accepts_session_audit"
    parse = staticmethod(parse_audit_report)

    def apply(self, spawner: Any, events: list) -> None:
        allowed, first_refusal = spawner.take_session_audit_budget(len(events))
        if not allowed:
            # A session must not flood the central log: the first refusal of each minute is recorded, later
            # ones in that minute only counted in the hub's log.
            reason = f"more than {spawner.session_audit_per_minute} session audit events in a minute"
            if first_refusal:
                self._audit(spawner, "denied", reason)
            else:
                self.log.warning("refused a session.audit report from %s: %s", self.request.remote_ip, reason)
            raise web.HTTPError(429, reason)
        spawner.record_session_events(events)
        self.set_status(204)
        self.finish()


ROUTES = [
    (r"/api/securehpc/port", PortReportHandler),
    (r"/api/securehpc/stage", StageReportHandler),
    (r"/api/securehpc/audit", AuditReportHandler),
]


def install_routes() -> None:
    """Drop batchspawner's attribute-setting callback; add the strict report endpoints (idempotent)."""
    default_handlers[:] = [route for route in default_handlers if route[0] != r"/api/batchspawner"]
    present = {route[0] for route in default_handlers}
    default_handlers.extend(route for route in ROUTES if route[0] not in present)
