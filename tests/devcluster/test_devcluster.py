"""The local cluster's own promises: idempotent ``up``, one of each service, a useful ``status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_securehpc.devcluster import commands, munge, oidc, openbao, slurm
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
    # The fix as it runs when pasted: this environment's securehpc (not on PATH here) and this cluster's folder.
    assert report["munge"]["fix"] == commands.dev("up", local_cluster.layout.state_dir)
    fix = subprocess.run(["bash", "-c", report["munge"]["fix"].replace(" up", " status --json")],
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert fix.returncode == 3 and json.loads(fix.stdout)[0]["name"] == "munge", fix.stderr
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
    # The demo admin's token is never printed: a line reads it from its 0600 file when it runs (once the demo is
    # set up; before, a comment says how).
    token = openbao.token_file(local_cluster.layout, "securehpc-provisioner")
    lines = [line for line in result.stdout.splitlines() if "VAULT_TOKEN" in line]
    assert lines == [f'export VAULT_TOKEN="$(cat {token})"  # provisioning only: no key reads'] or lines == []
    if token.exists():
        assert token.read_text().strip() not in result.stdout


def test_root_token_is_readable_by_root_only(local_cluster):
    init = local_cluster.layout.openbao_init_file
    assert init.stat().st_mode & 0o777 == 0o600
    assert init.parent.stat().st_mode & 0o777 == 0o700
    assert local_cluster.layout.munge_key.stat().st_mode & 0o777 == 0o400


def test_a_port_base_gives_a_new_state_folder_consecutive_ports_and_they_are_kept(tmp_path):
    from jupyter_securehpc.devcluster.layout import DEFAULT_PORTS, ClusterLayout

    layout = ClusterLayout.load_or_create(tmp_path, port_base=26800)
    assert [getattr(layout, name) for name in DEFAULT_PORTS] == list(range(26800, 26808))
    assert (layout.openbao_addr, layout.hub_url) == ("http://127.0.0.1:26802", "http://127.0.0.1:26805")
    assert ClusterLayout.load_or_create(tmp_path) == layout  # saved: later commands need no option
    assert ClusterLayout.load_or_create(tmp_path, port_base=26800) == layout
    with pytest.raises(ValueError, match="already uses ports from 26800, not from 27000"):
        ClusterLayout.load_or_create(tmp_path, port_base=27000)


def test_the_port_options_through_the_cli(tmp_path):
    state = str(tmp_path / "state")
    result = securehpc("dev", "--state-dir", state, "--port-base", "26800", "env")
    assert result.returncode == 0, result.stderr
    assert "export VAULT_ADDR=http://127.0.0.1:26802" in result.stdout
    again = securehpc("dev", "--state-dir", state, "--port-base", "27000", "env")
    assert again.returncode == 1
    assert "already uses ports from 26800" in again.stderr and "--state-dir" in again.stderr
    low = securehpc("dev", "--state-dir", str(tmp_path / "other"), "--port-base", "80", "env")
    assert low.returncode == 1 and "choose a base from 1024 to 65528" in low.stderr
    both = securehpc("dev", "--state-dir", state, "--port-base", "26800", "--random-ports", "env")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    randomly = securehpc("dev", "--state-dir", str(tmp_path / "random"), "--random-ports", "env")
    assert randomly.returncode == 0, randomly.stderr
    port = int(randomly.stdout.split("VAULT_ADDR=http://127.0.0.1:")[1].split()[0])
    assert port != 18200
