"""Start a real jupyter-server (with or without the securehpc extension) and talk raw HTTP to it.

Used by ``tests/serverext/test_serverext.py`` and ``benchmarks/serverext_requests.py``. The server is a subprocess on a
free loopback port, with its own Jupyter config, data and runtime folders, stopped by pid. The client is
``http.client``: higher-level clients normalise ``%2e%2e`` and ``..`` away, which is exactly what the tests
must send unchanged.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

CANARY = "CANARY-7f3a9c-patient-record"
EXTENSION = "jupyter_securehpc.serverext"
TEST_TOKEN = "test-token-5b1c"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def notebook_json(text: str) -> dict:
    """A small nbformat-4 notebook whose output holds ``text``."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": 1,
                "id": "c1",
                "metadata": {},
                "outputs": [{"name": "stdout", "output_type": "stream", "text": text + "\n"}],
                "source": "print('hello')",
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def make_projects(base: Path, listing_entries: int = 0) -> Path:
    """``base/projA`` (the root) and its sibling ``base/projAB``; returns the root.

    Every file holds ``CANARY``, so a response body that contains it leaked file bytes.
    """
    root, sibling = base / "projA", base / "projAB"
    (root / "sub").mkdir(parents=True)
    sibling.mkdir()
    (root / "data.csv").write_text(f"id,value\n1,{CANARY}\n")
    (root / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + CANARY.encode() + b"\x00\x01")
    (root / "notebook.ipynb").write_text(json.dumps(notebook_json(CANARY)))
    (root / "sub" / "inner.txt").write_text(CANARY)
    (root / ".hidden.txt").write_text(CANARY)
    (sibling / "secret.txt").write_text(CANARY)
    for index in range(listing_entries):
        (root / "sub" / f"entry{index:04}.txt").write_text("x")
    return root


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Client:
    """Raw HTTP to one server, authenticated by token header, by login cookie, or not at all."""

    port: int
    token: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    xsrf: str | None = None
    timeout: float = 30.0

    def request(
        self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None
    ) -> Response:
        send = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            send.setdefault("Content-Type", "application/json")
        if self.token:
            send["Authorization"] = f"token {self.token}"
        if self.cookies:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.xsrf:
            send["X-XSRFToken"] = self.xsrf
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=send)
            reply = conn.getresponse()
            return Response(reply.status, reply.headers, reply.read())
        finally:
            conn.close()

    @classmethod
    def with_cookie(cls, port: int, token: str) -> Client:
        """Log in through /login with the token as password, as a browser does; keep the cookies and _xsrf."""
        anonymous = cls(port)
        page = anonymous.request("GET", "/login")
        cookies = _cookies(page)
        xsrf = cookies["_xsrf"]
        login = cls(port, cookies=dict(cookies)).request(
            "POST",
            "/login",
            body=urlencode({"password": token, "_xsrf": xsrf}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if login.status not in (302, 303):
            raise RuntimeError(f"login failed: {login.status} {login.body[:200]!r}")
        cookies.update(_cookies(login))
        if not any(name.startswith("username-") for name in cookies):
            raise RuntimeError("login set no session cookie")
        return cls(port, cookies=cookies, xsrf=xsrf)


def _cookies(response: Response) -> dict[str, str]:
    jar: dict[str, str] = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        cookie = SimpleCookie()
        cookie.load(header)
        jar.update({name: morsel.value for name, morsel in cookie.items()})
    return jar


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    token: str
    root: Path
    log: Path
    audit: Path | None

    def client(self, auth: str = "token") -> Client:
        if auth == "token":
            return Client(self.port, token=self.token)
        if auth == "cookie":
            return Client.with_cookie(self.port, self.token)
        return Client(self.port)

    def audit_lines(self) -> list[dict]:
        if not self.audit or not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def stop(self) -> None:
        stop_process(self.proc)


def server_env(
    workdir: Path, policy: Path | None, audit: Path | None, config_path: Path | None = None
) -> dict[str, str]:
    """Our environment without any Jupyter or securehpc settings of the caller, plus private Jupyter folders."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SECUREHPC_"))}
    for name in ("config", "data", "runtime"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    env.update(
        JUPYTER_CONFIG_DIR=str(workdir / "config"),
        JUPYTER_DATA_DIR=str(workdir / "data"),
        JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
        PYTHONUNBUFFERED="1",
    )
    if config_path is not None:
        env["JUPYTER_CONFIG_PATH"] = str(config_path)
    if policy is not None:
        env["SECUREHPC_SESSION_POLICY"] = str(policy)
    if audit is not None:
        env["SECUREHPC_AUDIT_LOG"] = str(audit)
    return env


def launch(
    workdir: Path,
    root: Path,
    *,
    extension: bool | None = True,
    session: dict | None = None,
    policy_path: Path | None = None,
    audit: Path | None = None,
    token: str = TEST_TOKEN,
    wait: bool = True,
    config_path: Path | None = None,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    user: str | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Server:
    """Start ``python -m jupyter_server`` on a free loopback port; with ``wait``, until /api/status answers.

    ``session`` is written to ``policy_path`` (default ``workdir/session.json``, read-only) when given.
    ``extension``: on or off on the command line (as the node launcher does), or None to leave it to the
    config files (``config_path`` is added to ``$JUPYTER_CONFIG_PATH``). ``extra_args`` go on the command
    line (``--ServerApp.jpserver_extensions=...`` there replaces the one made from ``extension``);
    ``extra_env`` is added to the environment; ``user`` runs the server as that (unprivileged) user;
    ``pass_fds`` are inherited by the server (the launcher's audit pipe, ``SECUREHPC_AUDIT_FD``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if session is not None:
        policy_path = policy_path or workdir / "session.json"
        policy_path.write_text(json.dumps(session))
        policy_path.chmod(0o444)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
    ]
    if extension is not None and not any(arg.startswith("--ServerApp.jpserver_extensions") for arg in extra_args):
        argv.append(f"--ServerApp.jpserver_extensions={{'{EXTENSION}': {extension}}}")
    argv.extend(extra_args)
    log = workdir / f"server-{port}.log"
    env = server_env(workdir, policy_path, audit, config_path)
    env.update(extra_env or {})
    if user is not None:
        chown_tree(workdir, user)  # its config, data and runtime folders
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, user=user,
                                pass_fds=pass_fds)  # fmt: skip
    server = Server(proc, port, token, root, log, audit)
    if wait:
        try:
            wait_ready(server)
        except BaseException:
            server.stop()
            raise
    return server


def chown_tree(path: Path, user: str) -> None:
    """Give ``path`` and everything under it to ``user`` (symlinks themselves, not their targets)."""
    import pwd

    entry = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, d) for d in dirs), *(os.path.join(folder, f) for f in files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


class UnixClient:
    """Raw HTTP over a unix socket path (what the launcher's relay does), token auth."""

    def __init__(self, path: Path, token: str | None = None, timeout: float = 30.0) -> None:
        self.path, self.token, self.timeout = path, token, timeout

    def request(self, method: str, url: str, body: dict | None = None) -> Response:
        headers = {"Host": "localhost"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        conn.sock = sock
        try:
            conn.request(method, url, body=data, headers=headers)
            reply = conn.getresponse()
            return Response(reply.status, reply.headers, reply.read())
        finally:
            conn.close()


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    client = server.client("token")
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"jupyter server exited with {server.proc.returncode}:\n{tail(server.log)}")
        try:
            if client.request("GET", "/api/status").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"jupyter server did not answer within {timeout}s:\n{tail(server.log)}")


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- listing the web app's routes (run in a subprocess: a ServerApp is a process-wide singleton) -----------

