"""Login through OpenID Connect with enforced MFA: a real JupyterHub, configurable-http-proxy and the local
``oidc-provider``, driven over HTTP as a browser would (``requests.Session`` follows the same redirects and
posts the provider's login form).

What the real provider cannot be made to produce (an expired, unsigned or foreign-signed ID token, a wrong
audience or issuer, missing ``sub``/``exp``/``iat``) is tested in two ways, and only for those cases:

- a table of ID tokens that the test signs itself (``cryptography``/PyJWT) against a JWKS the test serves,
  given to the authenticator's validation directly;
- through the real hub, with the hub's ``token_url`` pointing at a small pass-through in the test process
  that forwards every code exchange to the real provider and, when a test asks, swaps the ID token in the
  answer for a forged one (unsigned, or signed by another key).

Every refusal is checked for what a person sees (the explanatory 403 page), for what must not happen (no
hub user, no membership created or changed) and for its audit event.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import select
from traitlets.config import Config

from jupyter_securehpc.audit import AuditLog, verify
from jupyter_securehpc.authenticator import LoginRefused, SecureHPCAuthenticator, mfa_problem
from jupyter_securehpc.devcluster import hub, oidc
from jupyter_securehpc.devcluster.layout import ClusterLayout
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.model import Member, Project
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.projects.sync import SYNC_ACTOR, BadProjectGroups, parse_project_groups, plan_memberships

MFA_PAGE = "did not use multi-factor authentication"


# --- pure logic: tables -------------------------------------------------------------------------------
DEFAULT_AMR = {"mfa", "otp", "hwk", "swk"}


@pytest.mark.parametrize(
    ("claims", "required_amr", "required_acr", "problem"),
    [
        ({"amr": ["pwd", "otp"]}, DEFAULT_AMR, [], None),
        ({"amr": ["hwk"]}, DEFAULT_AMR, [], None),
        ({"amr": ["mfa", "pwd"]}, DEFAULT_AMR, [], None),
        ({"amr": ["pwd"]}, DEFAULT_AMR, [], "contains none of the accepted methods"),
        ({"amr": []}, DEFAULT_AMR, [], "contains none of the accepted methods"),
        ({}, DEFAULT_AMR, [], "has no amr claim"),
        ({"amr": "otp"}, DEFAULT_AMR, [], "not a list of strings"),
        ({"amr": [1, 2]}, DEFAULT_AMR, [], "not a list of strings"),
        # acr only
        ({"acr": "urn:loa:mfa"}, set(), ["urn:loa:mfa"], None),
        ({"acr": "urn:loa:pwd"}, set(), ["urn:loa:mfa"], "is not one of the accepted levels"),
        ({"amr": ["otp"]}, set(), ["urn:loa:mfa"], "has no acr claim"),
        # both configured: both must hold
        ({"amr": ["otp"], "acr": "urn:loa:mfa"}, DEFAULT_AMR, ["urn:loa:mfa"], None),
        ({"amr": ["otp"], "acr": "urn:loa:pwd"}, DEFAULT_AMR, ["urn:loa:mfa"], "is not one of the accepted levels"),
        ({"amr": ["pwd"], "acr": "urn:loa:mfa"}, DEFAULT_AMR, ["urn:loa:mfa"], "contains none of the accepted"),
    ],
)
def test_mfa_table(claims, required_amr, required_acr, problem):
    found = mfa_problem(claims, required_amr, required_acr)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([], {}),
        (["hub-users", "staff"], {}),
        (["securehpc:sleep:data_owner"], {"sleep": Role.DATA_OWNER}),
        (
            ["securehpc:sleep:observer", "securehpc:mri:data_scientist"],
            {"sleep": Role.OBSERVER, "mri": Role.DATA_SCIENTIST},
        ),
        (["securehpc:sleep:observer", "securehpc:sleep:observer"], {"sleep": Role.OBSERVER}),
        (["securehpc:sleep:superuser"], "unknown role 'superuser'"),
        (["securehpc:sleep"], "is not securehpc:PROJECT:ROLE"),
        (["securehpc::observer"], "is not securehpc:PROJECT:ROLE"),
        (["securehpc:a/b:observer"], "contains '/'"),
        (["securehpc:..:observer"], "contains '..'"),
        (["securehpc:sleep:observer", "securehpc:sleep:data_owner"], "two different roles"),
        # Every problem is named at once, so that the directory can be fixed in one go.
        (["securehpc:sleep:root", "securehpc:x"], "unknown role 'root'"),
    ],
)
def test_project_groups_table(groups, expected):
    if isinstance(expected, str):
        with pytest.raises(BadProjectGroups, match=re.escape(expected)):
            parse_project_groups(groups, "securehpc:")
    else:
        assert parse_project_groups(groups, "securehpc:") == expected


def test_plan_removes_only_what_the_sync_made():
    current = {
        "sleep": ("data_scientist", SYNC_ACTOR),
        "mri": ("observer", SYNC_ACTOR),
        "genomics": ("observer", "admin"),  # added by hand: the groups do not manage it
        "ecg": ("observer", "admin"),
    }
    wanted = {"sleep": Role.DATA_SCIENTIST, "ecg": Role.DATA_OWNER, "eeg": Role.OBSERVER}
    plan = plan_memberships(current, wanted, "bob")
    assert plan.add == {"eeg": Role.OBSERVER}
    assert plan.change == {"ecg": ("observer", Role.DATA_OWNER)}
    assert plan.remove == ["mri"]


# --- ID token validation with tokens the test signs ---------------------------------------------------
ISSUER = "https://idp.test.invalid"
CLIENT_ID = "hub-client"


class _JWKSHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(self.server.jwks).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _rsa_jwk(kid: str) -> tuple[rsa.RSAPrivateKey, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return key, public


@dataclass
class Signer:
    key: rsa.RSAPrivateKey
    kid: str
    audit: Path
    authenticator: SecureHPCAuthenticator

    def claims(self, **changes: Any) -> dict:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": "alice",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 300,
            "nonce": "n-123",
            "amr": ["pwd", "otp"],
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict, *, key: Any = None, kid: str | None = "default", alg: str = "RS256") -> str:
        headers = {"kid": self.kid if kid == "default" else kid} if kid is not None else {}
        return jwt.encode(claims, key if key is not None else self.key, algorithm=alg, headers=headers)


def _unsigned(claims: dict, kid: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


@pytest.fixture
def signer(tmp_path) -> Iterator[Signer]:
    key, public = _rsa_jwk("k1")
    server, url = _serve(_JWKSHandler)
    server.jwks = {"keys": [public]}
    config = Config()
    config.SecureHPC.audit_log = str(tmp_path / "audit.jsonl")
    config.SecureHPCAuthenticator.oidc_issuer = ISSUER
    config.SecureHPCAuthenticator.client_id = CLIENT_ID
    config.SecureHPCAuthenticator.client_secret = "s3cret-of-the-hub-long-enough-for-hs256"
    # Endpoints set, so no discovery is attempted.
    config.SecureHPCAuthenticator.authorize_url = f"{ISSUER}/auth"
    config.SecureHPCAuthenticator.token_url = f"{ISSUER}/token"
    config.SecureHPCAuthenticator.jwks_url = f"{url}/jwks"
    try:
        yield Signer(key, "k1", tmp_path / "audit.jsonl", SecureHPCAuthenticator(config=config))
    finally:
        server.shutdown()
        server.server_close()


async def test_a_valid_id_token_gives_its_claims(signer):
    claims = await signer.authenticator.validate_id_token(signer.sign(signer.claims()), nonce="n-123")
    assert claims["sub"] == "alice" and claims["amr"] == ["pwd", "otp"]


def _forged(signer: Signer, case: str) -> str:
    now = int(time.time())
    if case == "expired":
        return signer.sign(signer.claims(iat=now - 3600, exp=now - 600))
    if case == "unsigned":
        return _unsigned(signer.claims(), signer.kid)
    if case == "hs256 with the client secret":
        return signer.sign(signer.claims(), key="s3cret-of-the-hub-long-enough-for-hs256", alg="HS256")
    if case == "signed by another key, same kid":
        return signer.sign(signer.claims(), key=_rsa_jwk("k1")[0])
    if case == "unknown kid":
        return signer.sign(signer.claims(), key=_rsa_jwk("k9")[0], kid="k9")
    if case == "wrong audience":
        return signer.sign(signer.claims(aud="another-client"))
    if case == "several audiences, azp not the hub":
        return signer.sign(signer.claims(aud=[CLIENT_ID, "another-client"]))
    if case == "wrong issuer":
        return signer.sign(signer.claims(iss="https://evil.invalid"))
    if case.startswith("missing "):
        return signer.sign(signer.claims(**{case.removeprefix("missing "): None}))
    if case == "issued in the future":
        return signer.sign(signer.claims(iat=now + 3600, exp=now + 7200))
    if case == "nonce of another login":
        return signer.sign(signer.claims(nonce="n-other"))
    if case == "not a JWT":
        return "not.a.jwt"
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "check", "reason"),
    [
        ("expired", "id-token-expired", "has expired"),
        ("unsigned", "id-token-signature", "is unsigned"),
        ("hs256 with the client secret", "id-token-signature", "signed with 'HS256'"),
        ("signed by another key, same kid", "id-token-signature", "signature does not verify"),
        ("unknown kid", "id-token-signature", "JWKS does not have"),
        ("wrong audience", "id-token-audience", "is not for client 'hub-client'"),
        ("several audiences, azp not the hub", "id-token-audience", "azp is not the hub"),
        ("wrong issuer", "id-token-issuer", f"not issued by {ISSUER}"),
        ("missing sub", "id-token-claims", "lacks the 'sub' claim"),
        ("missing exp", "id-token-claims", "lacks the 'exp' claim"),
        ("missing iat", "id-token-claims", "lacks the 'iat' claim"),
        ("missing iss", "id-token-claims", "lacks the 'iss' claim"),
        ("issued in the future", "id-token", "not valid"),
        ("nonce of another login", "id-token-nonce", "nonce does not match"),
        ("not a JWT", "id-token", "malformed"),
    ],
)
async def test_bad_id_tokens_are_refused_and_audited(signer, case, check, reason):
    token = _forged(signer, case)
    with pytest.raises(LoginRefused) as refused:
        await signer.authenticator.validate_id_token(token, nonce="n-123")
    assert refused.value.status_code == 403
    assert refused.value.check == check
    assert reason in refused.value.detail
    assert "Start again from the hub's login page" in refused.value.jupyterhub_message
    (event,) = AuditLog(signer.audit).tail(1)
    assert (event["action"], event["outcome"], event["details"]["check"]) == ("login", "denied", check)
    # Neither the token nor the client secret reaches the audit log or the page.
    for text in (signer.audit.read_text(), refused.value.jupyterhub_message):
        assert token not in text and "s3cret-of-the-hub-long-enough-for-hs256" not in text


async def test_missing_user_name_claim_is_refused(signer):
    with pytest.raises(LoginRefused) as refused:
        signer.authenticator.user_info_to_username({"sub": "x"})
    assert refused.value.check == "id-token-claims"
    assert "did not send your user name" in refused.value.jupyterhub_message


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"oidc_issuer": ""}, "oidc_issuer is empty"),
        ({"required_amr": set(), "required_acr": []}, "required_amr and required_acr are both empty"),
        ({"id_token_algorithms": ["HS256"]}, "asymmetric algorithms"),
        ({"id_token_algorithms": ["none"]}, "asymmetric algorithms"),
        ({"project_group_prefix": ""}, "must not be empty"),
        # Refresh with the provider on, but nowhere to keep the refresh token encrypted.
        ({"refresh_with_provider": True}, "enable_auth_state is off"),
        ({"enable_auth_state": True, "crypt_key": None}, "set JUPYTERHUB_CRYPT_KEY in the hub's environment"),
        ({"enable_auth_state": True, "crypt_key": "too-short"}, "set JUPYTERHUB_CRYPT_KEY in the hub's environment"),
        ({"enable_auth_state": True, "auth_refresh_age": 0}, "auth_refresh_age is 0"),
        ({"enable_auth_state": True, "refresh_outage_grace": -1}, "refresh_outage_grace must be 0 or more"),
    ],
)
def test_bad_configuration_names_the_option(tmp_path, monkeypatch, settings, message):
    settings = dict(settings)
    crypt_key = settings.pop("crypt_key", secrets.token_hex(32))
    if crypt_key is None:
        monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    else:
        monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", crypt_key)
    config = Config()
    config.SecureHPC.audit_log = str(tmp_path / "audit.jsonl")
    for name, value in {
        "oidc_issuer": ISSUER,
        "authorize_url": f"{ISSUER}/auth",
        "token_url": f"{ISSUER}/token",
        "jwks_url": f"{ISSUER}/jwks",
        **settings,
    }.items():
        setattr(config.SecureHPCAuthenticator, name, value)
    with pytest.raises(Exception, match=re.escape(message)) as refused:
        SecureHPCAuthenticator(config=config)
    if crypt_key:
        assert crypt_key not in str(refused.value)


def test_auth_state_turns_refresh_on_with_its_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", secrets.token_hex(32))
    config = Config()
    config.SecureHPC.audit_log = str(tmp_path / "audit.jsonl")
    config.Authenticator.enable_auth_state = True
    for name, value in {"oidc_issuer": ISSUER, "authorize_url": f"{ISSUER}/auth", "token_url": f"{ISSUER}/token",
                        "jwks_url": f"{ISSUER}/jwks"}.items():  # fmt: skip
        setattr(config.SecureHPCAuthenticator, name, value)
    authenticator = SecureHPCAuthenticator(config=config)
    assert authenticator.refresh_with_provider is True
    assert authenticator.refresh_pre_spawn is True
    assert authenticator.auth_refresh_strict is True
    assert authenticator.auth_refresh_age == 900


# --- the real hub, the real provider ------------------------------------------------------------------
def _account(username: str, groups: list[str], *, otp: bool = True, omit_amr: bool = False) -> dict:
    return {
        "username": username,
        "password": secrets.token_urlsafe(12),
        "otp": f"{secrets.randbelow(10**6):06d}" if otp else None,
        "groups": groups,
        "name": username.title(),
        "email": f"{username}@test.invalid",
        "omit_amr": omit_amr,
    }


class TokenTamper(BaseHTTPRequestHandler):
    """Pass-through to the provider's token endpoint that can swap the ID token in the answer (see top)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        answer = requests.post(
            self.server.token_url,
            data=body,
            headers={"content-type": self.headers.get("content-type", "application/x-www-form-urlencoded")},
            timeout=10,
        )
        data = answer.content
        if answer.ok and self.server.forge is not None:
            token_info = answer.json()
            token_info["id_token"] = self.server.forge(token_info["id_token"])
            data = json.dumps(token_info).encode()
        self.send_response(answer.status_code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Site:
    layout: ClusterLayout
    root: Path
    service: ProjectService
    tamper: ThreadingHTTPServer
    accounts: dict[str, dict] = field(default_factory=dict)
    hub_settings: dict[str, Any] = field(default_factory=dict)
    # The hub's environment: JUPYTERHUB_CRYPT_KEY (auth state, refresh tokens), never in its config file.
    hub_env: dict[str, str] = field(default_factory=dict)

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    def add_accounts(self, *accounts: dict) -> None:
        for account in accounts:
            self.accounts[account["username"]] = account
        oidc.write_accounts(self.layout, list(self.accounts.values()))

    def set_groups(self, username: str, groups: list[str]) -> None:
        self.accounts[username]["groups"] = groups
        oidc.write_accounts(self.layout, list(self.accounts.values()))

    def memberships(self, username: str) -> dict[str, tuple[str, str]]:
        with self.service.sessions() as session:
            rows = session.execute(
                select(Project.name, Member.role, Member.added_by)
                .join(Member, Member.project_id == Project.id)
                .where(Member.username == username)
            )
            return {name: (role, added_by) for name, role, added_by in rows}

    def all_memberships(self) -> list[tuple[str, str, str]]:
        with self.service.sessions() as session:
            rows = session.execute(select(Project.name, Member.username, Member.role).join(Member))
            return sorted(tuple(row) for row in rows)

    def hub_users(self) -> dict[str, dict]:
        return hub.hub_users(self.layout)

    def events(self, action: str = "login") -> list[dict]:
        return [e for e in map(json.loads, self.audit.read_text().splitlines()) if e["action"] == action]


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory) -> Iterator[Site]:
    """Projects sleep, mri and genomics (owned by olivia), the test accounts, and a hub logging in through
    the provider; the hub's code exchange passes through ``TokenTamper``."""
    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("auth-site")
    root.chmod(0o755)
    prefix = f"t{secrets.token_hex(4)}"
    db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
    from jupyter_securehpc.devcluster import openbao

    service = ProjectService(
        sessions=open_database(db_url),
        keys=KeyStore(
            KeyStoreConfig(
                url=layout.openbao_addr,
                token=openbao.root_token(layout),
                prefix=prefix,
                policy_prefix=f"{prefix}-project-",
            )
        ),
        audit=AuditLog(root / "audit.jsonl"),
        store_root=root / "stores",
        actor=Actor(admin="test-admin"),
    )
    (root / "stores").mkdir(mode=0o755)
    for project in ("sleep", "mri", "genomics"):
        service.create_project(project, owner="olivia")

    tamper, tamper_url = _serve(TokenTamper)
    tamper.token_url = oidc.discovery(layout)["token_endpoint"]
    tamper.forge = None
    saved_accounts = layout.oidc_accounts_file.read_text()
    test_site = Site(layout, root, service, tamper)
    test_site.add_accounts(
        _account("alice", ["hub-users", "securehpc:sleep:data_owner"]),
        _account("bob", ["hub-users", "securehpc:sleep:data_scientist"]),
        _account("mallory", ["hub-users"], otp=False),
        _account("nemo", ["hub-users"], omit_amr=True),
        _account("root-admin", ["hub-admins"]),
        _account("outsider", []),
        _account("carol", ["hub-users"]),
        _account("dave", ["hub-users"]),
        _account("erin", ["hub-users"]),
        _account("frank", ["hub-users"]),
        _account("gina", ["hub-users"]),
        _account("blocked-bea", ["hub-users"]),
    )
    test_site.hub_settings = {
        "SecureHPC.db_url": db_url,
        "SecureHPC.audit_log": str(root / "audit.jsonl"),
        "SecureHPC.store_root": str(root / "stores"),
        "KeyStoreConfig.prefix": prefix,
        "KeyStoreConfig.policy_prefix": f"{prefix}-project-",
        # Memberships from the provider's groups get principals recorded, not made (these tests start no session).
        "ProjectAccounts.provisioner": "none",
        "SecureHPCAuthenticator.token_url": f"{tamper_url}/token",
        "SecureHPCAuthenticator.blocked_users": {"blocked-bea"},
        # Logins keep their refresh token (encrypted) and are confirmed with the provider again: on for every
        # login test here, so that they show logins work with it (the renewals: authenticator/test_auth_refresh.py).
        "Authenticator.enable_auth_state": True,
    }
    test_site.hub_env = {"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)}
    hub.up(layout, test_site.hub_settings, env=test_site.hub_env)
    try:
        yield test_site
    finally:
        hub.down(layout)
        tamper.shutdown()
        tamper.server_close()
        layout.oidc_accounts_file.write_text(saved_accounts)


@dataclass
class Browser:
    """One person's browser: its own cookies, the provider's login form, the hub's pages."""

    site: Site
    session: requests.Session = field(default_factory=requests.Session)

    def sign_in_at_provider(self, username: str, *, otp: bool = True) -> str:
        """Go from the hub's login to the provider's form, sign in; return the hub callback URL (not yet opened)."""
        account = self.site.accounts[username]
        form = self.session.get(f"{self.site.layout.hub_url}/hub/oauth_login", timeout=10)
        assert form.status_code == 200 and form.url.startswith(self.site.layout.oidc_issuer), form.url
        action = html.unescape(re.search(r'<form id="login" method="post" action="([^"]+)"', form.text).group(1))
        response = self.session.post(
            self.site.layout.oidc_issuer + action,
            data={"login": username, "password": account["password"], "otp": account["otp"] if otp else ""},
            allow_redirects=False,
            timeout=10,
        )
        callback = f"{self.site.layout.hub_url}/hub/oauth_callback"
        while response.is_redirect:
            location = requests.compat.urljoin(response.url, response.headers["location"])
            if location.startswith(callback):
                return location
            response = self.session.get(location, allow_redirects=False, timeout=10)
        raise AssertionError(f"the provider did not send the browser back to the hub: {response.status_code}")

    def open(self, url: str) -> requests.Response:
        return self.session.get(url, timeout=30)

    def login(self, username: str, *, otp: bool = True) -> requests.Response:
        return self.open(self.sign_in_at_provider(username, otp=otp))

    def home(self) -> requests.Response:
        return self.session.get(f"{self.site.layout.hub_url}/hub/home", allow_redirects=False, timeout=10)


def page_text(response: requests.Response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text)))


