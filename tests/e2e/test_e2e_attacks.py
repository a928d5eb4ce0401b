"""End to end, as an attacker with a data scientist's account: a logged-in member's kernel, in a server the
real hub started as a Slurm job, tries every way around the guard that issue 13 lists and its variants.

Each attack runs inside the real sandbox through the real hub, proxy, Slurm job and launcher: the relays and
the job's output exist only on that path. Real services as in test_e2e_spawn.py (no GPU).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import hubclient
import pytest
import requests
from e2e_hub import HUB_ADMIN, diagnostics, job_outputs, start, stop, wait_ready

from jupyter_securehpc.audit import verify

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]

# Runs in the kernel. Reports, as JSON, what each attempt got: "ok" or the error's name.
ATTACKS = r"""
import json, os, resource, socket, urllib.parse
def attempt(fn):
    try:
        result = fn()
        return "ok" if result is None else result
    except OSError as error:
        return type(error).__name__
def hub(request):
    api = os.environ.get("JUPYTERHUB_API_URL") or "http+unix://%2Fsecurehpc%2Fhub%2Fhub-api.sock/hub/api"
    path = urllib.parse.unquote(urllib.parse.urlsplit(api).netloc)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode()
def post(path, body):
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return hub((head + f"Authorization: token {server_token}\r\n\r\n").encode() + data)
def get(path):
    return hub(f"GET {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: token {server_token}\r\n\r\n".encode())
def server_pid():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
                # The server itself: not bubblewrap's init, whose arguments name the server too.
                if b"jupyterhub-singleuser" in b" ".join(argv) and not argv[0].endswith(b"bwrap"):
                    return entry
            except OSError:
                pass
def read(path):
    with open(path, "rb") as handle:
        return len(handle.read())
def take_over():
    rogue = socket.socket(socket.AF_UNIX)
    rogue.bind("/securehpc/jupyter.sock")
    rogue.listen()
def plant_kernelspec(folder):
    os.makedirs(f"{folder}/kernels/evil", exist_ok=True)
    json.dump({"argv": ["python3", "-c", "1"], "display_name": "evil", "language": "python"},
              open(f"{folder}/kernels/evil/kernel.json", "w"))
    open(f"{folder}/kernels/evil/data.csv", "w").write("CANARY-E2E-DATA")
pid = server_pid()
# The server's hub token: in the kernel's environment, or read from the server's process.
server_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
environ = attempt(lambda: open(f"/proc/{pid}/environ", "rb").read())
if isinstance(environ, bytes):
    for item in environ.split(b"\0"):
        if item.startswith(b"JUPYTERHUB_API_TOKEN="):
            server_token = item.split(b"=", 1)[1].decode()
    environ = "ok"
user = os.environ.get("USER", "")
# Any other process of the sandbox whose environment shows the token (bubblewrap's init, helpers).
exposed = []
for other in os.listdir("/proc"):
    if other.isdigit() and other != pid and int(other) != os.getpid():
        try:
            if b"JUPYTERHUB_API_TOKEN=" in open(f"/proc/{other}/environ", "rb").read():
                exposed.append(open(f"/proc/{other}/comm").read().strip())
        except OSError:
            pass
report = {
    "token_in_env": sorted(k for k in os.environ if "TOKEN" in k),
    "server_environ": environ,
    "server_fds": attempt(lambda: os.listdir(f"/proc/{pid}/fd") and None),
    "server_mem": attempt(lambda: read(f"/proc/{pid}/mem") and None),
    "have_server_token": bool(server_token),
    "token_exposed_by": exposed,
    "take_over": attempt(take_over),
    "rename_hub_socket": attempt(lambda: os.rename("/securehpc/hub/hub-api.sock", "/securehpc/hub/x")),
    "rename_session_dir": attempt(lambda: os.rename("/securehpc", "/elsewhere")),
    "fake_dataset": attempt(lambda: os.makedirs("/datasets/evil/fake")),
    "fake_dataset_file": attempt(lambda: open("/datasets/evil.csv", "w").close()),
    "config_dir": attempt(lambda: open("/securehpc/jupyter/config/jupyter_server_config.json", "w").close()),
    "data_dir": attempt(lambda: plant_kernelspec("/securehpc/jupyter/data")),
    "home_kernelspec": attempt(lambda: plant_kernelspec(os.path.expanduser("~/.local/share/jupyter"))),
    "tmp_kernelspec": attempt(lambda: plant_kernelspec("/tmp/jupyter")),
    "forged_audit": post(f"/hub/api/securehpc/servers/{user}/sleep/audit", {"events": [{
        "actor": "alice", "action": "contents.download", "object": "/x", "outcome": "allowed"}]}),
    "old_audit": post("/hub/api/securehpc/audit", {"events": []}),
    "activity": post(f"/hub/api/users/{user}/activity", {"last_activity": "2099-01-01T00:00:00.123456Z"}),
    "users": get("/hub/api/users"),
    "tokens": post(f"/hub/api/users/{user}/tokens", {"note": "x"}),
    "whoami_with_query": get("/hub/api/user?include_stopped_servers"),
    "core_limit": list(resource.getrlimit(resource.RLIMIT_CORE)),
}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def session(e2e, token):
    """bob's server of project sleep, running for the whole module."""
    response = start(e2e, token, "sleep", {"gpus": "0"})
    assert response.status_code in (201, 202), response.text
    wait_ready(e2e, token, "sleep")
    base = f"{e2e['layout'].hub_url}/user/{e2e['user'].name}/sleep"
    yield base
    stop(e2e, token, "sleep")


