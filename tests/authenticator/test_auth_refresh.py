"""Login lifetime: the hub confirms every login with the provider again (refresh token) and logs the person out
when the provider says no.

Against the real hub, proxy and local ``oidc-provider``: a person signs in with MFA, the test changes the
"directory" (the provider's accounts file: account disabled, sessions revoked, second factor removed, groups
changed), and the person's next hub requests are refused once the hub has asked the provider again. The hub
here asks at every request one second after the last confirmation (``auth_refresh_age = 1``); the tests wait
for what a user would see (a 403, a login page), never for a time.

Also called directly, against the same provider: ``refresh_user`` with a login the hub made (its auth state read
from the hub's database with the test's crypt key). The outage rules are tested with a token endpoint that does
not answer (a closed port) or answers 503.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import hubclient
import pytest
import requests
from jupyterhub.crypto import CryptKeeper
from test_authenticator import Browser, Site, _account, _serve
from traitlets.config import Config

from jupyter_securehpc.audit import AuditLog, verify
from jupyter_securehpc.authenticator import (
    RefreshGate,
    SecureHPCAuthenticator,
    outage_verdict,
    read_token_answer,
)
from jupyter_securehpc.devcluster import hub, oidc
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService

T = TypeVar("T")
KEPT_KEYS = {"refresh_token", "scope", "oauth_user", "securehpc_verified_at"}
# Every refresh token the tests saw, to check at the end that none reached a log or the audit trail.
SEEN_REFRESH_TOKENS: list[str] = []


# --- pure logic: tables --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "kind", "detail"),
    [
        (200, {"access_token": "at", "token_type": "Bearer", "id_token": "x.y.z"}, "renewed", "HTTP 200"),
        (200, {"token_type": "Bearer"}, "refused", "without an access token"),
        (200, None, "refused", "without an access token"),
        (400, {"error": "invalid_grant", "error_description": "grant request is invalid"}, "refused", "invalid_grant"),
        (401, {"error": "invalid_client"}, "refused", "HTTP 401 invalid_client"),
        (400, b"<html>bad</html>", "refused", "no error code"),
        (302, None, "refused", "HTTP 302"),
        (500, {"error": "server_error"}, "unreachable", "HTTP 500"),
        (503, None, "unreachable", "HTTP 503"),
        (599, None, "unreachable", "HTTP 599"),
        (429, {"error": "slow_down"}, "unreachable", "HTTP 429"),
        (408, None, "unreachable", "HTTP 408"),
    ],
)
def test_token_answer_table(status, body, kind, detail):
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    answer = read_token_answer(status, raw)
    assert (answer.kind, detail in answer.detail) == (kind, True), answer
    assert (answer.token_info is not None) == (kind == "renewed")


def test_token_answer_detail_never_carries_the_body():
    """A provider that echoes the presented refresh token in its error text: the detail keeps only the code."""
    body = json.dumps({"error": "invalid_grant", "error_description": "refresh token rt-SECRET-123 is revoked"})
    answer = read_token_answer(400, body.encode())
    assert answer.kind == "refused" and "rt-SECRET-123" not in answer.detail


@pytest.mark.parametrize(
    ("verified_ago", "grace", "kept", "says"),
    [
        (10, 3600, True, "within refresh_outage_grace"),
        (3599, 3600, True, "within"),
        (3601, 3600, False, "longer than refresh_outage_grace"),
        (10, 0, False, "longer than"),
        (-10, 3600, True, "within"),  # a clock a little behind the provider's
        (-7200, 3600, False, "in the future"),
        (None, 3600, False, "no record"),
        ("yesterday", 3600, False, "no record"),
        (True, 3600, False, "no record"),
    ],
)
def test_outage_table(verified_ago, grace, kept, says):
    now = 1_000_000.0
    verified_at = (
        now - verified_ago if isinstance(verified_ago, int) and not isinstance(verified_ago, bool) else verified_ago
    )
    keep, why = outage_verdict(verified_at, now, grace)
    assert keep is kept and says in why


async def test_one_refresh_at_a_time_per_person():
    """Concurrent refreshes of one person reach the provider once; another person is not held up."""
    gate = RefreshGate()
    calls: list[str] = []
    release = asyncio.Event()

    async def refresh(name: str) -> dict:
        calls.append(name)
        await release.wait()
        return {"name": name}

    first = asyncio.create_task(gate.run("ada", lambda: refresh("ada")))
    second = asyncio.create_task(gate.run("ada", lambda: refresh("ada")))
    other = asyncio.create_task(gate.run("ben", lambda: refresh("ben")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    release.set()
    assert await first == {"name": "ada"}
    assert await second is True  # took the first one's answer
    assert await other == {"name": "ben"}
    assert sorted(calls) == ["ada", "ben"]


# --- a stand-in for JupyterHub's User (auth state in memory) and a directly configured authenticator ----------
class StoredUser:
    """What ``refresh_user`` uses of JupyterHub's ``User``: a name and its (here unencrypted) auth state."""

    def __init__(self, name: str, state: dict | None) -> None:
        self.name = name
        self.state = state
        self.saves = 0

    async def get_auth_state(self) -> dict | None:
        return json.loads(json.dumps(self.state)) if self.state is not None else None

    async def save_auth_state(self, state: dict | None) -> None:
        self.state = json.loads(json.dumps(state)) if state is not None else None
        self.saves += 1


