"""The hub's own API rules for secure servers: the job's reports, and the JupyterHub routes that would let an
admin act as a user or let a server leave its session.

Job reports, under ``/hub/api/securehpc/servers/<user>/<server>/``, each from the node launcher of that very
server with ``Authorization: securehpc-report <secret>`` (the spawner's per-start secret, which never enters
the sandbox; the hub keeps only its SHA-256):

- ``port``: ``{"port": N}`` once the server answers (the spawner waits for it);
- ``stage``: ``{"stage": "key"|"mounting"|"starting"}`` while it starts (the user's progress messages);
- ``audit``: ``{"events": [...]}``, the server extension's audit events, bound to the session's user and
  project, into the hub's central audit log;
- ``activity``: ``{}``: someone used the server; the hub records its own clock, at most once per
  ``ACTIVITY_INTERVAL`` seconds per server (more often: 204, nothing changes).
- ``parameters``: a notebook saved (with its parameter names), renamed or deleted in the session
  (``session.parameters``), recorded in the projects database for the server's project and user through
  ``ProjectService.record_notebook_parameters``, which refuses it (403) unless the user may write the workspace.

Every refusal is a 403 (400 for a malformed body from the right session) and an audit event, bounded per
source address by ``RefusalLimiter`` (``ReportLimits``): beyond the limit 429 before anything is read.

Routes of JupyterHub replaced here (``install_routes``), because a hub admin must administer, not impersonate:

- ``POST /api/users/<name>/tokens``: only ``<name>`` itself may create its tokens (no token for another user,
  whoever asks, admins and services included);
- ``POST /api/shares/...`` and ``POST /api/share-codes/...``: a secure server is never shared;
- ``POST /api/users/<name>/activity``: refused; a server's activity comes from its launcher only (the
  stock endpoint takes any timestamp, a covert channel that also defeats idle culling).

batchspawner's ``/api/batchspawner`` sets *any* spawner attribute named in the posted JSON for any token
holder: it is removed as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.shares import ServerShareAPIHandler, ServerShareCodeAPIHandler
from jupyterhub.apihandlers.users import ActivityAPIHandler, UserTokenListAPIHandler
from jupyterhub.user import User
from jupyterhub.utils import utcnow
from tornado import web
from traitlets import Integer, validate
from traitlets.config import Configurable

from ..audit import AuditError, AuditLog
from ..config import SecureHPC
from ..session.parameters import ParametersChange, parse_parameters_report
from .reports import (
    AUDIT,
    MAX_AUDIT_BODY,
    SUMMARY,
    SUMMARY_ALL,
    RefusalLimiter,
    ReportError,
    bind_events,
    parse_activity_report,
    parse_audit_report,
    parse_port_report,
    parse_stage_report,
    secret_from_authorization,
    secret_matches,
)

__all__ = ["ReportError", "ReportLimits", "install_routes", "parse_audit_report", "parse_port_report",
           "parse_stage_report"]  # fmt: skip

# A launcher reports activity as it relays traffic; the hub needs no finer grain for idle culling, and a
# coarse one leaves nothing to modulate.
ACTIVITY_INTERVAL = 30
_LIMITER = "securehpc_refusal_limiter"  # where the hub's one limiter lives in the tornado settings


class ReportLimits(Configurable):
    """How many refused posts to the hub's secure routes are recorded, per source address and minute."""

    audited_refusals_per_minute = Integer(
        10,
        help="""Refused posts (job reports, token creation for another user, sharing) from one source address
        that are audited one by one per minute; the next gives one summary event for that source and minute,
        later ones are counted in the hub's log only. Keeps a flood from growing the audit log without bound.""",
    ).tag(config=True)

    refusals_per_minute = Integer(
        100,
        help="""Refused job reports from one source address per minute after which that source's reports are
        answered 429 before anything is parsed or looked up, for the rest of the minute.""",
    ).tag(config=True)

    audited_refusals_all_sources_per_minute = Integer(
        200,
        help="""Audited refusals of all sources together per minute (then one summary event): bounds the log
        also against a client that varies the address it claims (X-Forwarded-For) for each post.""",
    ).tag(config=True)

    @validate("refusals_per_minute")
    def _check_refusals(self, proposal: dict) -> int:
        if proposal["value"] <= self.audited_refusals_per_minute:
            raise ValueError(
                f"ReportLimits.refusals_per_minute ({proposal['value']}) must be larger than "
                f"ReportLimits.audited_refusals_per_minute ({self.audited_refusals_per_minute})"
            )
        return proposal["value"]


