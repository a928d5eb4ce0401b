"""End to end: one principal per person per project (issue 19), on the real hub, Slurm, OpenBao, gocryptfs and
bubblewrap.

- The person's own login account, during the person's session, tries what a shell on the node could: an extra
  job step in the session's job (``srun --jobid=J --overlap``), ``sattach``, ``nsenter`` into the session's
  processes, their ``/proc/PID/root`` and ``/proc/PID/environ``, ptrace, signals, the job's output. All refused;
  nothing it gets holds the workspace's plaintext or a key.
- A second session of the same person, in another project on the same node, runs as another principal: its
  processes (even outside its sandbox) cannot reach the first session either, nor does the kernel see it.
- Two persons in one project work in its workspace at once: each writes, each reads and changes the other's
  files, the workspace stays consistent; an observer then reads everything and can change nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import hubclient
import pytest
import requests
from e2e_hub import diagnostics, job_outputs

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]

CANARY = "CANARY-PRINCIPAL-19-7d1e"


def start_server(e2e, user: str, token: str, server: str, options: dict | None = None) -> None:
    response = requests.post(
        f"{e2e['layout'].hub_url}/hub/api/users/{user}/servers/{server}",
        headers={"Authorization": f"token {token}"},
        json=options or {"gpus": "0"},
        timeout=120,
    )
    hub_log = (e2e["layout"].log_dir / "jupyterhub.log").read_text(errors="replace").splitlines()[-60:]
    assert response.status_code in (201, 202), "\n".join([response.text, *hub_log])
    hubclient.wait_ready(e2e["layout"], token, user, server, timeout=150, explain=lambda: diagnostics(e2e))


def stop_server(e2e, user: str, token: str, server: str) -> None:
    requests.delete(
        f"{e2e['layout'].hub_url}/hub/api/users/{user}/servers/{server}",
        headers={"Authorization": f"token {token}"},
        timeout=120,
    )


def base(e2e, user: str, server: str) -> str:
    return f"{e2e['layout'].hub_url}/user/{user}/{server}"


def job_of(e2e, principal: str) -> str:
    listing = subprocess.run(["squeue", "--noheader", f"--user={principal}", "--format=%i"], env=e2e["slurm_env"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()  # fmt: skip
    assert len(listing) == 1, listing
    return listing[0]


def processes_of(uid: int) -> dict[int, str]:
    """pid -> command line of the live processes running as ``uid`` (read as root)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
    return found


def run_as(uid: int, gid: int, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False, user=uid, group=gid,
                          extra_groups=[], cwd="/")  # fmt: skip


# What an account tries against a session's processes, each attempt reported without content: the test checks
# for the canary and the session's secrets in everything it printed.
ATTEMPTS = r"""
import ctypes, json, os, sys
pids = [int(p) for p in sys.argv[1].split(",")]
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn):
    try:
        data = fn()
        return {"ok": True, "data": data if isinstance(data, str) else repr(data)[:4000]}
    except OSError as error:
        return {"ok": False, "error": type(error).__name__}
def ptrace(pid):
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")
    return "attached"
report = {}
for pid in pids:
    report[pid] = {
        "environ": attempt(lambda: open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")),
        "root": attempt(lambda: os.listdir(f"/proc/{pid}/root/project")),
        "root_file": attempt(lambda: open(f"/proc/{pid}/root/project/secret.txt").read()),
        "cwd": attempt(lambda: os.listdir(f"/proc/{pid}/cwd")),
        "fds": attempt(lambda: os.listdir(f"/proc/{pid}/fd")),
        "mem": attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(1)),
        "ns": attempt(lambda: os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)),
        "signal": attempt(lambda: os.kill(pid, 0)),
        "ptrace": attempt(lambda: ptrace(pid)),
    }
print(json.dumps(report))
"""


def attack(e2e, uid: int, gid: int, pids: list[int], job: str, python: str, project: str) -> dict:
    """Everything ``uid`` tries against the session's ``pids``, its job ``job`` and the job's output (a session in
    ``project``); what each printed, for inspection."""
    env = {"PATH": os.environ["PATH"], "SLURM_CONF": e2e["slurm_env"]["SLURM_CONF"], "LANG": "C.UTF-8"}
    peek = f"cat /proc/{pids[0]}/environ; ls /proc/{pids[0]}/root/project"
    tries = {
        "proc": [python, "-c", ATTEMPTS, ",".join(map(str, pids))],
        # An extra job step in the session's job, as the Slurm documentation suggests for "attaching" to a job.
        "srun": ["srun", f"--jobid={job}", "--overlap", "cat", "/proc/self/status"],
        "srun_cat": ["srun", f"--jobid={job}", "--overlap", "--", "sh", "-c", peek],
        "sattach": ["sattach", f"{job}.batch"],
        "nsenter": ["nsenter", f"--target={pids[0]}", "--all", "--", "cat", "/project/secret.txt"],
        "nsenter_user": ["nsenter", f"--target={pids[0]}", "--user", "--mount", "--preserve-credentials", "--", "ls"],
        "outputs": ["cat", *map(str, job_outputs(e2e, project))],
    }
    return {name: run_as(uid, gid, argv, env) for name, argv in tries.items()}