def _authenticator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> SecureHPCAuthenticator:
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", secrets.token_hex(32))
    config = Config()
    config.SecureHPC.audit_log = str(tmp_path / "audit.jsonl")
    config.Authenticator.enable_auth_state = True
    values = {
        "oidc_issuer": "https://idp.test.invalid",
        "authorize_url": "https://idp.test.invalid/auth",
        "jwks_url": "https://idp.test.invalid/jwks",
        "client_id": "hub-client",
        "client_secret": "hub-client-secret-for-tests",
        "allowed_groups": {"hub-users"},
        "manage_groups": True,
        **settings,
    }
    for name, value in values.items():
        setattr(config.SecureHPCAuthenticator, name, value)
    return SecureHPCAuthenticator(config=config)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Maintenance(BaseHTTPRequestHandler):
    """A token endpoint in maintenance: 503 to everything."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _state(verified_at: float) -> dict:
    claims = {"sub": "ada", "preferred_username": "ada", "amr": ["pwd", "otp"], "groups": ["hub-users"]}
    return {"refresh_token": "rt-never-logged-123", "scope": ["openid"], "oauth_user": claims,
            "securehpc_verified_at": verified_at}  # fmt: skip


@pytest.mark.parametrize("endpoint", ["closed port", "503"])
async def test_unreachable_provider_keeps_the_login_for_the_grace_then_ends_it(tmp_path, monkeypatch, caplog, endpoint):
    server = None
    if endpoint == "503":
        server, url = _serve(_Maintenance)
        token_url = f"{url}/token"
    else:
        token_url = f"http://127.0.0.1:{_closed_port()}/token"
    try:
        authenticator = _authenticator(tmp_path, monkeypatch, token_url=token_url, refresh_outage_grace=3600)
        audit = tmp_path / "audit.jsonl"

        kept = _state(time.time() - 60)
        recent = StoredUser("ada", kept)
        assert await authenticator.refresh_user(recent) is True
        (event,) = AuditLog(audit).tail(1)
        assert (event["action"], event["outcome"], event["details"]["verified"]) == ("login.refresh", "allowed", False)
        assert "login kept" in event["reason"]
        assert (recent.state, recent.saves) == (kept, 0)  # nothing changed, the last confirmation stays

        stale = StoredUser("ada", _state(time.time() - 7200))
        assert await authenticator.refresh_user(stale) is False
        (event,) = AuditLog(audit).tail(1)
        assert (event["action"], event["outcome"], event["details"]["check"]) == (
            "login.refresh",
            "denied",
            "provider-unreachable",
        )
        assert set(stale.state) == {"securehpc_logged_out"}
        # Asked again: no new request to the provider, no new event.
        assert await authenticator.refresh_user(stale) is False
        assert AuditLog(audit).tail(1) == [event]
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    for text in (audit.read_text(), caplog.text):
        assert "rt-never-logged-123" not in text and "hub-client-secret-for-tests" not in text


async def test_refresh_off_answers_without_the_provider(tmp_path, monkeypatch):
    authenticator = _authenticator(tmp_path, monkeypatch, token_url="http://127.0.0.1:9/token")
    authenticator.refresh_with_provider = False
    assert await authenticator.refresh_user(StoredUser("ada", None)) is True


async def test_a_login_without_a_refresh_token_ends(tmp_path, monkeypatch):
    """A login made before refresh was turned on has nothing to renew with: the person signs in again."""
    authenticator = _authenticator(tmp_path, monkeypatch, token_url="http://127.0.0.1:9/token")
    user = StoredUser("ada", {"oauth_user": {"sub": "ada"}})
    assert await authenticator.refresh_user(user) is False
    (event,) = AuditLog(tmp_path / "audit.jsonl").tail(1)
    assert (event["outcome"], event["details"]["check"]) == ("denied", "refresh-token")


# --- the real hub, the real provider --------------------------------------------------------------------
def wait_for(check: Callable[[], T], what: str, timeout: float = 60) -> T:
    """``check()`` once it is truthy; fails after ``timeout`` seconds saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.3)