def assert_refused(
    site: Site,
    response: requests.Response,
    username: str | None,
    check: str,
    says: str,
    *,
    new_user: bool = True,
    actor: str | None = None,
) -> None:
    """A 403 page that explains, no hub user (for a person never seen before), and a denied login audited."""
    assert response.status_code == 403, response.status_code
    assert "Sign-in refused" in page_text(response)
    assert says in page_text(response)
    assert "If you need help, contact" in page_text(response)
    if username is not None and new_user:
        assert username not in site.hub_users()
    event = site.events()[-1]
    assert (event["outcome"], event["details"]["check"]) == ("denied", check), event
    # Before the ID token is verified, nobody is known: the event says "anonymous".
    assert event["actor"] == (actor or username or "anonymous")
    result = verify(site.audit)
    assert result.ok, result.problem


def test_mfa_user_lands_in_the_hub(site):
    browser = Browser(site)
    response = browser.login("alice")
    assert response.status_code == 200
    assert response.url == f"{site.layout.hub_url}/hub/home"
    home = browser.home()
    assert home.status_code == 200
    assert 'user: "alice"' in home.text
    user = site.hub_users()["alice"]
    assert user["admin"] is False
    assert "hub-users" in user["groups"]
    event = site.events()[-1]
    assert (event["actor"], event["outcome"], event["details"]["amr"]) == ("alice", "allowed", ["pwd", "otp"])
    # Her directory group made her a data owner of sleep, beside the owner who created it.
    assert site.memberships("alice") == {"sleep": ("data_owner", SYNC_ACTOR)}


