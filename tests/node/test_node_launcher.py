"""The node launcher as a real unprivileged user: single-use key, encrypted mounts, a sandbox with no network.

A real site (projects, a dataset shared into the project, an unrelated project) is built through the CLI
on the test cluster's OpenBao; then ``securehpc-node exec`` runs Python inside the sandbox as the test
user, directly and under a real ``sbatch``. No GPU is involved: /dev/nvidia* do not exist on this machine,
so their pass-through is not exercised here.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sites import Site, UnixAccount, files_containing, make_site, make_source

from jupyter_securehpc import jobspec
from jupyter_securehpc.spawner.reports import parse_audit_report

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]
NODE = str(Path(sys.executable).with_name("securehpc-node"))

# Runs inside the sandbox: reports what it can and cannot do, as JSON on one line, then waits for a line on
# stdin (so the test can look at the host meanwhile), then writes the canary into the workspace.
PROBE = r"""
import ctypes, hashlib, json, os, socket, sys
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as error:
        return type(error).__name__
def tcp(host, port):
    with socket.create_connection((host, port), timeout=2):
        pass
def write(path):
    with open(path, "w") as handle:
        handle.write("x")
def new_userns():
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
args = json.loads(sys.argv[1])
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
report = {
    "uid": os.getuid(),
    "cwd": os.getcwd(),
    "cap_eff": status["CapEff"].strip(),
    "dataset": {
        name: hashlib.sha256(open(os.path.join(args["dataset"], name), "rb").read()).hexdigest()
        for name in args["names"]
    },
    "openbao": attempt(lambda: tcp("127.0.0.1", args["openbao_port"])),
    "hub": attempt(lambda: tcp("127.0.0.1", args["hub_port"])),
    "external": attempt(lambda: tcp("192.0.2.1", 443)),
    "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
    "write_dataset": attempt(lambda: write(os.path.join(args["dataset"], "new.txt"))),
    "write_workspace": attempt(lambda: write("/project/probe.txt")),
    "new_userns": attempt(new_userns),
    "store_root_visible": os.path.exists(args["store_root"]),
    "cipher_visible": os.listdir("/run"),
    "datasets": sorted(os.path.join(o, d) for o in os.listdir("/datasets") for d in os.listdir(f"/datasets/{o}")),
    "env_token": [k for k in os.environ if "TOKEN" in k],
    "dev_null": attempt(lambda: write("/dev/null")),
    "dev_fuse": os.path.exists("/dev/fuse"),
}
print(json.dumps(report), flush=True)
sys.stdin.readline()
with open("/project/canary.txt", "w") as handle:
    handle.write(args["canary"])
"""


@dataclass
class Session:
    site: Site
    spec: Path
    # The account the session runs as: the test user's principal in project sleep (not the test user).
    user: UnixAccount
    source_hashes: dict[str, str]
    canary: str
    signing_key: Ed25519PrivateKey
    public_key: Path
    # The person (the test user's own login account), whose session it is.
    person: object

    def spec_data(self) -> dict:
        return json.loads(self.spec.read_text())["spec"]

    def write_spec(self, name: str, **changes) -> Path:
        """A spec signed by the hub's key, with ``changes`` applied, readable by the job user."""
        path = self.spec.with_name(name)
        path.write_text(jobspec.sign({**self.spec_data(), **changes}, self.signing_key))
        path.chmod(0o644)
        return path

    def env(self, token: str | None = None, **extra) -> dict[str, str]:
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "SECUREHPC_HUB_PUBLIC_KEY": str(self.public_key)}
        if token is not None:
            env["SECUREHPC_WRAPPED_TOKEN"] = token
        return {**env, **extra}

    def wrap(self) -> str:
        return self.site.json("key", "wrap", "sleep", "--user", self.person.name, "--ttl", "120")["token"]

    def probe_args(self, hub_port: int) -> str:
        return json.dumps(
            {
                "dataset": "/datasets/mri/scans",
                "names": sorted(self.source_hashes),
                "openbao_port": int(self.site.env["VAULT_ADDR"].rsplit(":", 1)[1]),
                "hub_port": hub_port,
                "store_root": str(self.site.store_root),
                "canary": self.canary,
            }
        )

    def start(self, token: str, program: list[str], spec: Path | None = None, **popen) -> subprocess.Popen:
        return subprocess.Popen(
            [NODE, "exec", "--spec", str(spec or self.spec), "--", *program],
            env=self.env(token),
            text=True,
            **self.user.run_as(),
            **popen,
        )


