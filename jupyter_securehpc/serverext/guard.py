"""The request guard: every request of the web app passes ``Rules.decide`` before its handler method runs.

Hooked at ``Application.get_handler_delegate``, which tornado calls for every matched route, nested
routers and the 404 fallback included, so handlers that extensions add after us are guarded too. The
handler class is swapped for a subclass (made once per class) whose ``prepare`` first runs the original
``prepare`` (authentication, XSRF, host and origin checks: the actor is known and unauthenticated requests
are already refused or redirected) and then asks the rules. A refusal is an ``HTTPError`` raised before the
handler method: the body is the error page or JSON with a short reason, never a byte of the file.

Static file handlers (``Rules.is_static``) also get a ``validate_absolute_path`` that refuses a file in a
folder this process can write (``paths.writable_place``). Every guarded handler gets a ``write_error`` that
says only the status (and the guard's own reasons, and a few messages made of the request's path alone):
jupyter-server's errors can quote a file ("Notebook does not appear to be JSON: 'patient,...'", nbformat
validation errors).

Also here: the Content-Security-Policy added to every response (an output transform, so static files and
error pages get it too), the check of the identity the hub vouches for, and the audit events for refusals.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import threading
from typing import Any
from urllib.parse import unquote

from tornado import httputil, web

from jupyter_securehpc.audit import AuditError
from jupyter_securehpc.projects.authz import Action

from .rules import RequestFacts, Rules, Verdict
from .session import Session
from .sink import AuditSink

# web_app.settings key under which the guard is found by the authorizer.
SETTINGS_KEY = "securehpc_guard"

# Sandbox flags JupyterLab needs to work at all (scripts, its own origin for cookies and storage, the login
# form, dialogs, "open in new tab"). Left out on purpose: allow-downloads (blocks data:/blob: downloads from
# outputs), allow-popups-to-escape-sandbox, allow-top-navigation.
CSP_SANDBOX = "sandbox allow-scripts allow-same-origin allow-forms allow-modals allow-popups"


def content_security_policy(may_download: bool) -> str:
    # A role that may download must be able to save what /files sends it; the browser refuses downloads
    # started from a sandboxed page without allow-downloads.
    sandbox = CSP_SANDBOX + (" allow-downloads" if may_download else "")
    return f"{sandbox}; frame-ancestors 'none'"


def make_csp_transform(policy: str) -> type[web.OutputTransform]:
    """An output transform adding ``policy`` to every response.

    Added as a second header when a handler set its own: browsers enforce every policy they receive, so
    this never loosens a stricter one (``/files`` sets ``sandbox allow-scripts``).
    """

    class SecureHPCCSP(web.OutputTransform):
        def transform_first_chunk(
            self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
        ) -> tuple[int, httputil.HTTPHeaders, bytes]:
            if policy not in headers.get_list("Content-Security-Policy"):
                headers.add("Content-Security-Policy", policy)
            return status_code, headers, chunk

    return SecureHPCCSP


# Error messages jupyter-server makes from the request's own path and fixed words only: kept, so that the UI
# can say what went wrong. Every other message is replaced by the status's name.
SAFE_MESSAGES = (
    re.compile(r"No such file or directory: [^\x00-\x1f]{0,512}"),
    re.compile(r"No such directory: [^\x00-\x1f]{0,512}"),
    re.compile(r"file or directory '[^\x00-\x1f]{0,512}' does not exist"),
    re.compile(r"File or directory already exists: [^\x00-\x1f]{0,512}"),
    re.compile(r"Kernel does not exist: [0-9a-f-]{1,64}"),
    re.compile(r"Session not found: [0-9a-f-]{1,64}"),
)


class Refusal(web.HTTPError):
    """A refusal of the guard: its message is the verdict's reason, made by us and safe to show."""


def safe_error(status: int, error: BaseException | None) -> web.HTTPError:
    """The error to show for ``error``: ours as is, a known-safe message, or the status's name alone."""
    if isinstance(error, Refusal):
        return error
    name = httputil.responses.get(status, "Error")
    if isinstance(error, web.HTTPError) and error.log_message:
        try:
            message = error.log_message % error.args if error.args else error.log_message
        except (TypeError, ValueError):
            message = ""
        if any(pattern.fullmatch(message) for pattern in SAFE_MESSAGES):
            return web.HTTPError(status, message, reason=name)
    return web.HTTPError(status, name, reason=name)


