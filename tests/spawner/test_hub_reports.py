"""The hub's secure API against a real JupyterHub: job reports with the per-start secret, refusals and their
audit trail, flood limits, activity with the hub's clock, and what a hub admin or operator may not do.

The hub runs the real SecureSlurmSpawner on the local Slurm cluster; the job runs a stand-in for the node
launcher that records what the launcher would get (its report secret and URL, the server's environment) and
waits. The test then reports as the launcher would, and as attackers would: with wrong, other or no
credentials, with the server's own API token, with forged events, in a flood.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from sites import account_prefix, remove_accounts
from traitlets.config import PyFileConfigLoader

from jupyter_securehpc import jobspec
from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import hub, openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.principals import LocalAccounts
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.spawner.roles import OPERATOR_ROLE
from jupyter_securehpc.util.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
ADMIN, OPERATOR = "hub-admin", "hub-operator"
AUDITED, REJECT_AFTER = 3, 8  # ReportLimits for this hub: small, so that a flood is short

# Stands in for `securehpc-node serve`: records the report credential and the server's environment where
# the test reads them, prints a launcher message into the job's output, and waits to be cancelled.
FAKE_LAUNCHER = """#!/bin/bash
set -eu
dir="$(dirname "$0")/jobs"
printf '%s\\n' "$SECUREHPC_REPORT_TOKEN" "$SECUREHPC_REPORT_URL" "$JUPYTERHUB_API_TOKEN" \\
    "${JUPYTERHUB_ACTIVITY_URL:-unset}" > "$dir/.$SLURM_JOB_ID"
mv "$dir/.$SLURM_JOB_ID" "$dir/$SLURM_JOB_ID"
echo "securehpc-node: fake launcher waiting"
exec sleep 600
"""


def shipped_hub_config():
    """What hub_config/jupyterhub_config.py sets (the test hub takes its roles and token cap from it)."""
    os.environ.setdefault("OIDC_CLIENT_SECRET", "not-a-real-secret")
    path = ROOT / "hub_config" / "jupyterhub_config.py"
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


class _AnyPage(BaseHTTPRequestHandler):
    """Answers the hub's "is the server up" check in place of the Jupyter server."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site(local_cluster, unix_user, slurm_env) -> Iterator[dict]:
    layout = local_cluster.layout
    root = Path(tempfile.mkdtemp(prefix="securehpc-hubreports-"))
    root.chmod(0o755)
    prefix = f"r{secrets.token_hex(4)}"
    db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-p-"))  # fmt: skip
    (root / "stores").mkdir(mode=0o755)
    audit = root / "audit.jsonl"
    # The jobs run as the user's principals (real accounts, with this site's own prefix).
    service = ProjectService(open_database(db_url), keys, AuditLog(audit), root / "stores", Actor(admin="test"),
                             accounts=LocalAccounts(account_prefix(prefix)))  # fmt: skip
    made: list[dict] = []
    try:
        yield from _site(layout, root, prefix, db_url, audit, service, unix_user, slurm_env, made)
    finally:
        remove_accounts(made)