@pytest.fixture(scope="module")
def session(local_cluster, unix_user) -> Session:
    """Project sleep (the test user is a data scientist) with dataset mri/scans shared into it; project
    other with its own dataset, shared with nobody."""
    # Not under pytest's tmp_path (0700): the job user must reach the spec and the store root.
    root = Path(tempfile.mkdtemp(prefix="securehpc-launcher-"))
    root.chmod(0o755)
    site = make_site(root, local_cluster.layout, accounts="local")
    try:
        yield _build_session(root, site, unix_user)
    finally:
        site.remove_accounts()
        shutil.rmtree(root, ignore_errors=True)


def _build_session(root: Path, site: Site, unix_user) -> Session:
    site.ok("project", "create", "sleep", "--owner", "alice")
    site.ok("member", "add", "sleep", unix_user.name, "--role", "data_scientist")
    site.ok("project", "create", "mri", "--owner", "carol")
    site.ok("project", "create", "other", "--owner", "dora")
    canary = "CANARY-launcher-7f3a"
    source_hashes = make_source(root / "src", canary)
    site.ok("dataset", "import", "mri", "scans", str(root / "src"), as_user="carol")
    site.ok("dataset", "import", "other", "secret", str(root / "src"), as_user="dora")
    site.ok("dataset", "share", "mri/scans", "--with", "sleep", as_user="carol")
    site.ok("dataset", "accept", "sleep", "mri/scans", as_user="alice")
    principal = site.principal("sleep", unix_user.name)
    signing_key = jobspec.generate_key(root / "hub-signing.pem")
    spec = root / "spec.json"
    spec_data = {
        "project": "sleep",
        "user": unix_user.name,
        "role": "data_scientist",
        "store_root": str(site.store_root),
        "vault_addr": site.env["VAULT_ADDR"],
        "datasets": ["mri/scans"],
        "key_store": {"prefix": site.prefix, "policy_prefix": f"{site.prefix}-project-"},
        "principal": principal.name,
    }
    spec.write_text(jobspec.sign(spec_data, signing_key))
    spec.chmod(0o644)
    return Session(site, spec, principal, source_hashes, canary, signing_key, root / "hub-signing.pub", unix_user)


