"""End to end: OpenID login with MFA, a project's server started through the hub's REST API as a Slurm job
in the sandbox, reached through the proxy, a kernel that reads the shared dataset and writes the workspace
and reaches nothing else, then stopped with nothing left.

Real services: the local Slurm (GPU GRES placeholders: no real GPU), OpenBao, the OpenID provider,
JupyterHub with configurable-http-proxy, bubblewrap and gocryptfs, a real unprivileged user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import hubclient
import pytest
import requests
from e2e_hub import api_token, diagnostics, hub_env, job_outputs, login, start, stop, wait_ready

from jupyter_securehpc.audit import verify
from jupyter_securehpc.devcluster import hub, slurm

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]

KERNEL_CODE = r"""
import hashlib, json, os, socket
def attempt(fn):
    try:
        fn(); return "ok"
    except OSError as error:
        return type(error).__name__
def tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
open("/project/from-kernel.txt", "w").write("CANARY-E2E")
print(json.dumps({
    "dataset": hashlib.sha256(open("/datasets/mri/scans/README.txt", "rb").read()).hexdigest(),
    "workspace": sorted(os.listdir("/project")),
    "hub": attempt(lambda: tcp(PORT_HUB)),
    "openbao": attempt(lambda: tcp(PORT_BAO)),
    "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
}))
"""


def spawn_with_progress(e2e, token: str, server: str, options: dict) -> list[dict]:
    """POST the spawn and follow the hub's progress event stream until ready or failed, as the spawn page does."""
    layout, user = e2e["layout"], e2e["user"].name
    headers = {"Authorization": f"token {token}"}
    url = f"{layout.hub_url}/hub/api/users/{user}/servers/{server}"
    posted: list[requests.Response] = []
    poster = threading.Thread(
        target=lambda: posted.append(requests.post(url, headers=headers, json=options, timeout=120))
    )
    poster.start()
    events: list[dict] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not events:
            with requests.get(f"{url}/progress", headers=headers, stream=True, timeout=120) as stream:
                if stream.status_code in (400, 404):  # the hub has not begun this spawn yet
                    time.sleep(0.05)
                    continue
                assert stream.status_code == 200, stream.text
                for line in stream.iter_lines(decode_unicode=True):
                    if line and line.startswith("data: "):
                        events.append(json.loads(line.removeprefix("data: ")))
                        if events[-1].get("ready") or events[-1].get("failed"):
                            break
    finally:
        poster.join(timeout=130)
    assert posted and posted[0].status_code in (201, 202), posted[0].text if posted else "no answer"
    return events


