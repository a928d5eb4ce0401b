"""``securehpc-node serve``: the user's Jupyter server in the sandbox, reachable only through two relays.

Nothing the sandbox can write decides where traffic goes:

- the launcher binds the server's listening socket in a private folder that is never part of the sandbox
  and hands it in as a descriptor (``SECUREHPC_SERVER_FD``); the public relay (node TCP port, for the hub's
  proxy) connects only to that very socket (``relay.py``);
- the server's audit events, and the parameter names of the notebooks it saves, come out on a pipe
  (``SECUREHPC_AUDIT_FD``) that only the server holds; the launcher checks them and forwards them to the hub
  with a credential the sandbox never sees (``hubreport.py``);
- the hub API is reached through a socket in a read-only folder, and the relay behind it passes only the
  requests the server needs (``hubrelay.py``);
- the server's own log stays inside: the job's output carries the launcher's messages only, is readable by
  the user alone and is removed when the session ends normally.

The port is reported to the hub only once the server answers, so that the hub's first readiness check
succeeds. Activity is reported by the launcher from the traffic it relays (the hub records its own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
import urllib.parse
from collections import deque
from functools import partial
from pathlib import Path

from ..session.env import AUDIT_FD_ENV, SERVER_FD_ENV, SESSION_POLICY_ENV
from ..session.reports import STAGE_KEY, STAGE_MOUNTING, STAGE_STARTING
from ..session.spec import SessionSpec
from . import relay
from .errors import EX_SOFTWARE, EX_USAGE, LaunchError
from .hubrelay import HubRelay
from .hubreport import HubReporter, open_pipe_reader, parameters_refusal, read_audit_pipe
from .launcher import end_sandbox_on_signals, prepare, sandbox_command, take_token
from .sandbox import (
    HUB_DIR,
    HUB_SOCKET,
    JUPYTER_CONFIG_DIR,
    JUPYTER_DATA_DIR,
    SERVER_SOCKET_NAME,
    SESSION_FILE,
    WORKSPACE,
)

log = logging.getLogger(__name__)

READY_TIMEOUT = 300.0
# How often the launcher tells the hub that the server is used (JupyterHub's own default is 300 s).
ACTIVITY_INTERVAL_ENV = "JUPYTERHUB_ACTIVITY_INTERVAL"
DEFAULT_ACTIVITY_INTERVAL = 300.0
# Variables of the hub that the server must not get: activity is the launcher's report, not the sandbox's.
DROPPED_HUB_VARIABLES = frozenset({"JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_ACTIVITY_INTERVAL"})
# Lines of the sandbox's output shown when the server does not start: the launcher's own and the server
# extension's refusals to start (never the server's access log: paths, cookies, file content in errors).
SHOWN_ON_FAILURE = ("securehpc-node:", "securehpc: refusing to start")


# The only place that enables the server extension (the package installs no jupyter_server_config.d file, so
# other Jupyter servers of the environment stay stock): on the command line, so that no configuration file
# can turn it off. The proxy stays off (the extension switches it off too) and the extension manager installs
# nothing.
SERVER_EXTENSION_ARGS = (
    "--ServerApp.jpserver_extensions",
    "jupyter_securehpc.serverext=True",
    "--ServerApp.jpserver_extensions",
    "jupyter_server_proxy=False",
    "--LabApp.extension_manager=readonly",
)


# Saving a notebook signs it (nbformat's NotebookNotary): its secret and signature database would live in
# Jupyter's data folder, which is read-only in the sandbox, and every save failed. Both stay private to the
# session: the secret in the sandbox's own /tmp, the signatures in memory (a notebook is trusted in the session
# that ran it, not later: its outputs' HTML and JavaScript are not shown as trusted when it is reopened).
NOTARY_ARGS = (
    "--NotebookNotary.db_file=:memory:",
    # In the sandbox's private /tmp (a tmpfs of its own).
    "--NotebookNotary.secret_file=/tmp/jupyter-notebook-secret",
)


def default_program() -> list[str]:
    return [
        "jupyterhub-singleuser",
        f"--ServerApp.sock={SERVER_SOCKET_NAME}",
        f"--ServerApp.root_dir={WORKSPACE}",
        *NOTARY_ARGS,
        *SERVER_EXTENSION_ARGS,
    ]


def session_file(spec: SessionSpec) -> bytes:
    """What the server extension enforces (serverext/session.py): who, where, which role and policy."""
    return spec.session_file().to_bytes()


def hub_api_address(api_url: str) -> tuple[str, int, str]:
    """host, port and path of the hub API URL the spawner gave the job."""
    parsed = urllib.parse.urlsplit(api_url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise LaunchError(f"JUPYTERHUB_API_URL must be http://HOST:PORT/...; got {api_url!r}", EX_USAGE)
    return parsed.hostname, parsed.port or 80, parsed.path.rstrip("/")


def server_env(api_path: str, server_fd: int, audit_fd: int) -> dict[str, str]:
    """JupyterHub's variables for the single-user server, the hub API moved onto the inside socket, and
    Jupyter's search paths limited to the read-only environment."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("JUPYTERHUB_") and name not in DROPPED_HUB_VARIABLES
    }
    inside_api = "http+unix://" + urllib.parse.quote(f"{HUB_DIR}/{HUB_SOCKET}", safe="")
    env["JUPYTERHUB_API_URL"] = inside_api + api_path
    # jupyter-server refuses a unix socket together with a port; the service URL only names the prefix.
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:8888{prefix}"
    # No configuration, kernel spec, extension or static file from a folder a kernel can write.
    env["JUPYTERHUB_DISABLE_USER_CONFIG"] = "1"
    env["JUPYTER_CONFIG_DIR"] = JUPYTER_CONFIG_DIR
    env["JUPYTER_DATA_DIR"] = JUPYTER_DATA_DIR
    env["JUPYTER_RUNTIME_DIR"] = "/tmp/jupyter-runtime"  # noqa: S108 - the sandbox's private tmpfs
    env["PYTHONNOUSERSITE"] = "1"
    env[SERVER_FD_ENV] = str(server_fd)
    env[AUDIT_FD_ENV] = str(audit_fd)
    env[SESSION_POLICY_ENV] = SESSION_FILE
    return env