@pytest.fixture
def fake_hub_port():
    """A listening TCP port on the host, standing for the hub outside the sandbox."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def user_processes(uid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                    found.append((entry / "comm").read_text().strip())
            except (OSError, IndexError):
                continue
    return found


def host_has_plaintext_mount() -> bool:
    return "fuse.gocryptfs" in Path("/proc/mounts").read_text()


def wait_for(check, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def assert_nothing_left(uid: int) -> None:
    assert wait_for(lambda: user_processes(uid) == []), user_processes(uid)
    assert not host_has_plaintext_mount()


def test_sandbox_reads_the_dataset_and_reaches_nothing(session, fake_hub_port):
    token = session.wrap()
    probe = session.start(
        token,
        ["python3", "-c", PROBE, session.probe_args(fake_hub_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = probe.stdout.readline()
        assert line, probe.stderr.read()
        report = json.loads(line)
        # While it runs, the host sees no plaintext mount, and the token is in no argument list and in the
        # environment of no process the launcher started. (The launcher's own /proc/PID/environ keeps the
        # block it was started with: the kernel does not update it when Python removes the variable. Only
        # the user and root can read it, and the token is already used up; --token-stdin avoids even that.)
        assert not host_has_plaintext_mount()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    assert token.encode() not in (entry / "cmdline").read_bytes()
                    if int(entry.name) != probe.pid:
                        assert token.encode() not in (entry / "environ").read_bytes()
                except OSError:
                    pass
        probe.communicate("go\n", timeout=60)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    assert probe.returncode == 0

    assert report["uid"] == session.user.uid
    assert report["cwd"] == "/project"
    assert int(report["cap_eff"], 16) == 0
    assert report["dataset"] == session.source_hashes
    assert report["openbao"] == "ConnectionRefusedError"
    assert report["hub"] == "ConnectionRefusedError"
    assert report["external"] in {"OSError", "ConnectionRefusedError", "TimeoutError"}
    assert report["dns"] == "gaierror"
    assert report["write_dataset"] in {"OSError", "PermissionError"}  # EROFS
    assert report["write_workspace"] == "ok"
    assert report["new_userns"] != "ok"
    assert report["store_root_visible"] is False
    assert report["cipher_visible"] == []
    assert report["datasets"] == ["mri/scans"]
    assert report["env_token"] == []
    assert report["dev_null"] == "ok"
    assert report["dev_fuse"] is False

    assert_nothing_left(session.user.uid)
    assert files_containing(session.site.store_root / "projects" / "sleep", session.canary.encode()) == []


def test_second_use_of_a_token_is_refused_before_mounting(session):
    token = session.wrap()
    first = session.start(token, ["true"])
    assert first.wait(timeout=120) == 0
    second = session.start(token, ["sh", "-c", "echo MOUNTED"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 77
    assert "MOUNTED" not in out
    assert "already used or revoked" in err
    assert token not in err
    assert_nothing_left(session.user.uid)


def test_each_store_gets_the_key_of_the_dataset_its_mount_names(session):
    # The keys follow each mount's own reference, whatever the order of the mounts: nothing pairs them by
    # position. Run in this (root) process: only the key step, against the real OpenBao.
    from jupyter_securehpc.node.launcher import unwrap_keys
    from jupyter_securehpc.node.sandbox import mounts_for
    from jupyter_securehpc.session.spec import SessionSpec
    from jupyter_securehpc.vocabulary import DatasetRef

    spec = SessionSpec.from_dict(session.spec_data())
    workspace, scans = mounts_for(spec)
    assert (workspace.dataset, scans.dataset) == (None, DatasetRef("mri", "scans"))
    keys = unwrap_keys(spec, session.wrap(), [scans, workspace])
    admin = session.site.keystore()
    assert keys == {
        "/datasets/mri/scans": admin.read_dataset_key("mri", "scans"),
        "/project": admin.read_workspace_key("sleep"),
    }


def test_sigterm_takes_the_whole_sandbox_down(session):
    sleeper = session.start(session.wrap(), ["sleep", "300"])
    assert wait_for(lambda: "gocryptfs" in user_processes(session.user.uid))
    sleeper.send_signal(signal.SIGTERM)
    sleeper.wait(timeout=30)
    assert_nothing_left(session.user.uid)


def test_sigkill_of_the_launcher_takes_the_whole_sandbox_down(session):
    sleeper = session.start(session.wrap(), ["sleep", "300"])
    assert wait_for(lambda: "gocryptfs" in user_processes(session.user.uid))
    sleeper.kill()
    sleeper.wait(timeout=30)
    assert_nothing_left(session.user.uid)


def test_sigkill_of_gocryptfs_leaves_nothing_either(session):
    sleeper = session.start(session.wrap(), ["sleep", "300"])
    assert wait_for(lambda: "gocryptfs" in user_processes(session.user.uid))
    for pid, argv in processes_of(session.user.uid).items():
        if argv.startswith(b"gocryptfs\0"):
            os.kill(pid, signal.SIGKILL)
    # The program may go on with a dead mount; stopping the launcher cleans up everything.
    sleeper.terminate()
    sleeper.wait(timeout=30)
    assert_nothing_left(session.user.uid)


def test_only_the_principal_may_run_the_session_and_never_the_persons_own_account(session):
    token = session.wrap()

    def run(spec: Path, account) -> subprocess.CompletedProcess:
        return subprocess.run(
            [NODE, "exec", "--spec", str(spec), "--", "true"],
            env=session.env(token), capture_output=True, text=True, timeout=60, check=False, **account.run_as(),
        )  # fmt: skip

    # The genuine spec, run as the person's own login account (what an extra job step, cron or SSH would be).
    result = run(session.spec, session.person)
    assert result.returncode == 77
    assert f"runs as {session.user.name}" in result.stderr and f"job runs as {session.person.name}" in result.stderr
    # A spec for another principal, run as this one.
    other = session.write_spec("other-principal-spec.json", principal="shpc-other_someone_aaaaaa")
    result = run(other, session.user)
    assert result.returncode == 77 and "runs as shpc-other_someone_aaaaaa" in result.stderr
    # A spec (signed by the hub) that names the person's own account as the principal: refused under any account.
    own = session.write_spec("own-account-spec.json", principal=session.person.name)
    result = run(own, session.person)
    assert result.returncode == 77 and "never run as a person's own account" in result.stderr
    # A spec without a principal (a hub of an earlier release) does not even parse.
    data = {key: value for key, value in session.spec_data().items() if key != "principal"}
    bare = session.spec.with_name("no-principal-spec.json")
    bare.write_text(jobspec.sign(data, session.signing_key))
    bare.chmod(0o644)
    result = run(bare, session.user)
    assert result.returncode == 64 and "principal" in result.stderr
    # None of them used the token: the principal still can.
    assert session.start(token, ["true"]).wait(timeout=120) == 0


def run_node(session, spec: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NODE, "exec", "--spec", str(spec), "--", "true"],
        env=env, capture_output=True, text=True, timeout=120, check=False, **session.user.run_as(),
    )  # fmt: skip


def test_missing_token_and_bad_spec_are_clear_errors(session):
    result = run_node(session, session.spec, session.env())
    assert result.returncode == 64 and "no wrapped token" in result.stderr
    bad = session.write_spec("bad-spec.json", project="../x")
    result = run_node(session, bad, session.env("x"))
    assert result.returncode == 64 and "project name" in result.stderr


@pytest.mark.parametrize("forgery", ["unsigned", "edited", "other-key", "not-json", "extra-field"])
def test_a_spec_the_hub_did_not_sign_is_refused_before_the_token_is_used(session, forgery):
    path = session.spec.with_name(f"forged-{forgery}.json")
    envelope = json.loads(session.spec.read_text())
    if forgery == "unsigned":
        text = json.dumps(envelope["spec"])
    elif forgery == "edited":
        envelope["spec"]["datasets"] = ["other/secret"]
        text = json.dumps(envelope)
    elif forgery == "other-key":
        text = jobspec.sign({**envelope["spec"], "datasets": ["other/secret"]}, Ed25519PrivateKey.generate())
    elif forgery == "not-json":
        text = "#!/bin/sh\n"
    else:
        envelope["extra"] = "x"
        text = json.dumps(envelope)
    path.write_text(text)
    path.chmod(0o644)
    token = session.wrap()
    result = run_node(session, path, session.env(token))
    assert result.returncode == 77, result.stderr
    assert "job spec" in result.stderr
    # The token was not consumed: the genuine spec still works with it.
    assert session.start(token, ["true"]).wait(timeout=120) == 0


def test_without_the_hub_public_key_nothing_starts(session):
    env = session.env(session.wrap(), SECUREHPC_HUB_PUBLIC_KEY=str(session.public_key) + ".missing")
    result = run_node(session, session.spec, env)
    assert result.returncode == 69
    assert "no hub public key" in result.stderr


def sbatch(session, slurm_env, token: str, program: str, *options: str, wait: bool = True):
    script = f"#!/bin/sh\nexec {NODE} exec --spec {session.spec} -- {program}\n"
    # The token reaches the job through sbatch's environment, never its arguments.
    env = {**slurm_env, **session.env(token)}
    return subprocess.run(
        ["sbatch", "--parsable", *(["--wait"] if wait else []), f"--uid={session.user.name}",
         f"--gid={session.user.gid}", "--chdir=/tmp", "--output=/dev/null", "--time=5", *options],
        input=script, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_under_sbatch_the_job_reads_the_dataset(session, slurm_env):
    check = (
        "python3 -c 'import hashlib,sys; "
        'sys.exit(0 if hashlib.sha256(open("/datasets/mri/scans/README.txt","rb").read()).hexdigest()'
        f' == "{session.source_hashes["README.txt"]}" else 3)\''
    )
    result = sbatch(session, slurm_env, session.wrap(), check, "--partition=gpu", "--gres=gpu:1")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(session.user.uid)


def test_scancel_leaves_nothing(session, slurm_env):
    result = sbatch(session, slurm_env, session.wrap(), "sleep 300", wait=False)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    assert wait_for(lambda: "gocryptfs" in user_processes(session.user.uid), timeout=60)
    subprocess.run(["scancel", job_id], env=slurm_env, check=True, timeout=30)
    assert_nothing_left(session.user.uid)


def test_kill_9_of_the_job_script_leaves_nothing(session, slurm_env):
    result = sbatch(session, slurm_env, session.wrap(), "sleep 300", wait=False)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip().split(";")[0]
    try:
        assert wait_for(lambda: "gocryptfs" in user_processes(session.user.uid), timeout=60)
        launcher = [pid for pid, argv in processes_of(session.user.uid).items() if b"securehpc-node" in argv]
        assert len(launcher) == 1
        os.kill(launcher[0], signal.SIGKILL)
        assert_nothing_left(session.user.uid)
    finally:
        subprocess.run(["scancel", job_id], env=slurm_env, check=False, timeout=30)


def processes_of(uid: int) -> dict[int, bytes]:
    """pid -> command line of ``uid``'s processes (those that end while being listed are left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
    return found


