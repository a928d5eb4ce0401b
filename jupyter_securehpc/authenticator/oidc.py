"""``SecureHPCAuthenticator``: oauthenticator's GenericOAuthenticator with a validated ID token, enforced MFA,
project roles from groups, and logins that the provider confirms again while they last (see the package's
docstring for the whole picture)."""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
import requests
from jupyterhub.crypto import CryptKeeper
from jupyterhub.utils import new_token
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import _deserialize_state
from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest
from traitlets import Bool, Float, Integer, List, Set, Unicode, default, validate

from ..audit import AuditLog
from ..config import SecureHPC
from ..projects.sync import (
    SYNC_ACTOR,
    BadProjectGroups,
    GroupSync,
    MembershipPlan,
    UnknownProjects,
    parse_project_groups,
)
from .handlers import LoginRefused, SecureHPCCallbackHandler, SecureHPCLoginHandler, _printable, _provider_error
from .policy import mfa_problem
from .refresh import (
    LOGGED_OUT,
    REFRESH_TOKEN_FIELD,
    VERIFIED_AT,
    RefreshGate,
    TokenAnswer,
    outage_verdict,
    read_token_answer,
)

if TYPE_CHECKING:
    from ..projects.service import ProjectService

# Asymmetric signatures only: an HS* token is signed with the client secret, which the hub itself holds.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# How often an unknown key id may trigger a new JWKS download (the provider rotated its keys).
JWKS_REFRESH_INTERVAL = 30.0
# Seconds the token endpoint has to answer a refresh before the provider counts as unreachable.
REFRESH_TIMEOUT = 20.0

# The nonce this login's state cookie holds, for the token check of the same request (None on refresh).
_expected_nonce: contextvars.ContextVar[str | None] = contextvars.ContextVar("securehpc_oidc_nonce", default=None)
# The user whose login is being renewed: refusals are then the end of that login ("login.refresh" events).
_refreshing: contextvars.ContextVar[str | None] = contextvars.ContextVar("securehpc_refreshing", default=None)