def api_user(site: Site, browser: Browser) -> requests.Response:
    """The hub API's "who am I", with the browser's cookie (what the hub's pages do)."""
    return browser.session.get(f"{site.layout.hub_url}/hub/api/user", allow_redirects=False, timeout=10)


def auth_state(site: Site, username: str) -> tuple[dict | None, bytes | None]:
    """The person's auth state as the hub stored it: decrypted (with the test's key) and raw."""
    database = site.layout.hub_dir / "jupyterhub.sqlite"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        (raw,) = connection.execute("SELECT encrypted_auth_state FROM users WHERE name = ?", (username,)).fetchone()
    if raw is None:
        return None, None
    keeper = CryptKeeper(keys=[site.hub_env["JUPYTERHUB_CRYPT_KEY"]])
    state = json.loads(keeper.fernet.decrypt(raw))
    if state.get("refresh_token"):
        SEEN_REFRESH_TOKENS.append(state["refresh_token"])
    return state, raw


def change_account(site: Site, username: str, **changes: Any) -> None:
    """The directory changes the person (at the provider); the hub learns it at its next confirmation."""
    site.accounts[username].update(changes)
    oidc.set_account(site.layout, username, **changes)


def refresh_events(site: Site, username: str) -> list[dict]:
    return [e for e in site.events("login.refresh") if e["actor"] == username]