# A stand-in for jupyterhub-singleuser: an HTTP server on the listening socket the launcher hands in
# (SECUREHPC_SERVER_FD) that also calls the hub API through the inside hub socket (JUPYTERHUB_API_URL), as the
# real server does for authentication, and tries what a kernel would try against the launcher's plumbing.
FAKE_SERVER = r"""
import http.server, json, os, socket, socketserver, urllib.parse
api = os.environ["JUPYTERHUB_API_URL"]
hub_socket = urllib.parse.unquote(urllib.parse.urlsplit(api).netloc)
def hub(request):
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(hub_socket)
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as error:
        return type(error).__name__
def take_over():
    rogue = socket.socket(socket.AF_UNIX)
    rogue.bind("/securehpc/jupyter.sock")
def mkdir_datasets():
    os.mkdir("/datasets/fake")
def other_environs_with_token():
    leaks = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if b"server-api-" + b"token" in open(f"/proc/{pid}/environ", "rb").read():
                    leaks.append(pid)
            except OSError:
                pass
    return leaks
class Handler(http.server.BaseHTTPRequestHandler):
    def address_string(self):
        return "sandbox"
    def do_GET(self):
        if self.path.endswith("/via-hub"):
            body = hub(b"GET /hub/api/ HTTP/1.0\r\nHost: hub\r\n\r\n").split(b"\r\n\r\n", 1)[1]
        elif self.path.endswith("/hub-elsewhere"):
            replies = [
                hub(b"POST /hub/api/users/u/activity HTTP/1.1\r\nHost: hub\r\nContent-Length: 2\r\n\r\n{}"),
                hub(b"GET /hub/api/users HTTP/1.1\r\nHost: hub\r\n\r\n"),
                hub(b"GET /hub/api/user?x=1 HTTP/1.1\r\nHost: hub\r\n\r\n"),
                hub(b"POST /hub/api/securehpc/servers/u/sleep/audit HTTP/1.1\r\nHost: hub\r\n"
                    b"Content-Length: 2\r\n\r\n{}"),
                hub(b"GET /hub/api/user HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ]
            body = json.dumps([r.split(b"\r\n", 1)[0].decode() for r in replies]).encode()
        else:
            body = json.dumps({
                "api": api, "cwd": os.getcwd(), "uid": os.getuid(),
                "secrets_in_env": [k for k, v in os.environ.items()
                                   if "s3cr3t" in v or k.startswith("SECUREHPC_REPORT")],
                "token_in_other_environs": other_environs_with_token(),
                "take_over": attempt(take_over),
                "rename_hub_socket": attempt(lambda: os.rename(hub_socket, hub_socket + ".x")),
                "mkdir_datasets": attempt(mkdir_datasets),
                "write_session_dir": attempt(lambda: open("/securehpc/x", "w").close()),
                "write_jupyter_config": attempt(
                    lambda: open("/securehpc/jupyter/config/jupyter_server_config.py", "w").close()),
            }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
server = Server("", Handler, bind_and_activate=False)
server.socket = socket.socket(fileno=int(os.environ["SECUREHPC_SERVER_FD"]))
server.serve_forever()
"""