def _limiter(handler: web.RequestHandler) -> RefusalLimiter:
    """The hub's one limiter (in the application's settings, so that every handler shares it)."""
    limiter = handler.settings.get(_LIMITER)
    if limiter is None:
        limits = ReportLimits(config=handler.settings.get("config"))
        limiter = RefusalLimiter(
            audited_per_source=limits.audited_refusals_per_minute,
            reject_after=limits.refusals_per_minute,
            audited_all_sources=limits.audited_refusals_all_sources_per_minute,
        )
        handler.settings[_LIMITER] = limiter
    return limiter


def _audit_log(handler: web.RequestHandler) -> AuditLog:
    return AuditLog(Path(SecureHPC(config=handler.settings.get("config")).audit_log))


def _safe(name: str) -> str:
    """A name from the URL, as it may appear in an audit event's object: printable, short."""
    text = name[:64].encode("unicode_escape").decode("ascii")
    return text + ("..." if len(name) > 64 else "")


def refuse(
    handler: web.RequestHandler,
    status: int,
    *,
    action: str,
    actor: str,
    obj: str,
    reason: str,
    answer: str | None = None,
    project: str | None = None,
) -> NoReturn:
    """Answer ``status`` and record the refusal, as far as the source's budget goes (``RefusalLimiter``).

    ``reason`` is for the admin (audit log, hub log); ``answer`` for the client, when it must learn less (a
    wrong secret and an unknown server look the same from outside). Neither ever holds a credential."""
    source = handler.request.remote_ip or "?"
    limiter = _limiter(handler)
    how = limiter.refusal(source)
    event: dict[str, Any] | None = None
    if how == AUDIT:
        event = {"actor": actor, "action": action, "obj": obj, "project": project, "reason": reason,
                 "status": status}  # fmt: skip
    elif how == SUMMARY:
        event = {"actor": "anonymous", "action": "hub.refusals", "obj": f"source:{_safe(source)}", "reason": (
            f"more than {limiter.audited_per_source} refused posts from this source in a minute (the last: "
            f"{action} on {obj}): the rest of this minute is counted in the hub's log only, and from "
            f"{limiter.reject_after} on its job reports are answered 429 unread"
        )}  # fmt: skip
    elif how == SUMMARY_ALL:
        event = {"actor": "anonymous", "action": "hub.refusals", "obj": "source:*", "reason": (
            f"more than {limiter.audited_all_sources} refused posts from all sources in a minute: the rest of "
            "this minute is counted in the hub's log only"
        )}  # fmt: skip
    if event is not None:
        handler.log.warning("refused %s on %s from %s (%d): %s", action, obj, source, status, reason)
        try:
            _audit_log(handler).append(outcome="denied", remote_ip=source, **event)
        except (AuditError, OSError, ValueError) as error:
            # The request stays refused; the admin must learn that the record is missing.
            handler.log.error("could not record a refusal of %s in the audit log: %s", action, error)
    raise web.HTTPError(status, answer or reason)


# --- the job's reports -----------------------------------------------------------------------------------


