"""The demo: two projects, three people, a synthetic dataset shared from one project into the other, and
a hub whose servers are secure Slurm jobs. Idempotent: what exists is kept.

- ``sleep``: alice (data owner), bob (data scientist); dataset ``psg``: generated polysomnography-like
  recordings (EEG, ECG and breathing signals with a hypnogram; no real person's data);
- ``cardio``: carol (data owner), bob (data scientist); ``sleep/psg`` is shared into it, read-only.

The people are accounts of the local OpenID provider (with MFA) and Unix accounts (a person's own shell on the
node, which cannot reach their sessions); their sessions run as their principals, one per person and project
(``shpc-<project>_<person>_<hash>``, in the project's group ``shpc-<project>_<hash>``), made with the projects.

OpenBao tokens as at a real site: the hub holds a token with ``hub_config/openbao-hub-policy.hcl`` only (it
issues wrapped session tokens, it cannot read keys); the demo's projects are provisioned with a token of
``hub_config/openbao-provisioner-policy.hcl`` (the admin's command line gets the same one through ``securehpc
dev env``); the root token only writes those two policies and makes their tokens.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import random
import stat
import subprocess
import sys
from pathlib import Path

from .. import jobspec
from ..audit import AuditLog
from ..keys import KeyStore, KeyStoreConfig
from ..principals import DEFAULT_PREFIX, LocalAccounts, group_name, principal_name
from ..projects.db import open_database
from ..projects.service import Actor, ProjectService
from ..session.env import HUB_PUBLIC_KEY_ENV
from ..vocabulary import DatasetRef
from . import hub, openbao
from .layout import ClusterLayout

PROJECTS = {"sleep": ("alice", ["bob"]), "cardio": ("carol", ["bob"])}
DATASET = DatasetRef("sleep", "psg")
SHARED_WITH = "cardio"
HUB_POLICY = "securehpc-hub"
PROVISIONER_POLICY = "securehpc-provisioner"


def persons() -> list[str]:
    return sorted({name for owner, scientists in PROJECTS.values() for name in (owner, *scientists)})


def principals() -> list[str]:
    """Each person's principal in each of their projects: the accounts the demo's sessions run as."""
    return sorted(
        principal_name(DEFAULT_PREFIX, project, person)
        for project, (owner, scientists) in PROJECTS.items()
        for person in (owner, *scientists)
    )


def people() -> list[str]:
    """The demo's Unix accounts, the people's and their principals' (``down`` names them: they stay, so that the
    stores keep their owners)."""
    return sorted({*persons(), *principals()})


def unix_groups() -> list[str]:
    """The projects' groups (their principals' primary group; each owns its project's workspace)."""
    return [group_name(DEFAULT_PREFIX, name) for name in PROJECTS]


def job_output_dir(layout: ClusterLayout) -> Path:
    """Where the demo's jobs write their output (the launcher's messages): in the state folder, not /tmp, so
    that the demo leaves nothing outside it. Sticky and world-writable like /tmp: Slurm creates each file as
    the job's user, mode 0600."""
    return layout.state_dir / "jobs"


def sample_folder(layout: ClusterLayout) -> Path:
    """The synthetic recordings as plain files, the demo's source of ``sleep/psg`` and of the README's import."""
    return layout.state_dir / "incoming" / "psg"


