"""Login through the institution's OpenID Connect provider, with multi-factor authentication enforced.

``SecureHPCAuthenticator`` is oauthenticator's ``GenericOAuthenticator`` (configured like it) with:

- **A validated ID token.** oauthenticator 17 reads ``id_token`` without checking its signature
  (``userdata_from_id_token``). Here the ID token is the only source of who signed in and how: its signature
  is checked against the provider's JWKS (asymmetric algorithms only, never ``none`` or a shared secret), and
  its issuer, audience (``azp`` when there are several), expiry, issue time and nonce. The nonce is made per
  login and kept in oauthenticator's signed state cookie beside the PKCE verifier.
- **MFA enforcement** (on by default): the ID token's ``amr`` must contain one of ``required_amr`` and,
  if ``required_acr`` is set, its ``acr`` must be one of those.
- **Project roles from the provider** (optional, ``project_roles_claim``): groups ``securehpc:PROJECT:ROLE``
  become memberships through :class:`~jupyter_securehpc.projects.service.ProjectService` at every login.
- **Deny by default**: nobody may log in unless ``allowed_users``/``allowed_groups``/``admin_groups`` or
  ``allow_all`` say so (oauthenticator's own allow rules); hub admins can come from ``admin_groups``. Group
  rules need ``manage_groups = True``; the groups are the ID token's ``groups`` claim
  (``auth_state_groups_key``, default ``oauth_user.groups``).

A site's ``jupyterhub_config.py``::

    c.JupyterHub.authenticator_class = "securehpc"
    c.SecureHPCAuthenticator.oidc_issuer = "https://idp.example.org/realms/research"
    c.SecureHPCAuthenticator.client_id = "jupyterhub"  # the secret: $OAUTH_CLIENT_SECRET
    c.SecureHPCAuthenticator.oauth_callback_url = "https://hub.example.org/hub/oauth_callback"
    c.SecureHPCAuthenticator.scope = ["openid", "profile", "email", "groups"]
    c.SecureHPCAuthenticator.manage_groups = True
    c.SecureHPCAuthenticator.allowed_groups = {"hpc-users"}
    c.SecureHPCAuthenticator.admin_groups = {"hpc-admins"}
    c.SecureHPCAuthenticator.project_roles_claim = "groups"  # securehpc:PROJECT:ROLE
    c.SecureHPCAuthenticator.support_contact = "the service desk (servicedesk@example.org)"

Every refusal is a 403 page that tells the person what to do, and an audit event (``login`` ``denied``). A
refusal happens before JupyterHub creates the user and before any membership changes: nothing about the
person changes when a login is refused.

Bad project groups refuse the whole login, on purpose: a group naming a project or role that does not exist
is a directory mistake (a typo, a deleted project), and applying the other groups would leave the person with
a partial set of roles that neither the directory nor the data owners asked for. The page names the groups, so
the directory can be fixed; nothing changes until it is.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
import requests
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    _deserialize_state,
    _serialize_state,
)
from sqlalchemy import select
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Float, List, Set, Unicode, default, validate

from .audit import AuditLog
from .config import SecureHPC
from .projects.model import Member, Project
from .projects.names import InvalidName, name_key, validate_name
from .projects.roles import Role

if TYPE_CHECKING:
    from .projects.service import ProjectService

# Recorded as the acting admin of memberships that the provider's groups manage; a membership whose
# ``added_by`` is this name was made by the sync, and only such memberships are removed by it.
SYNC_ACTOR = "oidc-group-sync"
# Asymmetric signatures only: an HS* token is signed with the client secret, which the hub itself holds.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# How often an unknown key id may trigger a new JWKS download (the provider rotated its keys).
JWKS_REFRESH_INTERVAL = 30.0

# The nonce this login's state cookie holds, for the token check of the same request (None on refresh).
_expected_nonce: contextvars.ContextVar[str | None] = contextvars.ContextVar("securehpc_oidc_nonce", default=None)


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


# --- pure logic: MFA and project groups (unit-tested as tables) -----------------------------------------
def mfa_problem(claims: Mapping[str, Any], required_amr: Iterable[str], required_acr: Iterable[str]) -> str | None:
    """Why these ID token claims do not show an accepted second factor, or None when they do.

    Each configured check must pass: ``amr`` must share a value with ``required_amr`` (when that is not empty),
    and ``acr`` must be one of ``required_acr`` (when that is not empty).
    """
    required_amr, required_acr = set(required_amr), list(required_acr)
    if required_amr:
        amr = claims.get("amr")
        if amr is None:
            return "the ID token has no amr claim (the provider did not say how the person signed in)"
        if not isinstance(amr, list) or not all(isinstance(value, str) for value in amr):
            return f"the ID token's amr claim is not a list of strings: {amr!r}"
        if not required_amr.intersection(amr):
            return f"amr {sorted(amr)} contains none of the accepted methods {sorted(required_amr)}"
    if required_acr:
        acr = claims.get("acr")
        if acr is None:
            return "the ID token has no acr claim"
        if acr not in required_acr:
            return f"acr {acr!r} is not one of the accepted levels {required_acr}"
    return None


class BadProjectGroups(ValueError):
    """Group strings that cannot become memberships; the message lists each and why."""


def parse_project_groups(groups: Iterable[str], prefix: str) -> dict[str, Role]:
    """``{project: role}`` from group strings ``<prefix>PROJECT:ROLE``; other groups are ignored.

    Refuses (all problems at once) a malformed string, an invalid project name, an unknown role, and one
    project named with two different roles: guessing which one the directory meant could grant too much.
    """
    wanted: dict[str, Role] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for group in sorted(set(groups)):
        if not group.startswith(prefix):
            continue
        project, sep, role_name = group[len(prefix) :].rpartition(":")
        if not sep or not project or not role_name:
            problems.append(f"{group!r} is not {prefix}PROJECT:ROLE")
            continue
        try:
            validate_name("project", project)
            role = Role.parse(role_name)
        except (InvalidName, ValueError) as error:
            problems.append(f"{group!r}: {error}")
            continue
        if project in wanted and wanted[project] is not role:
            problems.append(f"{sources[project]!r} and {group!r} give project {project!r} two different roles")
            continue
        wanted[project], sources[project] = role, group
    if problems:
        raise BadProjectGroups("; ".join(problems))
    return wanted


@dataclass
class MembershipPlan:
    """What one login changes in the projects database for one user."""

    username: str
    add: dict[str, Role] = field(default_factory=dict)
    change: dict[str, tuple[str, Role]] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.add or self.change or self.remove)


def plan_memberships(
    current: Mapping[str, tuple[str, str]], wanted: Mapping[str, Role], username: str
) -> MembershipPlan:
    """Compare ``current`` ``{project: (role, added_by)}`` with ``wanted``; only sync-made rows are removed.

    A membership a person added by hand (``securehpc member add``) stays when the groups do not name its
    project: the directory manages what it created, people manage the rest.
    """
    plan = MembershipPlan(username)
    for project, role in sorted(wanted.items()):
        if project not in current:
            plan.add[project] = role
        elif current[project][0] != role.value:
            plan.change[project] = (current[project][0], role)
    plan.remove = sorted(p for p, (_, added_by) in current.items() if p not in wanted and added_by == SYNC_ACTOR)
    return plan


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


# --- the authenticator -----------------------------------------------------------------------------------
class SecureHPCAuthenticator(GenericOAuthenticator):
    """OpenID Connect login with a validated ID token, enforced MFA and optional project roles from groups."""

    login_handler = SecureHPCLoginHandler
    callback_handler = SecureHPCCallbackHandler

    oidc_issuer = Unicode(
        config=True,
        help="""The provider's issuer URL, exactly as in its ID tokens' ``iss`` claim, e.g.
        ``https://idp.example.org/realms/research``. Required. When ``authorize_url``, ``token_url`` or
        ``jwks_url`` are not set they are read from ``<issuer>/.well-known/openid-configuration`` at start.""",
    )

    jwks_url = Unicode(
        config=True,
        help="""URL of the provider's signing keys (JWKS). Default: ``jwks_uri`` of the discovery document.
        Keys are cached and fetched again when a token names an unknown key id.""",
    )

    id_token_algorithms = List(
        Unicode(),
        list(ASYMMETRIC_ALGORITHMS),
        config=True,
        help="""Signature algorithms accepted on ID tokens. Asymmetric only: ``none`` and ``HS*`` are refused
        (an HS* token is signed with the client secret, which the hub itself holds).""",
    )

    id_token_leeway = Float(
        30.0,
        config=True,
        help="Seconds of clock difference tolerated when checking the ID token's ``exp`` and ``iat``.",
    )

    enforce_mfa = Bool(
        True,
        config=True,
        help="""Refuse logins whose ID token does not show multi-factor authentication (see ``required_amr``
        and ``required_acr``). Turn off only for a hub without sensitive data.""",
    )

    required_amr = Set(
        Unicode(),
        {"mfa", "otp", "hwk", "swk"},
        config=True,
        help="""Authentication method references (RFC 8176) that count as a second factor: a login is accepted
        when the ID token's ``amr`` contains any one of them. Empty: ``amr`` is not checked (then set
        ``required_acr``). Keycloak, Entra ID and others need a mapper or setting to send ``amr``.""",
    )

    required_acr = List(
        Unicode(),
        config=True,
        help="""Accepted authentication context class references (``acr``), e.g.
        ``["urn:example:loa:mfa"]``. Empty (the default): ``acr`` is not checked. When both this and
        ``required_amr`` are set, both must hold.""",
    )

    support_contact = Unicode(
        "your hub administrator",
        config=True,
        help="""Who people should contact when their login is refused, shown on the refusal page, e.g.
        ``"the service desk (servicedesk@example.org)"``.""",
    )

    project_roles_claim = Unicode(
        "",
        config=True,
        help="""ID token claim (a list of strings, e.g. ``groups``) whose entries ``<project_group_prefix>
        PROJECT:ROLE`` are synced into project memberships at every login. Empty (the default): off. When set,
        a login whose claim is missing, names a project that does not exist, a role that does not exist, or one
        project with two roles is refused as a whole, and nothing changes. Memberships the sync created are
        removed when their group disappears; memberships added by hand are only changed, never removed.""",
    )

    project_group_prefix = Unicode(
        "securehpc:",
        config=True,
        help="Prefix of the groups in ``project_roles_claim`` that name project roles; other groups are ignored.",
    )

    @default("login_service")
    def _login_service_default(self) -> str:
        return "your institution (with multi-factor authentication)"

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email"]

    @validate("id_token_algorithms")
    def _validate_algorithms(self, proposal: dict) -> list[str]:
        bad = [alg for alg in proposal["value"] if alg not in ASYMMETRIC_ALGORITHMS]
        if bad or not proposal["value"]:
            raise ValueError(
                f"SecureHPCAuthenticator.id_token_algorithms may only list asymmetric algorithms, got {bad or '[]'}: "
                f"use some of {list(ASYMMETRIC_ALGORITHMS)}"
            )
        return proposal["value"]

    @validate("project_group_prefix")
    def _validate_prefix(self, proposal: dict) -> str:
        if not proposal["value"]:
            raise ValueError(
                'SecureHPCAuthenticator.project_group_prefix must not be empty: use e.g. "securehpc:", so that '
                "ordinary directory groups are never read as project roles"
            )
        return proposal["value"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.oidc_issuer:
            raise ValueError(
                "SecureHPCAuthenticator.oidc_issuer is empty: set it to the provider's issuer URL "
                "(the `iss` of its ID tokens), e.g. https://idp.example.org/realms/research"
            )
        if self.enforce_mfa and not self.required_amr and not self.required_acr:
            raise ValueError(
                "SecureHPCAuthenticator.enforce_mfa is on but required_amr and required_acr are both empty: set one "
                "of them (e.g. required_amr = {'mfa', 'otp', 'hwk'}), or turn enforce_mfa off"
            )
        if not (self.authorize_url and self.token_url and self.jwks_url):
            self._discover()
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_fetched = 0.0
        self._jwks_lock = asyncio.Lock()
        self._settings = SecureHPC(config=self.config)
        self._audit = AuditLog(Path(self._settings.audit_log))
        self._projects: ProjectService | None = None
        self._projects_lock = threading.Lock()

    def _discover(self) -> None:
        """Fill unset endpoint URLs from the provider's discovery document (once, at hub start)."""
        url = self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=10, verify=self.validate_server_cert)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as error:
            raise ValueError(
                f"could not read the OIDC discovery document {url}: {error}. Check SecureHPCAuthenticator.oidc_issuer,"
                " or set authorize_url, token_url and jwks_url"
            ) from None
        if document.get("issuer") != self.oidc_issuer:
            raise ValueError(
                f"the provider at {url} calls itself {document.get('issuer')!r}, not {self.oidc_issuer!r}: set "
                "SecureHPCAuthenticator.oidc_issuer to exactly the issuer its tokens carry"
            )
        self.authorize_url = self.authorize_url or document["authorization_endpoint"]
        self.token_url = self.token_url or document["token_endpoint"]
        self.jwks_url = self.jwks_url or document["jwks_uri"]

    # --- refusals and the audit log ------------------------------------------------------------------
    def refuse(self, check: str, reason: str, message: str, *, username: str | None = None) -> LoginRefused:
        """Record a refused login and return the exception to raise (the page says ``message``)."""
        text = f"{message} If you need help, contact {self.support_contact}."
        self.log.warning("Login refused (%s) for %s: %s", check, username or "an unknown user", reason)
        self._audit.append(
            actor=username or "anonymous",
            action="login",
            obj=f"user:{username}" if username else "login",
            outcome="denied",
            reason=reason,
            check=check,
        )
        return LoginRefused(check, reason, text, username=username)

    # --- token exchange and ID token ----------------------------------------------------------------
    async def authenticate(self, handler: web.RequestHandler, data: dict | None = None, **kwargs: Any) -> dict:
        state = handler.get_state_cookie() if hasattr(handler, "get_state_cookie") else ""
        nonce = _deserialize_state(state).get("nonce") if state else None
        if not nonce:
            raise self.refuse(
                "state",
                "the state cookie carries no nonce",
                "This sign-in could not be matched to your browser. Start again from the hub's login page.",
            )
        token = _expected_nonce.set(nonce)
        try:
            return await super().authenticate(handler, data, **kwargs)
        finally:
            _expected_nonce.reset(token)

    async def get_token_info(self, handler: web.RequestHandler, params: dict) -> dict:
        """Exchange the code; a refusal by the provider (used, expired, PKCE mismatch) is explained, not a 500."""
        try:
            token_info = await self.httpfetch(
                self.token_url,
                label="exchanging the sign-in code",
                method="POST",
                headers=self.build_token_info_request_headers(),
                body=urlencode({k: v for k, v in params.items() if v is not None}).encode(),
                validate_cert=self.validate_server_cert,
            )
        except HTTPClientError as error:
            answer = _provider_error(error)
            raise self.refuse(
                "code",
                f"the token endpoint refused the code ({error.code} {answer})",
                "This sign-in link was already used or has expired. Start again from the hub's login page.",
            ) from None
        if not isinstance(token_info, dict) or not token_info.get("access_token"):
            # Never echo the response: it may hold tokens.
            raise self.refuse(
                "token-response",
                "the token endpoint's answer has no access_token",
                "The identity provider gave an unusable answer. Start again from the hub's login page.",
            )
        return token_info

    async def token_to_user(self, token_info: dict) -> dict:
        """The validated ID token's claims: the only statement of who signed in and how (no userinfo call)."""
        id_token = token_info.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise self.refuse(
                "id-token",
                "the token endpoint returned no ID token (is the `openid` scope requested?)",
                "The identity provider did not confirm who you are. Start again from the hub's login page.",
            )
        return await self.validate_id_token(id_token, nonce=_expected_nonce.get())

    async def validate_id_token(self, id_token: str, *, nonce: str | None) -> dict:
        """Check signature (JWKS), issuer, audience, expiry, issue time and nonce; return the claims."""
        again = "The identity provider's answer could not be verified. Start again from the hub's login page."
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as error:
            raise self.refuse("id-token", f"the ID token is malformed: {error}", again) from None
        alg = header.get("alg")
        if alg not in self.id_token_algorithms:
            what = "unsigned" if str(alg).lower() == "none" else f"signed with {alg!r}"
            raise self.refuse(
                "id-token-signature",
                f"the ID token is {what}; accepted: {', '.join(self.id_token_algorithms)}",
                again,
            )
        key = await self._signing_key(header.get("kid"), alg)
        if key is None:
            raise self.refuse(
                "id-token-signature",
                f"the ID token names signing key {header.get('kid')!r}, which the provider's JWKS does not have",
                again,
            )
        try:
            claims = jwt.decode(
                id_token,
                key=key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=self.oidc_issuer,
                leeway=self.id_token_leeway,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise self.refuse("id-token-expired", "the ID token has expired", again) from None
        except jwt.InvalidAudienceError:
            reason = f"the ID token is not for client {self.client_id!r}"
            raise self.refuse("id-token-audience", reason, again) from None
        except jwt.InvalidIssuerError:
            raise self.refuse("id-token-issuer", f"the ID token was not issued by {self.oidc_issuer}", again) from None
        except jwt.MissingRequiredClaimError as error:
            raise self.refuse("id-token-claims", f"the ID token lacks the {error.claim!r} claim", again) from None
        except jwt.InvalidSignatureError:
            raise self.refuse("id-token-signature", "the ID token's signature does not verify", again) from None
        except jwt.PyJWTError as error:
            raise self.refuse("id-token", f"the ID token is not valid: {error}", again) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise self.refuse("id-token-audience", "the ID token has several audiences and azp is not the hub", again)
        if nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise self.refuse("id-token-nonce", "the ID token's nonce does not match this browser's sign-in", again)
        return claims

    async def _signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        key = self._find_key(kid, alg)
        if key is not None:
            return key
        async with self._jwks_lock:
            # A miss may mean the provider rotated its keys; fetch again, but not at every forged token.
            if not self._jwks or time.monotonic() - self._jwks_fetched > JWKS_REFRESH_INTERVAL:
                await self._fetch_jwks()
        return self._find_key(kid, alg)

    def _find_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            return self._jwks.get(kid)
        # Without a key id only an unambiguous key set will do.
        usable = [k for k in self._jwks.values() if k.algorithm_name == alg]
        return usable[0] if len(usable) == 1 else None

    async def _fetch_jwks(self) -> None:
        try:
            document = await self.httpfetch(self.jwks_url, label="fetching the provider's signing keys", method="GET")
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (HTTPClientError, OSError, ValueError, jwt.PyJWTError) as error:
            raise self.refuse(
                "jwks",
                f"could not read the provider's signing keys from {self.jwks_url}: {error}",
                "The hub cannot reach the identity provider right now. Try again in a few minutes.",
            ) from None
        # Only signing keys: an encryption key must never verify a signature.
        self._jwks = {key.key_id or f"#{i}": key for i, key in enumerate(keys) if key.public_key_use in (None, "sig")}
        self._jwks_fetched = time.monotonic()

    def user_info_to_username(self, user_info: dict) -> str:
        claim = self.username_claim
        username = claim(user_info) if callable(claim) else user_info.get(claim)
        if not isinstance(username, str) or not username:
            raise self.refuse(
                "id-token-claims",
                f"the ID token has no {claim!r} claim for the user name (sub {user_info.get('sub')!r})",
                "The identity provider did not send your user name. Ask it to release it to the hub.",
            )
        return username

    # --- MFA and project groups, before anything about the user changes -----------------------------
    async def update_auth_model(self, auth_model: dict) -> dict:
        username = auth_model["name"]
        claims = auth_model["auth_state"][self.user_auth_state_key]
        if self.enforce_mfa:
            problem = mfa_problem(claims, self.required_amr, self.required_acr)
            if problem is not None:
                raise self.refuse(
                    "mfa",
                    problem,
                    "Your sign-in did not use multi-factor authentication. Sign in again with your second factor "
                    "(one-time code or security key); if you have not set one up, do that with your identity "
                    "provider first.",
                    username=username,
                )
        if self.project_roles_claim:
            auth_model["securehpc_memberships"] = await asyncio.to_thread(self._plan_for, username, claims)
        return auth_model

    def _plan_for(self, username: str, claims: Mapping[str, Any]) -> MembershipPlan:
        groups = claims.get(self.project_roles_claim)
        project_help = "Ask the directory administrators to correct your groups."
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            what = "is missing" if groups is None else "is not a list of strings"
            raise self.refuse(
                "project-groups",
                f"the ID token's {self.project_roles_claim!r} claim {what}",
                "The identity provider did not send your project groups, so your project roles cannot be checked. "
                + project_help,
                username=username,
            )
        try:
            wanted = parse_project_groups(groups, self.project_group_prefix)
        except BadProjectGroups as error:
            text = f"Your project groups are not valid: {error}. {project_help}"
            raise self.refuse("project-groups", str(error), text, username=username) from None
        sessions = self.project_service().sessions
        with sessions() as session:
            existing = {
                p.name for p in session.scalars(select(Project).where(Project.name_key.in_(map(name_key, wanted))))
            }
            current = {
                name: (role, added_by)
                for name, role, added_by in session.execute(
                    select(Project.name, Member.role, Member.added_by)
                    .join(Member, Member.project_id == Project.id)
                    .where(Member.username == username)
                )
            }
        unknown = sorted(set(wanted) - existing)
        if unknown:
            names = ", ".join(f"{self.project_group_prefix}{p}:{wanted[p].value}" for p in unknown)
            raise self.refuse(
                "project-groups",
                f"groups name projects that do not exist: {names}",
                f"Your groups name projects that do not exist on this hub ({names}). {project_help}",
                username=username,
            )
        return plan_memberships(current, wanted, username)

    def check_blocked_users(self, username: str, authentication: dict | None = None) -> bool:
        # JupyterHub would answer a blocked user with its generic 403 and no audit event.
        if super().check_blocked_users(username, authentication):
            return True
        raise self.refuse(
            "blocked", "in blocked_users", f"Your account {username} is blocked on this hub.", username=username
        )

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        if await super().check_allowed(username, auth_model):
            return True
        raise self.refuse(
            "not-allowed",
            "not in allowed_users, allowed_groups or admin_groups",
            f"Your account {username} is not allowed to use this hub. Ask for access to be granted.",
            username=username,
        )

    async def run_post_auth_hook(self, handler: web.RequestHandler, authentication: dict) -> dict:
        plan: MembershipPlan | None = authentication.pop("securehpc_memberships", None)
        authentication = await super().run_post_auth_hook(handler, authentication)
        if plan is not None and not plan.is_empty():
            try:
                await asyncio.to_thread(self._apply, plan)
            except Exception as error:
                # The database or disk failed half-way; the person can try again, the admin sees why.
                self.log.exception("Could not sync the project roles of %s", authentication["name"])
                raise self.refuse(
                    "project-sync",
                    f"syncing project roles failed: {type(error).__name__}: {error}".splitlines()[0][:300],
                    "Your project roles could not be updated right now. Try again in a few minutes.",
                    username=authentication["name"],
                ) from None
        claims = (authentication.get("auth_state") or {}).get(self.user_auth_state_key) or {}
        self._audit.append(
            actor=authentication["name"],
            action="login",
            obj=f"user:{authentication['name']}",
            outcome="allowed",
            reason="validated ID token" + (", multi-factor" if self.enforce_mfa else ", MFA not enforced"),
            amr=claims.get("amr"),
            admin=bool(authentication.get("admin")),
        )
        return authentication

    # --- applying memberships -----------------------------------------------------------------------
    def project_service(self) -> ProjectService:
        """The projects service acting as the group sync (a hub admin in the audit log)."""
        with self._projects_lock:  # logins run it in worker threads
            return self._project_service_locked()

    def _project_service_locked(self) -> ProjectService:
        if self._projects is None:
            # Imported here: a hub that does not sync project roles never needs the key store's client.
            from .keys import KeyStore, KeyStoreConfig
            from .projects.db import open_database
            from .projects.service import Actor, ProjectService

            self._projects = ProjectService(
                sessions=open_database(self._settings.db_url),
                keys=KeyStore(KeyStoreConfig(config=self.config)),
                audit=self._audit,
                store_root=Path(self._settings.store_root),
                actor=Actor(admin=SYNC_ACTOR),
            )
        return self._projects

    def _apply(self, plan: MembershipPlan) -> None:
        from .projects.service import BadInput

        service = self.project_service()
        for project, role in plan.add.items():
            service.add_member(project, plan.username, role.value)
        for project, (_, role) in plan.change.items():
            try:
                service.add_member(project, plan.username, role.value)
            except BadInput as error:
                # The last data owner stays one (the service refused and audited it); the login goes on.
                self.log.warning("Project role of %s in %s not changed: %s", plan.username, project, error)
        for project in plan.remove:
            try:
                service.remove_member(project, plan.username)
            except BadInput as error:
                self.log.warning("%s not removed from %s: %s", plan.username, project, error)
        self.log.info(
            "Synced project roles of %s from the provider: added %s, changed %s, removed %s",
            plan.username, sorted(plan.add), sorted(plan.change), plan.remove,
        )  # fmt: skip

    async def refresh_user(self, user: Any, handler: web.RequestHandler | None = None, **kwargs: Any) -> Any:
        # With auth_state on, oauthenticator re-reads the stored ID token: when it no longer passes every
        # check above (it expired), the person signs in again instead of seeing an error.
        try:
            return await super().refresh_user(user, handler, **kwargs)
        except LoginRefused:
            return False


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