REPORTS = "/hub/api/securehpc/servers/u/sleep"


class FakeHub(http.server.BaseHTTPRequestHandler):
    reports: ClassVar[list] = []
    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        FakeHub.requests.append(("GET", self.path))
        self.reply(json.dumps({"version": "fake-hub"}).encode())

    def do_POST(self):
        FakeHub.requests.append(("POST", self.path))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeHub.reports.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.reply(b"{}")


def reports_to(kind: str) -> list[tuple[str, str, dict]]:
    return [report for report in FakeHub.reports if report[0] == f"{REPORTS}/{kind}"]


@pytest.fixture
def fake_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    FakeHub.reports = []
    FakeHub.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def serve_env(session, fake_hub: int, **extra) -> dict[str, str]:
    return {
        **session.env(session.wrap()),
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{fake_hub}/hub/api",
        "JUPYTERHUB_API_TOKEN": "server-api-token",
        "JUPYTERHUB_ACTIVITY_URL": f"http://127.0.0.1:{fake_hub}/hub/api/users/u/activity",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/u/sleep/",
        "SECUREHPC_REPORT_URL": f"http://127.0.0.1:{fake_hub}{REPORTS}",
        "SECUREHPC_REPORT_TOKEN": "report-s3cr3t",
        **extra,
    }


