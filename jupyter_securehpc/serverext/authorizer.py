"""The authorizer: JupyterHub's scope check, then the session's rules on the handler and its arguments.

jupyter-server asks ``is_authorized(handler, user, action, resource)`` from ``@authorized`` methods, the
kernel, terminal and event websockets, and ``/api/me?permissions=`` (which JupyterLab reads to decide, for
instance, whether to offer a terminal). The resource name alone is too coarse (``/files``, ``/view`` and
``/api/contents`` are all "contents"), so the request-level verdict of the guard is consulted first, then
the resource: terminals, writing (observers only look) and kernels.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.api.handlers import IdentityHandler
from jupyterhub.singleuser.extension import JupyterHubAuthorizer, JupyterHubIdentityProvider
from tornado import web

from jupyter_securehpc.projects.authz import Action

from .guard import SETTINGS_KEY, Guard
from .rules import Verdict


class SecureHPCAuthorizer(JupyterHubAuthorizer):
    """Deny unless the hub's scopes (under the hub), the guard's verdict and the resource rule all allow."""

    def is_authorized(self, handler: web.RequestHandler, user: Any, action: str, resource: str) -> bool:
        guard = handler.settings.get(SETTINGS_KEY)
        if not isinstance(guard, Guard):
            # The extension did not load: refuse everything rather than serve files unguarded.
            self.log.error("securehpc: no request guard installed; refusing %s on %s", action, resource)
            return False
        # Under the hub, JupyterHub's own access:servers check stays (the hub's authorizer does it); a plain
        # jupyter-server (tests, benchmark) has token or password login instead and no hub to ask.
        if isinstance(self.identity_provider, JupyterHubIdentityProvider) and not super().is_authorized(
            handler, user, action, resource
        ):
            return False
        permission_query = isinstance(handler, IdentityHandler)
        if not permission_query:
            verdict = guard.verdict(handler, _original_class(handler))
            if not verdict.allowed:
                return self._refused(guard, handler, verdict)
        verdict = self.resource_verdict(guard, action, resource)
        if verdict.allowed:
            return True
        # /api/me asks "could I?" for the UI; answering no is not a refusal of anything.
        return False if permission_query else self._refused(guard, handler, verdict)

    def resource_verdict(self, guard: Guard, action: str, resource: str) -> Verdict:
        rules = guard.rules
        if resource == "terminals":
            decision = rules.terminals
            return Verdict(bool(decision), 403, decision.reason, Action.TERMINAL_OPEN.value)
        if resource == "events" and action == "write":
            # Following the server's events is reading (file names the session shows anyway); emitting is not.
            return Verdict(False, 403, "browsers do not write into the server's events", "route.refused")
        # Writing files, and running code (which can write anywhere the workspace can), need write rights.
        if (resource == "contents" and action == "write") or (
            resource in ("kernels", "sessions") and action in ("write", "execute")
        ):
            decision = rules.write
            return Verdict(bool(decision), 403, decision.reason, Action.WORKSPACE_WRITE.value)
        # Everything else was decided per request by the guard (file bytes, paths) or reveals no file.
        return Verdict(True)

    def _refused(self, guard: Guard, handler: web.RequestHandler, verdict: Verdict) -> bool:
        # The guard already recorded refusals it raised; this records the ones only the authorizer saw.
        if not getattr(handler, "_securehpc_recorded", False):
            handler._securehpc_recorded = True  # type: ignore[attr-defined]
            guard.record(handler, verdict)
        return False


def _original_class(handler: web.RequestHandler) -> type:
    """The handler class the route names (the guard serves a subclass of it)."""
    cls = type(handler)
    return cls.__mro__[1] if getattr(cls, "_securehpc_guarded", False) and "_securehpc_guarded" in vars(cls) else cls