SIGN_IN_AGAIN = "Your sign-in has ended. Sign in again from the hub's login page."


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

    refresh_with_provider = Bool(
        config=True,
        help="""Confirm every login with the provider again, with its refresh token (token endpoint,
        ``grant_type=refresh_token``), every ``auth_refresh_age`` seconds and before every server start
        (``refresh_pre_spawn``), and log the person out when the provider says no: the refresh token is refused
        or revoked (account disabled or deleted, sessions revoked), the renewed ID token shows no accepted second
        factor, or the groups no longer allow the person. Each renewal runs the login's checks again and syncs
        hub groups and project roles. Needs ``Authenticator.enable_auth_state = True`` and the environment
        variable ``JUPYTERHUB_CRYPT_KEY`` (the refresh token is kept encrypted in the hub database): the hub
        refuses to start without them. Default: on when ``enable_auth_state`` is on. Off: a login is checked
        once, and a person removed at the provider keeps the hub until the cookie expires.""",
    )

    auth_refresh_age = Integer(
        900,
        config=True,
        help="""Seconds after which a login is confirmed with the provider again, at the person's next hub request
        (browser or API token). Each confirmation is one request to the provider's token endpoint per active
        person. Must be more than 0 while ``refresh_with_provider`` is on.""",
    )

    auth_refresh_strict = Bool(
        True,
        config=True,
        help="""When a login cannot be renewed, refuse the person's API-token requests too (JupyterHub's own
        default, False, keeps serving them). On: a person the provider removed loses API access at the next
        check, also through the tokens their running servers hold.""",
    )

    refresh_outage_grace = Integer(
        3600,
        config=True,
        help="""Seconds a login is kept, counted from the provider's last confirmation, while the provider does not
        answer (network error, timeout, HTTP 5xx, 408 or 429). Every kept login is an audit event. Then the person
        is logged out and signs in again once the provider is back. 0: log out at the first unanswered check.""",
    )

    @default("refresh_with_provider")
    def _refresh_with_provider_default(self) -> bool:
        return bool(self.enable_auth_state)

    @validate("refresh_outage_grace")
    def _validate_grace(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise ValueError(
                f"SecureHPCAuthenticator.refresh_outage_grace must be 0 or more seconds, got {proposal['value']}: "
                "use e.g. 3600 (keep logins an hour while the provider is down) or 0 (log out at once)"
            )
        return proposal["value"]

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
        self._refresh_gate = RefreshGate()
        if self.refresh_with_provider:
            self._check_refresh_settings()
        else:
            self.log.warning(
                "SecureHPCAuthenticator.refresh_with_provider is off: logins are checked once, and a person removed "
                "at the identity provider keeps the hub until the cookie expires. Turn it on with "
                "c.Authenticator.enable_auth_state = True and JUPYTERHUB_CRYPT_KEY in the hub's environment."
            )

    def _check_refresh_settings(self) -> None:
        """Refuse to start when logins cannot be renewed as configured (each message names the fix)."""
        if not self.enable_auth_state:
            raise ValueError(
                "SecureHPCAuthenticator.refresh_with_provider is on but Authenticator.enable_auth_state is off, so "
                "there is no refresh token to renew logins with: set c.Authenticator.enable_auth_state = True and "
                "JUPYTERHUB_CRYPT_KEY in the hub's environment (`openssl rand -hex 32`, never in the config file), "
                "or set refresh_with_provider = False to check logins only once"
            )
        try:
            CryptKeeper(config=self.config).check_available()
        except Exception as error:  # jupyterhub.crypto raises its own classes and ValueError for bad keys
            raise ValueError(
                f"SecureHPCAuthenticator.refresh_with_provider needs encrypted auth state, which is not available "
                f"({type(error).__name__}: {error}): set JUPYTERHUB_CRYPT_KEY in the hub's environment to one or "
                "more 32-byte keys, hex or base64, separated by ';' (make one with `openssl rand -hex 32`; keep it in "
                "a 0600 environment file, never in the config file)"
            ) from None
        if self.auth_refresh_age <= 0:
            raise ValueError(
                f"SecureHPCAuthenticator.auth_refresh_age is {self.auth_refresh_age}, which turns the periodic check "
                "with the provider off while refresh_with_provider is on: set it to a number of seconds, e.g. 900"
            )
        if not self.refresh_pre_spawn:
            self.log.warning(
                "Authenticator.refresh_pre_spawn is off: servers start on a login the provider last confirmed up to "
                "auth_refresh_age (%ds) ago. Set c.Authenticator.refresh_pre_spawn = True to confirm before each "
                "start.",
                self.auth_refresh_age,
            )

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
        """Record a refused login and return the exception to raise (the page says ``message``).

        While a login is renewed (``refresh_user``), the refusal ends that login: the event is ``login.refresh``.
        """
        refreshing = _refreshing.get()
        username = username or refreshing
        text = f"{message} If you need help, contact {self.support_contact}."
        if refreshing:
            self.log.warning("Login of %s ended (%s): %s", username, check, reason)
        else:
            self.log.warning("Login refused (%s) for %s: %s", check, username or "an unknown user", reason)
        self._audit.append(
            actor=username or "anonymous",
            action="login.refresh" if refreshing else "login",
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
        if self.refresh_with_provider and not token_info.get("refresh_token"):
            raise self.refuse(
                "refresh-token",
                f"the provider issued no refresh token, so this login could not be confirmed again later: allow the "
                f"refresh_token grant for client {self.client_id!r} at the provider (some providers also need "
                "`offline_access` in SecureHPCAuthenticator.scope)",
                "The identity provider does not let the hub check your sign-in later, so the hub cannot accept it. "
                "Tell the hub's administrators.",
            )
        return token_info

    def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        """What a renewal needs, nothing more: the refresh token, the ID token's claims, the time of confirmation.

        The access and ID tokens are dropped: the hub calls no API with them, and a hub admin with the
        ``admin:auth_state`` scope can read auth state.
        """
        scope = token_info.get("scope", "")
        return {
            REFRESH_TOKEN_FIELD: token_info.get("refresh_token"),
            "scope": scope.split() if isinstance(scope, str) else scope,
            self.user_auth_state_key: user_info,
            VERIFIED_AT: time.time(),
        }

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
        try:
            return self.group_sync().plan(username, wanted)
        except UnknownProjects as error:
            names = ", ".join(f"{self.project_group_prefix}{p}:{r.value}" for p, r in sorted(error.projects.items()))
            raise self.refuse(
                "project-groups",
                f"groups name projects that do not exist: {names}",
                f"Your groups name projects that do not exist on this hub ({names}). {project_help}",
                username=username,
            ) from None

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
        await self._apply_plan(plan, authentication["name"])
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
    async def _apply_plan(self, plan: MembershipPlan | None, username: str) -> None:
        if plan is None or plan.is_empty():
            return
        try:
            await asyncio.to_thread(self.group_sync().apply, plan)
        except Exception as error:
            # The database or disk failed half-way; the person can try again, the admin sees why.
            self.log.exception("Could not sync the project roles of %s", username)
            raise self.refuse(
                "project-sync",
                f"syncing project roles failed: {type(error).__name__}: {error}".splitlines()[0][:300],
                "Your project roles could not be updated right now. Try again in a few minutes.",
                username=username,
            ) from None

    def group_sync(self) -> GroupSync:
        """The project-role sync (``projects/sync.py``), through the projects service."""
        return GroupSync(self.project_service(), self.log)

    def project_service(self) -> ProjectService:
        """The projects service acting as the group sync (a hub admin in the audit log)."""
        with self._projects_lock:  # logins run it in worker threads
            return self._project_service_locked()

    def _project_service_locked(self) -> ProjectService:
        if self._projects is None:
            # Imported here: a hub that does not sync project roles never needs the key store's client.
            from ..keys import KeyStore, KeyStoreConfig
            from ..principals import ProjectAccounts
            from ..projects.db import open_database
            from ..projects.service import Actor, ProjectService

            self._projects = ProjectService(
                sessions=open_database(self._settings.db_url),
                keys=KeyStore(KeyStoreConfig(config=self.config)),
                audit=self._audit,
                store_root=Path(self._settings.store_root),
                actor=Actor(admin=SYNC_ACTOR),
                # A membership the provider's groups make gets its principal at once, as with `member add`.
                accounts=ProjectAccounts(config=self.config).make_provisioner(),
            )
        return self._projects

    # --- renewing a login with the provider --------------------------------------------------------
    async def refresh_user(self, user: Any, handler: web.RequestHandler | None = None, **kwargs: Any) -> Any:
        """Confirm the login with the provider again; ``False`` logs the person out, a dict updates the login.

        oauthenticator's own ``refresh_user`` asks the provider only once the stored token no longer verifies (the
        ID token expired); until then a person disabled at the provider would stay. Here every refresh presents
        the refresh token. JupyterHub calls this every ``auth_refresh_age`` seconds per person and before a spawn.
        """
        if not self.refresh_with_provider:
            # Checked once at login (documented in refresh_with_provider's help and at start).
            return True
        result = await self._refresh_gate.run(user.name, lambda: self._renew(user))
        if result is False and handler is not None and not hasattr(handler, "_token_authenticated"):
            # JupyterHub 6.1 reads this flag after a failed refresh but sets it only on token-authenticated
            # requests: a cookie request would end in an AttributeError (a 500 for a server start) instead of
            # the login page or a 403. Not token-authenticated is exactly what the missing flag means.
            handler._token_authenticated = False
        return result

    async def _renew(self, user: Any) -> dict | bool:
        state = await user.get_auth_state() or {}
        if state.get(LOGGED_OUT):
            # The provider already said no; that was audited. Nothing is left to ask it with.
            return False
        marker = _refreshing.set(user.name)
        try:
            refresh_token = state.get(REFRESH_TOKEN_FIELD)
            if not isinstance(refresh_token, str) or not refresh_token:
                raise self.refuse(
                    "refresh-token",
                    "no refresh token is kept for this login (it predates refresh_with_provider, or its auth state "
                    "was lost)",
                    SIGN_IN_AGAIN,
                )
            answer = await self._exchange_refresh_token(refresh_token)
            if answer.kind == "unreachable":
                return self._keep_during_outage(user.name, state, answer.detail)
            if answer.kind == "refused":
                raise self.refuse(
                    "refresh-refused",
                    f"the provider refused to renew the login ({answer.detail}): the account may be disabled or "
                    "deleted, its sessions revoked, or the refresh token expired",
                    SIGN_IN_AGAIN,
                )
            auth_model = await self._renewed_auth_model(user, state, answer.token_info or {}, refresh_token)
        except LoginRefused as refused:
            await self._end_login(user, refused.check)
            return False
        finally:
            _refreshing.reset(marker)
        claims = auth_model["auth_state"][self.user_auth_state_key]
        self._audit.append(
            actor=user.name,
            action="login.refresh",
            obj=f"user:{user.name}",
            outcome="allowed",
            reason="the provider renewed the login"
            + ("; renewed ID token validated" if answer.token_info and answer.token_info.get("id_token") else ""),
            amr=claims.get("amr"),
            admin=bool(auth_model.get("admin")),
            verified=True,
        )
        # Saved now, inside this person's refresh gate: a rotated refresh token must be what the next refresh
        # reads (JupyterHub saves the returned model again, after the gate).
        await user.save_auth_state(auth_model["auth_state"])
        return auth_model

    async def _end_login(self, user: Any, check: str) -> None:
        """Log the person out everywhere now, not at the next periodic check.

        JupyterHub records only successful refreshes, so after a ``False`` it would keep accepting the person's
        cookie and tokens until ``auth_refresh_age`` has passed since the last success. A new cookie id makes
        every browser cookie of the person invalid at once (JupyterHub's own logout only clears one browser's);
        forgetting the last refresh makes the next API-token request ask again, and ``LOGGED_OUT`` answers it
        without the provider (refused with ``auth_refresh_strict``). Only the fact is kept in auth state: the
        refresh token goes, so nothing can renew this login any more.
        """
        orm_user = getattr(user, "orm_user", None)
        if orm_user is not None:
            orm_user.cookie_id = new_token()  # committed by save_auth_state
        await user.save_auth_state({LOGGED_OUT: {"at": time.time(), "check": check}})
        if hasattr(user, "_auth_refreshed"):
            user._auth_refreshed = None

    async def _exchange_refresh_token(self, refresh_token: str) -> TokenAnswer:
        """POST the refresh token to the token endpoint; the answer read, never logged (it holds tokens)."""
        request = HTTPRequest(
            self.token_url,
            **{
                "request_timeout": REFRESH_TIMEOUT,
                **self.http_request_kwargs,
                "method": "POST",
                "headers": self.build_token_info_request_headers(),
                "body": urlencode(self.build_refresh_token_request_params(refresh_token)).encode(),
                "validate_cert": self.validate_server_cert,
            },
        )
        try:
            response = await self.http_client.fetch(request, raise_error=False)
        except (HTTPClientError, OSError, asyncio.TimeoutError) as error:
            # No answer at all (refused connection, DNS, TLS, timeout): the error names no token.
            return TokenAnswer("unreachable", _describe_network_error(error))
        return read_token_answer(response.code, response.body)

    def _keep_during_outage(self, username: str, state: Mapping[str, Any], detail: str) -> bool:
        keep, why = outage_verdict(state.get(VERIFIED_AT), time.time(), self.refresh_outage_grace)
        if not keep:
            raise self.refuse(
                "provider-unreachable",
                f"the provider did not answer ({detail}) and {why}",
                SIGN_IN_AGAIN,
            )
        self.log.warning("Could not renew the login of %s (%s); kept: %s", username, detail, why)
        self._audit.append(
            actor=username,
            action="login.refresh",
            obj=f"user:{username}",
            outcome="allowed",
            reason=f"the provider did not answer ({detail}); login kept: {why}",
            verified=False,
        )
        return True

    async def _renewed_auth_model(
        self, user: Any, state: Mapping[str, Any], token_info: dict, refresh_token: str
    ) -> dict:
        """The login's checks again, on what the provider renewed; raises LoginRefused (audited) on any failure."""
        before = state.get(self.user_auth_state_key) or {}
        id_token = token_info.get("id_token")
        if isinstance(id_token, str) and id_token:
            claims = await self.validate_id_token(id_token, nonce=None)
            if claims.get("sub") != before.get("sub"):
                raise self.refuse(
                    "refresh-subject",
                    "the renewed ID token names another subject (sub) than the login it renews",
                    SIGN_IN_AGAIN,
                )
        else:
            # The provider renewed the grant (the account is active) without a new ID token: the login's
            # claims, MFA included, stand as they were verified then.
            claims = dict(before)
        username = self.normalize_username(self.user_info_to_username(claims))
        if username != user.name:
            raise self.refuse(
                "refresh-subject", f"the renewed ID token is for user {username!r}, not {user.name!r}", SIGN_IN_AGAIN
            )
        if not token_info.get("refresh_token"):
            # Not rotated: the same refresh token stays valid.
            token_info = {**token_info, "refresh_token": refresh_token}
        auth_model = {
            "name": user.name,
            "admin": True if user.name in self.admin_users else None,
            "auth_state": self.build_auth_state_dict(token_info, claims),
        }
        auth_model = await self.update_auth_model(auth_model)
        if self.manage_groups:
            auth_model = await self._apply_managed_groups(auth_model)
        # The allow and block rules of the login, on today's groups (both raise a refusal when they say no).
        self.check_blocked_users(user.name, auth_model)
        await self.check_allowed(user.name, auth_model)
        await self._apply_plan(auth_model.pop("securehpc_memberships", None), user.name)
        return auth_model


def _describe_network_error(error: BaseException) -> str:
    """A short, token-free description of a request that got no HTTP answer."""
    if isinstance(error, HTTPClientError):
        return f"HTTP {error.code} {error.message or ''}".strip()
    return _printable(f"{type(error).__name__}: {error}", 120)