def _site(layout, root, prefix, db_url, audit, service, unix_user, slurm_env, made: list[dict]) -> Iterator[dict]:
    user = unix_user.name
    for project in ("sleep", "other"):
        service.create_project(project, owner="olivia")
        service.add_member(project, user, "data_scientist")
        service.set_policy(project, ["max_cpus=1", "max_memory_gb=1", "max_wall_time=30", "exclusive=false"])
    made.extend(service.list_accounts())
    principals = {row["project"]: row["principal"] for row in made if row["user"] == user}
    jobspec.generate_key(root / "hub-signing.pem")
    launcher = root / "fake-launcher"
    launcher.write_text(FAKE_LAUNCHER)
    launcher.chmod(0o755)
    # Both principals' fake launchers leave their files here (each may create and rename its own only).
    (root / "jobs").mkdir()
    (root / "jobs").chmod(0o1733)

    shipped = shipped_hub_config()
    tokens = {name: secrets.token_hex(32) for name in (ADMIN, OPERATOR, user)}
    settings = {
        "SecureHPC.db_url": db_url,
        "SecureHPC.audit_log": str(audit),
        "SecureHPC.store_root": str(root / "stores"),
        "KeyStoreConfig.prefix": prefix,
        "KeyStoreConfig.policy_prefix": f"{prefix}-p-",
        "ReportLimits.audited_refusals_per_minute": AUDITED,
        "ReportLimits.refusals_per_minute": REJECT_AFTER,
        "JupyterHub.spawner_class": "securehpc",
        "JupyterHub.allow_named_servers": True,
        "JupyterHub.cleanup_servers": True,
        "JupyterHub.token_expires_in_max_seconds": shipped.JupyterHub.token_expires_in_max_seconds,
        # Identities for the test, not the product's login: a real JupyterHub admin, an operator, the user.
        "JupyterHub.authenticator_class": "dummy",
        # Users in allowed_users get JupyterHub's default roles (users that only api_tokens creates get none).
        "Authenticator.allowed_users": {ADMIN, OPERATOR, user},
        "Authenticator.admin_users": {ADMIN},
        "SecureSlurmSpawner.signing_key_file": str(root / "hub-signing.pem"),
        "SecureSlurmSpawner.node_command": str(launcher),
        "SecureSlurmSpawner.start_timeout": 90,
        "SecureSlurmSpawner.http_timeout": 30,
        "SecureSlurmSpawner.startup_poll_interval": 0.2,
        "JupyterHub.log_level": "DEBUG",
    }
    # The shipped operator role (the portal's roles in the same list are tested in tests/portal/).
    roles = [{**role, "users": [OPERATOR]} for role in shipped.JupyterHub.load_roles if role["name"] == OPERATOR_ROLE]
    names = [role["name"] for role in roles]
    extra = [
        "",
        "# The test's identities and the shipped operator role (tests/spawner/test_hub_reports.py).",
        f"with open({str(root / 'tokens.json')!r}) as f:",
        "    c.JupyterHub.api_tokens = {token: name for name, token in json.load(f).items()}",
        # The shipped operator role in place of the local hub's (same name, this test's operator as member).
        f"c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r['name'] not in {names!r}] + {roles!r}",
        "",
    ]
    atomic_write(root / "tokens.json", json.dumps(tokens), mode=0o600)
    env = {"VAULT_TOKEN": openbao.root_token(layout), "SLURM_CONF": slurm_env["SLURM_CONF"],
           "SECUREHPC_HUB_PUBLIC_KEY": str(root / "hub-signing.pub")}  # fmt: skip
    start_hub(layout, hub.render_config(layout, settings) + "\n".join(extra), env)
    page = ThreadingHTTPServer(("0.0.0.0", 0), _AnyPage)  # noqa: S104 - where the node address points
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        yield {"layout": layout, "root": root, "audit": audit, "user": user, "tokens": tokens,
               "api": f"http://127.0.0.1:{layout.hub_api_port}/hub/api", "port": page.server_address[1],
               "slurm_env": slurm_env, "principals": principals}  # fmt: skip
    finally:
        page.shutdown()
        hub.down(layout)
        for principal in principals.values():
            subprocess.run(["scancel", f"--user={principal}"], env=slurm_env, check=False, timeout=30)
            for output in Path("/tmp").glob(f"securehpc-{principal}-*.log"):  # the fake launchers' job output
                output.unlink()
        shutil.rmtree(root, ignore_errors=True)


def start_hub(layout, text: str, env: dict[str, str]) -> None:
    """hub.up with a configuration of the test's own (it extends what hub.render_config writes)."""
    hub.down(layout)
    private = layout.hub_dir / "private"
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    if not hub.api_token_file(layout).exists():
        atomic_write(hub.api_token_file(layout), secrets.token_hex(32) + "\n", mode=0o600)
    (layout.hub_dir / "jupyterhub.sqlite").unlink(missing_ok=True)
    atomic_write(hub.config_file(layout), text, mode=0o600)
    daemon = hub.daemon(layout, env)
    daemon.start()
    daemon.wait_ready(lambda: hub.health(layout), timeout=60, what=f"answer on {layout.hub_url}")