def test_the_admin_group_makes_operators_not_jupyterhub_admins(site):
    """A JupyterHub admin can act as anyone; the hub-admins group gets the operator role instead
    (spawner/roles.py; what an operator may do is tested in test_hub_reports.py)."""
    assert Browser(site).login("root-admin").status_code == 200
    user = site.hub_users()["root-admin"]
    assert user["admin"] is False and "hub-admins" in user["groups"]


@pytest.mark.parametrize(
    ("username", "otp", "says"),
    [
        # A person without any second factor.
        ("mallory", False, MFA_PAGE),
        # A person who has one but did not use it this time.
        ("gina", False, MFA_PAGE),
        # A provider that does not say how the person signed in (missing amr claim).
        ("nemo", True, MFA_PAGE),
    ],
)
def test_login_without_mfa_is_refused_with_an_explanation(site, username, otp, says):
    before = site.all_memberships()
    response = Browser(site).login(username, otp=otp)
    assert_refused(site, response, username, "mfa", says)
    assert "Sign in again with your second factor" in page_text(response)
    assert site.all_memberships() == before


def test_refused_existing_user_keeps_everything(site):
    """alice exists (first test); a sign-in without her second factor changes nothing about her."""
    Browser(site).login("alice")
    before = (site.hub_users()["alice"], site.memberships("alice"))
    browser = Browser(site)
    assert_refused(site, browser.login("alice", otp=False), "alice", "mfa", MFA_PAGE, new_user=False)
    assert browser.home().status_code != 200
    after = site.hub_users()["alice"]
    assert (after["groups"], after["admin"]) == (before[0]["groups"], before[0]["admin"])
    assert site.memberships("alice") == before[1]


