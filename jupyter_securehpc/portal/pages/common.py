"""What every page shares: the layout's context (the hub's links, the signed-in person, a one-time notice),
errors as readable HTML pages, form fields, and the small formatting helpers the templates use.

Pages decide nothing themselves: ``self.call`` runs ``ProjectService`` as the signed-in person (``base.py``),
and its refusals come back as ``ApiError`` with the status to show (404 for a project the person is not in,
as for one that does not exist). ``authz.decide`` is asked only to choose which buttons to show.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode

from tornado import web

from ...projects.authz import Action, Decision, Subject, decide
from ...projects.policy import Policy
from ...projects.roles import Role
from ..api import common
from ..auth import Caller
from ..base import PageHandler
from ..errors import ApiError

log = logging.getLogger(__name__)

NOTICE_COOKIE = "securehpc-portal-notice"
ROLES = tuple(role.value for role in Role)
ROLE_NAMES = {"data_owner": "data owner", "data_scientist": "data scientist", "observer": "observer"}


class Page(PageHandler):
    """A page of the portal: renders ``templates/NAME`` inside ``portal.html`` and shows errors as pages."""

    # --- where things are ------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self.settings["service_prefix"]

    @property
    def hub_prefix(self) -> str:
        """The hub's own pages (``/hub/``): its static files, logo, home, token page, spawn pages, logout."""
        return self.hub_auth.hub_prefix

    @property
    def base_url(self) -> str:
        """The hub's base URL (``/``): users' servers are under ``user/NAME/SERVER/``."""
        return self.hub_prefix[: -len("hub/")] if self.hub_prefix.endswith("hub/") else "/"

    def page_url(self, *parts: str, **query: object) -> str:
        """A portal page's URL: ``page_url("projects", name)`` -> ``/services/securehpc/projects/NAME``."""
        path = (
            self.prefix.rstrip("/") + "".join("/" + quote(str(part), safe="") for part in parts)
            if parts
            else self.prefix
        )
        wanted = {key: value for key, value in query.items() if value not in (None, "")}
        return path + ("?" + urlencode(wanted) if wanted else "")

    def spawn_url(self, project: str) -> str:
        """The hub's spawn page of the caller's server named after ``project``."""
        assert self.caller is not None
        return f"{self.hub_prefix}spawn/{quote(self.caller.name, safe='')}/{quote(project, safe='')}"

    def server_url(self, user: str, project: str) -> str:
        return f"{self.base_url}user/{quote(user, safe='')}/{quote(project, safe='')}/"

    # --- a one-time notice after a change (post, redirect, get) -------------------------------------------
    def notice(self, text: str, kind: str = "success") -> None:
        self.set_signed_cookie(
            NOTICE_COOKIE,
            json.dumps({"kind": kind, "text": text}),
            expires_days=None,
            path=self.prefix,
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
        )

    def _take_notice(self) -> dict | None:
        raw = self.get_signed_cookie(NOTICE_COOKIE, max_age_days=1)
        if raw is None:
            return None
        self.clear_cookie(NOTICE_COOKIE, path=self.prefix)
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("kind") not in ("success", "warning"):
            return None
        return {"kind": data["kind"], "text": str(data.get("text", ""))}

    def done(self, text: str, *parts: str) -> None:
        """After a change: tell the person what happened on the next page, and go there."""
        self.notice(text)
        self.redirect(self.page_url(*parts))

    # --- rendering --------------------------------------------------------------------------------------
    def render_template(self, name: str, **context: Any) -> None:
        context.setdefault("notice", self._take_notice() if self.caller is not None else None)
        context.setdefault("section", "")
        super().render_template(
            name,
            hub_prefix=self.hub_prefix,
            page_url=self.page_url,
            static=lambda path: self.static_url(path, include_version=False),
            role_name=lambda role: ROLE_NAMES.get(role or "", role or "hub admin"),
            roles=ROLES,
            when=when,
            size=size,
            minutes=minutes,
            **context,
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as a page that says what went wrong and what to do; never a traceback."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            message = error.message
        elif isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = "The portal failed on this request. Its log has the details; try again later."
        else:
            message = ""
        if status_code == 403 and not message:
            message = "You may not open this page."
        try:
            phrase = HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "Error"
        self.set_status(status_code)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        try:
            self.render_template("error.html", status_code=status_code, phrase=phrase, message=message, notice=None)
        except Exception:  # the layout itself failed: still no traceback to the person
            log.exception("could not render the error page")
            self.finish(f"<!DOCTYPE html><title>{status_code}</title><p>{status_code} {phrase}</p>")

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ApiError):  # an answer, not a failure: no traceback in the log
            if not self._finished:
                self.send_error(e.status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)

    async def identify(self) -> Caller | None:
        try:
            return await super().identify()
        except ApiError as error:
            if error.code != "xsrf":
                raise
            # Recorded by the base already; said here in a person's words (the base's are for scripts).
            raise ApiError(
                403,
                "This form came without its security token (XSRF), so nothing was done. Go back, reload the page "
                "and send the form again; if this happens again, sign out of the hub and in again.",
                code="xsrf",
            ) from None

    # --- input ----------------------------------------------------------------------------------------
    def field(self, name: str, limit: int = 300) -> str:
        """A form field's text (stripped; empty when absent), at most ``limit`` characters kept."""
        value = self.get_body_argument(name, "")
        return value.strip()[:limit]

    def project_arg(self, value: str) -> str:
        """A project name from the URL, checked as the API checks it (400 page when malformed)."""
        return common.project_name(value)

    def confirmed(self) -> bool:
        return self.get_body_argument("confirmed", "") == "yes"

    # --- who may do what (for showing buttons only; ProjectService decides) -------------------------------
    def decision(self, action: Action, role: str | None, policy: dict | None = None) -> Decision:
        assert self.caller is not None
        subject = Subject(self.caller.name, is_admin=self.caller.is_admin)
        return decide(subject, action, Role(role) if role else None, Policy.from_dict(policy or {}))

    def may(self, action: Action, role: str | None, policy: dict | None = None) -> bool:
        return bool(self.decision(action, role, policy))

    async def refuse(self, action: str, what: str, reason: str) -> None:
        """Record a refusal the page makes itself (not a ProjectService decision) and answer 403."""
        await self.call("record_refusal", action, f"portal:{self.request.method} {self.request.path}", reason)
        raise ApiError(403, f"{what}: {reason}")

    async def require_admin(self, what: str) -> None:
        assert self.caller is not None
        if not self.caller.is_admin:
            await self.refuse("portal.admin", what, "only the portal's hub admins may open the admin pages")


class NotFoundPage(Page):
    """Any other path of the portal's pages."""

    def get(self) -> None:
        raise ApiError(404, f"There is no page at {self.request.path}.")

    post = get


def when(value: str | None) -> str:
    """``2026-01-31T12:00:00Z`` (or with fractions) as ``2026-01-31 12:00 UTC``; empty for none."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def size(value: int | None) -> str:
    if value is None:
        return ""
    amount = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def minutes(value: int) -> str:
    """Wall time for people: ``90`` -> ``1 h 30 min``, ``2880`` -> ``2 days``."""
    if value % 1440 == 0:
        days = value // 1440
        return f"{days} day" + ("s" if days != 1 else "")
    hours, rest = divmod(value, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" + (f" {rest} min" if rest else "")