def test_serve_relays_the_server_and_the_hub_api_and_reports_the_port(session, fake_hub):
    env = serve_env(session, fake_hub, JUPYTERHUB_ACTIVITY_INTERVAL="1")
    private_before = set(Path("/tmp").glob("securehpc-session-*"))
    prefetching = session.write_spec("serve-prefetch-spec.json", prefetch=True)
    launcher = subprocess.Popen(
        [NODE, "serve", "--spec", str(prefetching), "--", "python3", "-c", FAKE_SERVER],
        env=env, text=True, stderr=subprocess.PIPE, **session.user.run_as(),
    )  # fmt: skip
    try:
        assert wait_for(lambda: reports_to("port") or launcher.poll() is not None, timeout=60)
        assert launcher.poll() is None, launcher.stderr.read()
        _, authorization, body = reports_to("port")[0]
        # The start stages came first, in order, with the session's report secret (never the server's token).
        assert [r[2]["stage"] for r in reports_to("stage")] == ["key", "mounting", "starting"]
        assert {r[1] for r in FakeHub.reports} == {"securehpc-report report-s3cr3t"}
        assert authorization == "securehpc-report report-s3cr3t"
        assert set(body) == {"port"} and isinstance(body["port"], int)
        base = f"http://127.0.0.1:{body['port']}/user/u/sleep"
        inside = json.loads(urllib.request.urlopen(f"{base}/", timeout=10).read())
        assert inside["api"] == "http+unix://%2Fsecurehpc%2Fhub%2Fhub-api.sock/hub/api"
        assert inside["cwd"] == "/project" and inside["uid"] == session.user.uid
        # Nothing the sandbox can write decides where traffic goes, and nothing there is the launcher's.
        assert inside["secrets_in_env"] == []
        # bubblewrap's init (pid 1) does not show the program's environment: it never had it.
        assert inside["token_in_other_environs"] == []
        for attempt in ("take_over", "rename_hub_socket", "mkdir_datasets", "write_session_dir",
                        "write_jupyter_config"):  # fmt: skip
            assert inside[attempt] == "OSError", (attempt, inside)
        via_hub = json.loads(urllib.request.urlopen(f"{base}/via-hub", timeout=10).read())
        assert via_hub == {"version": "fake-hub"}
        # The hub relay passes nothing else: each of these is refused by the relay, before the hub.
        before = list(FakeHub.requests)
        refused = json.loads(urllib.request.urlopen(f"{base}/hub-elsewhere", timeout=10).read())
        assert [line.split()[1] for line in refused] == ["403", "403", "403", "403", "400"], refused
        assert [r for r in FakeHub.requests[len(before) :] if not r[1].startswith(REPORTS)] == []
        # ... and each refusal reaches the hub as an audit event in the session's name.
        assert wait_for(lambda: len([e for r in reports_to("audit") for e in r[2]["events"]]) >= 5, timeout=20)
        events = [e for r in reports_to("audit") for e in r[2]["events"]]
        assert {e["action"] for e in events} == {"hub_api.refused"}
        assert {(e["actor"], e["project"], e["outcome"]) for e in events} == {(session.person.name, "sleep", "denied")}
        assert parse_audit_report(json.dumps({"events": events}).encode())
        # Traffic through the public relay becomes the launcher's activity report: an empty body, the hub's clock.
        assert wait_for(lambda: reports_to("activity"), timeout=10)
        assert {json.dumps(r[2]) for r in reports_to("activity")} == {"{}"}
        assert not [r for r in FakeHub.requests if r[1].startswith("/hub/api/users/")]
        # Neither token is in any process's arguments.
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                assert b"server-api-token" not in cmdline and b"report-s3cr3t" not in cmdline
        assert not host_has_plaintext_mount()
        # Once the server listens, the shared dataset is read into the page cache in the background.
        cipher = session.site.store_root / "projects" / "mri" / "datasets" / "scans"
        size = sum(path.stat().st_size for path in cipher.rglob("*") if path.is_file())
        assert wait_for(lambda: gocryptfs_read_bytes(session.user.uid, "datasets/mri/scans") >= size, 60)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert_nothing_left(session.user.uid)
    assert set(Path("/tmp").glob("securehpc-session-*")) == private_before  # the private folder is gone
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/", timeout=5)


