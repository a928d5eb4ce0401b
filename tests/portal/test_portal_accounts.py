"""The portal makes the principals' Unix accounts with the site's ``ProjectAccounts`` settings, as the command
line and the login's group sync do: a member added through the portal can start a session at once, without
``securehpc account sync``.

A real hub of the local cluster with the portal as its managed service (tests/portal_site.py), whose site sets
``ProjectAccounts.provisioner = "local"``: the portal, run by the hub as root, makes accounts and groups on this
host with ``useradd`` and ``groupadd`` and locks them with ``usermod`` (principals/accounts.py,
``LocalAccounts``). Every account and group it made is removed after the module.
"""

from __future__ import annotations

import grp
import pwd
import sqlite3
import subprocess
from pathlib import Path

import portal_site
import pytest
from portal_site import ADMIN, OWNER, api, events, state

from jupyter_securehpc.principals import check_principal, principal_name
from jupyter_securehpc.principals.accounts import MARKER, NO_HOME, NOLOGIN
from jupyter_securehpc.vocabulary import StoreLayout


@pytest.fixture(scope="module")
def site(local_cluster, unix_user, slurm_env):
    yield from portal_site.site(local_cluster, unix_user, slurm_env, {"ProjectAccounts.provisioner": "local"})


def shadow(name: str) -> list[str]:
    """The account's /etc/shadow fields (password at 1, expiry day at 7)."""
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise KeyError(name)


def recorded(site, project: str, user: str) -> tuple[str, str, str]:
    """(principal, its state, the project's group) as the projects database records them."""
    database = sqlite3.connect(site["db"])
    try:
        return database.execute(
            "SELECT principals.name, principals.state, projects.unix_group FROM principals "
            "JOIN projects ON projects.id = principals.project_id WHERE projects.name = ? AND principals.username = ?",
            (project, user),
        ).fetchone()
    finally:
        database.close()


def test_a_member_added_through_the_portal_gets_a_usable_principal_and_removal_locks_it(site):
    added = api(site, "PUT", "/projects/alpha/members/newcomer", OWNER, json={"role": "data_scientist"})
    assert added.status_code == 201, added.text
    principal = added.json()["principal"]
    name, state_, group = recorded(site, "alpha", "newcomer")
    assert (name, state_) == (principal, "active") and principal.startswith(site["account_prefix"])
    # The account exists on this host as a principal must be: nobody's login, the project's group only.
    account = pwd.getpwnam(principal)
    assert account.pw_gid == grp.getgrnam(group).gr_gid
    assert (account.pw_shell, account.pw_dir) == (NOLOGIN, NO_HOME) and not Path(NO_HOME).exists()
    assert account.pw_gecos == f"{MARKER} of newcomer in alpha"
    assert shadow(principal)[1].startswith("!") and shadow(principal)[7] == ""
    assert grp.getgrnam(group).gr_mem == []
    # What the spawner checks before it submits a session as the principal: it passes.
    assert check_principal(principal, group).uid == account.pw_uid
    event = next(e for e in reversed(events(site)) if e["action"] == "member.add")
    assert (event["actor"], event["outcome"], event["details"]["principal"]) == (OWNER, "allowed", principal)
    assert event["details"]["via"] == "portal"

    removed = api(site, "DELETE", "/projects/alpha/members/newcomer", OWNER)
    assert removed.status_code == 200, removed.text
    assert removed.json()["locked_principal"] == principal
    assert recorded(site, "alpha", "newcomer")[1] == "locked"
    # Locked as LocalAccounts locks: no password, expired since 1970 (no login, cron or su); kept, with its uid.
    assert shadow(principal)[1].startswith("!") and shadow(principal)[7] == "1"
    assert pwd.getpwnam(principal).pw_uid == account.pw_uid

    # A member who comes back gets the same account back, no longer expired.
    again = api(site, "PUT", "/projects/alpha/members/newcomer", OWNER, json={"role": "observer"})
    assert again.status_code == 201 and again.json()["principal"] == principal
    assert shadow(principal)[7] == "" and pwd.getpwnam(principal).pw_uid == account.pw_uid
    assert recorded(site, "alpha", "newcomer")[1] == "active"


def test_a_project_created_through_the_portal_gets_its_group_and_the_owners_principal(site):
    created = api(site, "POST", "/projects", ADMIN, json={"name": "gamma", "owner": OWNER})
    assert created.status_code == 201, created.text
    body = created.json()
    group = grp.getgrnam(body["group"])
    owner = pwd.getpwnam(body["principal"])
    assert owner.pw_gid == group.gr_gid and group.gr_mem == []
    assert check_principal(body["principal"], body["group"]).gid == group.gr_gid
    # The project's workspace belongs to its group at once (root:GROUP 2770), not only after `account sync`.
    workspace = StoreLayout(site["root"] / "stores").workspace("gamma").stat()
    assert (workspace.st_uid, workspace.st_gid, workspace.st_mode & 0o7777) == (0, group.gr_gid, 0o2770)


def test_an_account_that_cannot_be_made_answers_503_and_changes_nothing(site):
    """A Unix account of the principal's name that securehpc did not make is never taken over: the member is
    not added, the answer says why, and the failure is recorded."""
    squatted = principal_name(site["account_prefix"], "alpha", "squatter")
    subprocess.run(["useradd", "--no-create-home", "--shell", NOLOGIN, "--comment", "someone else", squatted],
                   check=True, timeout=30)  # fmt: skip
    try:
        before = state(site)
        answer = api(site, "PUT", "/projects/alpha/members/squatter", OWNER, json={"role": "observer"})
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "unavailable" and "never taken over" in answer.json()["message"]
        after = state(site)
        assert after["db"] == before["db"]
        (event,) = events(site)[len(before["audit"]) :]
        assert (event["action"], event["outcome"], event["object"]) == ("member.add", "failed", "member:alpha/squatter")
        assert pwd.getpwnam(squatted).pw_gecos == "someone else"  # untouched
        members = api(site, "GET", "/projects/alpha/members", OWNER).json()["members"]
        assert "squatter" not in {m["user"] for m in members}
    finally:
        subprocess.run(["userdel", squatted], check=False, timeout=30)
