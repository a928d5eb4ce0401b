"""The local cluster's own promises: idempotent ``up``, one of each service, a useful ``status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jupyter_securehpc.devcluster import munge, oidc, openbao, slurm
from jupyter_securehpc.devcluster.cluster import LocalCluster

SERVICES = ("munge", "slurmctld", "slurmd", "openbao", "oidc")


def securehpc(*args: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("securehpc")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=300, check=False)


def service_pids(cluster: LocalCluster) -> dict[str, int | None]:
    ctld, slurmd = slurm.daemons(cluster.layout)
    return {
        "munge": munge.daemon(cluster.layout).pid(),
        "slurmctld": ctld.pid(),
        "slurmd": slurmd.pid(),
        "openbao": openbao.daemon(cluster.layout).pid(),
        "oidc": oidc.daemon(cluster.layout).pid(),
    }


def processes_of(cluster: LocalCluster) -> dict[str, int]:
    """Count, from /proc, the daemons on this machine that serve this cluster's state folder."""
    state = str(cluster.layout.state_dir)
    counts = dict.fromkeys(SERVICES, 0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        program = os.path.basename(argv[0].decode(errors="replace"))
        ours = state.encode() in b"\0".join(argv) or f"={state}/".encode() in environ
        if not ours:
            continue
        names = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "bao": "openbao", "node": "oidc"}
        name = names.get(program)
        if name == "oidc" and b"oidc_provider.mjs" not in b"\0".join(argv):
            continue  # another Node program (the hub's proxy), not the provider
        if name:
            counts[name] += 1
    return counts


def test_status_reports_every_service_up(local_cluster):
    statuses = {service.name: service for service in local_cluster.status()}
    assert set(statuses) == {*SERVICES, "node", "packages"}
    assert all(service.running for service in statuses.values()), statuses


def test_up_twice_through_the_cli_keeps_one_of_each(local_cluster):
    before = service_pids(local_cluster)
    for _ in range(2):
        result = securehpc("dev", "--state-dir", str(local_cluster.layout.state_dir), "up", "--no-install")
        assert result.returncode == 0, result.stderr
    assert service_pids(local_cluster) == before
    assert processes_of(local_cluster) == dict.fromkeys(SERVICES, 1)


def test_status_names_a_stopped_service_and_the_fix(local_cluster):
    munge.daemon(local_cluster.layout).stop()
    result = securehpc("dev", "--state-dir", str(local_cluster.layout.state_dir), "status", "--json")
    assert result.returncode == 3
    report = {service["name"]: service for service in json.loads(result.stdout)}
    assert report["munge"]["running"] is False
    assert report["munge"]["detail"] == "munged is not running"
    assert report["munge"]["fix"] == "securehpc dev up"
    assert report["openbao"]["running"] is True

    local_cluster.up(install=False)
    assert processes_of(local_cluster) == dict.fromkeys(SERVICES, 1)
    assert all(service.running for service in local_cluster.status())


def test_env_prints_client_settings_without_secrets(local_cluster):
    result = securehpc("dev", "--state-dir", str(local_cluster.layout.state_dir), "env")
    assert result.returncode == 0
    assert f"export SLURM_CONF={local_cluster.layout.slurm_conf}" in result.stdout
    assert f"export VAULT_ADDR={local_cluster.layout.openbao_addr}" in result.stdout
    assert openbao.root_token(local_cluster.layout) not in result.stdout
    assert "TOKEN" not in result.stdout


def test_root_token_is_readable_by_root_only(local_cluster):
    init = local_cluster.layout.openbao_init_file
    assert init.stat().st_mode & 0o777 == 0o600
    assert init.parent.stat().st_mode & 0o777 == 0o700
    assert local_cluster.layout.munge_key.stat().st_mode & 0o777 == 0o400
