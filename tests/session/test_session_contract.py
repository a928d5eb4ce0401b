"""The session contract without root or a cluster: what the spawner builds is what the node verifies and what
the server extension enforces, and the one parser of untrusted policy data refuses every bad shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jupyter_securehpc import jobspec
from jupyter_securehpc.node import serve
from jupyter_securehpc.node.errors import LaunchError
from jupyter_securehpc.node.spec import load_spec
from jupyter_securehpc.projects.policy import InvalidPolicy, Policy
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.serverext.session import SessionPolicyError, load_session, session_from_dict
from jupyter_securehpc.session import env, reports
from jupyter_securehpc.session.spec import SessionSpec, SpecError
from jupyter_securehpc.spawner import reports as hub_reports
from jupyter_securehpc.vocabulary import DatasetRef, InvalidName


def spawner_spec(**changes: object) -> SessionSpec:
    """A spec as ``SecureSlurmSpawner.start`` builds it."""
    values = dict(
        project="cardio",
        user="alice",
        role=Role.DATA_SCIENTIST,
        store_root=Path("/srv/securehpc/stores"),
        vault_addr="http://127.0.0.1:8200",
        datasets=(DatasetRef("cardio", "ecg"), DatasetRef("sleep", "psg")),
        issued_at=1_700_000_000.5,
        ttl=300,
        key_store={"kv_mount": "securehpc", "prefix": "projects", "policy_prefix": "securehpc-"},
        stage_limit_mib=64,
        prefetch=True,
        policy=Policy(max_gpus=2, terminals=True, upload_roles=frozenset({Role.DATA_OWNER, Role.DATA_SCIENTIST})),
        principal="shpc-cardio_alice_abc234",
    )
    values.update(changes)
    return SessionSpec(**values)


def test_the_spec_the_spawner_signs_is_the_one_the_node_reads_and_the_server_enforces(tmp_path, monkeypatch):
    spec = spawner_spec()
    key = jobspec.generate_key(tmp_path / "hub-signing.pem")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(jobspec.sign(spec, key))
    monkeypatch.setenv(env.HUB_PUBLIC_KEY_ENV, str(tmp_path / "hub-signing.pub"))

    on_node = load_spec(spec_file)
    assert on_node == spec

    # What the launcher mounts read-only into the sandbox, as the server extension reads it there.
    session_file = tmp_path / "session.json"
    session_file.write_bytes(serve.session_file(on_node))
    session = load_session(session_file)
    assert (session.project, session.user, session.role, session.policy) == (
        "cardio",
        "alice",
        Role.DATA_SCIENTIST,
        spec.policy,
    )
    assert session.text_narrowing is None


def test_a_spec_signed_by_another_key_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    jobspec.generate_key(tmp_path / "hub-signing.pem")
    monkeypatch.setenv(env.HUB_PUBLIC_KEY_ENV, str(tmp_path / "hub-signing.pub"))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(jobspec.sign(spawner_spec(), Ed25519PrivateKey.generate()))
    with pytest.raises(LaunchError, match="signature"):
        load_spec(spec_file)


def test_the_spec_survives_its_json_round_trip():
    spec = spawner_spec(issued_at=None, ttl=None, datasets=(), policy=Policy())
    assert SessionSpec.from_json(spec.to_json()) == spec
    assert SessionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_signed_form_datasets_are_owner_slash_dataset_strings_and_it_names_the_principal():
    # The wire format: the previous release's plus the principal, which a node of this release requires (a spec
    # without one would run the session under the person's own account).
    signed = {
        "project": "cardio",
        "user": "alice",
        "role": "data_scientist",
        "store_root": "/srv/securehpc/stores",
        "vault_addr": "http://127.0.0.1:8200",
        "datasets": ["cardio/ecg", "sleep/psg"],
        "issued_at": 1_700_000_000.5,
        "ttl": 300,
        "stage_limit_mib": 64,
        "prefetch": True,
        "policy": spawner_spec().policy.as_dict(),
        "key_store": {"kv_mount": "securehpc", "prefix": "projects", "policy_prefix": "securehpc-"},
        "extra": {},
        "principal": "shpc-cardio_alice_abc234",
    }
    assert spawner_spec().to_dict() == signed
    assert SessionSpec.from_dict(signed) == spawner_spec()
    before = {key: value for key, value in signed.items() if key != "principal"}
    with pytest.raises(SpecError, match="principal"):
        SessionSpec.from_dict(before)


def test_the_spec_holds_checked_dataset_references():
    spec = SessionSpec.from_dict(spawner_spec().to_dict())
    assert all(type(ref) is DatasetRef for ref in spec.datasets)
    assert [ref.owner for ref in spec.datasets] == ["cardio", "sleep"]
    # Pairs given in code become references too, their names checked as on the wire.
    assert spawner_spec(datasets=(("sleep", "psg"),)).datasets == (DatasetRef("sleep", "psg"),)
    assert type(spawner_spec(datasets=(("sleep", "psg"),)).datasets[0]) is DatasetRef
    with pytest.raises(InvalidName, match=r"contains '\.\.'"):
        spawner_spec(datasets=(("..", "psg"),))
    with pytest.raises(InvalidName, match="contains '/'"):
        spawner_spec(datasets=(DatasetRef("sleep", "a/b"),))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"project": "../x"}, "project"),
        ({"role": "admin"}, "role"),
        ({"store_root": "relative/path"}, "absolute"),
        ({"datasets": ["no-slash"]}, "dataset"),
        ({"stage_limit_mib": -1}, "stage_limit_mib"),
        ({"prefetch": "yes"}, "prefetch"),
        ({"key_store": {"token": "x"}}, "key_store"),
        ({"policy": {"terminals": "false"}}, "terminals"),
        ({"policy": ["not", "an", "object"]}, "object"),
        ({"principal": "../root"}, "principal"),
        ({"principal": "Alice"}, "principal"),
        ({"principal": "a" * 33}, "principal"),
        ({"principal": 0}, "principal"),
    ],
)
def test_the_node_refuses_a_bad_spec_naming_the_field(changes, says):
    with pytest.raises(SpecError, match=says):
        SessionSpec.from_dict({**spawner_spec().to_dict(), **changes})


# --- the one parser of untrusted policy data ---------------------------------------------------------------


def test_untrusted_policy_data_gives_the_policy_it_describes():
    policy = Policy(max_gpus=4, exclusive=False, download_roles=frozenset({Role.DATA_OWNER}), partition="secure")
    assert Policy.from_untrusted(policy.as_dict()) == policy
    assert Policy.from_untrusted({}) == Policy()
    # A key of a newer version is not enforced here, as in the database.
    assert Policy.from_untrusted({"some_future_key": 1}) == Policy()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("terminals=true", "object"),
        (None, "object"),
        ({"terminals": "false"}, "terminals"),
        ({"terminals": 1}, "terminals"),
        ({"exclusive": None}, "exclusive"),
        ({"max_gpus": True}, "max_gpus"),
        ({"max_gpus": "2"}, "max_gpus"),
        ({"max_gpus": 1.5}, "max_gpus"),
        ({"partition": 7}, "partition"),
        ({"download_roles": "all"}, "download_roles"),
        ({"download_roles": [1]}, "download_roles"),
        ({"upload_roles": ["everyone"]}, "everyone"),
        ({"text_content_roles": "data_owner"}, "text_content_roles"),
    ],
)
def test_bad_policy_data_is_refused_naming_the_setting(data, says):
    with pytest.raises(InvalidPolicy, match=says):
        Policy.from_untrusted(data)


@pytest.mark.parametrize(
    "data",
    [
        {"project": "p", "user": "u", "role": "observer", "policy": {"terminals": "false"}},
        {"project": "p", "user": "u", "role": "observer", "policy": {"download_roles": ["everyone"]}},
        {"project": "p", "user": "u", "role": "observer"},
        {"project": "p", "user": "u", "role": "admin", "policy": {}},
        {"project": "", "user": "u", "role": "observer", "policy": {}},
        {"project": "p", "user": "u", "role": "observer", "policy": {}, "text_content_roles": "all"},
        ["not", "an", "object"],
    ],
)
def test_the_server_extension_fails_closed_on_a_bad_session_file(data):
    with pytest.raises(SessionPolicyError):
        session_from_dict(data)


# --- the job's reports: what the launcher builds is what the hub parses ---------------------------------------


def test_the_launchers_reports_are_what_the_hub_takes():
    assert hub_reports.parse_port_report(json.dumps(reports.port_report(8888)).encode()) == 8888
    for stage in reports.STAGES:
        assert hub_reports.parse_stage_report(json.dumps(reports.stage_report(stage)).encode()) == stage
    assert hub_reports.parse_activity_report(json.dumps(reports.activity_report()).encode()) is None
    event = {"actor": "alice", "action": "contents.download", "object": "/a.csv", "outcome": "denied"}
    [parsed] = hub_reports.parse_audit_report(json.dumps(reports.audit_report([event])).encode())
    assert (parsed.actor, parsed.action, parsed.obj, parsed.outcome) == (
        "alice",
        "contents.download",
        "/a.csv",
        "denied",
    )
