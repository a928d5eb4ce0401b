"""The base of every portal handler: sign-in through the hub, XSRF, security headers, errors as JSON.

``APIHandler`` answers JSON and refuses unauthenticated requests with 403; ``PageHandler`` (for ``pages/``)
sends people to the hub's sign-in and renders Jinja2 templates. Both identify the caller in ``prepare`` and
give handlers ``self.caller`` and ``self.call(...)``, which runs a ``ProjectService`` method in a worker
thread as that caller and turns its refusals into the right answer.

State-changing requests authenticated by the portal's cookie need the XSRF token (``_xsrf`` form field or
``X-XSRFToken`` header, from the ``_xsrf`` cookie set on page views); requests with a token in the
Authorization header are exempt, as in JupyterHub's own API. HubOAuth does that check: a cookie without a
matching XSRF token does not sign anyone in, and this base answers 403 and records the refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from jupyterhub._xsrf_utils import _needs_check_xsrf
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from ..projects.service import Actor, ProjectService
from . import ACCESS_SCOPE, VIA
from .auth import Caller, caller
from .errors import CODES, ApiError, from_exception

log = logging.getLogger(__name__)

# No inline script or style from anywhere else; never framed (clickjacking). Images may be data: URIs: the
# hub's Bootstrap draws the selects' arrows and the checkboxes' ticks with them (nothing leaves the page).
CSP = "default-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    caller: Caller | None = None

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value: HubOAuth) -> None:  # HubAuthenticated assigns it; the application's is kept
        pass

    def _request_summary(self) -> str:
        # Without the query string: OAuth codes and states travel there.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Cache-Control", "no-store")

    # --- who calls ---------------------------------------------------------------------------------------
    async def identify(self) -> Caller | None:
        """The caller, or None when the request carries no identity the hub accepts. Raises ApiError 403 for a
        known person refused here (a token without the portal's scope, a cookie without its XSRF token)."""
        model = await self.hub_auth.get_user(self, sync=False)
        if model is None:
            person = await self._cookie_person_without_xsrf()
            if person is not None:
                reason = "a state-changing request signed in by cookie came without the XSRF token"
                self._refuse_early(person, "portal.xsrf", reason)
                raise ApiError(
                    403,
                    f"{reason}: send the _xsrf cookie's value as the X-XSRFToken header (or the _xsrf form field), "
                    "or authenticate with a JupyterHub API token",
                    code="xsrf",
                )
            return None
        if model.get("kind", "user") != "user":
            raise ApiError(403, "the portal acts for people: use a person's JupyterHub API token, not a service's")
        try:
            self.check_hub_user(model)
        except UserNotAllowed:
            reason = f"the token does not carry the portal's scope {ACCESS_SCOPE}"
            self._refuse_early(model["name"], "portal.access", reason)
            raise ApiError(
                403, f"{reason}: make a token with that scope (or with your full rights) on the hub's token page"
            ) from None
        return caller(model, token_authenticated=bool(getattr(self, "_token_authenticated", False)))

    async def _cookie_person_without_xsrf(self) -> str | None:
        """Who the portal's cookie names, when HubOAuth turned it down for a missing or wrong XSRF token."""
        if not _needs_check_xsrf(self):
            return None
        token = self.get_secure_cookie(self.hub_auth.cookie_name)
        if not token:
            return None
        model = await self.hub_auth.user_for_token(token.decode("ascii", "replace"), sync=False)
        return model["name"] if model else None

    def _refuse_early(self, name: str, action: str, reason: str) -> None:
        service = self.project_service(Caller(name, is_admin=False, token_authenticated=False))
        service.record_refusal(action, f"portal:{self.request.method} {self.request.path}", reason)

    # --- the one door ------------------------------------------------------------------------------------
    def project_service(self, who: Caller | None = None) -> ProjectService:
        who = who or self.caller
        if who is None:
            raise ApiError(403, "sign in first")
        make: Callable[[Actor], ProjectService] = self.settings["project_service"]
        return make(Actor.signed_in(who.name, is_admin=who.is_admin, via=VIA))

    async def call(self, method: str, *args: Any, about: str | None = None, **kwargs: Any) -> Any:
        """``ProjectService.<method>(*args, **kwargs)`` as the caller, in a worker thread (database, OpenBao
        and file work block). Its refusals and bad input become ApiError; ``about`` is the project the request
        is about (not being its member answers 404, as for a project that does not exist)."""
        service = self.project_service()
        try:
            return await asyncio.to_thread(getattr(service, method), *args, **kwargs)
        except Exception as error:
            answer = from_exception(error, project=about)
            if answer is None:
                raise
            raise answer from None


class APIHandler(BaseHandler):
    """JSON in, JSON out; every request needs a caller."""

    async def prepare(self) -> None:
        self.caller = await self.identify()
        if self.caller is None:
            raise ApiError(
                403,
                "not signed in: send a JupyterHub API token (Authorization: token ...) or sign in through the hub",
                code="not_authenticated",
            )

    def get_login_url(self) -> str:  # never redirect an API request to a login page
        raise ApiError(403, "not signed in", code="not_authenticated")

    def read_json(self) -> dict:
        """The request's JSON object, or 400 saying what is wrong with it."""
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(400, f"send a JSON object with Content-Type: application/json (got {content_type!r})")
        try:
            data = json.loads(self.request.body or b"")
        except (UnicodeDecodeError, ValueError) as error:
            raise ApiError(400, f"the request body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"the request body must be a JSON object, not {type(data).__name__}")
        return data

    def reply(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            answer = error
        elif isinstance(error, web.HTTPError):
            message = error.log_message % error.args if error.log_message and error.args else error.log_message
            answer = ApiError(status_code, message or HTTPStatus(status_code).phrase)
        else:
            answer = ApiError(500, "the portal failed on this request; its log has the details")
        if answer.status not in CODES:
            answer = ApiError(400 if 400 <= answer.status < 500 else 500, answer.message)
        self.set_status(answer.status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(answer.body()))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ApiError):  # an answer, not a failure: no traceback in the log
            if self._finished:
                return
            self.send_error(e.status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)


class PageHandler(BaseHandler):
    """Base of the web pages (``pages/``): people are sent to the hub's sign-in; errors are HTML pages.

    Register page handlers in ``pages/__init__.py``'s ``routes()`` (paths relative to the service's prefix);
    ``render_template(name, **context)`` renders ``templates/NAME`` with the caller, the XSRF form field and
    the service's prefix in the context.
    """

    async def prepare(self) -> None:
        try:
            self.caller = await self.identify()
        except ApiError as error:
            raise web.HTTPError(error.status, error.message) from None
        if self.caller is None:
            if self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise web.HTTPError(403, "not signed in")
        # Page views set the _xsrf cookie that forms and the pages' scripts send back.
        self.xsrf_token  # noqa: B018

    def render_template(self, name: str, **context: Any) -> None:
        template = self.settings["jinja2_env"].get_template(name)
        context = {
            "caller": self.caller,
            "prefix": self.settings["service_prefix"],
            "xsrf_form_html": self.xsrf_form_html,
            "xsrf_token": self.xsrf_token.decode("ascii"),
            **context,
        }
        self.finish(template.render(**context))


class SignInHandler(PageHandler):
    """``<prefix>sign-in?next=PATH``: sign in through the hub (if not yet), then go to ``next`` (a path of the
    portal; default: its start page). Also sets the ``_xsrf`` cookie that scripts in the browser send back."""

    def get(self) -> None:
        prefix = self.settings["service_prefix"]
        target = self.get_argument("next", prefix)
        if not target.startswith(prefix) or "//" in target or "\\" in target:
            target = prefix  # never an open redirect
        self.redirect(target)


class UnknownRouteHandler(APIHandler):
    """Any other path under ``api/v1``: a JSON 404, after the caller is known (no route list for strangers)."""

    async def prepare(self) -> None:
        await super().prepare()
        raise ApiError(404, f"no such API path: {self.request.path} (see the API's openapi.json)")


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """``<prefix>oauth_callback``: JupyterHub's, with the application's HubOAuth (which holds the sign-in's
    state and PKCE verifier) and no query string in the log."""

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]

    @hub_auth.setter
    def hub_auth(self, value: HubOAuth) -> None:
        pass

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"