def test_nobody_is_allowed_by_default(site):
    """outsider signs in with MFA but is in no allowed group: refused."""
    response = Browser(site).login("outsider")
    assert_refused(site, response, "outsider", "not-allowed", "is not allowed to use this hub")


def test_blocked_user_is_refused(site):
    response = Browser(site).login("blocked-bea")
    assert_refused(site, response, "blocked-bea", "blocked", "is blocked on this hub")


def test_group_claims_create_change_and_remove_memberships(site):
    site.service.add_member("genomics", "bob", "observer")  # by hand: the directory does not manage it
    assert Browser(site).login("bob").status_code == 200
    assert site.memberships("bob") == {
        "sleep": ("data_scientist", SYNC_ACTOR),
        "genomics": ("observer", "test-admin"),
    }

    # The directory moves bob: observer in mri, no longer in sleep; genomics now named by a group too.
    site.set_groups("bob", ["hub-users", "securehpc:mri:observer", "securehpc:genomics:data_scientist"])
    assert Browser(site).login("bob").status_code == 200
    assert site.memberships("bob") == {
        "mri": ("observer", SYNC_ACTOR),
        "genomics": ("data_scientist", "test-admin"),
    }

    # Without project groups: what the sync made goes, what a person added stays.
    site.set_groups("bob", ["hub-users"])
    assert Browser(site).login("bob").status_code == 200
    assert site.memberships("bob") == {"genomics": ("data_scientist", "test-admin")}

    changes = [
        (e["action"], e["object"], e["actor"])
        for e in map(json.loads, site.audit.read_text().splitlines())
        if e["action"] in ("member.add", "member.remove") and "/bob" in e["object"]
    ]
    assert ("member.add", "member:sleep/bob", SYNC_ACTOR) in changes
    assert ("member.remove", "member:sleep/bob", SYNC_ACTOR) in changes
    assert ("member.remove", "member:mri/bob", SYNC_ACTOR) in changes