@pytest.fixture(scope="module")
def rsite(local_cluster, tmp_path_factory) -> Iterator[Site]:
    """A hub with auth state and refresh on (``auth_refresh_age = 1``), logging in at the real provider."""
    from jupyter_securehpc.devcluster import openbao

    layout = local_cluster.layout
    root = tmp_path_factory.mktemp("refresh-site")
    root.chmod(0o755)
    prefix = f"r{secrets.token_hex(4)}"
    db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
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
    service.create_project("sleep", owner="olivia")
    saved_accounts = layout.oidc_accounts_file.read_text()
    site = Site(layout, root, service, tamper=None)
    site.add_accounts(
        *(_account(name, ["hub-users"]) for name in ("ada", "ben", "cleo", "dora", "eli", "gus", "hal")),
        _account("fay", ["hub-users", "securehpc:sleep:observer"]),
    )
    site.hub_settings = {
        "SecureHPC.db_url": db_url,
        "SecureHPC.audit_log": str(root / "audit.jsonl"),
        "SecureHPC.store_root": str(root / "stores"),
        "KeyStoreConfig.prefix": prefix,
        "KeyStoreConfig.policy_prefix": f"{prefix}-project-",
        # Memberships from the provider's groups get principals recorded, not made (these tests start no session).
        "ProjectAccounts.provisioner": "none",
        "Authenticator.enable_auth_state": True,
        # Confirm with the provider at the first request a second after the last confirmation.
        "SecureHPCAuthenticator.auth_refresh_age": 1,
    }
    site.hub_env = {"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)}
    hub.up(layout, site.hub_settings, env=site.hub_env)
    try:
        yield site
    finally:
        hub.down(layout)
        layout.oidc_accounts_file.write_text(saved_accounts)


def test_login_keeps_only_the_refresh_token_encrypted(rsite):
    browser = Browser(rsite)
    assert browser.login("ada").status_code == 200
    state, raw = auth_state(rsite, "ada")
    # What a renewal needs and nothing more: no access token, no ID token.
    assert set(state) == KEPT_KEYS
    assert state["oauth_user"]["amr"] == ["pwd", "otp"]
    assert state["refresh_token"] and state["refresh_token"].encode() not in raw


def test_an_active_login_is_renewed_and_stays(rsite):
    browser = Browser(rsite)
    assert browser.login("ben").status_code == 200
    before, _ = auth_state(rsite, "ben")

    def renewed() -> list[dict]:
        response = api_user(rsite, browser)
        assert response.status_code == 200 and response.json()["name"] == "ben"
        return [e for e in refresh_events(rsite, "ben") if e["outcome"] == "allowed"]

    (event, *_) = wait_for(renewed, "a renewal of ben's login")
    assert event["details"]["verified"] is True and event["details"]["amr"] == ["pwd", "otp"]
    assert "renewed ID token validated" in event["reason"]
    after, _ = auth_state(rsite, "ben")
    assert after["securehpc_verified_at"] > before["securehpc_verified_at"]
    assert api_user(rsite, browser).status_code == 200


def assert_logged_out(site: Site, browser: Browser, username: str, check: str) -> dict:
    """The person's cookie no longer works (API: 403, pages: the login page) and the end was audited once."""
    wait_for(lambda: api_user(site, browser).status_code == 403, f"{username}'s cookie being refused")
    home = browser.home()
    assert home.status_code == 302 and "/hub/login" in home.headers["location"], home.status_code
    denied = [e for e in refresh_events(site, username) if e["outcome"] == "denied"]
    assert len(denied) == 1, denied
    assert denied[0]["details"]["check"] == check, denied[0]
    state, _ = auth_state(site, username)
    assert set(state) == {"securehpc_logged_out"} and state["securehpc_logged_out"]["check"] == check
    result = verify(site.audit)
    assert result.ok, result.problem
    return denied[0]


def test_disabled_account_is_logged_out_everywhere(rsite):
    browser = Browser(rsite)
    assert browser.login("cleo").status_code == 200
    token = hubclient.api_token(rsite.layout, browser.session, "cleo")
    second_browser = Browser(rsite)
    assert second_browser.login("cleo").status_code == 200
    auth_state(rsite, "cleo")
    assert api_user(rsite, browser).status_code == 200

    change_account(rsite, "cleo", disabled=True)
    event = assert_logged_out(rsite, browser, "cleo", "refresh-refused")
    assert "invalid_grant" in event["reason"]
    # Her other browser and her API token are refused too, without asking the provider again.
    assert api_user(rsite, second_browser).status_code == 403
    by_token = requests.get(
        f"{rsite.layout.hub_url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10
    )
    assert by_token.status_code == 403
    assert len([e for e in refresh_events(rsite, "cleo") if e["outcome"] == "denied"]) == 1
    # The provider refuses her sign-in while the account is disabled.
    with pytest.raises(AssertionError, match="did not send the browser back"):
        Browser(rsite).sign_in_at_provider("cleo")

    # Enabled again, she signs in again, and the new login works (with a new API token too).
    change_account(rsite, "cleo", disabled=False)
    again = Browser(rsite)
    assert again.login("cleo").status_code == 200
    assert api_user(rsite, again).status_code == 200
    new_token = hubclient.api_token(rsite.layout, again.session, "cleo")
    headers = {"Authorization": f"token {new_token}"}
    assert requests.get(f"{rsite.layout.hub_url}/hub/api/user", headers=headers, timeout=10).status_code == 200


def test_revoked_sessions_log_out(rsite):
    """The provider's admin signs the person out everywhere: tokens issued before then are refused."""
    browser = Browser(rsite)
    assert browser.login("dora").status_code == 200
    assert api_user(rsite, browser).status_code == 200
    change_account(rsite, "dora", sessions_revoked_at=int(time.time()) + 1)
    event = assert_logged_out(rsite, browser, "dora", "refresh-refused")
    assert "invalid_grant" in event["reason"]


def test_renewal_without_second_factor_logs_out(rsite):
    """eli's second factor is removed at the provider: the renewed ID token says amr ["pwd"] only."""
    browser = Browser(rsite)
    assert browser.login("eli").status_code == 200
    assert api_user(rsite, browser).status_code == 200
    change_account(rsite, "eli", otp=None)
    event = assert_logged_out(rsite, browser, "eli", "mfa")
    assert "amr ['pwd'] contains none of the accepted methods" in event["reason"]


def test_group_changes_apply_at_renewal(rsite):
    """Project roles follow the directory while the person stays; leaving the hub's group logs out."""
    browser = Browser(rsite)
    assert browser.login("fay").status_code == 200
    assert rsite.memberships("fay") == {"sleep": ("observer", "oidc-group-sync")}

    change_account(rsite, "fay", groups=["hub-users"])

    def membership_gone() -> bool:
        assert api_user(rsite, browser).status_code == 200
        return rsite.memberships("fay") == {}

    wait_for(membership_gone, "fay's sleep membership being removed")
    assert "hub-users" in rsite.hub_users()["fay"]["groups"]

    change_account(rsite, "fay", groups=[])
    assert_logged_out(rsite, browser, "fay", "not-allowed")


def test_server_start_is_refused_once_the_provider_says_no(rsite):
    """A start asks the provider first (refresh_pre_spawn); gus was disabled: no server, logged out."""
    browser = Browser(rsite)
    assert browser.login("gus").status_code == 200
    assert api_user(rsite, browser).status_code == 200
    change_account(rsite, "gus", disabled=True)
    xsrf = browser.session.cookies.get("_xsrf")
    response = browser.session.post(
        f"{rsite.layout.hub_url}/hub/api/users/gus/server",
        headers={"X-XSRFToken": xsrf} if xsrf else {},
        timeout=30,
    )
    assert response.status_code == 403, response.text
    assert_logged_out(rsite, browser, "gus", "refresh-refused")


async def test_refresh_user_directly_against_the_provider(rsite, tmp_path, monkeypatch):
    """The authenticator's refresh_user with a login the hub made: renewed, once for concurrent calls, then
    refused when the account is disabled."""
    browser = Browser(rsite)
    assert browser.login("hal").status_code == 200
    state, _ = auth_state(rsite, "hal")
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", rsite.hub_env["JUPYTERHUB_CRYPT_KEY"])
    config = Config()
    config.SecureHPC.audit_log = str(tmp_path / "audit.jsonl")
    config.Authenticator.enable_auth_state = True
    config.SecureHPCAuthenticator.oidc_issuer = rsite.layout.oidc_issuer
    config.SecureHPCAuthenticator.client_id = oidc.HUB_CLIENT_ID
    config.SecureHPCAuthenticator.client_secret = oidc.client_secret(rsite.layout)
    config.SecureHPCAuthenticator.manage_groups = True
    config.SecureHPCAuthenticator.allowed_groups = {"hub-users"}
    authenticator = SecureHPCAuthenticator(config=config)
    audit = AuditLog(tmp_path / "audit.jsonl")
    user = StoredUser("hal", state)

    first, second = await asyncio.gather(authenticator.refresh_user(user), authenticator.refresh_user(user))
    model = first if isinstance(first, dict) else second
    assert model["name"] == "hal" and model["groups"] == ["hub-users"]
    assert {first is True, second is True} == {True, False}  # one asked the provider, the other took its answer
    assert [e["outcome"] for e in audit.tail(10)] == ["allowed"]
    assert set(user.state) == KEPT_KEYS and user.state["securehpc_verified_at"] > state["securehpc_verified_at"]
    SEEN_REFRESH_TOKENS.append(user.state["refresh_token"])

    change_account(rsite, "hal", disabled=True)
    assert await authenticator.refresh_user(user) is False
    (event,) = audit.tail(1)
    assert (event["action"], event["outcome"], event["details"]["check"]) == (
        "login.refresh",
        "denied",
        "refresh-refused",
    )
    assert set(user.state) == {"securehpc_logged_out"}


def test_no_refresh_token_or_crypt_key_in_logs(rsite):
    """Last: nothing the hub keeps secret reached a log, the audit trail, the config file or a pid file."""
    assert SEEN_REFRESH_TOKENS, "the tests above saw no refresh token"
    crypt_key = rsite.hub_env["JUPYTERHUB_CRYPT_KEY"]
    texts = {str(rsite.audit): rsite.audit.read_text()}
    texts.update({str(p): p.read_text(errors="replace") for p in rsite.layout.log_dir.glob("*.log")})
    texts[str(hub.config_file(rsite.layout))] = hub.config_file(rsite.layout).read_text()
    texts.update({str(p): p.read_text() for p in rsite.layout.run_dir.glob("*.pid.json")})
    for name, text in texts.items():
        assert crypt_key not in text, name
        assert not any(token in text for token in SEEN_REFRESH_TOKENS), name