def ensure_unix_users(names: list[str]) -> None:
    """Accounts for the demo people (no home, no login shell): what their own shell on the node would be."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                           check=True, timeout=30)  # fmt: skip


def regroup_workspace(workspace: Path, writer: str, group: str) -> None:
    """A demo workspace from before principals (its files belong to the person who wrote them): give them to
    the writer's principal and the project's group, group-writable, so that every member's session can work
    with them. Links are not followed (``lchown``, no descent into linked folders)."""
    gid = grp.getgrnam(group).gr_gid
    if all(os.stat(entry, follow_symlinks=False).st_gid == gid for entry in workspace.iterdir()):
        return
    uid = pwd.getpwnam(writer).pw_uid
    for folder, subfolders, files in os.walk(workspace, followlinks=False):
        for name in [*subfolders, *files]:
            try:  # by descriptor, never by a path that a link could have replaced meanwhile
                fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a link: left as it is
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                    os.fchown(fd, uid, gid)
                    # The project's group may read and write (folders: setgid, what is made in them is the group's).
                    group_bits = 0o2070 if stat.S_ISDIR(mode) else 0o060
                    os.fchmod(fd, (mode & 0o7777 & ~0o007) | group_bits)
            finally:
                os.close(fd)


def synthetic_psg(folder: Path, nights: int = 3, seconds: int = 600, rate: int = 50) -> None:
    """Polysomnography-like CSV files: a few minutes of EEG, ECG and breathing, and a 30-second hypnogram."""
    rng = random.Random(7)  # noqa: S311 - reproducible synthetic signals, not secrets
    for night in range(1, nights + 1):
        lines = ["t,eeg_c3,ecg,breathing"]
        for index in range(seconds * rate):
            t = index / rate
            eeg = 30 * math.sin(2 * math.pi * (2 + night) * t) + rng.gauss(0, 8)
            ecg = 800 * math.exp(-((((t * 1.1) % 1) - 0.2) ** 2) / 0.0005) + rng.gauss(0, 20)
            breathing = 300 * math.sin(2 * math.pi * 0.25 * t) + rng.gauss(0, 15)
            lines.append(f"{t:.2f},{eeg:.1f},{ecg:.1f},{breathing:.1f}")
        (folder / f"night{night}_signals.csv").write_text("\n".join(lines) + "\n")
        stages = [rng.choice(["W", "N1", "N2", "N3", "REM"]) for _ in range(seconds // 30)]
        (folder / f"night{night}_hypnogram.csv").write_text("epoch,stage\n" + "".join(
            f"{i},{stage}\n" for i, stage in enumerate(stages)))  # fmt: skip
    (folder / "README.txt").write_text("Synthetic polysomnography for the jupyter-securehpc demo. No real data.\n")


def _policies(layout: ClusterLayout) -> KeyStore:
    """The demo's key store settings (the defaults, as the demo hub's), to render its OpenBao policies."""
    return KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=""))


def provisioner_token(layout: ClusterLayout) -> str:
    """The demo admin's provisioning token (``openbao-provisioner-policy.hcl``), made or checked now."""
    return openbao.policy_token(layout, PROVISIONER_POLICY, _policies(layout).provisioner_policy())[0]


def hub_token(layout: ClusterLayout) -> tuple[str, bool]:
    """The hub's token (``openbao-hub-policy.hcl``), made or checked now; and whether it is new."""
    return openbao.policy_token(layout, HUB_POLICY, _policies(layout).hub_policy())


def service(layout: ClusterLayout) -> ProjectService:
    site = hub.default_site(layout)
    store_root = Path(site["SecureHPC.store_root"])
    store_root.mkdir(parents=True, exist_ok=True, mode=0o755)
    Path(site["SecureHPC.db_url"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=provisioner_token(layout)))
    return ProjectService(
        open_database(site["SecureHPC.db_url"]),
        keys,
        AuditLog(Path(site["SecureHPC.audit_log"])),
        store_root,
        Actor(admin="securehpc-demo"),
        # Each member's principal and each project's group, made on this machine with useradd and groupadd.
        accounts=LocalAccounts(DEFAULT_PREFIX),
    )


