"""``securehpc dev up``, ``status``, ``down`` and ``up`` again, as a person runs them from a root shell: a
cluster of its own (a fresh state folder, free ports), a session started in between, and afterwards nothing
left on the machine that ``down`` does not name.

Real services: munge, Slurm, OpenBao, the OpenID provider, JupyterHub with its proxy, a session in the sandbox.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hubclient
import pytest
import requests

from jupyter_securehpc.devcluster import demo, oidc
from jupyter_securehpc.devcluster.layout import ClusterLayout

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CLI = str(Path(sys.executable).with_name("securehpc"))
SHELL = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}  # a root shell: the environment not on PATH
# Places outside the state folder where a cluster could leave something behind.
WATCHED = [Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/lib", "/var/log", "/etc")]


def shell(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], env=SHELL, capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


def snapshot() -> dict[Path, int]:
    """Entries of the watched folders, with their owner."""
    entries = {}
    for folder in WATCHED:
        for entry in folder.iterdir():
            try:
                entries[entry] = entry.lstat().st_uid
            except FileNotFoundError:
                continue
    return entries


def processes_of(state: Path) -> list[str]:
    """Processes whose command line or environment names the state folder (daemons, hub, proxy, jobs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(state).encode() in argv or f"={state}".encode() in environ:
            words = argv.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {words[:200]}")
    return found


def demo_uids() -> set[int]:
    uids = set()
    for name in demo.people():
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            pass
    return uids


@pytest.fixture(scope="module")
def state():
    folder = Path(tempfile.mkdtemp(prefix="securehpc-lifecycle-"))
    folder.chmod(0o755)
    # Free ports, beside the session's cluster and any demo on the default ports (`up` keeps what it finds).
    ClusterLayout.load_or_create(folder, random_ports=True)
    try:
        yield folder
    finally:
        shell(f"{CLI} dev --state-dir {folder} down", timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


def test_up_status_down_up_again_leave_nothing_that_down_does_not_name(state):
    before = snapshot()
    users_before, groups_before = {u.pw_name for u in pwd.getpwall()}, {g.gr_name for g in grp.getgrall()}
    up = shell(f"{CLI} dev --state-dir {state} up --no-install")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    status_line = next(line.split(": ", 1)[1] for line in up.stdout.splitlines() if line.startswith("Status: "))
    down_line = next(line.split(": ", 1)[1] for line in up.stdout.splitlines() if line.startswith("Stop it with: "))

    status = shell(status_line)
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^up\s+jupyterhub\s", status.stdout, re.M), status.stdout

    # A session in between, so that a job runs and ends (its output goes into the state folder).
    layout = ClusterLayout.load_or_create(state)
    bob = next(entry for entry in oidc.accounts(layout) if entry["username"] == "bob")
    token = hubclient.api_token(layout, hubclient.login(layout, bob), "bob", note="lifecycle")
    url = f"{layout.hub_url}/hub/api/users/bob/servers/sleep"
    assert requests.post(url, headers={"Authorization": f"token {token}"}, timeout=120).status_code in (201, 202)
    hubclient.wait_ready(layout, token, "bob", "sleep", timeout=180)
    requests.delete(url, headers={"Authorization": f"token {token}"}, timeout=120)

    down = shell(down_line)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_of(state) == []
    # What stays is named, with the command that undoes it.
    for name in demo.people():
        assert f"userdel {name}" in down.stdout, down.stdout
    for group in demo.unix_groups():
        assert f"groupdel {group}" in down.stdout, down.stdout
    assert f"rm -rf {state}" in down.stdout

    # Nothing else outside the state folder: no new entry owned by a demo account, none named after the demo.
    after = snapshot()
    new = {path: uid for path, uid in after.items() if path not in before}
    ours = {path for path, uid in new.items() if uid in demo_uids() or str(state) in str(path)}
    ours |= {path for path in new if path.parent in (Path("/var/lib"), Path("/var/log"), Path("/etc"))
             and path.name.startswith("securehpc")}  # fmt: skip
    assert ours == set(), sorted(ours)
    # Accounts: every one the demo made is named above (other test runs on this machine make their own).
    made = ({u.pw_name for u in pwd.getpwall()} - users_before) | ({g.gr_name for g in grp.getgrall()} - groups_before)
    assert made & (set(demo.people()) | set(demo.unix_groups())) <= {
        name for name in made if f"userdel {name}" in down.stdout or f"groupdel {name}" in down.stdout
    }

    # And up again: the same demo, working.
    again = shell(f"{CLI} dev --state-dir {state} up --no-install")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    status = shell(status_line)
    assert status.returncode == 0, status.stdout + status.stderr
    hubclient.login(layout, bob)  # the provider and the hub take bob's sign-in again
