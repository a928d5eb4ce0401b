"""The end-to-end site shared by the end-to-end test modules: a real hub with the secure spawner, its own
database, stores, audit log and OpenBao prefix on the session's local cluster, a real unprivileged user with an
account at the OpenID provider, projects sleep (the user is a data scientist; dataset mri/scans shared into it)
and other (the user is a data scientist). Started once per test module, stopped by pid.
"""

from __future__ import annotations

import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import hubclient
import requests
from sites import UnixAccount, account_prefix, make_source, remove_accounts

from jupyter_securehpc import jobspec
from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import hub, openbao
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.principals import LocalAccounts
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService

HUB_ADMIN = "hub-admin"  # a JupyterHub admin of the end-to-end hub (see site())


def site(local_cluster, unix_user, slurm_env):
    """The ``e2e`` fixture's body (tests/conftest.py): yields the site's facts, stops everything after."""
    layout = local_cluster.layout
    root = Path(tempfile.mkdtemp(prefix="securehpc-e2e-"))
    root.chmod(0o755)
    prefix = f"e{secrets.token_hex(4)}"
    db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
    keys = KeyStore(
        KeyStoreConfig(
            url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix, policy_prefix=f"{prefix}-p-"
        )
    )
    (root / "stores").mkdir(mode=0o755)
    # Real principals, named with this site's own prefix (parallel runs use the same project names).
    accounts = LocalAccounts(account_prefix(prefix))
    service = ProjectService(
        open_database(db_url), keys, AuditLog(root / "audit.jsonl"), root / "stores", Actor(admin="test-admin"),
        accounts=accounts,
    )  # fmt: skip
    made: list[dict] = []  # the principals and groups, listed before the site's folder goes
    try:
        yield from _site(layout, root, prefix, db_url, service, unix_user, slurm_env, made)
    finally:
        if not made and (root / "securehpc.sqlite").exists():
            made = service.list_accounts()
        remove_accounts(made)
        shutil.rmtree(root, ignore_errors=True)


def _site(layout, root: Path, prefix: str, db_url: str, service: ProjectService, unix_user, slurm_env,
          made: list[dict]):  # fmt: skip
    user = unix_user.name
    for project, owner in (("sleep", "olivia"), ("mri", "carol"), ("other", "olivia")):
        service.create_project(project, owner=owner)
    service.add_member("sleep", user, "data_scientist")
    for project in ("sleep", "other"):  # what this 2-core machine can give
        service.set_policy(project, ["max_cpus=1", "max_memory_gb=2", "max_wall_time=30", "exclusive=false"])
    service.add_member("other", user, "data_scientist")
    source_hashes = make_source(root / "src", "CANARY-E2E-DATA")
    service.import_dataset("mri", "scans", root / "src")
    service.share_dataset("mri/scans", "sleep")
    service.accept_share("sleep", "mri/scans")
    # The user's sessions run as the user's principal in each project (the workspaces belong to their groups).
    principals = {}
    for row in service.list_accounts():
        if row["user"] == user:
            entry = pwd.getpwnam(row["principal"])
            principals[row["project"]] = UnixAccount(entry.pw_name, entry.pw_uid, entry.pw_gid)
    jobspec.generate_key(root / "hub-signing.pem")

    saved_accounts = layout.oidc_accounts_file.read_text()
    account = hubclient.add_account(layout, user)
    node = Path(sys.executable).with_name("securehpc-node")
    # A JupyterHub admin, as a site that kept one would have (the shipped configuration has none): the tests
    # show what such an admin still cannot do to a member's session.
    admin_account = hubclient.add_account(layout, HUB_ADMIN)
    settings = {
        "SecureHPC.db_url": db_url,
        "SecureHPC.audit_log": str(root / "audit.jsonl"),
        "SecureHPC.store_root": str(root / "stores"),
        "KeyStoreConfig.prefix": prefix,
        "KeyStoreConfig.policy_prefix": f"{prefix}-p-",
        "ProjectAccounts.prefix": account_prefix(prefix),
        "JupyterHub.spawner_class": "securehpc",
        "JupyterHub.allow_named_servers": True,
        "JupyterHub.cleanup_servers": False,
        "SecureSlurmSpawner.signing_key_file": str(root / "hub-signing.pem"),
        "SecureSlurmSpawner.node_command": str(node),
        "SecureSlurmSpawner.start_timeout": 90,
        "SecureSlurmSpawner.http_timeout": 120,
        "SecureSlurmSpawner.startup_poll_interval": 0.2,
        # Often, so that a test sees the hub poll running servers while slurmctld is down.
        "SecureSlurmSpawner.poll_interval": 2,
        # Room for every refusal the attacks of one module make in a minute, and a flood still overruns it.
        "SecureSlurmSpawner.session_audit_per_minute": 100,
        "SecureHPCAuthenticator.admin_users": {HUB_ADMIN},
        # Every refusal of these tests is audited one by one (the flood limits: tests/spawner/test_hub_reports.py).
        "ReportLimits.audited_refusals_per_minute": 1000,
        "ReportLimits.refusals_per_minute": 2000,
        # Every log line at every level, so that the tests can show that no secret is in any of them.
        "JupyterHub.log_level": "DEBUG",
        "SecureSlurmSpawner.debug": True,
    }
    state = {"layout": layout, "root": root, "slurm_env": slurm_env, "settings": settings}
    hub.up(layout, settings, env=hub_env(state))
    try:
        yield {**state, "user": unix_user, "account": account, "hashes": source_hashes, "admin_account": admin_account,
               "principals": principals, "service": service}  # fmt: skip
    finally:
        hub.down(layout)
        made.extend(service.list_accounts())
        for principal in principals.values():
            subprocess.run(["scancel", f"--user={principal.name}"], env=slurm_env, check=False, timeout=30)
        layout.oidc_accounts_file.write_text(saved_accounts)
        shutil.rmtree(root, ignore_errors=True)
        for output in job_outputs({"principals": principals}):  # the jobs' launcher output
            output.unlink()