def test_login_spawn_use_and_stop(e2e):
    layout, user = e2e["layout"], e2e["user"].name
    browser = login(e2e)
    token = api_token(e2e, browser)
    headers = {"Authorization": f"token {token}"}
    events = spawn_with_progress(e2e, token, "sleep", {"gpus": "1"})
    assert events[-1].get("ready"), f"{events}\n{diagnostics(e2e)}"
    messages = [event["message"] for event in events]
    # The user saw the start go by: key delivered, mounts, JupyterLab (queueing may be too short to see).
    for phrase in ("Project key delivered", "Mounting the encrypted", "starting JupyterLab"):
        assert any(phrase in message for message in messages), messages
    assert [event["progress"] for event in events] == sorted(event["progress"] for event in events)
    wait_ready(e2e, token, "sleep")
    base = f"{layout.hub_url}/user/{user}/sleep"
    status = requests.get(f"{base}/api/status", headers=headers, timeout=30)
    assert status.status_code == 200, status.text
    hub_log = (layout.log_dir / "jupyterhub.log").read_text(errors="replace")
    assert "submitted +" in hub_log and "port +" in hub_log  # the start's timeline, for admins
    # No secret in any log (the hub's at DEBUG, Slurm's, the provider's, OpenBao's) or in the job's output.
    assert "[D " in hub_log  # really at DEBUG
    launcher = launcher_environ("sleep")
    secrets_of_this_session = {
        "user API token": token,
        "server API token": launcher[b"JUPYTERHUB_API_TOKEN"].decode(),
        "wrapped token": launcher[b"SECUREHPC_WRAPPED_TOKEN"].decode(),
        "report secret": launcher[b"SECUREHPC_REPORT_TOKEN"].decode(),
    }
    logs = [*layout.log_dir.iterdir(), *job_outputs(e2e)]
    for name, secret in secrets_of_this_session.items():
        assert len(secret) >= 16
        leaks = [str(log) for log in logs if log.is_file() and secret in log.read_text(errors="replace")]
        assert not leaks, f"the {name} is in {leaks}"

    code = KERNEL_CODE.replace("PORT_HUB", str(layout.hub_port)).replace("PORT_BAO", str(layout.openbao_port))
    report = json.loads(hubclient.run_code(base, token, code).strip().splitlines()[-1])
    assert report["dataset"] == e2e["hashes"]["README.txt"]
    assert "from-kernel.txt" in report["workspace"]
    assert report["hub"] != "ok" and report["openbao"] != "ok" and report["dns"] != "ok"

    # A download refused by the server extension in the session lands in the hub's central audit log.
    refused = requests.get(f"{base}/files/from-kernel.txt", headers=headers, timeout=30)
    assert refused.status_code == 403 and b"CANARY-E2E" not in refused.content
    central = e2e["root"] / "audit.jsonl"

    def forwarded() -> list[dict]:
        events = [json.loads(line) for line in central.read_text().splitlines()]
        return [e for e in events if e["details"].get("reported_by") == f"server:{user}/sleep"]

    deadline = time.monotonic() + 30
    while not forwarded() and time.monotonic() < deadline:
        time.sleep(0.5)
    event = forwarded()[-1]
    assert event["outcome"] == "denied" and event["project"] == "sleep" and "from-kernel.txt" in event["object"]
    assert verify(central).ok
    # The hub recorded who started the session and the account it runs as: the person's principal in sleep.
    events = [json.loads(line) for line in central.read_text().splitlines()]
    started = [e for e in events if e["action"] == "session.start" and e["outcome"] == "allowed"]
    (started,) = [e for e in started if e["project"] == "sleep"]
    assert started["actor"] == user and started["details"]["principal"] == e2e["principals"]["sleep"].name

    response = requests.delete(f"{layout.hub_url}/hub/api/users/{user}/servers/sleep", headers=headers, timeout=120)
    assert response.status_code in (202, 204), response.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = jobs_of(e2e)
        if not queue.strip():
            break
        time.sleep(0.5)
    assert not queue.strip(), queue
    # No mount of this site's stores on the host (the sessions' mounts were only ever in their sandboxes).
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if "fuse.gocryptfs" in line]
    assert not [line for line in mounts if str(e2e["root"]) in line], mounts


