"""A user of the local hub, as a browser and a script see it: OpenID login with MFA, an API token, code run
in a kernel of a started server.

Shared by the end-to-end tests and the spawn benchmark (benchmarks/spawn_time.py)."""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_securehpc.devcluster import oidc


def add_account(layout, username: str) -> dict[str, str]:
    """A hub user at the local OpenID provider; returns its login (password and one-time code)."""
    password, otp = secrets.token_urlsafe(12), f"{secrets.randbelow(10**6):06d}"
    account = {"username": username, "password": password, "otp": otp, "groups": [oidc.HUB_USERS_GROUP],
               "name": username, "email": f"{username}@test.invalid", "omit_amr": False}  # fmt: skip
    accounts = [a for a in oidc.accounts(layout) if a["username"] != username]
    oidc.write_accounts(layout, [*accounts, account])
    return {"username": username, "password": password, "otp": otp}


def login(layout, account: dict[str, str]) -> requests.Session:
    """The browser flow: the hub's login page, the provider's form (password and code), back to the hub."""
    browser = requests.Session()
    form = browser.get(f"{layout.hub_url}/hub/oauth_login", timeout=30)
    action = html.unescape(re.search(r'<form id="login" method="post" action="([^"]+)"', form.text).group(1))
    response = browser.post(
        layout.oidc_issuer + action,
        data={"login": account["username"], "password": account["password"], "otp": account["otp"]},
        timeout=30,
    )
    assert response.status_code == 200 and "/hub/" in response.url, response.url
    return browser


def api_token(layout, browser: requests.Session, username: str, note: str = "tests") -> str:
    """A token for the hub's REST API, made by the logged-in user."""
    xsrf = browser.cookies.get("_xsrf")
    response = browser.post(
        f"{layout.hub_url}/hub/api/users/{username}/tokens",
        json={"note": note, "expires_in": 3600},
        headers={"X-XSRFToken": xsrf} if xsrf else {},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def run_in_kernel(base: str, token: str, code: str) -> str:
    """Start a kernel on the server at ``base`` and run ``code`` over the websocket; its printed output."""
    headers = {"Authorization": f"token {token}"}
    response = requests.post(f"{base}/api/kernels", headers=headers, json={}, timeout=60)
    assert response.status_code == 201, f"{response.status_code} {response.text}"
    kernel = response.json()
    url = base.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels"
    connection = await websocket_connect(HTTPRequest(url, headers=headers))
    msg_id = uuid.uuid4().hex
    await connection.write_message(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "e2e", "session": msg_id,
                           "version": "5.3", "date": ""},
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
                "channel": "shell",
                "buffers": [],
            }
        )
    )  # fmt: skip
    output = ""
    while True:
        message = json.loads(await asyncio.wait_for(connection.read_message(), 120))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            output += message["content"]["text"]
        if message["msg_type"] == "error":
            raise AssertionError("\n".join(message["content"]["traceback"]))
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            connection.close()
            return output


def run_code(base: str, token: str, code: str) -> str:
    """``run_in_kernel`` from synchronous code."""
    return asyncio.run(run_in_kernel(base, token, code))


def wait_ready(layout, token: str, user: str, server: str, timeout: float = 100,
               explain: Callable[[], str] = lambda: "") -> dict:  # fmt: skip
    """The server's model once the hub says it is ready; fails at once if the server is gone, with ``explain()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = requests.get(
            f"{layout.hub_url}/hub/api/users/{user}", headers={"Authorization": f"token {token}"}, timeout=30
        ).json()
        state = info.get("servers", {}).get(server)
        if state and state.get("ready"):
            return state
        if not state:
            raise AssertionError(f"server {server} is gone: {info}\n{explain()}")
        time.sleep(0.5)
    raise AssertionError(f"server {server} not ready in {timeout}s\n{explain()}")