class Guard:
    """Decides requests for one session and records refusals in the audit sink."""

    def __init__(
        self,
        session: Session,
        rules: Rules,
        audit: AuditSink,
        base_url: str,
        log: logging.Logger,
        *,
        hub_identity: bool = False,
        require_login_session: bool = False,
    ) -> None:
        self.session = session
        self.rules = rules
        self.audit = audit
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.log = log
        # Under JupyterHub every user must be a hub user the hub vouches for (see ``user_verdict``).
        self.hub_identity = hub_identity
        self.require_login_session = require_login_session
        self._guarded: dict[type, type] = {}
        self._lock = threading.Lock()

    # --- installing --------------------------------------------------------------------------------------

    def install(self, web_app: web.Application) -> None:
        """Guard every route of ``web_app`` and add the CSP to every response."""
        original = web_app.get_handler_delegate

        def get_handler_delegate(
            request: httputil.HTTPServerRequest,
            target_class: type[web.RequestHandler],
            target_kwargs: dict[str, Any] | None = None,
            path_args: list[bytes] | None = None,
            path_kwargs: dict[str, bytes] | None = None,
        ) -> Any:
            return original(request, self.guarded(target_class), target_kwargs, path_args, path_kwargs)

        # An instance attribute: tornado's routers call ``application.get_handler_delegate`` for each request.
        web_app.get_handler_delegate = get_handler_delegate  # type: ignore[method-assign]
        web_app.add_transform(make_csp_transform(content_security_policy(bool(self.rules.download))))
        web_app.settings[SETTINGS_KEY] = self

    def guarded(self, handler_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
        """The subclass of ``handler_class`` whose ``prepare`` asks the guard; made once per class."""
        if getattr(handler_class, "_securehpc_guarded", False):
            return handler_class
        subclass = self._guarded.get(handler_class)
        if subclass is None:
            with self._lock:
                subclass = self._guarded.get(handler_class) or self._make_guarded(handler_class)
                self._guarded[handler_class] = subclass
        return subclass

    def _make_guarded(self, handler_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
        guard = self

        async def prepare(handler: web.RequestHandler, *args: Any, **kwargs: Any) -> None:
            try:
                result = super(subclass, handler).prepare(*args, **kwargs)
                if inspect.isawaitable(result):
                    await result
            except web.HTTPError as error:
                # The catch-all 404 handler raises in prepare, after authenticating: an authenticated request
                # for an unknown route under a file-serving prefix is still a refusal to record.
                if error.status_code == 404 and _current_user(handler) is not None:
                    await guard.check(handler, handler_class)
                raise
            if handler._finished:  # redirected to the login page, or answered otherwise
                return
            await guard.check(handler, handler_class)

        def write_error(handler: web.RequestHandler, status_code: int, **kwargs: Any) -> None:
            exc_info = kwargs.get("exc_info")
            error = safe_error(status_code, exc_info[1] if exc_info else None)
            kwargs["exc_info"] = (type(error), error, None)
            handler._reason = error.reason or httputil.responses.get(status_code, "Error")  # the status line
            super(subclass, handler).write_error(status_code, **kwargs)

        members: dict[str, Any] = {"prepare": prepare, "write_error": write_error, "_securehpc_guarded": True}
        if _finish_needs_arguments(handler_class):
            # Some handlers' finish() takes required arguments (JupyterLab's licences: the MIME type); tornado's
            # send_error calls finish() with none, which would raise and leave the refused request unanswered.

            def finish(handler: web.RequestHandler, *args: Any, **kwargs: Any) -> Any:
                if not args and not kwargs:
                    return web.RequestHandler.finish(handler)
                return super(subclass, handler).finish(*args, **kwargs)

            members["finish"] = finish
        if self.rules.is_static(handler_class) and hasattr(handler_class, "validate_absolute_path"):

            def validate_absolute_path(handler: web.StaticFileHandler, root: str, absolute_path: str) -> str | None:
                path = super(subclass, handler).validate_absolute_path(root, absolute_path)
                if path is not None:
                    verdict = guard.rules.static_file(path)
                    if not verdict.allowed:
                        guard.record(handler, verdict)
                        raise Refusal(verdict.status, verdict.reason, reason=_http_reason(verdict.status))
                return path

            members["validate_absolute_path"] = validate_absolute_path
        # Same name as the original: request logs and Prometheus labels stay as they were.
        subclass = type(handler_class.__name__, (handler_class,), members)
        subclass.__qualname__ = handler_class.__qualname__
        subclass.__module__ = handler_class.__module__
        return subclass

    # --- deciding ----------------------------------------------------------------------------------------

    def route_of(self, request: httputil.HTTPServerRequest) -> str:
        """The request path below base_url, percent-decoded (routing itself matches the raw path)."""
        path = request.path or "/"
        if path.startswith(self.base_url):
            path = "/" + path[len(self.base_url) :]
        return unquote(path)

    def facts(self, handler: web.RequestHandler, handler_class: type) -> RequestFacts:
        request = handler.request
        return RequestFacts(
            method=(request.method or "").upper(),
            route=self.route_of(request),
            handler_class=handler_class,
            path_args=[a for a in handler.path_args if isinstance(a, str)],
            path_kwargs={k: v for k, v in handler.path_kwargs.items() if isinstance(v, str)},
            # Read as the handler will: tornado gives the last value of a repeated argument, stripped
            # (``?format=text&format=base64``, ``?format=base64%20`` must be seen as base64 here too).
            query={name: handler.get_query_argument(name) for name in request.query_arguments},
            body=request.body if isinstance(request.body, bytes) else b"",
        )

    def verdict(self, handler: web.RequestHandler, handler_class: type) -> Verdict:
        """The rules' verdict for this request, computed once (the authorizer asks again)."""
        cached = getattr(handler, "_securehpc_verdict", None)
        if cached is not None:
            return cached
        verdict = self.user_verdict(_current_user(handler))
        if verdict is None:
            verdict = self.rules.decide(self.facts(handler, handler_class))
        handler._securehpc_verdict = verdict  # type: ignore[attr-defined]
        return verdict

    def user_verdict(self, user: Any) -> Verdict | None:
        """Refuse an identity that is not the session's user as the hub vouches for it.

        Under the hub (``hub_identity``), the model the hub's ``/hub/api/user`` returned for the request's
        token or cookie must be a *user* (``kind``: a service's token is refused), named as the session's
        user (an admin with access to this server is refused: admins run the platform but get no data rights,
        ``projects.authz``), and tied to a hub token record (``token_id``, JupyterHub 5+). With
        ``require_login_session`` the token must also come from a hub login session (``session_id``: the
        browser's OAuth login; API tokens made on the hub's token page or API have none). Users of a server
        started outside the hub (tests, the benchmark) carry no hub model and are the session's user.
        Requests without a user (login, logout, the OAuth callback) are left to the rules.
        """
        if user is None:
            return None
        hub_user = getattr(user, "hub_user", None)
        if not self.hub_identity and not isinstance(hub_user, dict):
            return None
        problem = None
        if not isinstance(hub_user, dict):
            problem = "the hub did not vouch for this identity"
        elif hub_user.get("kind") != "user":
            problem = "only the session's hub user may use this server (not a service)"
        elif hub_user.get("name") != self.session.user:
            problem = f"this server belongs to {self.session.user}"
        elif not _nonempty(hub_user.get("token_id")):
            problem = "the hub did not name the token of this identity"
        elif self.require_login_session and not _nonempty(hub_user.get("session_id")):
            problem = "only tokens of a hub login session may use this server"
        if problem:
            return Verdict(False, 403, problem, Action.SESSION_START.value)
        return None

    async def check(self, handler: web.RequestHandler, handler_class: type) -> None:
        verdict = self.verdict(handler, handler_class)
        if verdict.allowed:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.record, handler, verdict)
        raise Refusal(verdict.status, verdict.reason, reason=_http_reason(verdict.status))

    # --- audit -------------------------------------------------------------------------------------------

    def record(self, handler: web.RequestHandler, verdict: Verdict) -> None:
        """One audit event per refusal. The URL is logged without its query string (tokens live there)."""
        user = _current_user(handler)
        name = getattr(user, "username", None)
        # The session speaks for its user only (the hub takes its events with that actor or ``anonymous``):
        # someone else's identity, an admin's say, is named in the reason, as what was presented.
        actor = (name if name == self.session.user or not self.hub_identity else None) or "anonymous"
        reason = verdict.reason
        if name and actor != name:
            reason = f"{reason} (identity presented: {name[:64]!r})"
        route = self.route_of(handler.request)
        method = (handler.request.method or "").upper()
        try:
            self.audit.append(
                actor=actor,
                action=verdict.action or "request.refused",
                obj=route,
                outcome="denied",
                project=self.session.project,
                reason=reason,
                details={
                    "method": method if method.isalpha() else "OTHER",
                    "role": self.session.role.value,
                    "status": verdict.status,
                },
            )
        except (AuditError, OSError, ValueError) as err:
            # The request stays refused; the admin must learn that the record is missing.
            self.log.error("securehpc: could not record a refusal in %s: %s", self.audit.where, err)
        self.log.warning(
            "securehpc: refused %s %s for %s (%s): %s", handler.request.method, route, actor, verdict.status, reason,
        )  # fmt: skip


def _finish_needs_arguments(handler_class: type[web.RequestHandler]) -> bool:
    """Whether ``handler_class.finish()`` cannot be called without arguments (as tornado's send_error does)."""
    try:
        parameters = list(inspect.signature(handler_class.finish).parameters.values())[1:]  # after self
    except (TypeError, ValueError):
        return False
    return any(
        p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in parameters
    )


def _current_user(handler: web.RequestHandler) -> Any:
    # jupyter handlers keep the user in _jupyter_current_user; plain tornado handlers have none.
    return getattr(handler, "_jupyter_current_user", None)


def _nonempty(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _http_reason(status: int) -> str:
    return {403: "Forbidden", 404: "Not Found"}.get(status, "Refused")