def test_serve_refuses_a_replaced_server_socket(session, fake_hub):
    """Outside the sandbox too, the public relay connects only to the socket the launcher bound: a socket
    put in its place (by the user's own processes on the node) gets no connection."""
    earlier = set(Path("/tmp").glob("securehpc-session-*"))  # of launchers killed by earlier tests
    launcher = subprocess.Popen(
        [NODE, "serve", "--spec", str(session.spec), "--", "python3", "-c", FAKE_SERVER],
        env=serve_env(session, fake_hub), text=True, stderr=subprocess.PIPE, **session.user.run_as(),
    )  # fmt: skip
    rogue = None
    try:
        assert wait_for(lambda: reports_to("port") or launcher.poll() is not None, timeout=60)
        assert launcher.poll() is None, launcher.stderr.read()
        base = f"http://127.0.0.1:{reports_to('port')[0][2]['port']}/user/u/sleep"
        assert urllib.request.urlopen(f"{base}/", timeout=10).status == 200
        [private] = [p for p in set(Path("/tmp").glob("securehpc-session-*")) - earlier
                     if p.stat().st_uid == session.user.uid]  # fmt: skip
        assert private.stat().st_mode & 0o777 == 0o700
        original = private / "jupyter.sock"
        original.rename(private / "moved.sock")
        rogue = socket.socket(socket.AF_UNIX)
        rogue.bind(str(original))
        rogue.listen()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{base}/", timeout=10)
        rogue.settimeout(0.5)
        with pytest.raises(OSError):
            rogue.accept()
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
    finally:
        if rogue is not None:
            rogue.close()
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert_nothing_left(session.user.uid)


STAGED_PROBE = r"""
import hashlib, json, os
mounts = {line.split()[1]: line.split()[2] for line in open("/proc/mounts")}
def write():
    try:
        open("/datasets/mri/scans/new.txt", "w").close()
        return "ok"
    except OSError as error:
        return type(error).__name__
print(json.dumps({
    "fs": mounts.get("/datasets/mri/scans"),
    "workspace_fs": mounts.get("/project"),
    "readme": hashlib.sha256(open("/datasets/mri/scans/README.txt", "rb").read()).hexdigest(),
    "write": write(),
}))
"""


