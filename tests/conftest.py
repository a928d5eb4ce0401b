"""Session fixtures: one real local cluster (munge, Slurm, OpenBao) for the whole test run.

The cluster gets its own state folder and free loopback ports, so it runs beside a demo cluster. It is
stopped by pid at the end of the session, also when tests fail. Everything here needs root (Slurm's
daemons, ``sbatch --uid``, creating test users); CI runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import e2e_hub
import hvac
import pytest

from jupyter_securehpc.devcluster import ClusterLayout, LocalCluster, openbao


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the integration tests start Slurm and create users: run them as root", pytrace=False)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    _require_root()
    # Not under pytest's tmp_path: that is 0700, and job users must reach munge's socket and slurm.conf.
    state = Path(tempfile.mkdtemp(prefix="securehpc-test-"))
    state.chmod(0o755)
    cluster = LocalCluster(ClusterLayout.load_or_create(state, random_ports=True))
    try:
        # Packages were installed by the test command (`scripts/local.sh test`) before pytest started.
        cluster.up(install=False)
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_env(local_cluster: LocalCluster) -> dict[str, str]:
    """Environment for Slurm client commands aimed at the test cluster."""
    return {**os.environ, **local_cluster.layout.client_env()}


@pytest.fixture(scope="session")
def bao(local_cluster: LocalCluster) -> hvac.Client:
    """An OpenBao client with the test cluster's root token."""
    return openbao.client(local_cluster.layout)


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int

    def run_as(self) -> dict:
        """Keyword arguments for subprocess that run a command as this user, with no extra groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@pytest.fixture(scope="session")
def unix_user() -> Iterator[UnixUser]:
    """A real unprivileged account (no home, no login shell), removed again after the session."""
    _require_root()
    # Runs of the suite side by side (one per working copy) each need their own account: processes, job
    # outputs and the account's removal are per user.
    name = os.environ.get("SECUREHPC_TEST_USER", "securehpc-test1")
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
            check=True,
            timeout=30,
        )
        created = True
    entry = pwd.getpwnam(name)
    try:
        yield UnixUser(name, entry.pw_uid, entry.pw_gid)
    finally:
        if created:
            subprocess.run(["userdel", name], check=False, timeout=30)


@pytest.fixture
def user_dir(unix_user: UnixUser) -> Iterator[Path]:
    """A folder owned by the test user, in a world-searchable place (jobs write their output here)."""
    path = Path(tempfile.mkdtemp(prefix="securehpc-user-"))
    path.chmod(0o755)
    os.chown(path, unix_user.uid, unix_user.gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e(local_cluster, unix_user, slurm_env) -> Iterator[dict]:
    """A real hub with the secure spawner and a small site (tests/e2e_hub.py), once per test module."""
    yield from e2e_hub.site(local_cluster, unix_user, slurm_env)


@pytest.fixture(scope="module")
def token(e2e) -> str:
    """An API token of the site's user, from a real OpenID login."""
    return e2e_hub.api_token(e2e, e2e_hub.login(e2e))