def activity_interval() -> float:
    try:
        return max(1.0, float(os.environ.get(ACTIVITY_INTERVAL_ENV, DEFAULT_ACTIVITY_INTERVAL)))
    except ValueError:
        return DEFAULT_ACTIVITY_INTERVAL


def private_output() -> Path | None:
    """Make the job's output file (Slurm's --output, our stdout) readable by the user alone; its path, if
    it is a regular file of ours that a normal end may remove."""
    path = None
    for fd in (1, 2):
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
            os.fchmod(fd, 0o600)
            if fd == 1:
                with contextlib.suppress(OSError):
                    named = Path(os.readlink("/proc/self/fd/1"))
                    same = named.stat()
                    if (same.st_dev, same.st_ino) == (info.st_dev, info.st_ino):
                        path = named
    return path


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


class SandboxOutput:
    """The sandbox's stdout and stderr: kept in memory (the last lines), never copied to the job's output,
    except the launcher's and the extension's own lines when the server fails."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=200)

    async def read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    def show_failure(self) -> None:
        for line in self.lines:
            if line.startswith(SHOWN_ON_FAILURE) or SHOWN_ON_FAILURE[1] in line:
                print(line[line.find("securehpc") :], flush=True)


async def report_while_running(reporter: HubReporter, traffic: relay.Traffic, interval: float) -> None:
    """Every second: forward queued audit events. Every ``interval``: activity, if the relay saw traffic."""
    reported = time.time()
    loop = asyncio.get_running_loop()
    next_activity = loop.time() + interval
    while True:
        await asyncio.sleep(1.0)
        await reporter.flush()
        if loop.time() >= next_activity:
            next_activity = loop.time() + interval
            if traffic.last > reported:
                reported = traffic.last
                await reporter.activity()


def relay_refusal_event(spec: SessionSpec, method: str, target: str, status: int, reason: str) -> dict:
    """An audit event for a request the hub relay refused, in the server extension's event shape."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": spec.user,
        "action": "hub_api.refused",
        "object": f"{method} {target}",
        "project": spec.project,
        "outcome": "denied",
        "reason": reason,
        "details": {"method": method if method.isalpha() and method.isupper() else "OTHER", "status": status},
    }


async def serve(spec: SessionSpec, program: list[str], *, ip: str, port: int, token_from_stdin: bool) -> int:
    output_file = private_output()
    token = take_token(token_from_stdin)
    reporter = HubReporter()  # takes the report secret out of the environment before anything starts
    stopped = asyncio.Event()
    try:
        status = await _serve(spec, program, ip=ip, port=port, token=token, reporter=reporter, stopped=stopped)
    finally:
        reporter.close()
    # A normal end (stopped by the hub, or the server exited cleanly): the job's output has done its job.
    if output_file is not None and (status == 0 or stopped.is_set()):
        with contextlib.suppress(OSError):
            output_file.unlink()
    return status