@web.stream_request_body
class _ServerReportHandler(APIHandler):
    """A report from a job: found by the report secret of the server it names, refused from anyone else.

    Hub tokens and cookies are not looked at (no database work for them, and no hub token can stand in for the
    report secret); the body is streamed so that its size is bounded before it is read."""

    _accept_token_auth = False
    _accept_cookie_auth = False
    action = "session.report"
    accepting = "accepts_port_report"  # the spawner attribute that says whether it takes this report now

    async def prepare(self) -> None:
        if _limiter(self).blocked(self.request.remote_ip or "?"):
            # Past the source's refusals for this minute: no parsing, no database, no audit event.
            raise web.HTTPError(429, "too many refused reports from this address; try again in a minute")
        # Bounded before tornado reads it; a larger body closes the connection. The parsers check each kind's
        # own, smaller limit.
        self.request.connection.set_max_body_size(MAX_AUDIT_BODY + 1024)
        self._body = bytearray()
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        self._body.extend(chunk)

    def check_xsrf_cookie(self) -> None:
        """No cookie ever authenticates a report (the credential is a header a browser does not send), so there
        is nothing to forge across sites; a refusal here would also go unaudited."""

    def _refuse_unauthenticated(self, obj: str, reason: str) -> NoReturn:
        refuse(self, 403, action=self.action, actor="anonymous", obj=obj, reason=reason,
               answer="not a report credential of this server")  # fmt: skip

    def _reporting_spawner(self, user_name: str, server_name: str) -> tuple[Any, Any]:
        """The (user, spawner) whose stored hash matches the request's secret, or a 403 and an audit event."""
        obj = f"server:{_safe(user_name)}/{_safe(server_name)}"
        secret = secret_from_authorization(self.request.headers.get("Authorization"))
        if secret is None:
            self._refuse_unauthenticated(obj, "no report credential (Authorization: securehpc-report ...)")
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_spawners:
            self._refuse_unauthenticated(obj, "no such server")
        spawner = user.spawners[server_name]
        stored = getattr(spawner, "report_secret_hash", None)
        if not stored:
            self._refuse_unauthenticated(obj, "the server has no report credential now (not started, or stopped)")
        if not secret_matches(secret, stored):
            self._refuse_unauthenticated(obj, "wrong report credential for this server")
        return user, spawner

    async def post(self, user_name: str, server_name: str) -> None:
        user, spawner = self._reporting_spawner(user_name, server_name)
        obj = f"server:{user.name}/{spawner.name}"
        if not getattr(spawner, self.accepting, False):
            refuse(self, 403, action=self.action, actor=user.name, obj=obj, project=spawner.name or None,
                   reason=f"the server takes no {self.action} report now")  # fmt: skip
        try:
            value = self.parse(bytes(self._body))
        except ReportError as error:
            refuse(self, 400, action=self.action, actor=user.name, obj=obj, project=spawner.name or None,
                   reason=str(error))  # fmt: skip
        self.apply(user, spawner, value)

    def parse(self, body: bytes) -> Any:  # each endpoint's strict parser (reports.py)
        raise NotImplementedError

    def apply(self, user: Any, spawner: Any, value: Any) -> None:  # hand the parsed report over, answer
        raise NotImplementedError


class PortReportHandler(_ServerReportHandler):
    action = "session.port"
    parse = staticmethod(parse_port_report)

    def apply(self, user: Any, spawner: Any, port: int) -> None:
        spawner.report_port(port)
        self.set_status(201)
        self.finish(json.dumps({"port": port}))


class StageReportHandler(_ServerReportHandler):
    action = "session.stage"
    parse = staticmethod(parse_stage_report)

    def apply(self, user: Any, spawner: Any, stage: str) -> None:
        spawner.report_stage(stage)
        self.set_status(204)
        self.finish()