def call(site, method: str, path: str, *, token: str | None = None, source: str | None = None, **kwargs):
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"token {token}"
    if source:  # the address the hub counts refusals by (JupyterHub takes X-Real-Ip from a direct client)
        headers["X-Real-Ip"] = source
    return requests.request(method, site["api"] + path, headers=headers, timeout=60, **kwargs)


def hub_log(site) -> str:
    return (site["layout"].log_dir / "jupyterhub.log").read_text(errors="replace")


def job_record(site, job_id: str, timeout: float = 60) -> list[str]:
    path = site["root"] / "jobs" / job_id
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the job {job_id} did not start\n{hub_log(site)[-5000:]}"
        time.sleep(0.2)
    return path.read_text().splitlines()


def job_of(site, server: str) -> str:
    """The Slurm job id of a server that is starting or running (from the hub's own model of it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listing = subprocess.run(["squeue", "--noheader", f"--user={site['principals'][server]}", "--format=%i %j"],
                                 env=site["slurm_env"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout  # fmt: skip
        for line in listing.splitlines():
            job_id, name = line.split()
            if name == f"securehpc-{server}":
                return job_id
        time.sleep(0.2)
    raise AssertionError(f"no job for {server}\n{hub_log(site)[-5000:]}")


class Session:
    """A started server as its launcher knows it: report URL, report secret, the server's API token."""

    def __init__(self, site, server: str) -> None:
        response = call(site, "POST", f"/users/{site['user']}/servers/{server}", token=site["tokens"][site["user"]],
                        json={"gpus": "0"})  # fmt: skip
        assert response.status_code in (201, 202), response.text
        self.server = server
        self.job_id = job_of(site, server)
        self.secret, self.url, self.api_token, self.activity_url = job_record(site, self.job_id)

    def post(self, kind: str, body: object, *, secret: str | bool | None = None, source: str = "127.0.0.1",
             raw: bytes | None = None, url: str | None = None) -> requests.Response:  # fmt: skip
        headers = {"X-Real-Ip": source, "Content-Type": "application/json"}
        if secret is not False:
            headers["Authorization"] = f"securehpc-report {secret or self.secret}"
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(f"{url or self.url}/{kind}", data=data, headers=headers, timeout=60)


