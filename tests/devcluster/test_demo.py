"""The README's first command, minus the package installs: ``securehpc dev up`` brings up the demo (projects,
people, the synthetic dataset shared into a second project, the hub), prints where to log in and the demo
logins, and bob can then start his ``cardio`` server and read the shared recordings in it.

Real services: the tests' local cluster (Slurm with GPU GRES placeholders: no real GPU), OpenBao, the
OpenID provider, JupyterHub with configurable-http-proxy, bubblewrap and gocryptfs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import hubclient
import pytest
import requests

from jupyter_securehpc.devcluster import demo, hub, oidc

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CLI = str(Path(sys.executable).with_name("securehpc"))

READ_SHARED = r"""
import hashlib, json, os
folder = "/datasets/sleep/psg"
open("/project/analysis.txt", "w").write("mean EEG over night 1")
print(json.dumps({
    "files": {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
              for name in sorted(os.listdir(folder)) if not name.startswith(".")},  # not the import's manifest
    "workspace": sorted(os.listdir("/project")),
    "filesystem": {line.split()[1]: line.split()[2] for line in open("/proc/mounts")}.get(folder),
}))
"""


@pytest.fixture(scope="module")
def demo_up(local_cluster, slurm_env):
    layout = local_cluster.layout
    result = subprocess.run(
        [CLI, "dev", "--state-dir", str(layout.state_dir), "up", "--no-install"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    try:
        yield layout, result
    finally:
        hub.down(layout)
        subprocess.run(["scancel", "--user=bob"], env=slurm_env, check=False, timeout=30)


def test_up_prints_where_to_log_in_and_the_demo_logins(demo_up):
    layout, result = demo_up
    assert result.returncode == 0, result.stderr
    assert f"{layout.hub_url}/" in result.stdout
    lines = result.stdout.splitlines()
    for account in oidc.accounts(layout):
        parts = [account["username"], account["password"], account["otp"] or "no second factor"]
        assert any(all(part in line for part in parts) for line in lines), (account["username"], result.stdout)


def test_bob_starts_cardio_and_reads_the_dataset_shared_from_sleep(demo_up, tmp_path):
    layout, result = demo_up
    assert result.returncode == 0, result.stderr
    bob = next(account for account in oidc.accounts(layout) if account["username"] == "bob")
    token = hubclient.api_token(layout, hubclient.login(layout, bob), "bob", note="demo test")
    headers = {"Authorization": f"token {token}"}
    url = f"{layout.hub_url}/hub/api/users/bob/servers/cardio"
    response = requests.post(url, headers=headers, json={"gpus": "1"}, timeout=120)
    assert response.status_code in (201, 202), response.text
    hubclient.wait_ready(layout, token, "bob", "cardio", timeout=120)
    try:
        output = hubclient.run_code(f"{layout.hub_url}/user/bob/cardio", token, READ_SHARED)
        report = json.loads(output.strip().splitlines()[-1])
        # The generator is seeded: the same recordings again, byte for byte, to compare with what bob read.
        demo.synthetic_psg(tmp_path)
        expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())}
        assert report["files"] == expected
        assert report["filesystem"] == "tmpfs"  # staged: decrypted from the ciphertext into memory at start
        assert "analysis.txt" in report["workspace"]
    finally:
        requests.delete(url, headers=headers, timeout=120)


LOAD_HUB_CONFIG = """
import json, os, sys
from traitlets.config import PyFileConfigLoader
c = PyFileConfigLoader(sys.argv[1], path=sys.argv[2]).load_config()
print(json.dumps({"spawner": c.JupyterHub.spawner_class, "bind": c.JupyterHub.bind_url,
                  "client_secret": bool(c.SecureHPCAuthenticator.client_secret),
                  "vault_token": bool(os.environ.get("VAULT_TOKEN"))}))
"""


def test_the_local_hub_config_example_is_the_demo_hubs(demo_up, tmp_path):
    layout, result = demo_up
    assert result.returncode == 0, result.stderr
    folder = Path(__file__).resolve().parents[2] / "hub_config"
    argv = [sys.executable, "-c", LOAD_HUB_CONFIG, "jupyterhub_config_local.py", str(folder)]
    loaded = subprocess.run(argv, env={**os.environ, "SECUREHPC_DEV_STATE": str(layout.state_dir)},
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == {
        "spawner": "securehpc", "bind": f"{layout.hub_url}/", "client_secret": True, "vault_token": True
    }  # fmt: skip
    # Before `securehpc dev up` there is nothing to load: it says so instead of starting a hub that spawns nothing.
    empty = tmp_path / "state"
    refused = subprocess.run(argv, env={**os.environ, "SECUREHPC_DEV_STATE": str(empty)},
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode != 0 and "run `securehpc dev up` first" in refused.stderr