def assert_refused(tried: dict, secrets: list[str]) -> None:
    everything = ""
    for name, result in tried.items():
        everything += result.stdout + result.stderr
        if name == "proc":
            assert result.returncode == 0, result.stderr
            for pid, report in json.loads(result.stdout).items():
                for what, outcome in report.items():
                    assert not outcome["ok"], (pid, what, outcome)
        elif name == "sattach":  # it reports its refusal but may exit 0
            assert result.returncode != 0 or "error" in result.stderr, (result.stdout, result.stderr)
        else:
            assert result.returncode != 0, (name, result.stdout, result.stderr)
    assert "Access/permission denied" in tried["srun"].stderr, tried["srun"].stderr
    assert "Access/permission denied" in tried["srun_cat"].stderr, tried["srun_cat"].stderr
    assert "Permission denied" in tried["outputs"].stderr
    for secret in [CANARY, *secrets]:
        assert secret not in everything


def session_secrets(principal_uid: int) -> list[str]:
    """The secrets of a running session, read as root on the node: the launcher's first environment holds the
    server's hub token, the spent wrapped token and the report secret."""
    for pid in processes_of(principal_uid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and any(a.endswith(b"securehpc-node") for a in argv[:2]):
            env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
            return [env[name].decode() for name in (b"JUPYTERHUB_API_TOKEN", b"SECUREHPC_WRAPPED_TOKEN",
                                                     b"SECUREHPC_REPORT_TOKEN")]  # fmt: skip
    raise AssertionError("no launcher found")


@pytest.fixture(scope="module")
def person(e2e) -> dict:
    browser = hubclient.login(e2e["layout"], e2e["account"])
    return {"name": e2e["user"].name, "token": hubclient.api_token(e2e["layout"], browser, e2e["user"].name)}


def test_the_persons_own_account_and_other_principals_cannot_reach_the_session(e2e, person):
    user, token, unix = person["name"], person["token"], e2e["user"]
    principal, other = e2e["principals"]["sleep"], e2e["principals"]["other"]
    assert principal.uid != unix.uid and other.uid not in (unix.uid, principal.uid)
    start_server(e2e, user, token, "sleep")
    try:
        hubclient.run_code(base(e2e, user, "sleep"), token, f"open('/project/secret.txt', 'w').write({CANARY!r})")
        job = job_of(e2e, principal.name)
        pids = sorted(processes_of(principal.uid))
        assert pids and processes_of(unix.uid) == {}  # the session runs as the principal, nothing as the person
        secrets = session_secrets(principal.uid)
        python = "/usr/bin/python3"

        # 1. The person's own login account (a shell on the node, cron, SSH where a site allows it).
        assert_refused(attack(e2e, unix.uid, unix.gid, pids, job, python, "sleep"), secrets)

        # 2. A second session of the same person, in another project, on the same node: another principal.
        start_server(e2e, user, token, "other")
        try:
            other_job = job_of(e2e, other.name)
            assert other_job != job
            # Its processes, even outside its sandbox (its launcher's identity), reach nothing of the first.
            assert_refused(attack(e2e, other.uid, other.gid, pids, job, python, "sleep"), secrets)
            # Its kernel does not even see the first session's processes or files.
            seen = hubclient.run_code(base(e2e, user, "other"), token, (
                "import os, json; print(json.dumps([sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), "
                "os.listdir('/project')]))"
            ))  # fmt: skip
            visible, workspace = json.loads(seen.strip().splitlines()[-1])
            assert "secret.txt" not in workspace and len(visible) < 10
            # Nor can the first session's principal reach the second's.
            other_pids = sorted(processes_of(other.uid))
            assert_refused(attack(e2e, principal.uid, principal.gid, other_pids, other_job, python, "other"),
                           session_secrets(other.uid))  # fmt: skip
        finally:
            stop_server(e2e, user, token, "other")

        # The session itself was not disturbed.
        read_back = hubclient.run_code(base(e2e, user, "sleep"), token, "print(open('/project/secret.txt').read())")
        assert read_back.strip() == CANARY
    finally:
        stop_server(e2e, user, token, "sleep")


# Runs in a kernel: writes a file of its own, in parallel with the other member's kernel.
WRITE_MANY = r"""
import hashlib, json, os
os.makedirs("/project/shared", exist_ok=True)
for i in range(60):
    with open(f"/project/shared/{WHO}-{i:03d}.txt", "w") as handle:
        handle.write(f"{WHO} {i} " * 200)
print("wrote")
"""

LIST_ALL = r"""
import hashlib, json, os
files = {}
for folder, _, names in os.walk("/project/shared"):
    for name in names:
        path = os.path.join(folder, name)
        files[os.path.relpath(path, "/project")] = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(json.dumps(files))
"""


def test_two_members_work_in_one_workspace_at_once_and_an_observer_only_reads(e2e, person):
    layout, service = e2e["layout"], e2e["service"]
    user, token = person["name"], person["token"]
    # alice joins as a second data scientist, olga as an observer: their principals are made with the memberships.
    alice_principal = service.add_member("sleep", "alice", "data_scientist")["principal"]
    olga_principal = service.add_member("sleep", "olga", "observer")["principal"]
    tokens = {user: token}
    for name in ("alice", "olga"):
        account = hubclient.add_account(layout, name)
        tokens[name] = hubclient.api_token(layout, hubclient.login(layout, account), name)
    e2e["principals"]["alice"] = _account(alice_principal)  # for the job outputs' clean-up
    start_server(e2e, user, token, "sleep")
    start_server(e2e, "alice", tokens["alice"], "sleep")
    mine, hers = base(e2e, user, "sleep"), base(e2e, "alice", "sleep")
    try:
        # Both write at once into the same folder.
        async def both() -> list[str]:
            return await asyncio.gather(
                hubclient.run_in_kernel(mine, token, WRITE_MANY.replace("{WHO}", "bob")),
                hubclient.run_in_kernel(hers, tokens["alice"], WRITE_MANY.replace("{WHO}", "alice")),
            )

        assert [out.strip() for out in asyncio.run(both())] == ["wrote", "wrote"]
        # Each sees the same workspace: every file of both, with the same content.
        seen_by_me = json.loads(hubclient.run_code(mine, token, LIST_ALL).strip().splitlines()[-1])
        seen_by_her = json.loads(hubclient.run_code(hers, tokens["alice"], LIST_ALL).strip().splitlines()[-1])
        assert seen_by_me == seen_by_her and len(seen_by_me) == 120

        # Each changes the other's files: appends, overwrites, renames, removes, in a folder the other made.
        hubclient.run_code(hers, tokens["alice"], (
            "open('/project/shared/bob-000.txt', 'a').write(' +alice');"
            "open('/project/shared/bob-001.txt', 'w').write('alice was here');"
            "import os; os.rename('/project/shared/bob-002.txt', '/project/shared/renamed-by-alice.txt');"
            "os.remove('/project/shared/bob-003.txt'); os.makedirs('/project/shared/alice-dir');"
            "open('/project/shared/alice-dir/note.txt', 'w').write('from alice')"
        ))  # fmt: skip
        hubclient.run_code(mine, token, (
            "open('/project/shared/alice-dir/note.txt', 'a').write(' and bob');"
            "open('/project/shared/alice-000.txt', 'w').write('bob was here')"
        ))  # fmt: skip
        check = (
            "import json; r = lambda p: open('/project/shared/' + p).read();"
            "print(json.dumps([r('bob-000.txt')[-7:], r('bob-001.txt'), r('alice-dir/note.txt'), r('alice-000.txt'),"
            " sorted(__import__('os').listdir('/project/shared'))[:3]]))"
        )
        expected = [" +alice", "alice was here", "from alice and bob", "bob was here"]
        for server, server_token in ((mine, token), (hers, tokens["alice"])):
            result = json.loads(hubclient.run_code(server, server_token, check).strip().splitlines()[-1])
            assert result[:4] == expected
        # A notebook (made by a kernel: a new file with content is an upload, which the policy keeps to owners)
        # saved by one member through JupyterLab's contents API, opened, changed and saved by the other.
        notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        hubclient.run_code(mine, token, f"open('/project/shared/analysis.ipynb', 'w').write({json.dumps(notebook)!r})")
        for server, server_token, who in ((mine, token, "bob"), (hers, tokens["alice"], "alice")):
            notebook["cells"].append({"cell_type": "markdown", "id": who, "metadata": {}, "source": f"by {who}"})
            saved = requests.put(
                f"{server}/api/contents/shared/analysis.ipynb",
                json={"type": "notebook", "content": notebook},
                headers={"Authorization": f"token {server_token}"},
                timeout=30,
            )
            assert saved.status_code in (200, 201), saved.text
        opened = requests.get(
            f"{mine}/api/contents/shared/analysis.ipynb", headers={"Authorization": f"token {token}"}, timeout=30
        ).json()
        assert [cell["source"] for cell in opened["content"]["cells"]] == ["by bob", "by alice"]
    finally:
        stop_server(e2e, "alice", tokens["alice"], "sleep")

    # The ciphertext: the project's group's only (its folder 2770: nobody else may enter it; gocryptfs makes
    # each folder's IV file readable by all, behind that), each file owned by the principal that made it.
    workspace = e2e["root"] / "stores" / "projects" / "sleep" / "workspace"
    group = pwd.getpwnam(alice_principal).pw_gid
    assert (workspace.stat().st_gid, workspace.stat().st_mode & 0o7777) == (group, 0o2770)
    owners = set()
    for folder, subfolders, files in os.walk(workspace):
        for name in [*subfolders, *files]:
            info = os.lstat(os.path.join(folder, name))
            others = 0o002 if name == "gocryptfs.diriv" else 0o007
            assert info.st_gid == group and not info.st_mode & others, (name, oct(info.st_mode))
            owners.add(info.st_uid)
    assert {pwd.getpwnam(alice_principal).pw_uid, e2e["principals"]["sleep"].uid} <= owners
    assert e2e["user"].uid not in owners

    # olga, an observer, reads what the two wrote, and can change nothing: her server refuses writes and runs
    # no kernel, and below it her workspace is mounted read-only, from ciphertext bound read-only.
    start_server(e2e, "olga", tokens["olga"], "sleep")
    observer, olga = base(e2e, "olga", "sleep"), {"Authorization": f"token {tokens['olga']}"}
    try:
        listing = requests.get(f"{observer}/api/contents/shared", headers=olga, timeout=30).json()
        names = {entry["name"] for entry in listing["content"]}
        assert {"alice-001.txt", "renamed-by-alice.txt", "alice-dir", "analysis.ipynb"} <= names
        assert "bob-003.txt" not in names
        opened = requests.get(f"{observer}/api/contents/shared/analysis.ipynb", headers=olga, timeout=30).json()
        assert [cell["source"] for cell in opened["content"]["cells"]] == ["by bob", "by alice"]
        opened["content"]["cells"].append({"cell_type": "markdown", "id": "olga", "metadata": {}, "source": "x"})
        for method, path, body in (
            ("put", "shared/analysis.ipynb", {"type": "notebook", "content": opened["content"]}),
            ("put", "olga.txt", {"type": "file", "format": "text", "content": "x"}),
            ("delete", "shared/alice-001.txt", None),
            ("patch", "shared/alice-001.txt", {"path": "shared/moved.txt"}),
            ("post", "api/kernels", {}),
        ):
            url = f"{observer}/{path}" if path.startswith("api/") else f"{observer}/api/contents/{path}"
            refused = requests.request(method, url, json=body, headers=olga, timeout=30)
            assert refused.status_code == 403, (method, path, refused.status_code, refused.text)
        principal = pwd.getpwnam(olga_principal)
        mounts = [Path(f"/proc/{pid}/mountinfo").read_text() for pid, line in processes_of(principal.pw_uid).items()
                  if "jupyterhub-singleuser" in line]  # fmt: skip
        assert mounts, processes_of(principal.pw_uid)
        project = [line for line in mounts[0].splitlines() if " /project " in line]
        assert project and project[0].split()[5].split(",")[0] == "ro", project
        gocryptfs = [line for line in processes_of(principal.pw_uid).values() if line.startswith("gocryptfs ")]
        assert gocryptfs and all(" -ro " in line for line in gocryptfs), gocryptfs
    finally:
        stop_server(e2e, "olga", tokens["olga"], "sleep")
        stop_server(e2e, user, token, "sleep")

    # The hub recorded who started each session and the principal it ran as.
    events = [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]
    started = {(e["actor"], e["details"]["principal"]) for e in events
               if e["action"] == "session.start" and e["outcome"] == "allowed" and e["project"] == "sleep"}  # fmt: skip
    assert {("alice", alice_principal), ("olga", olga_principal), (user, e2e["principals"]["sleep"].name)} <= started
    deadline = time.monotonic() + 60
    while job_outputs(e2e, "alice") and time.monotonic() < deadline:
        time.sleep(0.5)


def _account(name: str):
    from sites import UnixAccount

    entry = pwd.getpwnam(name)
    return UnixAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)