@pytest.mark.parametrize(
    ("groups", "says"),
    [
        (["securehpc:nosuch:observer"], "name projects that do not exist on this hub (securehpc:nosuch:observer)"),
        (["securehpc:Sleep:observer"], "name projects that do not exist"),  # exact names only
        (["securehpc:sleep:superuser"], "unknown role 'superuser'"),
        (["securehpc:sleep"], "is not securehpc:PROJECT:ROLE"),
        (["securehpc:sleep:observer", "securehpc:sleep:data_owner"], "two different roles"),
    ],
)
def test_bad_project_groups_refuse_the_whole_login(site, groups, says):
    """carol has a valid group too (mri observer): it is not applied either, and no hub user is created."""
    site.set_groups("carol", ["hub-users", "securehpc:mri:observer", *groups])
    before = site.all_memberships()
    response = Browser(site).login("carol")
    assert_refused(site, response, "carol", "project-groups", says)
    assert "Ask the directory administrators to correct your groups" in page_text(response)
    assert site.all_memberships() == before


def test_bad_project_groups_leave_an_existing_member_unchanged(site):
    site.set_groups("dave", ["hub-users", "securehpc:mri:data_scientist"])
    assert Browser(site).login("dave").status_code == 200
    before = (site.memberships("dave"), site.hub_users()["dave"]["groups"])
    site.set_groups("dave", ["hub-users", "securehpc:sleep:observer", "securehpc:gone:observer"])
    assert_refused(site, Browser(site).login("dave"), "dave", "project-groups", "do not exist", new_user=False)
    assert (site.memberships("dave"), site.hub_users()["dave"]["groups"]) == before


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_wrong_state_is_refused(site):
    browser = Browser(site)
    callback = browser.sign_in_at_provider("erin")
    forged_state = base64.urlsafe_b64encode(json.dumps({"state_id": secrets.token_hex(16)}).encode()).decode()
    response = browser.open(_with_query(callback, state=forged_state))
    assert_refused(site, response, None, "state", "could not be matched to your browser")
    assert "erin" not in site.hub_users()