class AuditReportHandler(_ServerReportHandler):
    action = "session.audit"
    accepting = "accepts_session_audit"
    parse = staticmethod(parse_audit_report)

    def apply(self, user: Any, spawner: Any, events: list) -> None:
        obj = f"server:{user.name}/{spawner.name}"
        try:
            bind_events(events, user.name, spawner.name)
        except ReportError as error:
            refuse(self, 400, action=self.action, actor=user.name, obj=obj, project=spawner.name or None,
                   reason=str(error))  # fmt: skip
        allowed, first_refusal = spawner.take_session_audit_budget(len(events))
        if not allowed:
            # A session must not flood the central log: the first refusal of each minute is recorded, later
            # ones in that minute only counted in the hub's log.
            reason = f"more than {spawner.session_audit_per_minute} session audit events in a minute"
            if first_refusal:
                _audit_log(self).append(actor=user.name, action=self.action, obj=obj, outcome="denied",
                                        project=spawner.name or None, reason=reason,
                                        remote_ip=self.request.remote_ip)  # fmt: skip
            self.log.warning("refused a session.audit report of %s: %s", obj, reason)
            raise web.HTTPError(429, reason)
        spawner.record_session_events(events)
        self.set_status(204)
        self.finish()


class ActivityReportHandler(_ServerReportHandler):
    action = "session.activity"
    accepting = "accepts_activity"
    parse = staticmethod(parse_activity_report)

    def apply(self, user: Any, spawner: Any, _: None) -> None:
        # The hub's clock, never the client's: nothing to encode, nothing in the future. Coarse on purpose.
        if spawner.take_activity_slot(ACTIVITY_INTERVAL):
            now = utcnow(with_tz=False)
            spawner.orm_spawner.last_activity = now
            user.orm_user.last_activity = now
            self.db.commit()
        self.set_status(204)
        self.finish()


class ParametersReportHandler(_ServerReportHandler):
    """The parameter names of a notebook the session saved (or a rename, a delete): into the hub's index for this
    server's project (its name) and user, never another; refused unless the user's role may write the workspace."""

    action = "session.parameters"
    accepting = "accepts_session_audit"
    parse = staticmethod(parse_parameters_report)

    def apply(self, user: Any, spawner: Any, change: ParametersChange) -> None:
        from ..projects.service import BadInput, Refused

        obj = f"server:{user.name}/{spawner.name}"
        projects = getattr(spawner, "projects", None)
        if projects is None or not spawner.name:
            refuse(self, 403, action=self.action, actor=user.name, obj=obj, project=spawner.name or None,
                   reason="this server is not a project's session")  # fmt: skip
        # Each report may be an audit event (a change, or a refusal): it counts against the session's budget of
        # audit events, as the server extension's own events do.
        allowed, first_refusal = spawner.take_session_audit_budget(1)
        if not allowed:
            reason = f"more than {spawner.session_audit_per_minute} session audit events in a minute"
            if first_refusal:
                _audit_log(self).append(actor=user.name, action=self.action, obj=obj, outcome="denied",
                                        project=spawner.name, reason=reason,
                                        remote_ip=self.request.remote_ip)  # fmt: skip
            raise web.HTTPError(429, reason)
        try:
            # The service audits both what it records and what it refuses.
            projects().record_notebook_parameters(spawner.name, user.name, change)
        except (Refused, BadInput) as error:
            raise web.HTTPError(403, str(error)) from None
        self.set_status(204)
        self.finish()


# --- JupyterHub routes that must not serve a secure hub as they are -------------------------------------


def _requester(handler: web.RequestHandler) -> str:
    user = handler.current_user
    return getattr(user, "name", None) or "anonymous"


class OwnTokensOnlyHandler(UserTokenListAPIHandler):
    """Token creation for oneself only: an API token is a person's identity towards every server, so minting
    one for someone else (which JupyterHub allows the ``tokens`` scope, admins included) is impersonation."""

    async def post(self, user_name: str) -> None:
        requester = self.current_user
        # Allowed: a hub user (cookie or token) creating a token for itself. Not a service, not another user,
        # not the unauthenticated ``auth`` body path (the login is the identity provider's, with MFA).
        if isinstance(requester, User) and requester.name == user_name:
            await super().post(user_name)
            return
        refuse(self, 403, action="token.create", actor=_requester(self), obj=f"user:{_safe(user_name)}",
               reason="API tokens are created by their owner only, never for another user")  # fmt: skip