def run(base: str, token: str, code: str) -> dict:
    return json.loads(hubclient.run_code(base, token, code).strip().splitlines()[-1])


def central_events(e2e) -> list[dict]:
    return [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]


def test_a_kernel_cannot_take_over_the_server_or_reach_the_hub(e2e, token, session):
    before = len(central_events(e2e))
    report = run(session, token, ATTACKS)
    # The server's hub token is neither in the kernel's environment nor readable from the server's process.
    assert report["token_in_env"] == [], report
    assert report["server_environ"] == "PermissionError" and report["have_server_token"] is False, report
    assert report["server_fds"] == "PermissionError" and report["server_mem"] == "PermissionError", report
    assert report["token_exposed_by"] == [], report
    # Nothing the sandbox can write decides where traffic goes.
    for name in ("take_over", "rename_hub_socket", "rename_session_dir", "fake_dataset", "fake_dataset_file",
                 "config_dir", "data_dir"):  # fmt: skip
        assert report[name] == "OSError", (name, report)
    # The hub relay passes none of these, whatever token they carry.
    for name in ("forged_audit", "old_audit", "activity", "users", "tokens", "whoami_with_query"):
        assert report[name].split()[1] == "403", (name, report)
    assert report["core_limit"] == [0, 0]

    # The server still is the real one: unauthenticated requests are sent to log in, authenticated ones served.
    headers = {"Authorization": f"token {token}"}
    assert requests.get(f"{session}/api/status", headers=headers, timeout=30).status_code == 200
    anonymous = requests.get(f"{session}/api/status", timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 403), anonymous.status_code
    # The refused hub calls reached the hub's audit log in the session's name, not in the forged one.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = central_events(e2e)[before:]
        refused = [e for e in new if e["action"] == "hub_api.refused"]
        if len(refused) >= 6:
            break
        time.sleep(0.5)
    assert len(refused) >= 6, new
    assert {(e["actor"], e["project"], e["outcome"]) for e in refused} == {(e2e["user"].name, "sleep", "denied")}
    assert not [e for e in new if e["actor"] == "alice"]
    assert verify(e2e["root"] / "audit.jsonl").ok


def test_kernel_written_kernel_specs_are_neither_listed_nor_served(e2e, token, session):
    run(session, token, ATTACKS)
    headers = {"Authorization": f"token {token}"}
    specs = requests.get(f"{session}/api/kernelspecs", headers=headers, timeout=30)
    assert specs.status_code == 200 and "evil" not in specs.json()["kernelspecs"]
    for path in ("/kernelspecs/evil/data.csv", "/kernelspecs/evil/kernel.json"):
        response = requests.get(session + path, headers=headers, timeout=30)
        assert response.status_code in (403, 404) and b"CANARY" not in response.content, path
    assert requests.get(f"{session}/kernelspecs/python3/logo-64x64.png", headers=headers, timeout=30).ok


