"""``securehpc-node serve``: the user's Jupyter server in the sandbox, reachable only through two relays.

Inside, the server listens on ``/sockets/jupyter.sock`` and reaches the hub API through
``/sockets/hub-api.sock`` (``JUPYTERHUB_API_URL=http+unix://...``). Outside, this process relays a node
TCP port to the server's socket for the hub's proxy, and the hub-API socket to the real hub API. The port
is reported to the hub only once the server answers, so that the hub's first readiness check succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import urllib.parse
from pathlib import Path

from . import relay
from .hubreport import AuditFollower, HubReporter
from .launcher import EX_USAGE, LaunchError, check_ready, sandbox_command, take_token, unwrap_keys
from .sandbox import SERVER_SOCKET, SESSION_FILE, SOCKETS, STORES_MOUNTED, WORKSPACE
from .spec import SessionSpec

log = logging.getLogger(__name__)

HUB_SOCKET = "hub-api.sock"
READY_TIMEOUT = 300.0
AUDIT_FILE = "audit.jsonl"


def default_program() -> list[str]:
    return [
        "jupyterhub-singleuser",
        f"--ServerApp.sock={SOCKETS}/{SERVER_SOCKET}",
        f"--ServerApp.root_dir={WORKSPACE}",
        # On the command line, so that no configuration file can turn it off.
        "--ServerApp.jpserver_extensions",
        "jupyter_securehpc.serverext=True",
    ]


def session_file(spec: SessionSpec) -> bytes:
    """What the server extension enforces (serverext/session.py): who, where, which role and policy."""
    return json.dumps(
        {"project": spec.project, "user": spec.user, "role": spec.role.value, "policy": spec.policy}
    ).encode()


def hub_api_address(api_url: str) -> tuple[str, int, str]:
    """host, port and path of the hub API URL the spawner gave the job."""
    parsed = urllib.parse.urlsplit(api_url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise LaunchError(f"JUPYTERHUB_API_URL must be http://HOST:PORT/...; got {api_url!r}", EX_USAGE)
    return parsed.hostname, parsed.port or 80, parsed.path.rstrip("/")


def server_env(api_path: str) -> dict[str, str]:
    """JupyterHub's variables for the single-user server, with the hub API moved onto the inside socket."""
    env = {name: value for name, value in os.environ.items() if name.startswith("JUPYTERHUB_")}
    inside_api = "http+unix://" + urllib.parse.quote(f"{SOCKETS}/{HUB_SOCKET}", safe="")
    env["JUPYTERHUB_API_URL"] = inside_api + api_path
    if "JUPYTERHUB_ACTIVITY_URL" in env:
        activity_path = urllib.parse.urlsplit(env["JUPYTERHUB_ACTIVITY_URL"]).path
        env["JUPYTERHUB_ACTIVITY_URL"] = inside_api + activity_path
    # jupyter-server refuses a unix socket together with a port; the service URL only names the prefix.
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:8888{prefix}"
    env["SECUREHPC_SERVER_SOCKET"] = f"{SOCKETS}/{SERVER_SOCKET}"
    env["SECUREHPC_SESSION_POLICY"] = SESSION_FILE
    # The extension's refusals, appended inside; the launcher copies each line to the job's output.
    env["SECUREHPC_AUDIT_LOG"] = f"{SOCKETS}/{AUDIT_FILE}"
    return env


async def server_answers(socket_path: Path, prefix: str) -> bool:
    """One HTTP request over the unix socket: any HTTP answer means the server is up."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
    except OSError:
        return False
    try:
        writer.write(f"GET {prefix}api HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        return status.startswith(b"HTTP/")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def serve(spec: SessionSpec, program: list[str], *, ip: str, port: int, token_from_stdin: bool) -> int:
    token = take_token(token_from_stdin)
    mounts = check_ready(spec)
    api_host, api_port, api_path = hub_api_address(os.environ.get("JUPYTERHUB_API_URL", ""))
    keys = unwrap_keys(spec, token)
    del token
    reporter = HubReporter()
    reporter.stage("key")
    sockets = Path(tempfile.mkdtemp(prefix="securehpc-sockets-"))  # 0700, the user's
    servers: list[asyncio.Server] = []
    sandbox = None
    try:
        servers.append(await relay.unix_to_tcp(sockets / HUB_SOCKET, api_host, api_port))
        argv, fds = sandbox_command(
            spec,
            mounts,
            keys,
            program or default_program(),
            extra_env=server_env(api_path),
            sockets=sockets,
            session_data=session_file(spec),
        )
        try:
            sandbox = await asyncio.create_subprocess_exec(*argv, pass_fds=fds)
        finally:
            for fd in fds:
                os.close(fd)
        reporter.stage("mounting")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, sandbox.kill)
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        deadline = loop.time() + READY_TIMEOUT
        mounted = False
        while True:
            # The marker first: a server that answers has its stores mounted, so "starting" is never skipped.
            if not mounted and (sockets / STORES_MOUNTED).exists():
                mounted = True
                reporter.stage("starting")
            if await server_answers(sockets / SERVER_SOCKET, prefix):
                break
            if sandbox.returncode is not None or loop.time() > deadline:
                raise LaunchError("the Jupyter server did not start; see the job's output above", 70)
            await asyncio.sleep(0.05)  # each check is one connect on a local socket
        if not mounted:
            reporter.stage("starting")
        public = await relay.tcp_to_unix(ip, port, sockets / SERVER_SOCKET)
        servers.append(public)
        await reporter.port(public.sockets[0].getsockname()[1])
        follower = AuditFollower(sockets / AUDIT_FILE)
        following = asyncio.create_task(follower.follow(reporter))
        status = await sandbox.wait()
        following.cancel()
        await reporter.audit(follower.new_lines())
        return 128 - status if status < 0 else status
    finally:
        if sandbox is not None and sandbox.returncode is None:
            sandbox.kill()
            await sandbox.wait()
        for server in servers:
            server.close()
        shutil.rmtree(sockets, ignore_errors=True)
        reporter.close()