def jobs_of(e2e) -> str:
    """The user's jobs (run by the user's principals)."""
    principals = ",".join(p.name for p in e2e["principals"].values())
    argv = ["squeue", "--noheader", f"--user={principals}", "--format=%i %k"]
    return subprocess.run(argv, env=e2e["slurm_env"], capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.mark.parametrize(
    ("server", "options", "says"),
    [
        # Not one of the user's projects: refused before the server exists (spawner/servers.py).
        ("mri", {}, "has no project named 'mri'"),
        ("sleep", {"gpus": "1\n#SBATCH --uid=0"}, "whole number"),
        ("sleep", {"gpus": "5"}, "from 0 to 1"),
        ("sleep", {"cpus": "$(reboot)"}, "whole number"),
        ("sleep", {"partition": "all"}, "unknown spawn options 'partition'"),
        ("sleep", {"project": "other"}, "this server is for project 'sleep'"),
        ("sleep", {"minutes": "9" * 500}, "whole number"),
    ],
)
def test_refused_spawns_submit_nothing(e2e, token, server, options, says):
    before = jobs_of(e2e)
    response = start(e2e, token, server, options)
    assert response.status_code == 400, response.text
    assert says in response.json()["message"]
    assert jobs_of(e2e) == before
    stop(e2e, token, server)


def test_the_report_endpoints_take_no_hub_credential(e2e, token):
    layout, user = e2e["layout"], e2e["user"].name
    url = f"{layout.hub_url}/hub/api/securehpc/servers/{user}/sleep/port"
    # A user's own API token is no report credential, whatever the body; nor is nothing.
    for headers in ({"Authorization": f"token {token}"}, {"Authorization": f"bearer {token}"}, {}):
        for body in ('{"port": 8888}', '{"ip": "evil.example.org"}', "garbage"):
            assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 403, (headers, body)
    # batchspawner's attribute-setting callback and the old token-authenticated reports do not exist here.
    for old in ("batchspawner", "securehpc/port", "securehpc/stage", "securehpc/audit"):
        answer = requests.post(f"{layout.hub_url}/hub/api/{old}", json={"ip": "evil"},
                               headers={"Authorization": f"token {token}"}, timeout=30)  # fmt: skip
        assert answer.status_code == 404, old


def test_other_project_sees_nothing_of_the_first_and_a_hub_restart_keeps_servers(e2e, token):
    layout, user = e2e["layout"], e2e["user"].name
    # Explicit options: an empty body makes the hub reuse the last options (here: a refused attempt).
    for server, options in (("sleep", {"gpus": "1"}), ("other", {"gpus": "0"})):
        response = start(e2e, token, server, options)
        assert response.status_code in (201, 202), response.text
    wait_ready(e2e, token, "sleep")
    wait_ready(e2e, token, "other")
    sleep_base, other_base = f"{layout.hub_url}/user/{user}/sleep", f"{layout.hub_url}/user/{user}/other"
    hubclient.run_code(sleep_base, token, "open('/project/only-in-sleep.txt', 'w').write('x')")
    probe = "import json, os; print(json.dumps([sorted(os.listdir('/project')), os.listdir('/datasets')]))"
    workspace, datasets = json.loads(hubclient.run_code(other_base, token, probe).strip().splitlines()[-1])
    assert "only-in-sleep.txt" not in workspace
    assert datasets == []

    hub.down(layout)
    hub.up(layout, env=hub_env(e2e), settings=e2e["settings"])
    headers = {"Authorization": f"token {token}"}
    assert requests.get(f"{sleep_base}/api/status", headers=headers, timeout=60).status_code == 200
    stop(e2e, token, "sleep")
    stop(e2e, token, "other")


def test_a_job_that_dies_before_reporting_fails_the_spawn_with_its_own_message(e2e, token):
    """The launcher refuses (the workspace is not the project group's to write): the spawn fails at once, saying
    why."""
    workspace = e2e["root"] / "stores" / "projects" / "other" / "workspace"
    mode = workspace.stat().st_mode
    workspace.chmod(0o2750)
    try:
        response = start(e2e, token, "other", {"gpus": "0"})
        if response.status_code in (201, 202):  # the failure arrives while the spawn is pending
            # Bounded wait, well under start_timeout: the spawner notices the ended job, not the timeout.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                info = requests.get(
                    f"{e2e['layout'].hub_url}/hub/api/users/{e2e['user'].name}",
                    headers={"Authorization": f"token {token}"},
                    timeout=30,
                ).json()
                if "other" not in info.get("servers", {}):
                    break
                time.sleep(0.5)
            assert "other" not in info.get("servers", {}), "the failed job was not noticed"
            log = (e2e["layout"].log_dir / "jupyterhub.log").read_text(errors="replace")
            assert "has mode 2750, not 2770" in log
        else:
            assert "has mode 2750, not 2770" in response.text
    finally:
        workspace.chmod(mode & 0o7777)
    stop(e2e, token, "other")


def squeue_warnings(e2e) -> int:
    log = (e2e["layout"].log_dir / "jupyterhub.log").read_text(errors="replace")
    return log.count("squeue for job")