def test_activity_is_the_hubs_clock_not_the_kernels(e2e, token, session):
    run(session, token, ATTACKS)  # tries to post a date in 2099 with microseconds as data
    user = requests.get(
        f"{e2e['layout'].hub_url}/hub/api/users/{e2e['user'].name}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    ).json()
    now = datetime.now(timezone.utc)
    for when in [user["last_activity"], user["servers"]["sleep"]["last_activity"]]:
        if when:
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            assert moment <= now, when


def test_text_reads_and_uploads_through_the_contents_api_are_refused(e2e, token, session):
    """A data scientist (the demo's default policy: no text reads, no uploads) copies a dataset file into the
    workspace from the kernel and tries to take it out as text, as a notebook, or to bring data in."""
    run(session, token, "import shutil; shutil.copy('/datasets/mri/scans/night1/eeg.csv', '/project/eeg.csv'); "
                        "print('{}')")  # fmt: skip
    headers = {"Authorization": f"token {token}"}
    contents = f"{session}/api/contents"
    for query in ("format=text", "", "type=file&format=text", "type=notebook", "format=text&format=json",
                  "type=file&format=text%20", "content=1"):  # fmt: skip
        response = requests.get(f"{contents}/eeg.csv?{query}", headers=headers, timeout=30)
        assert response.status_code in (403, 404), (query, response.status_code)
        assert b"t,c3,c4" not in response.content and b"0,0,0" not in response.content, query
    # Data in: a new file with content, an empty file then saved, a rename into place.
    new = {"type": "file", "format": "text", "content": "patient,value\n1,2\n"}
    assert requests.put(f"{contents}/brought.csv", json=new, headers=headers, timeout=30).status_code == 403
    empty = requests.put(f"{contents}/empty.csv", json={"type": "file", "format": "text", "content": ""},
                         headers=headers, timeout=30)  # fmt: skip
    if empty.status_code in (200, 201):
        saved = requests.put(f"{contents}/empty.csv", json=new, headers=headers, timeout=30)
        assert saved.status_code == 403, saved.text
    response = requests.patch(f"{contents}/eeg.csv", json={"path": "eeg.py"}, headers=headers, timeout=30)
    assert response.status_code == 403, response.text


def test_a_hub_admin_can_neither_mint_the_members_token_nor_enter_the_session(e2e, token, session):
    """A site that kept a JupyterHub admin (the shipped configuration has none): the hub refuses the admin a
    token for the member and a share of the server; the admin's own token, which the hub lets through to every
    server (``access:servers``), is refused by the session, and the refusal reaches the central audit log."""
    layout, user = e2e["layout"], e2e["user"].name
    admin_token = hubclient.api_token(layout, hubclient.login(layout, e2e["admin_account"]), HUB_ADMIN)
    admin = {"Authorization": f"token {admin_token}"}
    api = f"{layout.hub_url}/hub/api"
    whoami = requests.get(f"{api}/user", headers=admin, timeout=30)
    assert whoami.status_code == 200 and whoami.json()["admin"] is True, whoami.text
    minted = requests.post(f"{api}/users/{user}/tokens", json={"note": "as the member"}, headers=admin, timeout=30)
    assert minted.status_code == 403, minted.text
    shared = requests.post(f"{api}/shares/{user}/sleep", json={"user": HUB_ADMIN}, headers=admin, timeout=30)
    assert shared.status_code == 403, shared.text
    tokens = requests.get(f"{api}/users/{user}/tokens", headers={"Authorization": f"token {token}"}, timeout=30)
    assert not [t for t in tokens.json()["api_tokens"] if t["note"] and "as the member" in t["note"]]
    for path in ("api/contents", "api/kernels", "files/eeg.csv", "api/contents/eeg.csv?format=base64"):
        response = requests.get(f"{session}/{path}", headers=admin, timeout=30, allow_redirects=False)
        assert response.status_code == 403, (path, response.status_code, response.text[:200])
    hub_refusals = [e for e in central_events(e2e) if e["actor"] == HUB_ADMIN and e["outcome"] == "denied"]
    assert {e["action"] for e in hub_refusals} >= {"token.create", "share.create"}, hub_refusals

    def from_the_session() -> list[dict]:
        return [e for e in central_events(e2e) if e["details"].get("reported_by") == f"server:{user}/sleep"
                and HUB_ADMIN in (e.get("reason") or "")]  # fmt: skip

    deadline = time.monotonic() + 30
    while not from_the_session() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert from_the_session(), (central_events(e2e)[-5:], diagnostics(e2e))
    refusal = from_the_session()[-1]
    assert refusal["actor"] == "anonymous" and refusal["outcome"] == "denied" and refusal["project"] == "sleep"
    assert f"belongs to {user}" in refusal["reason"]


def test_the_jobs_output_is_private_and_holds_launcher_messages_only(e2e, token, session):
    requests.get(f"{session}/files/eeg.csv", headers={"Authorization": f"token {token}"}, timeout=30)
    outputs = [p for p in job_outputs(e2e, "sleep") if p.stat().st_size]
    assert outputs, diagnostics(e2e)
    for output in outputs:
        # The principal's, not the person's: the person's own processes cannot read it either.
        assert output.stat().st_mode & 0o777 == 0o600, output
        assert output.stat().st_uid == e2e["principals"]["sleep"].uid != e2e["user"].uid
        text = output.read_text(errors="replace")
        assert all(line.startswith("securehpc-node: ") for line in text.splitlines()), text
        for leak in ("eeg.csv", "/files/", "_xsrf", "jupyterhub-session", "GET /", token):
            assert leak not in text, (leak, text)


def test_stopping_the_server_removes_the_jobs_output(e2e, token, session):
    assert job_outputs(e2e, "sleep")
    stop(e2e, token, "sleep")
    deadline = time.monotonic() + 60
    while job_outputs(e2e, "sleep") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not job_outputs(e2e, "sleep")
