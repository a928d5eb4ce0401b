"""The server process as the node launcher starts it: its socket and audit pipe as descriptors, no tokens for
kernels, not dumpable, no core files.

A real server runs as an unprivileged user (as in the sandbox) on a listening unix socket the test created and
passes as ``SECUREHPC_SERVER_FD``, with the write end of a pipe as ``SECUREHPC_AUDIT_FD`` and
``--ServerApp.sock`` naming a path in a folder that does not exist. The tests check that it serves on that
descriptor only (a socket put at the path later, as a kernel would, changes nothing for it), writes one JSON
line per refusal with exactly the contract's keys, keeps tokens and both descriptors from its kernels, and
that its memory and environment are out of reach of same-uid processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serverext_helpers import (
    CANARY,
    EXTENSION,
    UnixClient,
    chown_tree,
    make_projects,
    server_env,
    stop_process,
    tail,
)

USER = "nobody"
TOKEN = "fd-test-token-81c2"
PROMISED_SOCK = "/securehpc/jupyter.sock"  # what the launcher passes: a read-only folder, never bound
EVENT_KEYS = {"time", "actor", "action", "object", "project", "outcome", "reason", "details"}
SECRET_ENV = {
    "JUPYTER_TOKEN": TOKEN,  # the server's own login token: read, then removed
    "JUPYTERHUB_API_TOKEN": "hub-api-token-3f9a",
    "JPY_API_TOKEN": "jpy-api-token-77d1",
    "SOMETHING_TOKEN": "other-token-c0de",
}


@pytest.fixture
def base() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as an unprivileged user")
    entry = pwd.getpwnam(USER)
    path = Path(tempfile.mkdtemp(prefix="securehpc-fds-", dir="/tmp"))
    os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class FdServer:
    proc: subprocess.Popen
    listener: socket.socket
    socket_path: Path
    audit_read: int
    log: Path

    def client(self, path: Path | None = None, token: str | None = TOKEN) -> UnixClient:
        return UnixClient(path or self.socket_path, token)

    def audit_lines(self) -> list[dict]:
        chunks = []
        while True:
            try:
                chunk = os.read(self.audit_read, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        assert not data or data.endswith(b"\n"), data[-200:]
        return [json.loads(line) for line in data.splitlines()]


def start(base: Path, role: str = "data_owner", *, server_fd: int | None = None, audit_fd: int | None = None,
          wait: bool = True) -> FdServer:  # fmt: skip
    """The server as the launcher starts it; ``server_fd``/``audit_fd`` replace the good descriptors."""
    root = make_projects(base / "data")
    policy = base / "session.json"
    policy.write_text(json.dumps({"project": "cardio", "user": "alice", "role": role, "policy": {}}))
    policy.chmod(0o444)
    sockets = base / "sockets"  # stands in for the launcher's private folder
    sockets.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sockets / "jupyter.sock"))
    listener.listen(16)
    audit_read, audit_write = os.pipe()
    fcntl.fcntl(audit_read, fcntl.F_SETFL, fcntl.fcntl(audit_read, fcntl.F_GETFL) | os.O_NONBLOCK)
    workdir = base / "server"
    env = server_env(workdir, policy, None)
    env.update(SECRET_ENV, HOME=str(base))
    env["SECUREHPC_SERVER_FD"] = str(server_fd if server_fd is not None else listener.fileno())
    env["SECUREHPC_AUDIT_FD"] = str(audit_fd if audit_fd is not None else audit_write)
    chown_tree(base, USER)
    os.chown(sockets / "jupyter.sock", 0, 0)  # the launcher's, not the user's
    argv = [
        sys.executable, "-m", "jupyter_server", f"--ServerApp.sock={PROMISED_SOCK}", f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False", f"--ServerApp.jpserver_extensions={{'{EXTENSION}': True}}",
    ]  # fmt: skip
    log = base / "server.log"
    fds = {listener.fileno(), audit_write} | {fd for fd in (server_fd, audit_fd) if fd is not None}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, user=USER, pass_fds=sorted(fds)
        )
    os.close(audit_write)
    server = FdServer(proc, listener, sockets / "jupyter.sock", audit_read, log)
    if wait:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if server.client().request("GET", "/api/status").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError(f"server did not answer:\n{tail(log)}")
            time.sleep(0.1)
    return server


def stop(server: FdServer) -> None:
    stop_process(server.proc)
    server.listener.close()
    os.close(server.audit_read)


def test_serves_on_the_launchers_socket_and_writes_audit_lines(base: Path) -> None:
    server = start(base, role="data_scientist")
    try:
        client = server.client()
        assert client.request("GET", "/api/contents/notebook.ipynb?type=notebook").status == 200
        refused = client.request("GET", "/files/data.csv")
        assert refused.status == 403 and CANARY.encode() not in refused.body
        events = server.audit_lines()
        assert len(events) == 1, events
        event = events[0]
        assert set(event) == EVENT_KEYS and set(event["details"]) == {"method", "role", "status"}
        assert event["object"] == "/files/data.csv" and event["outcome"] == "denied"
        assert event["project"] == "cardio" and event["details"] == {"method": "GET", "role": "data_scientist",
                                                                     "status": 403}  # fmt: skip
        assert event["time"].endswith("Z") and "T" in event["time"]
        # Nothing bound, created or removed: the promised path's folder does not exist, ours holds our socket.
        assert not Path(PROMISED_SOCK).parent.exists()
        assert sorted(os.listdir(server.socket_path.parent)) == ["jupyter.sock"]
        assert not list((base / "server").glob("*.sock"))

        # "The kernel" moves the socket away and listens at its path: the server keeps its descriptor.
        moved = server.socket_path.with_name("moved.sock")
        os.rename(server.socket_path, moved)
        impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        impostor.bind(str(server.socket_path))
        impostor.listen(1)
        try:
            assert server.client(moved).request("GET", "/api/status").status == 200
            # Control characters in a path reach the line escaped, never as a second line.
            assert client_status(server.client(moved), "/files/a%0Ab.csv") in (403, 404)
            lines = server.audit_lines()
            assert len(lines) == 1 and "\n" not in lines[0]["object"], lines
        finally:
            impostor.close()
        assert sorted(os.listdir(server.socket_path.parent)) == ["jupyter.sock", "moved.sock"]
    finally:
        stop(server)
    assert server.proc.returncode == 0, tail(server.log)
    assert "Traceback" not in server.log.read_text(), tail(server.log)
    # The server removed nothing at exit either.
    assert sorted(os.listdir(server.socket_path.parent)) == ["jupyter.sock", "moved.sock"]


def client_status(client: UnixClient, url: str) -> int:
    return client.request("GET", url).status


def kernel_pid(server_pid: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{server_pid}\n" in status and "ipykernel" in (entry / "cmdline").read_bytes().decode():
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError("no kernel process found")


def test_kernels_get_no_tokens_nor_descriptors(base: Path) -> None:
    server = start(base)
    try:
        client = server.client()
        # The token was read before it left the environment: the server still authenticates with it.
        assert server.client(token=None).request("GET", "/api/contents").status == 403
        started = client.request("POST", "/api/kernels", body={"name": "python3"})
        assert started.status == 201, started.body[:300]
        pid = kernel_pid(server.proc.pid)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        assert not {name for name in names if name.endswith("_TOKEN")}, names
        for value in SECRET_ENV.values():
            assert value.encode() not in b"\0".join(environ)
        # Neither the listening socket nor the audit pipe reached the kernel.
        inherited = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        assert f"socket:[{os.fstat(server.listener.fileno()).st_ino}]" not in inherited, inherited
        assert f"pipe:[{os.fstat(server.audit_read).st_ino}]" not in inherited, inherited
        assert client.request("DELETE", f"/api/kernels/{started.json()['id']}").status == 204
    finally:
        stop(server)


def test_server_is_not_dumpable_and_writes_no_core(base: Path) -> None:
    server = start(base)
    try:
        pid = server.proc.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
        # Not dumpable: its /proc files belong to root, and a process of the same user cannot read them.
        assert os.stat(f"/proc/{pid}/environ").st_uid == 0
        probe = f"open('/proc/{pid}/environ', 'rb').read()"
        done = subprocess.run([sys.executable, "-c", probe], user=USER, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "PermissionError" in done.stderr, done.stderr[-500:]
        # Control: the same probe reads the environment of a dumpable process of that user.
        sleeper = subprocess.Popen(["sleep", "60"], user=USER)
        try:
            control = f"open('/proc/{sleeper.pid}/environ', 'rb').read()"
            assert subprocess.run([sys.executable, "-c", control], user=USER, timeout=60).returncode == 0
        finally:
            stop_process(sleeper)
    finally:
        stop(server)


def _bad_descriptor(base: Path, kind: str) -> tuple[dict, list]:
    keep: list = []
    if kind == "file":
        handle = open(base / "not-a-socket", "wb")
        keep.append(handle)
        return {"server_fd": handle.fileno()}, keep
    if kind in ("not listening", "datagram", "tcp"):
        family, kind_ = {
            "not listening": (socket.AF_UNIX, socket.SOCK_STREAM),
            "datagram": (socket.AF_UNIX, socket.SOCK_DGRAM),
            "tcp": (socket.AF_INET, socket.SOCK_STREAM),
        }[kind]
        sock = socket.socket(family, kind_)
        if kind == "tcp":
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
        keep.append(sock)
        return {"server_fd": sock.fileno()}, keep
    if kind == "audit read end":
        read, write = os.pipe()
        keep.extend([read, write])
        return {"audit_fd": read}, keep
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["file", "not listening", "datagram", "tcp", "audit read end"])
def test_wrong_descriptors_refuse_to_start(base: Path, kind: str) -> None:
    overrides, keep = _bad_descriptor(base, kind)
    server = start(base, wait=False, **overrides)
    try:
        code = server.proc.wait(timeout=60)
    finally:
        stop(server)
        for item in keep:
            item.close() if hasattr(item, "close") else os.close(item)
    log = server.log.read_text()
    assert code != 0 and "refusing to start" in log, log[-2000:]