def wait_ready(site, server: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = call(site, "GET", f"/users/{site['user']}", token=site["tokens"][ADMIN]).json()
        state = model["servers"].get(server)
        if state and state["ready"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{server} not ready\n{hub_log(site)[-5000:]}")


@pytest.fixture(scope="module")
def sessions(site) -> dict[str, Session]:
    """Servers sleep and other, started through the hub; their launchers report stages and the port."""
    started = {name: Session(site, name) for name in ("sleep", "other")}
    for session in started.values():
        for stage in ("key", "mounting", "starting"):
            assert session.post("stage", {"stage": stage}).status_code == 204
        response = session.post("port", {"port": site["port"]})
        assert response.status_code == 201, response.text
        wait_ready(site, session.server)
    return started


def events(site, **match) -> list[dict]:
    lines = site["audit"].read_text().splitlines()
    found = [json.loads(line) for line in lines]
    return [e for e in found if all(e.get(k) == v or e["details"].get(k) == v for k, v in match.items())]


# --- the credential ----------------------------------------------------------------------------------------


def test_the_job_gets_its_report_credential_and_no_activity_url(site, sessions):
    session = sessions["sleep"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session.secret)
    assert session.url == f"{site['api']}/securehpc/servers/{site['user']}/sleep"
    assert session.activity_url == "unset"  # the server never reports activity itself
    assert sessions["other"].secret != session.secret
    # The hub keeps the hash only (in the server's state, to survive a restart), and logs neither.
    database = sqlite3.connect(site["layout"].hub_dir / "jupyterhub.sqlite")
    states = " ".join(row[0] or "" for row in database.execute("SELECT state FROM spawners"))
    database.close()
    assert hashlib.sha256(session.secret.encode()).hexdigest() in states and session.secret not in states
    assert session.secret not in hub_log(site)
    script = subprocess.run(["scontrol", "write", "batch_script", session.job_id, "-"], env=site["slurm_env"],
                            capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert session.secret not in script


def test_the_job_output_is_private_and_unique_per_start(site, sessions):
    outputs = []
    for name, session in sessions.items():
        info = subprocess.run(["scontrol", "show", "job", session.job_id], env=site["slurm_env"],
                              capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
        path = Path(re.search(r"StdOut=(\S+)", info).group(1))
        # The job's account is the person's principal in that project (Slurm's %u), and so is the output's owner.
        principal = site["principals"][name]
        assert re.fullmatch(rf"/tmp/securehpc-{principal}-{session.job_id}-[0-9a-f]{{16}}\.log", str(path))
        assert path.owner() == principal
        assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)  # Slurm honoured the umask
        assert "securehpc-node: fake launcher waiting" in path.read_text()
        outputs.append(path)
    assert outputs[0] != outputs[1]


# --- accepted reports --------------------------------------------------------------------------------------


def test_session_audit_events_are_recorded_bound_to_the_session(site, sessions):
    event = {"actor": site["user"], "action": "contents.download", "object": "/files/a.csv", "outcome": "denied",
             "project": "sleep", "reason": "not allowed", "details": {"status": 403}, "seq": 7}  # fmt: skip
    anonymous = {**event, "actor": "anonymous", "project": None, "seq": 8}
    response = sessions["sleep"].post("audit", {"events": [event, anonymous]})
    assert response.status_code == 204, response.text
    (recorded,) = events(site, action="contents.download", session_seq=7)
    assert (recorded["actor"], recorded["project"], recorded["outcome"]) == (site["user"], "sleep", "denied")
    assert recorded["details"]["reported_by"] == f"server:{site['user']}/sleep"
    (unauthenticated,) = events(site, action="contents.download", session_seq=8)
    assert unauthenticated["actor"] == "anonymous" and unauthenticated["project"] == "sleep"


def test_a_reported_port_is_refused_once_the_server_runs(site, sessions):
    response = sessions["sleep"].post("port", {"port": 1}, source="10.0.1.1")
    assert response.status_code == 403
    (refusal,) = events(site, action="session.port", remote_ip="10.0.1.1")
    assert refusal["outcome"] == "denied" and "no session.port report now" in refusal["reason"]


def test_activity_sets_the_hubs_time_whatever_the_client_sends(site, sessions):
    user, admin = site["user"], site["tokens"][ADMIN]

    def last_activity() -> datetime:
        model = call(site, "GET", f"/users/{user}", token=admin).json()
        return datetime.fromisoformat(model["servers"]["sleep"]["last_activity"].replace("Z", "+00:00"))

    while datetime.now(timezone.utc) - last_activity() < timedelta(seconds=2):  # the spawn's own mark is older
        time.sleep(0.5)
    before = datetime.now(timezone.utc)
    session = sessions["sleep"]
    assert session.post("activity", {}).status_code == 204
    recorded = last_activity()
    assert before - timedelta(seconds=1) <= recorded <= datetime.now(timezone.utc) + timedelta(seconds=1)
    # A time in the body, or the stock endpoint with the server's token (a kernel can read it): refused.
    future = "2099-01-01T00:00:00.123456Z"
    response = session.post("activity", {"last_activity": future}, source="10.0.2.1")
    assert response.status_code == 400
    stock = call(site, "POST", f"/users/{user}/activity", token=session.api_token, source="10.0.2.2",
                 json={"last_activity": future, "servers": {"sleep": {"last_activity": future}}})  # fmt: skip
    assert stock.status_code == 403
    assert last_activity() == recorded
    # Again within 30 s: taken, nothing changes (no finer grain to modulate).
    assert session.post("activity", {}).status_code == 204
    assert last_activity() == recorded
    assert events(site, action="session.activity", remote_ip="10.0.2.1")[0]["outcome"] == "denied"
    assert events(site, action="session.activity", remote_ip="10.0.2.2")[0]["actor"] == user


# --- refused reports ---------------------------------------------------------------------------------------

CREDENTIALS = {
    "wrong secret": lambda s: {"secret": secrets.token_urlsafe(32)},
    "another server's secret": lambda s: {"secret": s["other"].secret},
    "the server's API token as a report secret": lambda s: {"secret": s["sleep"].api_token},
    "the server's API token": lambda s: {"secret": False, "token": s["sleep"].api_token},
    "a user's API token": lambda s: {"secret": False, "token": s["user_token"]},
    "no header": lambda s: {"secret": False},
    "unknown server": lambda s: {"url": s["sleep"].url.rsplit("/", 1)[0] + "/nosuch"},
    "unknown user": lambda s: {"url": s["sleep"].url.replace("/servers/", "/servers/nosuchuser", 1)},
}


@pytest.mark.parametrize("kind", ["audit", "activity", "stage"])
@pytest.mark.parametrize("case", list(CREDENTIALS))
def test_reports_without_the_servers_secret_are_refused_and_audited(site, sessions, case, kind):
    source = f"10.1.{list(CREDENTIALS).index(case)}.{['audit', 'activity', 'stage'].index(kind)}"
    how = CREDENTIALS[case]({**sessions, "user_token": site["tokens"][site["user"]]})
    token = how.pop("token", None)
    body = {"audit": {"events": [{"actor": site["user"], "action": "x.y", "object": "o", "outcome": "denied"}]},
            "activity": {}, "stage": {"stage": "key"}}[kind]  # fmt: skip
    session = sessions["sleep"]
    if token:
        response = requests.post(f"{session.url}/{kind}", json=body, timeout=60,
                                 headers={"Authorization": f"token {token}", "X-Real-Ip": source})  # fmt: skip
    else:
        response = session.post(kind, body, source=source, **how)
    assert response.status_code == 403, response.text
    (refusal,) = events(site, remote_ip=source)
    assert refusal["action"] == f"session.{kind}" and refusal["outcome"] == "denied"
    assert refusal["actor"] == "anonymous" and refusal["object"].startswith("server:")
    for credential in (how.get("secret"), token):
        if credential:
            assert credential not in site["audit"].read_text() and credential not in response.text


def test_forged_events_are_refused_and_named(site, sessions):
    session = sessions["sleep"]
    event = {"actor": "alice", "action": "airlock.approve", "object": "release:1", "outcome": "allowed"}
    response = session.post("audit", {"events": [event]}, source="10.2.0.1")
    assert response.status_code == 400
    (refusal,) = events(site, remote_ip="10.2.0.1")
    assert refusal["actor"] == site["user"] and "actor 'alice'" in refusal["reason"]
    other_project = {**event, "actor": site["user"], "project": "mri"}
    assert session.post("audit", {"events": [other_project]}, source="10.2.0.2").status_code == 400
    assert "project 'mri'" in events(site, remote_ip="10.2.0.2")[0]["reason"]
    assert not events(site, action="airlock.approve")


def test_a_flood_from_one_source_is_audited_then_summarised_then_rejected_unread(site, sessions):
    statuses = [sessions["sleep"].post("audit", {}, secret=secrets.token_urlsafe(32), source="10.3.0.1").status_code
                for _ in range(REJECT_AFTER + 4)]  # fmt: skip
    assert statuses == [403] * REJECT_AFTER + [429] * 4
    recorded = events(site, remote_ip="10.3.0.1")
    assert [e["action"] for e in recorded] == ["session.audit"] * AUDITED + ["hub.refusals"]
    assert recorded[-1]["object"] == "source:10.3.0.1" and f"more than {AUDITED}" in recorded[-1]["reason"]
    # The launcher of a server on another address is not affected.
    assert sessions["other"].post("activity", {}, source="10.3.0.2").status_code == 204


# --- admins administer, they do not impersonate ------------------------------------------------------------


@pytest.mark.parametrize("requester", [ADMIN, OPERATOR])
def test_nobody_creates_a_token_for_another_user(site, sessions, requester):
    source = f"10.4.0.{[ADMIN, OPERATOR].index(requester)}"
    response = call(site, "POST", f"/users/{site['user']}/tokens", token=site["tokens"][requester], source=source,
                    json={"note": "as the user", "expires_in": 600})  # fmt: skip
    assert response.status_code == 403 and "token" not in response.json()
    (refusal,) = events(site, remote_ip=source)
    assert (refusal["actor"], refusal["action"], refusal["object"]) == (
        requester,
        "token.create",
        f"user:{site['user']}",
    )
    tokens = call(site, "GET", f"/users/{site['user']}/tokens", token=site["tokens"][site["user"]]).json()
    assert not [t for t in tokens["api_tokens"] if t["note"] == "as the user"]


def test_users_create_their_own_tokens_within_the_cap(site, sessions):
    user, token = site["user"], site["tokens"][site["user"]]
    response = call(site, "POST", f"/users/{user}/tokens", token=token, json={"note": "own", "expires_in": 600})
    assert response.status_code == 201, response.text
    assert call(site, "GET", "/user", token=response.json()["token"]).json()["name"] == user
    too_long = call(site, "POST", f"/users/{user}/tokens", token=token, json={"expires_in": 30 * 24 * 3600})
    assert too_long.status_code == 400
    forever = call(site, "POST", f"/users/{user}/tokens", token=token, json={"note": "no expiry given"})
    assert forever.json()["expires_at"] is not None


def test_the_operator_runs_the_hub_without_acting_as_anyone(site, sessions):
    operator = site["tokens"][OPERATOR]
    scopes = set(call(site, "GET", "/user", token=operator).json()["scopes"])
    assert {"admin-ui", "list:users", "read:servers", "start:servers", "delete:servers", "read:hub"} <= scopes
    for power in ("tokens", "access:servers", "shares", "admin:auth_state", "admin:users", "users", "proxy",
                  "admin:server_state"):  # fmt: skip
        # Held only on themselves (the default user role's "self"), never on anyone else.
        held = [s for s in scopes if s == power or s.startswith(power + "!")]
        assert held in ([], [f"{power}!user={OPERATOR}"]), held
    model = call(site, "GET", f"/users/{site['user']}", token=operator).json()
    assert model["servers"]["sleep"]["ready"] and "auth_state" not in model
    rename = call(site, "PATCH", f"/users/{site['user']}", token=operator, json={"name": "someone"})
    assert rename.status_code == 403


def test_nobody_shares_a_secure_server(site, sessions):
    user = site["user"]
    for source, requester, path in (("10.5.0.1", ADMIN, f"/shares/{user}/sleep"),
                                    ("10.5.0.2", user, f"/shares/{user}/sleep"),
                                    ("10.5.0.3", user, f"/share-codes/{user}/sleep")):  # fmt: skip
        response = call(site, "POST", path, token=site["tokens"][requester], source=source,
                        json={"user": OPERATOR, "scopes": [f"access:servers!server={user}/sleep"]})  # fmt: skip
        assert response.status_code == 403, response.text
        (refusal,) = events(site, remote_ip=source)
        assert (refusal["actor"], refusal["action"]) == (requester, "share.create")


# --- at the end: stop, and the log -----------------------------------------------------------------------


def test_a_stopped_servers_secret_is_refused_and_the_log_verifies(site, sessions):
    session = sessions["other"]
    response = call(site, "DELETE", f"/users/{site['user']}/servers/other", token=site["tokens"][site["user"]])
    assert response.status_code in (202, 204)
    deadline = time.monotonic() + 60
    while call(site, "GET", f"/users/{site['user']}", token=site["tokens"][ADMIN]).json()["servers"].get("other"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert session.post("activity", {}, source="10.6.0.1").status_code == 403
    assert "no report credential now" in events(site, remote_ip="10.6.0.1")[0]["reason"]
    result = AuditLog(site["audit"]).verify()
    assert result.ok, result.problem