async def _serve(
    spec: SessionSpec,
    program: list[str],
    *,
    ip: str,
    port: int,
    token: str,
    reporter: HubReporter,
    stopped: asyncio.Event,
) -> int:
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")
    # A bad hub API URL is found before the token is used, as everything else that needs no key.
    session = prepare(spec, token, checks=[lambda: hub_api_address(api_url)])
    del token
    api_host, api_port, api_path = hub_api_address(api_url)
    reporter.stage(STAGE_KEY)
    private = Path(tempfile.mkdtemp(prefix="securehpc-session-"))  # 0700: never part of the sandbox
    hub_dir = private / "hub"
    hub_dir.mkdir(mode=0o700)
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task] = []
    sandbox = None
    listener, own_socket = relay.bind_listening(private / "jupyter.sock")
    audit_read, audit_write = os.pipe()
    status_read, status_write = os.pipe()
    ready_read, ready_write = os.pipe()
    try:
        hub_relay = HubRelay(
            api_host, api_port, api_path,
            lambda *refusal: reporter.queue(relay_refusal_event(spec, *refusal)),
        )  # fmt: skip
        servers.append(await hub_relay.listen(hub_dir / HUB_SOCKET))
        argv, fds = sandbox_command(
            session,
            program or default_program(),
            extra_env=server_env(api_path, listener.fileno(), audit_write),
            hub_dir=hub_dir,
            session_data=session_file(spec),
            program_fds=[listener.fileno(), audit_write],
            status_fd=status_write,
            ready_fd=ready_read,
        )
        try:
            sandbox = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=[*fds, listener.fileno(), audit_write, status_write, ready_read],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            for fd in [*fds, audit_write, status_write, ready_read]:
                os.close(fd)
            # The sandbox holds the listening socket now; the launcher connects to it by its path.
            listener.close()
        sandbox_output = SandboxOutput()
        tasks.append(asyncio.create_task(sandbox_output.read(sandbox.stdout)))
        refused = partial(parameters_refusal, spec.user, spec.project)
        tasks.append(asyncio.create_task(read_audit_pipe(await open_pipe_reader(audit_read), reporter, refused)))
        status_reader = await open_pipe_reader(status_read)
        mounted = asyncio.create_task(status_reader.readline())
        reporter.stage(STAGE_MOUNTING)
        loop = asyncio.get_running_loop()
        end_sandbox_on_signals(sandbox, stopped)
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        deadline = loop.time() + READY_TIMEOUT
        # The program starts only once the stores are mounted (or the sandbox ended): wait for that first, so
        # that "starting" is reported when it happens. A readiness check connects to the listening socket at
        # once and then waits until the server answers, which would hold the report back until then.
        await asyncio.wait([mounted], timeout=READY_TIMEOUT)
        starting = False
        while True:
            # Mounted first: a server that answers has its stores mounted, so "starting" is never skipped.
            if not starting and mounted.done() and mounted.result():
                starting = True
                reporter.stage(STAGE_STARTING)
            if await server_answers(own_socket.path, prefix):
                break
            if sandbox.returncode is not None or loop.time() > deadline or stopped.is_set():
                await asyncio.sleep(0.2)  # the last lines of the sandbox's output
                sandbox_output.show_failure()
                raise LaunchError("the Jupyter server did not start (its own log stays in the session)", EX_SOFTWARE)
            await asyncio.sleep(0.05)  # each check is one connect on a local socket
        if not starting:
            reporter.stage(STAGE_STARTING)
        os.close(ready_write)  # the prefetch may start now
        ready_write = -1
        traffic = relay.Traffic()
        public = await relay.tcp_to_unix(ip, port, own_socket, traffic)
        servers.append(public)
        await reporter.port(public.sockets[0].getsockname()[1])
        tasks.append(asyncio.create_task(report_while_running(reporter, traffic, activity_interval())))
        status = await sandbox.wait()
        if status != 0 and not stopped.is_set():
            sandbox_output.show_failure()
        return 128 - status if status < 0 else status
    finally:
        if sandbox is not None and sandbox.returncode is None:
            sandbox.kill()
            await sandbox.wait()
        for task in tasks:
            task.cancel()
        for server in servers:
            server.close()
        if ready_write >= 0:
            os.close(ready_write)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reporter.flush(), 30)
        print(f"securehpc-node: {reporter.summary()}", flush=True)
        shutil.rmtree(private, ignore_errors=True)