def job_outputs(e2e, project: str | None = None) -> list[Path]:
    """The launcher outputs (/tmp/securehpc-PRINCIPAL-JOB-RANDOM.log) of the user's jobs, in ``project`` or all."""
    names = [p.name for name, p in e2e["principals"].items() if project in (None, name)]
    return [path for name in names for path in Path("/tmp").glob(f"securehpc-{name}-*.log")]


def hub_env(e2e) -> dict[str, str]:
    """The hub's environment: its OpenBao token and Slurm client settings, never in its config file."""
    return {
        "VAULT_TOKEN": openbao.root_token(e2e["layout"]),
        "SLURM_CONF": e2e["slurm_env"]["SLURM_CONF"],
        "SECUREHPC_HUB_PUBLIC_KEY": str(e2e["root"] / "hub-signing.pub"),
    }


def login(e2e) -> requests.Session:
    return hubclient.login(e2e["layout"], e2e["account"])


def api_token(e2e, browser: requests.Session) -> str:
    return hubclient.api_token(e2e["layout"], browser, e2e["user"].name, note="e2e")


def wait_ready(e2e, token: str, server: str, timeout: float = 100) -> dict:
    return hubclient.wait_ready(
        e2e["layout"], token, e2e["user"].name, server, timeout, explain=lambda: diagnostics(e2e)
    )


def diagnostics(e2e) -> str:
    """The hub's log and the jobs' launcher output, for a failure message."""
    hub_log = (e2e["layout"].log_dir / "jupyterhub.log").read_text(errors="replace").splitlines()
    hub_log = [line for line in hub_log if "JupyterHub" in line or "Error" in line][-60:]
    outputs = job_outputs(e2e)
    jobs = [f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in outputs]
    slurm = subprocess.run(["scontrol", "show", "job"], env=e2e["slurm_env"], capture_output=True, text=True,
                           timeout=30, check=False).stdout  # fmt: skip
    return "\n".join(["--- hub log", *hub_log, *jobs, "--- slurm", slurm])


def start(e2e, token: str, server: str, options: dict) -> requests.Response:
    layout, user = e2e["layout"], e2e["user"].name
    return requests.post(
        f"{layout.hub_url}/hub/api/users/{user}/servers/{server}",
        headers={"Authorization": f"token {token}"},
        json=options,
        timeout=120,
    )


def stop(e2e, token: str, server: str) -> None:
    layout, user = e2e["layout"], e2e["user"].name
    requests.delete(
        f"{layout.hub_url}/hub/api/users/{user}/servers/{server}",
        headers={"Authorization": f"token {token}"},
        timeout=120,
    )