ROUTES_SCRIPT = r"""
import json, sys
from jupyter_server.serverapp import ServerApp, _has_tornado_web_authenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

app = ServerApp()
app.initialize(argv=sys.argv[1:])
rows = []
def walk(router):
    for rule in router.rules:
        target = rule.target
        if hasattr(target, "rules"):
            walk(target)
            continue
        pattern = getattr(rule.matcher, "regex", None)
        for method in target.SUPPORTED_METHODS:
            func = getattr(target, method.lower())
            if func is web.RequestHandler._unimplemented_method:
                continue
            rows.append({
                "pattern": pattern.pattern if pattern is not None else str(rule.matcher),
                "handler": target.__module__ + "." + target.__qualname__,
                "method": method,
                "authenticated": _has_tornado_web_authenticated(func)
                    or getattr(func, "__allow_unauthenticated", None) is False,
                "allow_unauthenticated": getattr(func, "__allow_unauthenticated", None) is True,
                "jupyter_handler": issubclass(target, JupyterHandler),
            })
walk(app.web_app.default_router)
print("ROUTES=" + json.dumps({"rows": rows, "allow_unauthenticated_access": app.allow_unauthenticated_access,
                             "authorizer": type(app.authorizer).__name__}))
"""


def list_routes(
    workdir: Path,
    root: Path,
    session: dict,
    audit: Path,
    extensions: dict[str, bool] | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> dict:
    """Every (route, handler, method) of a server set up like ``launch`` does, without serving.

    ``extensions`` are enabled besides ours (JupyterLab, Notebook 7, ...); ``extra_env`` is added."""
    policy = workdir / "routes-session.json"
    policy.write_text(json.dumps(session))
    argv = [
        sys.executable,
        "-c",
        ROUTES_SCRIPT,
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        "--ServerApp.open_browser=False",
        "--IdentityProvider.token=unused-token",
        f"--ServerApp.jpserver_extensions={ {EXTENSION: True, **(extensions or {})}!r}",
        *extra_args,
    ]
    env = server_env(workdir, policy, audit)
    env.update(extra_env or {})
    done = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    for line in done.stdout.splitlines():
        if line.startswith("ROUTES="):
            return json.loads(line[len("ROUTES=") :])
    raise RuntimeError(f"route listing failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