def test_answer_from_another_issuer_is_refused(site):
    browser = Browser(site)
    callback = browser.sign_in_at_provider("erin")
    response = browser.open(_with_query(callback, iss="https://evil.invalid"))
    assert_refused(site, response, None, "issuer", "came from another identity provider")
    assert "erin" not in site.hub_users()


def test_callback_from_another_browser_is_refused(site):
    """A callback URL opened in a browser that did not start the login (no state cookie)."""
    callback = Browser(site).sign_in_at_provider("erin")
    response = Browser(site).open(callback)
    assert_refused(site, response, None, "state", "could not be matched to your browser")
    assert "erin" not in site.hub_users()


def test_replayed_code_is_refused(site):
    browser = Browser(site)
    callback = browser.sign_in_at_provider("frank")
    state_cookie = browser.session.cookies.get("oauthenticator-state")
    assert browser.open(callback).status_code == 200  # the real login
    frank = site.hub_users()["frank"]

    # Same browser again: its state cookie was used up by the first callback.
    assert_refused(site, browser.open(callback), None, "state", "could not be matched")
    # An attacker who also copied the state cookie gets past the state check; the provider refuses the code.
    attacker = Browser(site)
    attacker.session.cookies.set("oauthenticator-state", state_cookie)
    response = attacker.open(callback)
    assert_refused(site, response, None, "code", "already used or has expired")
    assert attacker.home().status_code != 200
    assert site.hub_users()["frank"]["groups"] == frank["groups"]


