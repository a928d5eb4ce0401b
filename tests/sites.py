"""A test site: its own database, store root, audit log and OpenBao key prefix, driven through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.principals import AccountError, LocalAccounts

CLI = str(Path(sys.executable).with_name("securehpc"))


@dataclass
class Site:
    root: Path
    env: dict[str, str]
    config: Path
    prefix: str

    @property
    def store_root(self) -> Path:
        return self.root / "stores"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    def run(self, *args: str, as_user: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = [CLI, "--config", str(self.config), *(["--as", as_user] if as_user else []), *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def ok(self, *args: str, as_user: str | None = None) -> str:
        result = self.run(*args, as_user=as_user)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str, as_user: str | None = None) -> object:
        return json.loads(self.ok("--json", *args, as_user=as_user))

    def keystore(self) -> KeyStore:
        return KeyStore(
            KeyStoreConfig(
                url=self.env["VAULT_ADDR"],
                token=self.env["VAULT_TOKEN"],
                prefix=self.prefix,
                policy_prefix=f"{self.prefix}-project-",
            )
        )

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def principal(self, project: str, user: str) -> UnixAccount:
        """The Unix account ``user``'s sessions in ``project`` run as (made by the site's provisioner)."""
        for row in self.json("account", "list", project):
            if row["user"] == user:
                entry = pwd.getpwnam(row["principal"])
                return UnixAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)
        raise KeyError(f"{user} has no principal in {project}")

    def remove_accounts(self) -> None:
        """Remove every principal and project group the site made (teardown; the product only locks them)."""
        listing = self.run("--json", "account", "list")
        if listing.returncode == 0:  # no site (a failed setup): nothing was made
            remove_accounts(json.loads(listing.stdout))

    def state(self) -> dict:
        """Everything an operation must leave unchanged when it is refused."""
        projects = self.json("project", "list")
        return {
            "projects": projects,
            "details": {p["name"]: self.json("project", "show", p["name"]) for p in projects},
            "files": sorted(str(p.relative_to(self.store_root)) for p in self.store_root.rglob("*")),
        }


def make_site(root: Path, layout, *, vault_addr: str | None = None, accounts: str = "none") -> Site:
    """A site in ``root``. ``accounts``: ``ProjectAccounts.provisioner``; "local" makes real principals and
    groups (named with the site's own prefix; remove them with ``Site.remove_accounts``), "none" only records
    them (tests that start no session)."""
    prefix = f"t{secrets.token_hex(4)}"
    config = root / "securehpc_config.py"
    config.write_text(
        f"c.KeyStoreConfig.prefix = {prefix!r}\nc.KeyStoreConfig.policy_prefix = {prefix + '-project-'!r}\n"
        f"c.ProjectAccounts.prefix = {account_prefix(prefix)!r}\nc.ProjectAccounts.provisioner = {accounts!r}\n"
    )
    env = {
        **os.environ,
        "SECUREHPC_DB": f"sqlite:///{root / 'db' / 'securehpc.sqlite'}",
        "SECUREHPC_STORE_ROOT": str(root / "stores"),
        "SECUREHPC_AUDIT_LOG": str(root / "audit" / "audit.jsonl"),
        "VAULT_ADDR": vault_addr or layout.openbao_addr,
        "VAULT_TOKEN": openbao.root_token(layout),
    }
    env.pop("SUDO_USER", None)
    return Site(root, env, config, prefix)


@dataclass(frozen=True)
class UnixAccount:
    name: str
    uid: int
    gid: int

    def run_as(self) -> dict:
        """Keyword arguments for subprocess that run a command as this account (its group only), as Slurm would."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def account_prefix(site_prefix: str) -> str:
    """A ProjectAccounts.prefix of its own for a test site (parallel runs use the same project names)."""
    return f"{site_prefix[:5]}-"


def remove_accounts(rows: list[dict]) -> None:
    """Remove the principals and groups of ``account list`` rows (teardown): every one that can be, after
    stopping what a failed test left running under them (by pid); then say what could not be removed."""
    local, failed = LocalAccounts(), []
    for row in rows:
        try:
            uid = pwd.getpwnam(row["principal"]).pw_uid
        except KeyError:
            continue
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue
        try:
            local.delete_principal(row["principal"])
        except AccountError as error:
            failed.append(str(error))
    for group in {row["group"] for row in rows if row["group"]}:
        try:
            local.delete_group(group)
        except AccountError as error:
            failed.append(str(error))
    assert not failed, failed


def make_source(folder: Path, canary: str) -> dict[str, str]:
    """A small polysomnography-like dataset with a canary string; returns path -> sha256."""
    (folder / "night1").mkdir(parents=True)
    files = {
        "README.txt": f"synthetic sleep recordings {canary}\n".encode(),
        "night1/eeg.csv": ("t,c3,c4\n" + "".join(f"{i},{i % 7},{i % 5}\n" for i in range(5000))).encode(),
        "night1/notes.txt": f"patient note {canary}\n".encode() * 100,
        "night1/signal.bin": os.urandom(300_000) + canary.encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def populate(site: Site) -> Site:
    """Projects sleep (alice owns, bob scientist, olga observer) and mri (carol owns)."""
    site.ok("project", "create", "sleep", "--owner", "alice")
    site.ok("project", "create", "mri", "--owner", "carol")
    site.ok("member", "add", "sleep", "bob", "--role", "data_scientist")
    site.ok("member", "add", "sleep", "olga", "--role", "observer")
    return site
