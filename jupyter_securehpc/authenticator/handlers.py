"""The login redirect and the callback of oauthenticator, with an OIDC nonce and explained refusals."""

from __future__ import annotations

import json
import secrets
from typing import Any

from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import web
from tornado.httpclient import HTTPClientError


class LoginRefused(web.HTTPError):
    """A refused login: status 403, a page for the person (``jupyterhub_message``), a reason for the log."""

    def __init__(self, check: str, reason: str, message: str, *, username: str | None = None) -> None:
        # The reason goes to the hub's log through tornado's log_message; '%' would be taken as formatting.
        super().__init__(403, reason.replace("%", "%%"), reason="Sign-in refused")
        self.check = check
        self.detail = reason
        self.username = username
        # JupyterHub's error page shows this instead of tornado's generic text.
        self.jupyterhub_message = message


# --- handlers --------------------------------------------------------------------------------------------
class SecureHPCLoginHandler(OAuthLoginHandler):
    """oauthenticator's login redirect, plus an OIDC nonce kept in the signed state cookie."""

    _nonce: str | None = None

    def set_state_cookie(self, state_cookie_value: str) -> None:
        state = _deserialize_state(state_cookie_value)
        self._nonce = state["nonce"] = secrets.token_urlsafe(24)
        super().set_state_cookie(_serialize_state(state))

    def authorize_redirect(self, *args: Any, extra_params: dict | None = None, **kwargs: Any) -> None:
        # Called by OAuthLoginHandler.get after set_state_cookie, with the state and PKCE challenge.
        params = dict(extra_params or {})
        if self._nonce:
            params["nonce"] = self._nonce
        return super().authorize_redirect(*args, extra_params=params, **kwargs)


class SecureHPCCallbackHandler(OAuthCallbackHandler):
    """oauthenticator's callback; its 400s (bad state, provider error, no code) become explained refusals."""

    def _request_summary(self) -> str:
        # tornado logs errors with the full URI, which here holds the code and state: the path is enough.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def check_arguments(self) -> None:
        try:
            super().check_arguments()
        except LoginRefused:
            raise
        except web.HTTPError as error:
            # The provider's error_description comes from the URL: anyone can write it, so it is shortened and
            # stripped of control characters before it reaches the log and the audit event.
            message = _printable(error.log_message or "bad callback")
            if message.startswith("OAuth error"):
                check, text = (
                    "provider-error",
                    "The identity provider did not sign you in. Start again from the hub's login page; if it "
                    "keeps failing, contact the provider's help desk.",
                )
            elif "state" in message:
                check, text = (
                    "state",
                    "This sign-in could not be matched to your browser: the link is old, was opened in another "
                    "browser, or cookies are blocked. Start again from the hub's login page.",
                )
            else:
                check, text = "callback", "The sign-in answer was incomplete. Start again from the hub's login page."
            raise self.authenticator.refuse(check, message, text) from None
        # RFC 9207: a provider that names itself in the answer must be ours (mix-up attacks with several
        # providers); one that does not say is judged by the ID token's `iss` alone.
        issuer = self.get_argument("iss", None)
        if issuer is not None and issuer != self.authenticator.oidc_issuer:
            raise self.authenticator.refuse(
                "issuer",
                f"the authorization answer comes from {_printable(issuer)!r}, not {self.authenticator.oidc_issuer}",
                "The sign-in answer came from another identity provider. Start again from the hub's login page.",
            )


def _printable(text: str, limit: int = 200) -> str:
    """``text`` without control characters, at most ``limit`` characters (for text that came from a URL)."""
    cleaned = "".join(char if char.isprintable() else "?" for char in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _provider_error(error: HTTPClientError) -> str:
    """The OAuth ``error`` code of a token endpoint answer (never its whole body)."""
    try:
        body = json.loads(error.response.body) if error.response is not None else {}
        return _printable(str(body.get("error", ""))) or "no error code"
    except (ValueError, AttributeError):
        return "no error code"