def test_provider_error_is_explained(site):
    """The provider sends the browser back with an OAuth error (e.g. the person cancelled)."""
    browser = Browser(site)
    callback = browser.sign_in_at_provider("erin")
    parts = urlsplit(callback)
    query = dict(parse_qsl(parts.query))
    response = browser.open(
        urlunsplit(parts._replace(query=urlencode({"error": "access_denied", "state": query["state"]})))
    )
    assert_refused(site, response, None, "provider-error", "did not sign you in")


def test_provider_error_text_cannot_forge_log_lines(site):
    browser = Browser(site)
    callback = browser.sign_in_at_provider("erin")
    state = dict(parse_qsl(urlsplit(callback).query))["state"]
    forged = "no\n[I 2026 JupyterHub] User logged in: root state " + "x" * 500
    response = browser.open(
        f"{site.layout.hub_url}/hub/oauth_callback?"
        + urlencode({"error": "access_denied", "error_description": forged, "state": state})
    )
    assert_refused(site, response, None, "provider-error", "did not sign you in")
    reason = site.events()[-1]["reason"]
    assert "\n" not in reason and len(reason) <= 200


def _unsigned_copy(id_token: str) -> str:
    claims = jwt.decode(id_token, options={"verify_signature": False})
    return _unsigned(claims, jwt.get_unverified_header(id_token).get("kid", ""))


