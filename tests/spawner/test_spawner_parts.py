"""The spawner's guards without a hub: options, the batch script, the job spec signature (reports: test_reports.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jupyter_securehpc import jobspec
from jupyter_securehpc.projects.policy import Policy
from jupyter_securehpc.spawner.options import OptionsError, parse
from jupyter_securehpc.spawner.script import JobSettings, job_tag, render

POLICIES = {
    "sleep": Policy().with_settings(["max_gpus=2", "max_cpus=8", "max_memory_gb=32", "max_wall_time=8h"]),
    "mri": Policy().with_settings(["max_gpus=0", "partition=cpu", "exclusive=false"]),
}


def test_defaults_are_modest_with_one_gpu_and_the_policys_wall_time():
    request = parse({"project": ["sleep"]}, POLICIES)
    # One CPU and its share of the memory (32 GB / 8 CPUs), not the policy's maximum (test_spawn_defaults.py).
    assert (request.gpus, request.cpus, request.memory_gb, request.minutes) == (1, 1, 4, 480)
    assert parse({"project": "mri"}, POLICIES).gpus == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project": "cardio"}, "not a member of project 'cardio'"),
        ({"project": "../sleep"}, "contains '..'"),
        ({"project": "a/sleep"}, "contains '/'"),
        ({"project": "sleep\n#SBATCH --uid=0"}, "whitespace"),
        ({"project": "sleep;rm -rf /"}, "';'"),
        ({"project": "sleep$(id)"}, "'$'"),
        ({"project": "sleep", "gpus": "3"}, "from 0 to 2"),
        ({"project": "sleep", "gpus": "1\n#SBATCH --partition=all"}, "whole number"),
        ({"project": "sleep", "gpus": "-1"}, "whole number"),
        ({"project": "sleep", "gpus": "1.5"}, "whole number"),
        ({"project": "sleep", "gpus": "9" * 5000}, "whole number"),
        ({"project": "sleep", "cpus": "0"}, "from 1 to 8"),
        ({"project": "sleep", "memory_gb": "`reboot`"}, "whole number"),
        ({"project": "sleep", "minutes": "481"}, "from 1 to 480"),
        ({"project": "sleep", "gpus": ["1", "2"]}, "exactly one value"),
        ({"project": "sleep", "partition": "all"}, "unknown spawn options 'partition'"),
        ({"project": "sleep", "cmd": "bash"}, "unknown spawn options 'cmd'"),
        ({"project": "mri", "gpus": "1"}, "from 0 to 0"),
        ({}, "choose a project"),
        ({"project": "x" * 100}, "more than 64"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(OptionsError) as error:
        parse(options, POLICIES)
    assert message in str(error.value)


def make_script(project="sleep", **options) -> str:
    request = parse({"project": project, **options}, POLICIES)
    spec = jobspec.sign({"project": project}, Ed25519PrivateKey.generate())
    return render(
        request, POLICIES[project], tag=job_tag("bob", project, "7"), signed_spec=spec, settings=JobSettings()
    )


def test_script_carries_the_policy_and_the_safety_flags():
    script = make_script(gpus="2", cpus="4", memory_gb="16", minutes="90")
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=securehpc-sleep",
        "#SBATCH --comment=securehpc:bob:sleep:7",
        "#SBATCH --no-requeue",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH --time=90",
        "#SBATCH --output=/tmp/securehpc-%u-%j-0.log",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --exclusive",
    ]
    assert "SECUREHPC_WRAPPED_TOKEN" not in script


def test_script_without_gpus_or_exclusivity():
    script = make_script("mri")
    assert "--gres" not in script and "--exclusive" not in script and "#SBATCH --partition=cpu" in script


def test_script_is_valid_bash_and_the_spec_arrives_intact(tmp_path):
    script = make_script()
    envelope = next(line for line in script.splitlines() if line.startswith("{"))
    # Run everything but the launcher, with the launcher replaced by printing the spec file.
    launcher = 'securehpc-node serve --spec "$spec" --ip "$(hostname --ip-address | cut -d" " -f1)"'
    assert launcher in script
    body = script.replace(launcher, 'cat "$spec"')
    result = subprocess.run(["bash", "-c", body.split("set -euo pipefail", 1)[1]], capture_output=True,
                            text=True, timeout=30, check=True)  # fmt: skip
    assert json.loads(result.stdout.split("\n")[0]) == json.loads(envelope)


def test_job_spec_signature_round_trip_and_tampering():
    key = Ed25519PrivateKey.generate()
    envelope = jobspec.sign({"project": "sleep", "datasets": ["mri/scans"]}, key)
    assert jobspec.verify(envelope, key.public_key())["datasets"] == ["mri/scans"]
    tampered = envelope.replace("mri/scans", "mri/other")
    with pytest.raises(jobspec.SignatureError, match="does not match"):
        jobspec.verify(tampered, key.public_key())
    with pytest.raises(jobspec.SignatureError, match="does not match"):
        jobspec.verify(envelope, Ed25519PrivateKey.generate().public_key())


def test_entry_points_name_the_spawner_and_the_authenticator():
    from importlib.metadata import entry_points

    from jupyter_securehpc.authenticator import SecureHPCAuthenticator
    from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner

    assert entry_points(group="jupyterhub.spawners")["securehpc"].load() is SecureSlurmSpawner
    assert entry_points(group="jupyterhub.authenticators")["securehpc"].load() is SecureHPCAuthenticator


def test_importing_the_spawner_removes_batchspawners_attribute_setting_callback():
    from jupyterhub.apihandlers import default_handlers

    import jupyter_securehpc.spawner.spawner  # noqa: F401 - the import installs the routes

    routes = [route[0] for route in default_handlers]
    assert r"/api/batchspawner" not in routes
    assert r"/api/securehpc/port" not in routes  # the old routes, authenticated by the server's own token
    for kind in ("port", "stage", "audit", "activity"):
        assert routes.count(rf"/api/securehpc/servers/([^/]+)/([^/]*)/{kind}") == 1


def test_jupyterhubs_impersonation_routes_are_replaced_in_place():
    """Tornado takes the first matching route: the replacements sit where JupyterHub's handlers were."""
    from jupyterhub.apihandlers import default_handlers

    from jupyter_securehpc.spawner import api

    api.install_routes()
    api.install_routes()  # idempotent
    handlers = dict((route[0], route[1]) for route in default_handlers)
    assert handlers[r"/api/users/([^/]+)/tokens"] is api.OwnTokensOnlyHandler
    assert handlers[r"/api/users/([^/]+)/activity"] is api.NoClientActivityHandler
    assert handlers[r"/api/shares/([^/]+)/([^/]*)"] is api.NoSharingHandler
    assert handlers[r"/api/share-codes/([^/]+)/([^/]*)"] is api.NoShareCodesHandler
    assert len(default_handlers) == len(handlers)


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/securehpc-%u-%j-{nonce}.log",
        "/scratch/securehpc/%u/{nonce}-%j.out",
        "/var/log/securehpc/job-{nonce}",
    ],
)
def test_job_output_takes_a_path_with_one_nonce(value):
    from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner

    assert SecureSlurmSpawner(job_output=value).job_output == value


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/securehpc-%u-%j.log",  # a job id repeats on a new cluster: the file would be reused
        "tmp/securehpc-%u-%j-{nonce}.log",  # relative: to what, on the node?
        "/tmp/securehpc-{nonce}-{nonce}.log",
        "/tmp/securehpc-{user}-{nonce}.log",
        "/tmp/securehpc {nonce}.log",
        "/tmp/../etc/{nonce}",
        "/tmp/securehpc-{nonce}.log\n#SBATCH --uid=0",
        "/tmp/securehpc-$(id)-{nonce}.log",
    ],
)
def test_job_output_without_a_nonce_or_with_odd_characters_is_refused(value):
    from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner

    with pytest.raises(ValueError, match=r"SecureSlurmSpawner\.job_output"):
        SecureSlurmSpawner(job_output=value)


def test_a_job_output_with_its_placeholder_unfilled_is_not_rendered():
    request = parse({"project": "sleep"}, POLICIES)
    with pytest.raises(ValueError, match="placeholder"):
        render(request, POLICIES["sleep"], tag="t", signed_spec="{}",
               settings=JobSettings(output="/tmp/securehpc-%u-%j-{nonce}.log"))  # fmt: skip


def test_the_report_credential_is_kept_as_a_hash_across_restarts_and_dropped_at_stop():
    from jupyter_securehpc.spawner.reports import new_report_secret
    from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner

    secret, digest = new_report_secret()
    running = SecureSlurmSpawner()
    running.report_secret_hash = digest
    state = running.get_state()
    assert state["securehpc_report_hash"] == digest and secret not in str(state)
    restarted = SecureSlurmSpawner()  # the hub after a restart
    restarted.load_state(state)
    assert restarted.report_secret_hash == digest
    restarted.clear_state()
    assert restarted.report_secret_hash is None and "securehpc_report_hash" not in restarted.get_state()
