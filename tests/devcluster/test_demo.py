"""The README's first command, minus the package installs: ``securehpc dev up`` brings up the demo (projects,
people, the synthetic dataset shared into a second project, the hub), prints where to log in and the demo
logins; then the first hour as the README tells it, driven as its users would: sign-ins through the provider's
form (also a refused one, which must not lock the browser out), two of bob's servers at once with the default
options, a Slurm job that waits and says why in words, refused spawns (400, nothing left behind), the README's
admin commands pasted into a root shell, the hub's restricted OpenBao token, and ``up`` again after a user put
links into a workspace.

Real services: the tests' local cluster (Slurm with GPU GRES placeholders: no real GPU), OpenBao, the
OpenID provider, JupyterHub with configurable-http-proxy, bubblewrap and gocryptfs."""

from __future__ import annotations

import grp
import hashlib
import html
import json
import os
import pwd
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import hubclient
import hvac
import pytest
import requests

from jupyter_securehpc.audit import verify
from jupyter_securehpc.devcluster import demo, hub, oidc, openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig, KeyStoreDenied

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CLI = str(Path(sys.executable).with_name("securehpc"))
ROOT = Path(__file__).resolve().parents[2]

READ_SHARED = r"""
import hashlib, json, os
folder = "/datasets/sleep/psg"
open("/project/analysis.txt", "w").write("mean EEG over night 1")
print(json.dumps({
    "files": {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
              for name in sorted(os.listdir(folder)) if not name.startswith(".")},  # not the import's manifest
    "workspace": sorted(os.listdir("/project")),
    "filesystem": {line.split()[1]: line.split()[2] for line in open("/proc/mounts")}.get(folder),
}))
"""


