"""The principals' accounts on this host: made by ``useradd`` (or a site's command) as a principal must be,
checked before any job is submitted as one, locked when the member leaves; and the projects command line that
makes them, with the workspace given to the project's group.

Real accounts (root), each test's with a prefix of its own, removed again at the end.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from sites import make_site, remove_accounts

from jupyter_securehpc.principals import (
    AccountError,
    CommandAccounts,
    LocalAccounts,
    ProjectAccounts,
    RecordOnly,
    check_principal,
    group_name,
    principal_name,
)
from jupyter_securehpc.principals.accounts import MARKER


def shadow(name: str) -> list[str]:
    for line in Path("/etc/shadow").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":")
    raise KeyError(name)


@pytest.fixture
def local():
    if os.geteuid() != 0:
        pytest.fail("making accounts needs root", pytrace=False)
    accounts = LocalAccounts(f"p{secrets.token_hex(2)}-")
    made: list[tuple[str, str]] = []
    accounts.made = made
    try:
        yield accounts
    finally:
        remove_accounts([{"principal": name, "group": group} for name, group in made])


def make(accounts: LocalAccounts, project: str, user: str) -> tuple[str, str]:
    group, name = group_name(accounts.prefix, project), principal_name(accounts.prefix, project, user)
    accounts.made.append((name, group))
    accounts.ensure_group(group, project=project)
    accounts.ensure_principal(name, group, project=project, user=user)
    return name, group


def test_a_principal_is_nobodys_login_and_has_the_project_group_only(local):
    name, group = make(local, "sleep", "bob")
    account, group_entry = pwd.getpwnam(name), grp.getgrnam(group)
    assert account.pw_gid == group_entry.gr_gid and account.pw_uid not in (0, os.getuid())
    assert account.pw_shell == "/usr/sbin/nologin" and account.pw_dir == "/nonexistent"
    assert not Path("/nonexistent").exists()
    assert account.pw_gecos == f"{MARKER} of bob in sleep"
    assert shadow(name)[1].startswith("!")  # no password: nobody can authenticate as it
    assert [g.gr_name for g in grp.getgrall() if name in g.gr_mem] == []
    for ids in ("/etc/subuid", "/etc/subgid"):
        assert f"{name}:" not in (Path(ids).read_text() if Path(ids).exists() else "")
    assert check_principal(name, group).uid == account.pw_uid
    # Again: nothing changes (idempotent), the same account.
    make(local, "sleep", "bob")
    assert pwd.getpwnam(name).pw_uid == account.pw_uid


def test_an_account_securehpc_did_not_make_is_never_taken_over(local):
    group = group_name(local.prefix, "sleep")
    name = principal_name(local.prefix, "sleep", "eve")
    local.made.append((name, group))
    local.ensure_group(group, project="sleep")
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/bash", "--gid", group, name], check=True)
    with pytest.raises(AccountError, match="securehpc did not make"):
        local.ensure_principal(name, group, project="sleep", user="eve")
    assert pwd.getpwnam(name).pw_shell == "/bin/bash"  # untouched
    # Nor is it used: a login shell is refused before any job is submitted as it.
    with pytest.raises(AccountError, match="login shell"):
        check_principal(name, group)


def test_a_removed_member_is_locked_and_a_returning_one_unlocked(local):
    name, _group = make(local, "sleep", "bob")
    local.lock_principal(name, project="sleep", user="bob")
    assert shadow(name)[7] == "1"  # expired since 1970: no login, no cron, no su
    assert shadow(name)[1].startswith("!")
    make(local, "sleep", "bob")
    assert shadow(name)[7] == "" and shadow(name)[1].startswith("!")


def test_a_principal_is_checked_before_use(local):
    name, group = make(local, "sleep", "bob")
    other_name, _other_group = make(local, "mri", "bob")
    # A person's account in the project group could write the workspace's ciphertext.
    subprocess.run(["gpasswd", "-a", other_name, group], check=True, capture_output=True)
    with pytest.raises(AccountError, match=rf"supplementary members \({other_name}\).*gpasswd -d"):
        check_principal(name, group)
    subprocess.run(["gpasswd", "-d", other_name, group], check=True, capture_output=True)
    # Another project's principal is not this project's.
    with pytest.raises(AccountError, match="not the project's group"):
        check_principal(other_name, group)
    with pytest.raises(AccountError, match=r"no Unix account 'pxxxx-gone_bob_aaaaaa'.*account sync"):
        check_principal("pxxxx-gone_bob_aaaaaa", group)
    with pytest.raises(AccountError, match="is root's"):
        check_principal("root", "root")


def test_a_sites_command_makes_the_accounts_with_fixed_arguments(local, tmp_path):
    calls = tmp_path / "calls"
    command = tmp_path / "site-accounts"
    command.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {calls}\n'
        'case "$1" in\n'
        '  group-ensure) getent group "$2" >/dev/null || groupadd -- "$2" ;;\n'
        '  principal-ensure) getent passwd "$2" >/dev/null || useradd -M -d /nonexistent -s /usr/sbin/nologin '
        '-g "$3" -N -c "securehpc principal" -- "$2" ;;\n'
        '  principal-lock) usermod -L -e 1 -- "$2" ;;\n'
        '  *) echo "unknown step $1" >&2; exit 2 ;;\n'
        "esac\n"
    )
    command.chmod(0o755)
    site = CommandAccounts([str(command)], local.prefix, lookup_wait=5)
    name, group = principal_name(local.prefix, "sleep", "bob"), group_name(local.prefix, "sleep")
    local.made.append((name, group))
    site.ensure_group(group, project="sleep")
    site.ensure_principal(name, group, project="sleep", user="bob@example.org")
    site.lock_principal(name, project="sleep", user="bob@example.org")
    assert calls.read_text().splitlines() == [
        f"group-ensure {group} sleep",
        f"principal-ensure {name} {group} sleep bob@example.org",
        f"principal-lock {name} sleep bob@example.org",
    ]
    assert check_principal(name, group).name == name
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'directory: permission denied for securehpc' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(AccountError, match="directory: permission denied for securehpc"):
        CommandAccounts([str(failing)], local.prefix).ensure_group(group, project="sleep")
    with pytest.raises(AccountError, match="absolute path"):
        CommandAccounts(["site-accounts"], local.prefix)


def test_the_settings_choose_the_provisioner():
    assert isinstance(ProjectAccounts().make_provisioner(), LocalAccounts)
    assert isinstance(ProjectAccounts(provisioner="none").make_provisioner(), RecordOnly)
    assert ProjectAccounts(prefix="site1-").make_provisioner().prefix == "site1-"
    with pytest.raises(ValueError, match=r"ProjectAccounts\.prefix"):
        ProjectAccounts(prefix="Bad_Prefix")


@pytest.fixture
def site(local_cluster):
    root = Path(tempfile.mkdtemp(prefix="securehpc-accounts-"))
    root.chmod(0o755)
    site = make_site(root, local_cluster.layout, accounts="local")
    try:
        yield site
    finally:
        site.remove_accounts()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_the_command_line_makes_principals_and_gives_the_workspace_to_the_project_group(site):
    created = site.json("project", "create", "sleep", "--owner", "alice")
    added = site.json("member", "add", "sleep", "bob", "--role", "observer")
    owner, observer = pwd.getpwnam(created["principal"]), pwd.getpwnam(added["principal"])
    group = grp.getgrnam(created["group"])
    assert owner.pw_gid == observer.pw_gid == group.gr_gid and owner.pw_uid != observer.pw_uid
    workspace = site.store_root / "projects" / "sleep" / "workspace"
    info = workspace.stat()
    # root:group, setgid, the group may write, nobody else may even list it.
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, group.gr_gid, 0o2770)
    for name in ("gocryptfs.conf", "gocryptfs.diriv"):
        entry = (workspace / name).stat()
        assert (entry.st_uid, entry.st_gid, stat.S_IMODE(entry.st_mode)) == (0, group.gr_gid, 0o440)
    # The project's folder and the store root stay root's: no principal can swap a workspace.
    for folder in (site.store_root, site.store_root / "projects", workspace.parent):
        assert folder.stat().st_uid == 0 and not folder.stat().st_mode & 0o022
    events = {e["action"]: e for e in site.events()}
    assert events["project.create"]["details"]["principal"] == created["principal"]
    assert events["member.add"]["details"]["principal"] == added["principal"]

    removed = site.json("member", "remove", "sleep", "bob")
    assert removed["locked_principal"] == added["principal"] and shadow(added["principal"])[7] == "1"
    listing = {row["user"]: row for row in site.json("account", "list", "sleep")}
    assert (listing["bob"]["state"], listing["alice"]["state"]) == ("locked", "active")
    # Only hub admins list or make accounts.
    refused = site.run("account", "sync", as_user="alice")
    assert refused.returncode == 1 and "only hub admins" in refused.stderr

    # A workspace an admin changed by hand is given back to the group; bob's principal, re-added, unlocked.
    os.chown(workspace, 0, 0)
    workspace.chmod(0o755)
    site.ok("member", "add", "sleep", "bob", "--role", "data_scientist")
    synced = site.json("account", "sync")
    assert synced["workspaces"] == ["sleep"] and synced["locked"] == []
    assert (workspace.stat().st_gid, stat.S_IMODE(workspace.stat().st_mode)) == (group.gr_gid, 0o2770)
    assert shadow(added["principal"])[7] == ""


def test_a_member_of_a_project_is_refused_with_the_fix_when_the_site_makes_no_accounts(local_cluster, tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    site = make_site(root, local_cluster.layout, accounts="none")
    created = site.json("project", "create", "sleep", "--owner", "alice")
    # Recorded, not made: the directory of the site makes them from this list.
    with pytest.raises(KeyError):
        pwd.getpwnam(created["principal"])
    assert [r["principal"] for r in site.json("account", "list")] == [created["principal"]]
    # Until then nobody but root can reach the workspace's ciphertext.
    workspace = site.store_root / "projects" / "sleep" / "workspace"
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700 and workspace.stat().st_uid == 0
