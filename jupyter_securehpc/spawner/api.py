"""The only way a job tells the hub anything: ``POST /hub/api/securehpc/port`` with ``{"port": N}``.

batchspawner's ``/api/batchspawner`` sets *any* spawner attribute named in the posted JSON (``cmd``,
``ip``, ``user_options``, ...) for any token holder. It is removed from the hub's routes when this module
is imported; this handler accepts exactly one integer port, from the token of the very server whose
spawner is waiting for it. Everything else is a 400 (or 403) and an audit event.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..audit import AuditLog
from ..config import SecureHPC

MAX_BODY = 64


class PortReportError(ValueError):
    """The report is not exactly ``{"port": <1..65535>}``."""


def parse_port_report(body: bytes) -> int:
    """The port in a report, or PortReportError. Deliberately strict: one key, one JSON integer."""
    if len(body) > MAX_BODY:
        raise PortReportError(f"the report is longer than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PortReportError("the report is not JSON") from None
    if not isinstance(data, dict) or list(data) != ["port"]:
        raise PortReportError('the report must be exactly {"port": N}')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise PortReportError("the port must be an integer from 1 to 65535")
    return port


class PortReportHandler(APIHandler):
    async def post(self) -> None:
        user = self.current_user
        token = self.get_auth_token() or ""
        spawner = None
        if user is not None and hasattr(user, "spawners"):
            for candidate in user.spawners.values():
                if candidate.api_token and hmac.compare_digest(candidate.api_token, token):
                    spawner = candidate
                    break
        if spawner is None or not getattr(spawner, "accepts_port_report", False):
            # No server of this token is waiting for a port: not a request we take from anyone.
            self._audit(spawner, "denied", "no starting secure server has this token")
            raise web.HTTPError(403, "no starting server has this token")
        try:
            port = parse_port_report(self.request.body)
        except PortReportError as error:
            self._audit(spawner, "denied", str(error))
            raise web.HTTPError(400, str(error)) from None
        spawner.report_port(port)
        self.set_status(201)
        self.finish(json.dumps({"port": port}))

    def _audit(self, spawner: object, outcome: str, reason: str) -> None:
        self.log.warning("refused a port report from %s: %s", self.request.remote_ip, reason)
        user = getattr(self.current_user, "name", None) or "anonymous"
        site = SecureHPC(config=self.settings.get("config"))
        AuditLog(Path(site.audit_log)).append(
            actor=user,
            action="session.port",
            obj=f"server:{user}/{getattr(spawner, 'name', '') or '?'}",
            outcome=outcome,
            reason=reason,
            remote_ip=self.request.remote_ip,
        )


def install_routes() -> None:
    """Drop batchspawner's attribute-setting callback; add the strict port endpoint (idempotent)."""
    default_handlers[:] = [route for route in default_handlers if route[0] != r"/api/batchspawner"]
    if not any(route[0] == r"/api/securehpc/port" for route in default_handlers):
        default_handlers.append((r"/api/securehpc/port", PortReportHandler))