@pytest.fixture(scope="module")
def demo_up(local_cluster, slurm_env):
    layout = local_cluster.layout
    accounts, groups = {e.pw_name for e in pwd.getpwall()}, {e.gr_name for e in grp.getgrall()}
    result = subprocess.run(
        [CLI, "dev", "--state-dir", str(layout.state_dir), "up", "--no-install"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        yield layout, result
    finally:
        hub.down(layout)
        for person in demo.people():
            subprocess.run(["scancel", f"--user={person}"], env=slurm_env, check=False, timeout=30)
        # The Unix accounts and groups these tests made (the demo's people and principals, the README block's
        # project's): gone again, unless they were on the machine before (a demo of the machine's own).
        for name in {e.pw_name for e in pwd.getpwall()} - accounts:
            subprocess.run(["userdel", name], check=False, timeout=30, capture_output=True)
        for name in {e.gr_name for e in grp.getgrall()} - groups:
            subprocess.run(["groupdel", name], check=False, timeout=30, capture_output=True)


@pytest.fixture(scope="module")
def ready(demo_up):
    layout, result = demo_up
    assert result.returncode == 0, result.stdout + result.stderr
    return layout


def account(layout, username: str) -> dict:
    return next(entry for entry in oidc.accounts(layout) if entry["username"] == username)


@pytest.fixture(scope="module")
def bob(ready) -> dict[str, str]:
    """bob's API token (from a real sign-in) and his hub URLs."""
    token = hubclient.api_token(ready, hubclient.login(ready, account(ready, "bob")), "bob", note="demo test")
    return {"token": token, "api": f"{ready.hub_url}/hub/api/users/bob", "user": f"{ready.hub_url}/user/bob"}


def headers(bob: dict) -> dict[str, str]:
    return {"Authorization": f"token {bob['token']}"}


def stop(bob: dict, server: str) -> None:
    requests.delete(f"{bob['api']}/servers/{server}", headers=headers(bob), timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = requests.get(bob["api"], headers=headers(bob), timeout=30).json()
        if server not in model.get("servers", {}):
            return
        time.sleep(0.5)


def hub_log(layout) -> str:
    return (layout.log_dir / "jupyterhub.log").read_text(errors="replace")[-6000:]


def test_up_prints_where_to_log_in_and_the_demo_logins(demo_up):
    layout, result = demo_up
    assert result.returncode == 0, result.stderr
    assert f"{layout.hub_url}/" in result.stdout
    lines = result.stdout.splitlines()
    for entry in oidc.accounts(layout):
        parts = [entry["username"], entry["password"], entry["otp"] or "no second factor"]
        assert any(all(part in line for part in parts) for line in lines), (entry["username"], result.stdout)
    # What to open, and the three things to try (the README's first screen says the same).
    for words in (f"{layout.hub_url}/hub/spawn/bob/cardio", "/datasets/sleep/psg", "403", "source <("):
        assert words in result.stdout, words


def test_up_prints_commands_that_run_when_pasted(demo_up):
    """``securehpc`` is not on this shell's PATH (only in the environment's bin): the printed lines work anyway."""
    _, result = demo_up
    printed = [line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith(("Status: ", "Stop"))]
    assert len(printed) == 2, result.stdout
    status = next(line for line in printed if line.endswith(" status"))
    shell = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    ran = subprocess.run(["bash", "-c", status], env=shell, capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"^up\s+jupyterhub\s+pid \d+", ran.stdout, re.M), ran.stdout  # the hub is listed too


# --- 1. sign-in ----------------------------------------------------------------------------------------------
def provider_form(browser: requests.Session, layout) -> str:
    """Press "Sign in" on the hub: the provider's form must be what the browser gets; its action."""
    page = browser.get(f"{layout.hub_url}/hub/oauth_login", timeout=30)
    assert page.url.startswith(layout.oidc_issuer), f"no sign-in form, the browser went to {page.url}"
    found = re.search(r'<form id="login" method="post" action="([^"]+)"', page.text)
    assert found, page.text[:500]
    return html.unescape(found.group(1))


def submit(browser: requests.Session, layout, username: str, *, otp: bool = True) -> requests.Response:
    """Fill in the provider's form and follow the browser's way back to the hub, auto-submitted forms too (the
    provider's form_post page that ends another person's session in this browser runs a script that submits)."""
    entry = account(layout, username)
    response = browser.post(
        layout.oidc_issuer + provider_form(browser, layout),
        data={"login": username, "password": entry["password"], "otp": entry["otp"] if otp else ""},
        timeout=30,
    )
    for _ in range(3):
        auto = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', response.text, re.S)
        if not auto or "document.forms[0].submit()" not in response.text:
            break
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', auto.group(2)))
        response = browser.post(html.unescape(auto.group(1)), data=fields, timeout=30)
    return response


def test_a_sign_in_without_the_code_does_not_lock_the_browser_out(ready):
    browser = requests.Session()
    refused = submit(browser, ready, "alice", otp=False)
    assert refused.status_code == 403 and "Sign in again with your second factor" in refused.text
    # "Sign in" again: the form, not the refused login once more; with the code, alice is in.
    home = submit(browser, ready, "alice")
    assert home.status_code == 200 and home.url == f"{ready.hub_url}/hub/home", home.url
    assert 'user: "alice"' in home.text
    # After the hub's logout, "Sign in" shows the form again too.
    browser.get(f"{ready.hub_url}/hub/logout", timeout=30)
    assert browser.get(f"{ready.hub_url}/hub/home", allow_redirects=False, timeout=30).status_code == 302
    provider_form(browser, ready)
    # Someone else in the same browser after a refused sign-in: mallory (no second factor at all), then bob.
    assert submit(browser, ready, "mallory", otp=False).status_code == 403
    home = submit(browser, ready, "bob")
    assert home.url == f"{ready.hub_url}/hub/home" and 'user: "bob"' in home.text, home.url


# --- 2. two projects at once, defaults, reasons in words ------------------------------------------------------
def start(bob: dict, server: str, body: dict | None = None) -> requests.Response:
    url = f"{bob['api']}/servers/{server}"
    if body is None:  # no options at all: JupyterHub would reuse the last ones; the spawner must not
        return requests.post(url, headers=headers(bob), timeout=120)
    return requests.post(url, headers=headers(bob), json=body, timeout=120)


def job_of(slurm_env, server: str) -> dict[str, str]:
    # Every job (sessions may run under another account than bob's own): the job's tag names user and project.
    listing = subprocess.run(["squeue", "--noheader", "--format=%k|%i|%T|%C|%m|%b"], env=slurm_env,
                             capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    for line in listing.splitlines():
        tag, job, state, cpus, memory, gres = line.split("|")
        if tag.split(":")[1:3] == ["bob", server]:
            return {"job": job, "state": state, "cpus": cpus, "memory": memory, "gres": gres}
    raise AssertionError(f"no job of bob for {server}: {listing}")


def test_two_projects_servers_of_bob_run_at_once_with_default_options(ready, bob, slurm_env, tmp_path):
    for server in ("sleep", "cardio"):
        response = start(bob, server)
        assert response.status_code in (201, 202), response.text
    try:
        for server in ("sleep", "cardio"):
            hubclient.wait_ready(ready, bob["token"], "bob", server, timeout=180, explain=lambda: hub_log(ready))
        for server in ("sleep", "cardio"):  # both at once, each with one CPU and its memory share
            job = job_of(slurm_env, server)
            assert (job["state"], job["cpus"], job["memory"]) == ("RUNNING", "1", "2G"), job

        # A kernel reads the recordings shared from sleep into cardio.
        output = hubclient.run_code(f"{bob['user']}/cardio", bob["token"], READ_SHARED)
        report = json.loads(output.strip().splitlines()[-1])
        # The generator is seeded: the same recordings again, byte for byte, to compare with what bob read.
        demo.synthetic_psg(tmp_path)
        expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())}
        assert report["files"] == expected
        assert report["filesystem"] == "tmpfs"  # staged: decrypted from the ciphertext into memory at start
        assert "analysis.txt" in report["workspace"]
        # The README's first screen's kernel line, as printed (an error in it would fail here).
        line = re.search(r"`(import csv;[^`]+)`", (ROOT / "README.md").read_text()).group(1)
        printed = hubclient.run_code(f"{bob['user']}/cardio", bob["token"], f"{line}\nprint(rows[0])")
        assert "'stage':" in printed, printed

        # A download is refused, and the refusal is in the demo's audit log.
        refused = requests.get(f"{bob['user']}/cardio/files/analysis.txt", headers=headers(bob), timeout=30)
        assert refused.status_code == 403, refused.status_code
        assert b"mean EEG" not in refused.content
        from_session = "server:bob/cardio"
        assert wait_for_event(
            ready, lambda e: e.get("details", {}).get("reported_by") == from_session and e["outcome"] == "denied"
        )
    finally:
        stop(bob, "sleep")
        stop(bob, "cardio")


def audit_events(layout) -> list[dict]:
    log = Path(hub.default_site(layout)["SecureHPC.audit_log"])
    return [json.loads(line) for line in log.read_text().splitlines()]


def wait_for_event(layout, matches, seconds: float = 30) -> dict | None:
    """The first audit event that ``matches``; a session's events reach the hub's log through its launcher."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [event for event in audit_events(layout) if matches(event)]
        if found:
            return found[0]
        time.sleep(0.5)
    return None


def follow_progress(bob: dict, server: str, until: str, seconds: float = 120) -> list[str]:
    """The spawn page's progress messages, until one contains ``until`` (or the start is ready or failed)."""
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with requests.get(f"{bob['api']}/servers/{server}/progress", headers=headers(bob), stream=True,
                          timeout=seconds) as stream:  # fmt: skip
            if stream.status_code != 200:
                time.sleep(0.2)
                continue
            for line in stream.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    messages.append(event.get("message", ""))
                    if until in messages[-1] or event.get("ready") or event.get("failed"):
                        return messages
    return messages


def test_a_waiting_job_says_why_in_words(ready, bob, slurm_env):
    """Every CPU of the node is taken by another job: bob's session waits, and the spawn page says why."""
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--partition=gpu", f"--cpus-per-task={os.cpu_count()}", "--mem=100M",
         "--output=/dev/null", "--wrap=sleep 600"],
        env=slurm_env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip().split(";")[0]  # fmt: skip
    try:
        squeue = ["squeue", "--noheader", f"--jobs={blocker}", "--format=%T"]
        deadline = time.monotonic() + 60  # the sessions of the tests before may still be ending
        while (
            subprocess.run(squeue, env=slurm_env, capture_output=True, text=True, timeout=30).stdout.strip()
            != "RUNNING"
        ):
            assert time.monotonic() < deadline, "the blocking job did not start"
            time.sleep(0.5)
        posted: list[requests.Response] = []
        poster = threading.Thread(target=lambda: posted.append(start(bob, "sleep", {})))
        poster.start()
        messages = follow_progress(bob, "sleep", "waiting:")
        assert any(
            "is waiting: all CPUs, memory or GPUs of the gpu partition that this session asks for are in use by "
            "other jobs" in message
            for message in messages
        ), messages
        subprocess.run(["scancel", blocker], env=slurm_env, check=True, timeout=30)
        poster.join(timeout=130)
        hubclient.wait_ready(ready, bob["token"], "bob", "sleep", timeout=180, explain=lambda: hub_log(ready))
    finally:
        subprocess.run(["scancel", blocker], env=slurm_env, check=False, timeout=30)
        stop(bob, "sleep")


# --- 3. refusals --------------------------------------------------------------------------------------------
def servers_of_bob(bob: dict) -> set[str]:
    model = requests.get(bob["api"], params={"include_stopped_servers": "1"}, headers=headers(bob), timeout=30)
    return set(model.json()["servers"])


def test_refused_options_answer_400_and_do_not_stick(ready, bob):
    refused = start(bob, "sleep", {"cpus": "99"})
    assert refused.status_code == 400, refused.text
    assert "cpus must be from 1 to 2 under this project's policy; you asked for 99" in refused.json()["message"]
    # The next request without options starts with the defaults, not with the refused option.
    started = start(bob, "sleep")
    try:
        assert started.status_code in (201, 202), started.text
        hubclient.wait_ready(ready, bob["token"], "bob", "sleep", timeout=180, explain=lambda: hub_log(ready))
    finally:
        stop(bob, "sleep")


def test_a_server_name_that_is_no_project_is_refused_and_not_kept(ready, bob):
    for attempt in range(2):  # twice: the first refusal left nothing that changes the second
        refused = start(bob, "sleepx", {})
        assert refused.status_code == 400, (attempt, refused.text)
        message = refused.json()["message"]
        assert "bob has no project named 'sleepx'" in message and "cardio, sleep" in message, message
        assert "sleepx" not in servers_of_bob(bob)
    refusals = [e for e in audit_events(ready) if e["object"] == "server:bob/sleepx"]
    assert len(refusals) == 2 and {(e["actor"], e["outcome"]) for e in refusals} == {("bob", "denied")}


def test_the_spawn_form_shows_a_refusal_and_keeps_nothing(ready, bob):
    """The browser's way: the spawn page's form, posted with an option beyond the policy."""
    browser = requests.Session()
    submit(browser, ready, "bob")
    page = browser.get(f"{ready.hub_url}/hub/spawn/bob/sleep", timeout=30)
    assert page.status_code == 200 and 'name="cpus" id="cpus" min="1" value="1"' in page.text  # the defaults
    action = html.unescape(re.search(r'<form[^>]* action="([^"]+)"', page.text).group(1))
    form = {"project": "sleep", "gpus": "1", "cpus": "99", "memory_gb": "", "minutes": ""}
    answer = browser.post(requests.compat.urljoin(page.url, action), data=form, timeout=60)
    assert answer.status_code == 400 and "you asked for 99" in html.unescape(answer.text)
    # A server name that is no project: refused before the form, and not kept.
    other = browser.get(f"{ready.hub_url}/hub/spawn/bob/sleepx", timeout=30)
    assert other.status_code == 400 and "has no project named" in html.unescape(other.text)
    assert "sleepx" not in servers_of_bob(bob)


# --- 5. the README's admin commands -----------------------------------------------------------------------------
def readme_admin_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The data owner's and admin's command line") :]
    block = section[section.index("```bash\n") + len("```bash\n") : section.index("```\n", section.index("```bash"))]
    return [line for line in block.splitlines() if line.strip()]


def root_shell(script: str, layout, **env: str) -> subprocess.CompletedProcess:
    """A root login shell's environment: no virtual environment on PATH, the demo's state folder as the default."""
    shell_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "SECUREHPC_DEV_STATE": str(layout.state_dir),
                 **env}  # fmt: skip
    return subprocess.run(["bash", "-c", script], env=shell_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def test_the_readme_admin_commands_run_as_printed(ready):
    lines = readme_admin_block()
    assert lines[0].startswith("source <(./.venv/bin/securehpc dev env)"), lines[0]
    if not (ROOT / ".venv" / "bin" / "securehpc").exists():  # a checkout whose environment lives elsewhere
        lines[0] = lines[0].replace("./.venv/bin/securehpc", CLI)
    script = "set -euo pipefail\n" + "\n".join(f"echo '>>> {i}'\n{line}" for i, line in enumerate(lines))
    ran = root_shell(script, ready)  # its project's principals are removed with the demo's (demo_up)
    assert ran.returncode == 0, f"{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    assert ran.stdout.count(">>> ") == len(lines)
    assert "imported sleep-study/psg" in ran.stdout and "audit log OK" in ran.stdout
    assert verify(Path(hub.default_site(ready)["SecureHPC.audit_log"])).ok


def test_read_only_admin_commands_need_no_key_server_and_create_nothing(ready, tmp_path):
    env = f"source <({CLI} dev env)"
    listed = root_shell(f"{env}; VAULT_ADDR= securehpc project list", ready)
    assert listed.returncode == 0 and "sleep" in listed.stdout, listed.stderr
    # Another site that does not exist: a clear error each, and not a folder or file made.
    elsewhere = {"SECUREHPC_DB": f"sqlite:///{tmp_path}/site/db.sqlite", "SECUREHPC_STORE_ROOT": f"{tmp_path}/stores",
                 "SECUREHPC_AUDIT_LOG": f"{tmp_path}/log/audit.jsonl"}  # fmt: skip
    for command, says in ((f"{CLI} project list", "no projects database at"),
                          (f"{CLI} dataset list sleep", "no projects database at"),
                          (f"{CLI} audit verify", "no audit log at")):  # fmt: skip
        result = root_shell(command, ready, **elsewhere)
        assert result.returncode == 1 and says in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- 6. the hub's OpenBao token ---------------------------------------------------------------------------------
def hub_environment(layout) -> dict[str, str]:
    pid = hub.daemon(layout).pid()
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_hub_holds_the_restricted_hub_policy_not_the_root_token(ready):
    token = hub_environment(ready)["VAULT_TOKEN"]
    assert token != openbao.root_token(ready)
    client = hvac.Client(url=ready.openbao_addr, token=token, timeout=10)
    assert sorted(client.auth.token.lookup_self()["data"]["policies"]) == ["default", demo.HUB_POLICY]
    written = openbao.client(ready).sys.read_policy(demo.HUB_POLICY)["data"]["rules"]
    assert written == (ROOT / "hub_config" / "openbao-hub-policy.hcl").read_text()
    # With it, a project's key cannot be read (the spawns above show it can still start sessions).
    with pytest.raises(KeyStoreDenied):
        KeyStore(KeyStoreConfig(url=ready.openbao_addr, token=token)).read_workspace_key("sleep")


# --- 7. up again, after a user put links into a workspace ---------------------------------------------------
def test_up_again_follows_no_link_in_a_workspace(ready, tmp_path):
    workspace = Path(hub.default_site(ready)["SecureHPC.store_root"]) / "projects" / "sleep" / "workspace"
    owner = workspace.stat()
    target = tmp_path / "roots-file"
    target.write_text("root's")
    target.chmod(0o600)
    links = {workspace / "dangling": Path("/nonexistent/securehpc-test"), workspace / "to-roots-file": target}
    for link, points_to in links.items():
        link.symlink_to(points_to)
        os.chown(link, owner.st_uid, owner.st_gid, follow_symlinks=False)  # as if bob had made them
    try:
        again = subprocess.run([CLI, "dev", "--state-dir", str(ready.state_dir), "up", "--no-install"],
                               capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert (target.stat().st_uid, target.stat().st_gid) == (0, 0)
        assert all(link.is_symlink() for link in links)
    finally:
        for link in links:
            link.unlink(missing_ok=True)


LOAD_HUB_CONFIG = """
import json, os, sys
from traitlets.config import PyFileConfigLoader
c = PyFileConfigLoader(sys.argv[1], path=sys.argv[2]).load_config()
print(json.dumps({"spawner": c.JupyterHub.spawner_class, "bind": c.JupyterHub.bind_url,
                  "client_secret": bool(c.SecureHPCAuthenticator.client_secret),
                  "vault_token": bool(os.environ.get("VAULT_TOKEN"))}))
"""


def test_the_local_hub_config_example_is_the_demo_hubs(ready, tmp_path):
    layout = ready
    folder = ROOT / "hub_config"
    argv = [sys.executable, "-c", LOAD_HUB_CONFIG, "jupyterhub_config_local.py", str(folder)]
    loaded = subprocess.run(argv, env={**os.environ, "SECUREHPC_DEV_STATE": str(layout.state_dir)},
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == {
        "spawner": "securehpc", "bind": f"{layout.hub_url}/", "client_secret": True, "vault_token": True
    }  # fmt: skip
    # Before `securehpc dev up` there is nothing to load: it says so instead of starting a hub that spawns nothing.
    empty = tmp_path / "state"
    refused = subprocess.run(argv, env={**os.environ, "SECUREHPC_DEV_STATE": str(empty)},
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode != 0 and "run `securehpc dev up` first" in refused.stderr


# --- the portal, as the demo's people use it ----------------------------------------------------------------
def signed_in(layout, username: str) -> requests.Session:
    browser = requests.Session()
    home = submit(browser, layout, username)
    assert home.url == f"{layout.hub_url}/hub/home", home.url
    return browser


def portal_page(browser: requests.Session, layout, path: str = "") -> requests.Response:
    """A page of the portal, signed in through the hub's OAuth as a browser is (the redirects followed)."""
    return browser.get(f"{layout.hub_url}/services/securehpc/{path}", timeout=60)


def test_alice_carol_and_the_admin_do_their_work_in_the_demos_portal(ready):
    alice = signed_in(ready, "alice")
    mine = portal_page(alice, ready)
    assert mine.status_code == 200 and "My projects" in mine.text, mine.text[:500]
    assert "sleep" in mine.text and "data owner" in mine.text and "cardio" not in mine.text
    project = portal_page(alice, ready, "projects/sleep")
    assert project.status_code == 200 and "bob" in project.text and "psg" in project.text
    assert 'name="_xsrf"' in project.text  # she manages it: the member form is there
    assert portal_page(alice, ready, "admin").status_code == 403

    carol = signed_in(ready, "carol")
    mine = portal_page(carol, ready)
    assert mine.status_code == 200 and "cardio" in mine.text
    # sleep's members are not hers to see: the page answers as for a project that does not exist.
    assert portal_page(carol, ready, "projects/sleep").status_code == 404
    assert "sleep/psg" in portal_page(carol, ready, "projects/cardio").text  # the share she received

    admin = signed_in(ready, "root-admin")
    projects = portal_page(admin, ready, "admin")
    assert projects.status_code == 200 and "Projects admin" in projects.text
    assert "sleep" in projects.text and "cardio" in projects.text
    policy = portal_page(admin, ready, "admin/projects/sleep/policy")
    assert policy.status_code == 200 and "max_cpus" in policy.text, policy.text[:500]