class NoSharingHandler(ServerShareAPIHandler):
    """Reading and revoking shares keeps working; granting access to a secure server does not: a session is
    its user's alone (the project's data is shared through projects and datasets, never through a server)."""

    async def post(self, user_name: str, server_name: str | None = None) -> None:
        refuse(self, 403, action="share.create", actor=_requester(self),
               obj=f"server:{_safe(user_name)}/{_safe(server_name or '')}",
               reason="secure servers are not shared; add the person to the project instead")  # fmt: skip


class NoShareCodesHandler(ServerShareCodeAPIHandler):
    """A share code is a share waiting to be accepted: refused like the share itself."""

    async def post(self, user_name: str, server_name: str | None = None) -> None:
        refuse(self, 403, action="share.create", actor=_requester(self),
               obj=f"server:{_safe(user_name)}/{_safe(server_name or '')}",
               reason="secure servers are not shared; add the person to the project instead")  # fmt: skip


class NoClientActivityHandler(ActivityAPIHandler):
    """The stock activity endpoint takes any timestamp from the server's token, which code in a kernel can
    read: a covert channel, and future dates keep an idle server alive. Activity comes from the launcher's
    report (``ActivityReportHandler``) with the hub's own clock instead."""

    def post(self, user_name: str) -> None:
        refuse(self, 403, action="session.activity", actor=_requester(self), obj=f"user:{_safe(user_name)}",
               reason="activity is reported by the node launcher only, with the hub's clock")  # fmt: skip


_SERVER = r"/api/securehpc/servers/([^/]+)/([^/]*)"
ROUTES = [
    (_SERVER + "/port", PortReportHandler),
    (_SERVER + "/stage", StageReportHandler),
    (_SERVER + "/audit", AuditReportHandler),
    (_SERVER + "/activity", ActivityReportHandler),
    (_SERVER + "/parameters", ParametersReportHandler),
]
REPLACED = {
    r"/api/users/([^/]+)/tokens": OwnTokensOnlyHandler,
    r"/api/users/([^/]+)/activity": NoClientActivityHandler,
    r"/api/shares/([^/]+)": NoSharingHandler,
    r"/api/shares/([^/]+)/([^/]*)": NoSharingHandler,
    r"/api/share-codes/([^/]+)": NoShareCodesHandler,
    r"/api/share-codes/([^/]+)/([^/]*)": NoShareCodesHandler,
}
REMOVED = {r"/api/batchspawner", r"/api/securehpc/port", r"/api/securehpc/stage", r"/api/securehpc/audit"}


def install_routes() -> None:
    """Drop batchspawner's attribute-setting callback, put the handlers above in place of JupyterHub's (at the
    same position, so that they match first), add the report endpoints. Idempotent; must run before the hub
    builds its routes (importing the spawner does it)."""
    missing = set(REPLACED) - {route[0] for route in default_handlers}
    if missing:  # a JupyterHub that moved a route: refuse to start rather than leave it open
        raise RuntimeError(f"JupyterHub routes not found, cannot restrict them: {', '.join(sorted(missing))}")
    default_handlers[:] = [
        (route[0], REPLACED[route[0]], *route[2:]) if route[0] in REPLACED else route
        for route in default_handlers
        if route[0] not in REMOVED
    ]
    from ..runs.api import ROUTES as RUN_ROUTES  # headless runs: the people's endpoints and the jobs' reports

    present = {route[0] for route in default_handlers}
    default_handlers.extend(route for route in [*ROUTES, *RUN_ROUTES] if route[0] not in present)