def test_slurmctld_briefly_down_does_not_drop_running_servers(e2e, token):
    layout, user = e2e["layout"], e2e["user"].name
    assert start(e2e, token, "sleep", {"gpus": "0"}).status_code in (201, 202)
    wait_ready(e2e, token, "sleep")
    base = f"{layout.hub_url}/user/{user}/sleep"
    headers = {"Authorization": f"token {token}"}
    controller, _ = slurm.daemons(layout)
    warnings = squeue_warnings(e2e)
    controller.stop()
    try:
        # The hub polls the server (every 2 s here) and squeue fails: unknown is not dead.
        deadline = time.monotonic() + 90
        while squeue_warnings(e2e) == warnings and time.monotonic() < deadline:
            time.sleep(0.5)
        assert squeue_warnings(e2e) > warnings, "the hub did not poll while slurmctld was down"
        assert requests.get(f"{base}/api/status", headers=headers, timeout=30).status_code == 200
        # A hub restart polls every server (squeue takes ~20 s to give up, so in the background): still
        # unknown, still kept.
        hub.down(layout)
        hub.up(layout, env=hub_env(e2e), settings=e2e["settings"], timeout=120)
        wait_ready(e2e, token, "sleep", timeout=120)
        status = requests.get(f"{base}/api/status", headers=headers, timeout=30)
        assert status.status_code == 200, f"{status.status_code}\n{diagnostics(e2e)}"
    finally:
        slurm.up(layout)
    wait_ready(e2e, token, "sleep")
    assert requests.get(f"{base}/api/status", headers=headers, timeout=30).status_code == 200
    stop(e2e, token, "sleep")
    assert not jobs_of(e2e).strip()


def job_state(e2e, job_id: str) -> str:
    info = subprocess.run(["scontrol", "show", "job", job_id], env=e2e["slurm_env"], capture_output=True,
                          text=True, timeout=30, check=False).stdout  # fmt: skip
    return next((item.split("=", 1)[1] for item in info.split() if item.startswith("JobState=")), "gone")