def ensure_projects(layout: ClusterLayout) -> None:
    projects = service(layout)
    existing = {project["name"] for project in projects.list_projects()}
    has_dataset = DATASET.owner in existing and DATASET.dataset in {
        entry["dataset"] for entry in projects.list_datasets(DATASET.owner)["datasets"]
    }
    for name, (owner, scientists) in PROJECTS.items():
        ensure_unix_users([owner, *scientists])
        if name not in existing:
            # The project's group owns its workspace; each member gets a principal (create_project, add_member).
            projects.create_project(name, owner=owner)
            for scientist in scientists:
                projects.add_member(name, scientist, "data_scientist")
        # The machine has few cores and one node: sessions must fit it, and several must fit at once.
        limits = [f"max_cpus={min(2, os.cpu_count() or 1)}", "max_memory_gb=4", "max_wall_time=8h", "exclusive=false"]
        projects.set_policy(name, limits)
    sample = sample_folder(layout)
    if not sample.is_dir():
        sample.mkdir(parents=True, mode=0o755)
        synthetic_psg(sample)
    if not has_dataset:
        projects.import_dataset(*DATASET, sample)
        projects.share_dataset(str(DATASET), SHARED_WITH)
        projects.accept_share(SHARED_WITH, str(DATASET))
    if existing:
        # A demo set up by an earlier version: token roles, principals and workspace groups (idempotent).
        projects.sync_keys()
        projects.sync_accounts()
        for name, (_owner, scientists) in PROJECTS.items():
            if name in existing:
                writer = principal_name(DEFAULT_PREFIX, name, scientists[0])
                regroup_workspace(projects.layout.workspace(name), writer, group_name(DEFAULT_PREFIX, name))


def signing_key(layout: ClusterLayout) -> Path:
    path = layout.state_dir / "site" / "private" / "hub-signing.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not path.exists():
        jobspec.generate_key(path)
    # The public half must be readable by the job users' launchers.
    public = layout.state_dir / "site" / "hub-signing.pub"
    public.write_bytes(path.with_suffix(".pub").read_bytes())
    public.chmod(0o644)
    return path


def hub_settings(layout: ClusterLayout) -> dict:
    node = Path(sys.executable).with_name("securehpc-node")
    jobs = job_output_dir(layout)
    jobs.mkdir(exist_ok=True)
    jobs.chmod(0o1777)
    return {
        "JupyterHub.spawner_class": "securehpc",
        "JupyterHub.allow_named_servers": True,
        "JupyterHub.cleanup_servers": False,
        "SecureSlurmSpawner.signing_key_file": str(signing_key(layout)),
        "SecureSlurmSpawner.node_command": str(node),
        "SecureSlurmSpawner.job_output": f"{jobs}/securehpc-%u-%j-{{nonce}}.log",
        "SecureSlurmSpawner.start_timeout": 300,
        "SecureSlurmSpawner.http_timeout": 120,
        "SecureSlurmSpawner.startup_poll_interval": 0.2,
        # The demo's datasets are small: decrypted into each session's memory at start, as a site would do.
        "SecureSlurmSpawner.stage_limit_mib": 256,
    }


def hub_env(layout: ClusterLayout) -> dict[str, str]:
    """The hub's secrets and Slurm settings, in its environment (never in its config file or argv): its token
    has the hub's policy only (made by ``up``: :func:`hub_token`)."""
    return {
        "VAULT_TOKEN": openbao.token_file(layout, HUB_POLICY).read_text().strip(),
        "SLURM_CONF": str(layout.slurm_conf),
        HUB_PUBLIC_KEY_ENV: str(layout.state_dir / "site" / "hub-signing.pub"),
    }


def export_hub_env(layout: ClusterLayout) -> None:
    """Put ``hub_env`` into this process's environment: for ``hub_config/jupyterhub_config_local.py``, which
    JupyterHub loads in its own process (the spawner passes SLURM_CONF and the public key on to jobs)."""
    os.environ.update(hub_env(layout))


def up(layout: ClusterLayout) -> None:
    ensure_projects(layout)
    if hub_token(layout)[1]:
        hub.down(layout)  # a new token reaches the hub only through its environment, at its start
    hub.up(layout, hub_settings(layout), env=hub_env(layout))