def _resigned_copy(id_token: str) -> str:
    """The same claims, signed by a key that is not the provider's, under the provider's key id."""
    claims = jwt.decode(id_token, options={"verify_signature": False})
    claims["amr"] = ["pwd", "otp", "hwk"]
    kid = jwt.get_unverified_header(id_token)["kid"]
    return jwt.encode(claims, _rsa_jwk(kid)[0], algorithm="RS256", headers={"kid": kid})


@pytest.mark.parametrize(
    ("forge", "check"),
    [(_unsigned_copy, "id-token-signature"), (_resigned_copy, "id-token-signature")],
    ids=["unsigned", "signed-by-another-key"],
)
def test_forged_id_token_through_the_hub_is_refused(site, forge, check):
    """Only here is the provider's answer altered (see the module docstring): the hub still refuses."""
    site.tamper.forge = forge
    try:
        response = Browser(site).login("mallory", otp=False)
    finally:
        site.tamper.forge = None
    assert_refused(site, response, "mallory", check, "could not be verified", actor="anonymous")


def test_no_secret_in_logs_or_config(site):
    secret = oidc.client_secret(site.layout)
    config_text = hub.config_file(site.layout).read_text()
    assert secret not in config_text
    for log_file in site.layout.log_dir.glob("*.log"):
        text = log_file.read_text(errors="replace")
        assert secret not in text, log_file
        assert "code=" not in text.replace("code=[secret]", ""), log_file
    logs = [site.audit.read_text()] + [p.read_text(errors="replace") for p in site.layout.log_dir.glob("*.log")]
    for account in site.accounts.values():
        assert not any(account["password"] in text for text in logs), account["username"]
    crypt_key = site.hub_env["JUPYTERHUB_CRYPT_KEY"]
    assert not any(crypt_key in text for text in [config_text, *logs]), "the crypt key leaked"
    private = site.layout.oidc_config_file
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.parent.stat().st_mode & 0o777 == 0o700
    # Nor in any argv of the cluster's processes.
    for pid_file in site.layout.run_dir.glob("*.pid.json"):
        assert secret not in pid_file.read_text()
        assert crypt_key not in pid_file.read_text()


def test_status_reports_the_provider(local_cluster):
    statuses = {service.name: service for service in local_cluster.status()}
    assert statuses["oidc"].running, statuses["oidc"]
    assert local_cluster.layout.oidc_issuer in statuses["oidc"].detail


def test_provider_up_again_keeps_process_and_secret(local_cluster):
    layout = local_cluster.layout
    pid, secret = oidc.daemon(layout).pid(), oidc.client_secret(layout)
    oidc.up(layout)
    assert (oidc.daemon(layout).pid(), oidc.client_secret(layout)) == (pid, secret)
    assert pid is not None
    # The provider got its configuration from files named in its environment, not from its argv.
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert secret.encode() not in b" ".join(argv)


def test_hub_down_stops_the_proxy_too(site):
    """Last in this module: the hub and its proxy stop by pid, also when the hub was killed."""
    import os
    import signal

    layout = site.layout
    proxy = hub.proxy_pid(layout)
    assert proxy is not None
    # A clean stop: the hub stops the proxy it started.
    hub.daemon(layout).stop()
    assert hub.proxy_pid(layout) is None
    hub.up(layout, site.hub_settings, env=site.hub_env)
    proxy = hub.proxy_pid(layout)
    assert proxy is not None
    # A hub that dies without cleaning up leaves its proxy; `down` still finds and stops it.
    pid = hub.daemon(layout).pid()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # the test process started the hub: collect it
    hub.down(layout)
    assert hub.proxy_pid(layout) is None
    assert not Path(f"/proc/{proxy}").exists() or "configurable-http-proxy" not in Path(
        f"/proc/{proxy}/cmdline"
    ).read_text(errors="replace")


def test_old_cluster_json_without_new_ports_still_loads(tmp_path):
    saved = {
        "slurmctld_port": 1,
        "slurmd_port": 2,
        "openbao_port": 3,
        "openbao_cluster_port": 4,
        "cluster_name": "securehpc",
        "node_name": "securehpc-n1",
        "gpus": 2,
    }
    (tmp_path / "cluster.json").write_text(json.dumps(saved))
    layout = ClusterLayout.load_or_create(tmp_path)
    assert (layout.openbao_port, layout.oidc_port, layout.hub_port) == (3, 19080, 18000)
    again = ClusterLayout.load_or_create(tmp_path, random_ports=True)
    assert again == layout