def test_a_small_dataset_is_staged_into_private_memory(session):
    staged_spec = session.write_spec("staged-spec.json", stage_limit_mib=64)
    env = session.env(session.wrap())
    result = subprocess.run(
        [NODE, "exec", "--spec", str(staged_spec), "--", "python3", "-c", STAGED_PROBE],
        env=env, capture_output=True, text=True, timeout=120, check=False, **session.user.run_as(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fs"] == "tmpfs"
    assert report["workspace_fs"] == "fuse.gocryptfs"
    assert report["readme"] == session.source_hashes["README.txt"]
    assert report["write"] in {"OSError", "PermissionError"}
    assert_nothing_left(session.user.uid)


def gocryptfs_read_bytes(uid: int, cipher_name: str) -> int:
    """Bytes that the user's gocryptfs processes serving ``cipher_name`` have read (/proc/PID/io rchar)."""
    total = 0
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and entry.stat().st_uid == uid
                and (entry / "comm").read_text().strip() == "gocryptfs"
            ):
                if cipher_name in (entry / "cmdline").read_text():
                    io = dict(line.split(": ") for line in (entry / "io").read_text().splitlines())
                    total += int(io["rchar"])
        except (OSError, ValueError):
            continue
    return total


def test_a_dataset_beyond_the_staging_budget_is_prefetched_into_the_page_cache(session):
    # The program reads nothing and waits: only the launcher's prefetch can make gocryptfs read the dataset.
    program = session.start(
        session.wrap(),
        ["python3", "-c", "import json, sys; print(json.dumps(open('/proc/mounts').read().split())); input()"],
        spec=session.write_spec("prefetch-spec.json", prefetch=True),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        mounts = json.loads(program.stdout.readline())
        # The dataset stays the gocryptfs mount itself: complete files at every moment, nothing copied.
        assert mounts[mounts.index("/datasets/mri/scans") + 1] == "fuse.gocryptfs"
        cipher = session.site.store_root / "projects" / "mri" / "datasets" / "scans"
        size = sum(path.stat().st_size for path in cipher.rglob("*") if path.is_file())
        assert wait_for(lambda: gocryptfs_read_bytes(session.user.uid, "datasets/mri/scans") >= size, 60)
        program.stdin.write("\n")
        program.stdin.flush()
        assert program.wait(timeout=60) == 0, program.stderr.read()
    finally:
        program.kill()
        program.communicate()
    assert_nothing_left(session.user.uid)


JUPYTER_IN_SANDBOX = (
    'JUPYTER_TOKEN="$JUPYTERHUB_API_TOKEN" exec jupyter server --ServerApp.sock=/securehpc/jupyter.sock '
    "--ServerApp.root_dir=/project --ServerApp.jpserver_extensions jupyter_securehpc.serverext=True"
)


def test_serve_runs_jupyter_with_the_server_extension_and_forwards_its_audit_events(session, fake_hub):
    """A real jupyter-server in the sandbox, on the socket the launcher bound: the launcher placed the session
    policy read-only and the extension refuses a download for a data scientist; the refusal reaches the hub
    through the audit pipe, and the job's output holds the launcher's messages only."""
    env = serve_env(session, fake_hub, JUPYTERHUB_API_TOKEN="test-server-token", JUPYTERHUB_SERVICE_PREFIX="/")
    output = Path(tempfile.mkdtemp(prefix="securehpc-output-")) / "job.log"
    output.parent.chmod(0o755)
    os.chown(output.parent, session.user.uid, session.user.gid)
    with open(output, "w") as job_output:
        os.chown(output, session.user.uid, session.user.gid)
        output.chmod(0o644)  # as Slurm might create it
        launcher = subprocess.Popen(
            [NODE, "serve", "--spec", str(session.spec), "--", "sh", "-c", JUPYTER_IN_SANDBOX],
            env=env, text=True, stdout=job_output, stderr=subprocess.STDOUT, **session.user.run_as(),
        )  # fmt: skip
    try:
        assert wait_for(lambda: reports_to("port") or launcher.poll() is not None, timeout=120)
        assert launcher.poll() is None, output.read_text()
        assert output.stat().st_mode & 0o777 == 0o600
        base = f"http://127.0.0.1:{reports_to('port')[0][2]['port']}"
        headers = {"Authorization": "token test-server-token"}

        def get(path: str) -> tuple[int, bytes]:
            request = urllib.request.Request(base + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=20) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        assert get("/api/status")[0] == 200
        put = urllib.request.Request(
            base + "/api/contents/secret.txt",
            data=json.dumps({"type": "file", "format": "text", "content": session.canary}).encode(),
            headers={**headers, "Content-Type": "application/json"},
            method="PUT",
        )
        with pytest.raises(urllib.error.HTTPError) as upload:
            urllib.request.urlopen(put, timeout=20)
        assert upload.value.code == 403
        status, body = get("/files/README.md")
        assert status in (403, 404) and session.canary.encode() not in body
        assert wait_for(lambda: len([e for r in reports_to("audit") for e in r[2]["events"]]) >= 2, timeout=20)
        log = output.read_text()
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    events = [event for report in reports_to("audit") for event in report[2]["events"]]
    assert any(e["outcome"] == "denied" and e["project"] == "sleep" for e in events), events
    for report in reports_to("audit"):
        assert parse_audit_report(json.dumps(report[2]).encode())
    # The job's output: the launcher's lines only; no path the user opened, no server log, no token.
    assert all(line.startswith("securehpc-node: ") for line in log.splitlines()), log
    assert "README.md" not in log and "secret.txt" not in log and "test-server-token" not in log
    # A normal end removes the output (nothing of the session outlives it on the node).
    assert not output.exists()
    shutil.rmtree(output.parent, ignore_errors=True)
    assert_nothing_left(session.user.uid)