def test_jobs_of_an_interrupted_spawn_are_cancelled_or_end_by_themselves(e2e, token):
    """The hub dies (SIGKILL) while two spawns wait in the queue. After its restart, starting one of those
    servers again cancels its old job (found by its tag); the other old job, once it runs, finds no spawn
    waiting for its port and ends itself. Nothing is orphaned."""
    layout = e2e["layout"]
    began = time.time()
    # A root job holding the whole node keeps the servers' jobs pending.
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--partition=gpu", "--output=/dev/null", "--wrap=sleep 600"],
        env=e2e["slurm_env"], capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        servers = ("sleep", "other")
        posts = [threading.Thread(target=start, args=(e2e, token, server, {"gpus": "0"})) for server in servers]
        for post in posts:
            post.start()
        deadline = time.monotonic() + 60
        while len(jobs_of(e2e).splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        old = {line.split()[1].split(":")[2]: line.split()[0] for line in jobs_of(e2e).splitlines()}
        assert set(old) == {"sleep", "other"}, old
        os.kill(hub.daemon(layout).pid(), signal.SIGKILL)
        for post in posts:
            post.join(timeout=130)
        hub.up(layout, env=hub_env(e2e), settings=e2e["settings"], timeout=120)

        assert start(e2e, token, "sleep", {"gpus": "0"}).status_code in (201, 202)
        assert job_state(e2e, old["sleep"]) in ("CANCELLED", "gone")
        subprocess.run(["scancel", blocker], env=e2e["slurm_env"], timeout=30, check=True)
        wait_ready(e2e, token, "sleep", timeout=120)
        # The other old job starts, is refused its port report, and ends by itself.
        deadline = time.monotonic() + 120
        while job_state(e2e, old["other"]) in ("PENDING", "RUNNING", "COMPLETING") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert job_state(e2e, old["other"]) not in ("PENDING", "RUNNING", "COMPLETING")
        # This job's output: job ids start again on every test cluster, the random part of the name does not.
        (output_file,) = [path for path in job_outputs(e2e, "other")
                          if f"-{old['other']}-" in path.name and path.stat().st_mtime >= began]  # fmt: skip
        output = output_file.read_text(errors="replace")
        assert "the hub refused this server's port" in output
        events = [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]
        assert any(e["action"] == "session.port" and e["outcome"] == "denied" for e in events)
        assert [line for line in jobs_of(e2e).splitlines() if old["other"] in line.split()[:1]] == []
    finally:
        subprocess.run(["scancel", blocker], env=e2e["slurm_env"], timeout=30, check=False)
        stop(e2e, token, "sleep")
        stop(e2e, token, "other")


def launcher_environ(server: str) -> dict[bytes, bytes]:
    """The environment a running server's launcher was started with, read as root on the node (it still holds
    the server's hub API token and the spent wrapped token: the kernel keeps a process's first environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and any(a.endswith(b"securehpc-node") for a in argv[:2]):
            env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
            if env.get(b"JUPYTERHUB_SERVER_NAME") == server.encode():
                return env
    raise AssertionError(f"no launcher of server {server} found")


def server_token(server: str) -> str:
    return launcher_environ(server)[b"JUPYTERHUB_API_TOKEN"].decode()


def report_secret(server: str) -> str:
    return launcher_environ(server)[b"SECUREHPC_REPORT_TOKEN"].decode()


def test_the_job_report_endpoints_take_exactly_their_shape_from_the_launchers_secret(e2e, token):
    layout, user = e2e["layout"], e2e["user"].name
    assert start(e2e, token, "other", {"gpus": "0"}).status_code in (201, 202)
    wait_ready(e2e, token, "other")
    try:
        base = f"{layout.hub_url}/hub/api/securehpc/servers/{user}/other"
        server = {"Authorization": f"securehpc-report {report_secret('other')}"}
        central = e2e["root"] / "audit.jsonl"
        before = len(central.read_text().splitlines())
        # The server runs: no start waits for a port or a stage any more.
        assert requests.post(f"{base}/port", json={"port": 8888}, headers=server, timeout=30).status_code == 403
        assert requests.post(f"{base}/stage", json={"stage": "key"}, headers=server, timeout=30).status_code == 403
        # Audit events are taken while it runs, in their exact shape only.
        event = {"actor": user, "action": "contents.download", "object": "/files/x", "outcome": "denied",
                 "reason": "downloads are not allowed", "details": {"method": "GET", "status": 403}}  # fmt: skip
        for bad in ({"events": [{**event, "outcome": "fine"}]}, {"events": [{**event, "cmd": "x"}]}, {"port": 1},
                    {"events": [{**event, "details": {"token": "x"}}]}, {"events": []}):  # fmt: skip
            assert requests.post(f"{base}/audit", json=bad, headers=server, timeout=30).status_code == 400, bad
        ok = requests.post(f"{base}/audit", json={"events": [event]}, headers=server, timeout=30)
        assert ok.status_code == 204, ok.text
        # A session cannot flood the central log: beyond its budget per minute, 429, and one audit event.
        for _ in range(2):
            flood = requests.post(f"{base}/audit", json={"events": [event] * 100}, headers=server, timeout=30)
            assert flood.status_code == 429, flood.text
        # Neither the user's own token nor the server's is the launcher's secret.
        for hub_token in (token, server_token("other")):
            user_headers = {"Authorization": f"token {hub_token}"}
            answer = requests.post(f"{base}/audit", json={"events": [event]}, headers=user_headers, timeout=30)
            assert answer.status_code == 403, answer.text
        events = [json.loads(line) for line in central.read_text().splitlines()[before:]]
        refusals = [e for e in events if e["outcome"] == "denied" and e["action"].startswith("session.")]
        # Every refused report is an audit event; of the flood, only the minute's first refusal.
        assert len(refusals) == 10, refusals
        taken = [e for e in events if e["action"] == "contents.download"]
        assert len(taken) == 1 and taken[0]["details"]["reported_by"] == f"server:{user}/other"
        assert verify(central).ok
    finally:
        stop(e2e, token, "other")
