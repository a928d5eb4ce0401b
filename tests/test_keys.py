"""Key management against the real OpenBao of the test cluster: keys, policies, wrapped session tokens.

Each test module run gets its own KV mount, key prefix and policy prefix, so it never meets another test's
keys. Access rules are checked the way an attacker would try them: with a real token, expecting Forbidden.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidRequest
from traitlets import TraitError

from jupyter_securehpc.devcluster import openbao
from jupyter_securehpc.devcluster.daemon import Daemon, wait_until
from jupyter_securehpc.devcluster.layout import free_port
from jupyter_securehpc.keys import (
    CREATE_ORPHAN_PATH,
    InvalidName,
    KeyExists,
    KeyMissing,
    KeyPaths,
    KeyStore,
    KeyStoreConfig,
    KeyStoreConfigError,
    KeyStoreDenied,
    KeyStoreSealed,
    KeyStoreUnavailable,
    SessionKeys,
    TokenExpired,
    TokenForeignPath,
    TokenUsedOrRevoked,
    WrappedSession,
    WrappedTokenError,
    check_name,
    render_project_policy,
)
from jupyter_securehpc.keys.vault import parse_time

RUN = secrets.token_hex(3)
MOUNT = f"keys-test-{RUN}"
PREFIX = f"hub-{RUN}/site"
POLICY_PREFIX = f"test-{RUN}-project-"
VAULT_ENV = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_SKIP_VERIFY")


def new_project() -> str:
    return f"p-{secrets.token_hex(4)}"


def make_store(url: str, token: str, **overrides) -> KeyStore:
    settings = {"kv_mount": MOUNT, "prefix": PREFIX, "policy_prefix": POLICY_PREFIX, "timeout": 5.0, **overrides}
    return KeyStore(KeyStoreConfig(url=url, token=token, **settings))


@pytest.fixture
def no_vault_env(monkeypatch):
    for name in VAULT_ENV:
        monkeypatch.delenv(name, raising=False)


# --- configuration and names (no server) -----------------------------------------------------------------


def test_config_defaults_come_from_the_cli_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VAULT_ADDR", "https://bao.example.org:8200")
    monkeypatch.setenv("VAULT_TOKEN", "s.from-the-environment")
    monkeypatch.setenv("VAULT_CACERT", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("VAULT_CLIENT_CERT", str(tmp_path / "c.pem"))
    monkeypatch.setenv("VAULT_CLIENT_KEY", str(tmp_path / "k.pem"))
    monkeypatch.setenv("VAULT_SKIP_VERIFY", "true")
    config = KeyStoreConfig()
    assert config.url == "https://bao.example.org:8200"
    assert config.token == "s.from-the-environment"
    assert config.ca_cert.endswith("ca.pem")
    assert (config.client_cert, config.client_key) == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert config.tls_verify is False
    assert (config.kv_mount, config.prefix, config.policy_prefix, config.timeout) == (
        "securehpc",
        "",
        "securehpc-project-",
        10.0,
    )
    assert "s.from-the-environment" not in repr(config)
    monkeypatch.delenv("VAULT_SKIP_VERIFY")
    assert KeyStoreConfig().tls_verify is True


def test_every_option_is_configurable_with_help():
    for name, trait in KeyStoreConfig.class_traits(config=True).items():
        assert trait.help.strip(), name
    assert set(KeyStoreConfig.class_traits(config=True)) >= {
        "url",
        "token",
        "kv_mount",
        "prefix",
        "policy_prefix",
        "ca_cert",
        "client_cert",
        "client_key",
        "tls_verify",
        "timeout",
    }


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("kv_mount", "secret/securehpc", "single path segment"),
        ("kv_mount", "..", "not a usable mount name"),
        ("kv_mount", "", "not a usable mount name"),
        ("prefix", "site/../other", "'..'"),
        ("prefix", "/site", "must not start or end with '/'"),
        ("prefix", "site/", "must not start or end with '/'"),
        ("prefix", "a//b", "unusable segment"),
        ("prefix", "site/*", "unusable segment"),
        ("policy_prefix", "Project-", "lowercases policy names"),
        ("policy_prefix", 'x"y', "lowercases policy names"),
        ("url", "ftp://bao.example.org", "base URL"),
        ("url", "https://bao.example.org/v1", "no path"),
        ("timeout", 0, "positive"),
    ],
)
def test_bad_options_are_refused_naming_the_option(option, value, message):
    with pytest.raises(TraitError) as refused:
        KeyStoreConfig(**{option: value})
    assert f"KeyStoreConfig.{option}" in str(refused.value)
    assert message in str(refused.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(TraitError) as refused:
        KeyStoreConfig(url="https://admin:hunter2@bao.example.org")
    assert "hunter2" not in str(refused.value)
    assert "KeyStoreConfig.token" in str(refused.value)


def test_incomplete_configuration_is_refused_when_the_store_is_made(no_vault_env, monkeypatch, tmp_path):
    with pytest.raises(KeyStoreConfigError, match="url is empty: set it, or VAULT_ADDR"):
        KeyStore(KeyStoreConfig())
    cert = tmp_path / "client.pem"
    cert.write_text("not really a certificate")
    with pytest.raises(KeyStoreConfigError, match="set both or neither"):
        KeyStore(KeyStoreConfig(url="https://bao.example.org", client_cert=str(cert)))
    with pytest.raises(KeyStoreConfigError, match=r"KeyStoreConfig.ca_cert .* is not a file"):
        KeyStore(KeyStoreConfig(url="https://bao.example.org", ca_cert=str(tmp_path / "missing.pem")))
    # Environment defaults are not validated by traitlets; the store checks them.
    monkeypatch.setenv("VAULT_ADDR", "bao.example.org:8200")
    with pytest.raises(KeyStoreConfigError, match=r"KeyStoreConfig\.url"):
        KeyStore()


@pytest.mark.parametrize("name", ["genomics", "Genomics", "Génome", "数据", "p-1", "a", "x.y_z", "0" * 64])
def test_usable_names(name):
    assert check_name("project", name) == name


BAD_NAMES = ["a/b", "a\\b", "..", "a..b", ".hidden", "-x", "a*", "a+", 'a"b', "a{b}", "a b", "", "0" * 65, None]


# "e" + a combining accent is not NFC: it would look like, but not be, the name "é".
@pytest.mark.parametrize("name", [*BAD_NAMES, "e\u0301"])
def test_names_that_would_change_a_path_or_policy_are_refused(name):
    with pytest.raises(InvalidName, match="cannot be used for keys"):
        check_name("project", name)


def test_project_policy_grants_read_on_exactly_its_keys_and_the_shared_ones():
    paths = KeyPaths("kv", "site")
    text = render_project_policy(paths, "a", [("b", "scans"), ("b", "scans"), ("a", "own"), ("c", "genomes")])
    rules = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', text))
    assert rules == {
        "kv/data/site/projects/a/workspace": '"read"',
        "kv/data/site/projects/a/datasets/+": '"read"',
        "kv/data/site/projects/b/datasets/scans": '"read"',
        "kv/data/site/projects/c/datasets/genomes": '"read"',
        "auth/token/revoke-self": '"update"',
    }
    with pytest.raises(InvalidName):
        render_project_policy(paths, "a", [("b", "*")])


def test_openbao_times_with_nanoseconds_parse():
    assert parse_time("2026-11-23T19:13:02.23941795Z") == datetime(2026, 11, 23, 19, 13, 2, 239417, tzinfo=timezone.utc)
    assert parse_time("2026-11-23T20:13:02+01:00") == datetime(2026, 11, 23, 19, 13, 2, tzinfo=timezone.utc)


def test_reprs_hide_tokens_and_keys():
    session = WrappedSession("s.wrapping-secret", "acc", "wacc", CREATE_ORPHAN_PATH, datetime.now(timezone.utc), 60)
    assert "s.wrapping-secret" not in repr(session)
    key = secrets.token_bytes(32)
    keys = SessionKeys("a", "alice", key, {"b/scans": key})
    assert repr(key) not in repr(keys)
    assert key.hex() not in repr(keys)
    assert "b/scans" in repr(keys)


# --- against the test cluster's OpenBao -------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(local_cluster, bao: hvac.Client):
    keys = make_store(local_cluster.layout.openbao_addr, openbao.root_token(local_cluster.layout))
    assert keys.ensure_mount() is True
    yield keys
    bao.sys.disable_secrets_engine(MOUNT)
    for name in bao.sys.list_policies()["data"]["policies"]:
        if name.startswith(f"test-{RUN}-"):
            bao.sys.delete_policy(name)


@pytest.fixture
def node_store(local_cluster) -> KeyStore:
    """The launcher's view: same configuration, no token of its own (it only has the wrapping token)."""
    return make_store(local_cluster.layout.openbao_addr, "")


def session_client(local_cluster, bao: hvac.Client, store: KeyStore, project: str) -> hvac.Client:
    """A real token holding only the project's policy, as a session token would."""
    auth = bao.auth.token.create_orphan(
        policies=[store.policy_name(project)], no_default_policy=True, ttl="60s", renewable=False
    )["auth"]
    return hvac.Client(url=local_cluster.layout.openbao_addr, token=auth["client_token"])


def can_read(client: hvac.Client, path: str) -> bool:
    try:
        client.adapter.get(f"/v1/{MOUNT}/data/{path}")
        return True
    except Forbidden:
        return False


def accessor_exists(bao: hvac.Client, accessor: str) -> bool:
    try:
        bao.auth.token.lookup_accessor(accessor)
        return True
    except InvalidRequest:
        return False


def token_gone(bao: hvac.Client, accessor: str) -> bool:
    """OpenBao refuses a token at once when its last use is spent, but deletes it a moment later."""
    return wait_until(lambda: not accessor_exists(bao, accessor), timeout=5, interval=0.05)


needs_openbao = pytest.mark.openbao


@needs_openbao
def test_ensure_mount_is_idempotent_and_refuses_a_foreign_engine(local_cluster, bao, store):
    assert store.ensure_mount() is False
    other = f"kv1-{RUN}"
    bao.sys.enable_secrets_engine("kv", path=other, options={"version": "1"})
    try:
        with pytest.raises(
            KeyStoreConfigError, match=rf"kv \(version 1\) secrets engine at {other}/, not KV version 2"
        ):
            make_store(
                local_cluster.layout.openbao_addr, openbao.root_token(local_cluster.layout), kv_mount=other
            ).ensure_mount()
    finally:
        bao.sys.disable_secrets_engine(other)


@needs_openbao
def test_project_and_dataset_keys_are_created_once(store, bao):
    project = new_project()
    store.create_project_key(project)
    store.create_dataset_key(project, "scans")
    workspace = store.read_workspace_key(project)
    dataset = store.read_dataset_key(project, "scans")
    assert len(workspace) == 32 and len(dataset) == 32 and workspace != dataset
    stored = bao.secrets.kv.v2.read_secret_version(
        f"{PREFIX}/projects/{project}/workspace", mount_point=MOUNT, raise_on_deleted_version=True
    )
    assert base64.b64decode(stored["data"]["data"]["key"]) == workspace

    with pytest.raises(KeyExists, match=f"workspace key of project {project} already exists"):
        store.create_project_key(project)
    with pytest.raises(KeyExists, match=f"key of dataset {project}/scans already exists"):
        store.create_dataset_key(project, "scans")
    assert store.read_workspace_key(project) == workspace  # the refused attempt replaced nothing

    store.delete_dataset_key(project, "scans")
    store.delete_project_key(project)
    store.delete_project_key(project)  # idempotent
    with pytest.raises(KeyMissing, match="there is no workspace key"):
        store.read_workspace_key(project)
    # A rolled-back creation can be redone: the metadata delete removed every version.
    store.create_project_key(project)
    assert store.read_workspace_key(project) != workspace


@needs_openbao
def test_policy_grants_exactly_the_right_keys(local_cluster, bao, store):
    a, b = new_project(), new_project()
    for project in (a, b):
        store.create_project_key(project)
        store.create_dataset_key(project, "own")
    store.create_dataset_key(b, "shared")
    store.create_dataset_key(b, "private")
    store.write_project_policy(a, [(b, "shared")])
    store.write_project_policy(b, [])
    paths = store.paths

    written = bao.sys.read_policy(store.policy_name(a))["data"]["rules"]
    assert set(re.findall(r'path "([^"]+)"', written)) == {
        f"{MOUNT}/data/{paths.workspace(a)}",
        f"{MOUNT}/data/{paths.datasets_dir(a)}/+",
        f"{MOUNT}/data/{paths.dataset(b, 'shared')}",
        "auth/token/revoke-self",
    }
    assert written.count('["read"]') == 3

    token_a = session_client(local_cluster, bao, store, a)
    assert can_read(token_a, paths.workspace(a))
    assert can_read(token_a, paths.dataset(a, "own"))
    assert can_read(token_a, paths.dataset(b, "shared"))
    assert not can_read(token_a, paths.workspace(b))
    assert not can_read(token_a, paths.dataset(b, "private"))
    assert not can_read(token_a, paths.dataset(b, "own"))
    with pytest.raises(Forbidden):  # read only: no overwriting its own key either
        token_a.adapter.post(f"/v1/{MOUNT}/data/{paths.workspace(a)}", json={"data": {"key": "x"}})
    with pytest.raises(Forbidden):
        token_a.adapter.get(f"/v1/{MOUNT}/metadata/{paths.workspace(a)}")

    # Unsharing rewrites the policy without the dataset; the same token loses it at once.
    store.write_project_policy(a, [])
    assert not can_read(token_a, paths.dataset(b, "shared"))
    assert can_read(token_a, paths.workspace(a))

    store.delete_project_policy(a)
    store.delete_project_policy(a)  # idempotent
    assert not can_read(token_a, paths.workspace(a))


@pytest.fixture
def shared_pair(store):
    """Project ``a`` with a workspace key, and dataset ``b/scans`` shared into it."""
    a, b = new_project(), new_project()
    store.create_project_key(a)
    store.create_project_key(b)
    store.create_dataset_key(b, "scans")
    store.create_dataset_key(b, "private")
    store.write_project_policy(a, [(b, "scans")])
    return a, b


@needs_openbao
def test_wrapped_session_unwraps_to_the_project_keys(bao, store, node_store, shared_pair):
    a, b = shared_pair
    session = store.wrap_session("alice", a, 60, datasets=[(b, "scans")])
    assert session.creation_path == CREATE_ORPHAN_PATH
    assert session.ttl == 60
    assert session.token not in repr(session)

    # The token inside: only the project policy, as many uses as keys, not renewable, an orphan, labelled.
    inner = bao.auth.token.lookup_accessor(session.wrapped_accessor)["data"]
    assert inner["policies"] == [store.policy_name(a)]
    assert int(inner["num_uses"]) == 2
    assert inner["renewable"] is False and inner["orphan"] is True
    assert inner["meta"] == {"user": "alice", "project": a}
    assert 0 < inner["ttl"] <= 60 and inner["explicit_max_ttl"] == 60
    assert accessor_exists(bao, session.accessor)

    keys = node_store.unwrap_session(
        session.token, datasets=[(b, "scans")], project=a, issued_at=session.creation_time, ttl=session.ttl
    )
    assert (keys.project, keys.user) == (a, "alice")
    assert keys.workspace == store.read_workspace_key(a)
    assert keys.datasets == {f"{b}/scans": store.read_dataset_key(b, "scans")}
    # Nothing reusable remains: the wrapping token is spent, the session token used up.
    assert token_gone(bao, session.accessor)
    assert token_gone(bao, session.wrapped_accessor)
    assert store.revoke_session(session) is False


@needs_openbao
def test_unicode_and_upper_case_names_work_end_to_end(bao, store, node_store):
    """Names the project registry allows; OpenBao stores the policy name lowercased."""
    project, owner = f"Génome-{secrets.token_hex(2)}", f"数据-{secrets.token_hex(2)}"
    store.create_project_key(project)
    store.create_dataset_key(owner, "Scans")
    store.write_project_policy(project, [(owner, "Scans")])
    assert store.policy_name(project) == store.policy_name(project).lower()
    assert store.policy_name(project) in bao.sys.list_policies()["data"]["policies"]
    session = store.wrap_session("Alice@example.org", project, 60, datasets=[(owner, "Scans")])
    keys = node_store.unwrap_session(session.token, datasets=[(owner, "Scans")], project=project)
    assert keys.workspace == store.read_workspace_key(project)
    assert keys.datasets == {f"{owner}/Scans": store.read_dataset_key(owner, "Scans")}
    assert keys.user == "Alice@example.org"


@needs_openbao
def test_second_unwrap_is_refused_before_anything_is_read(store, node_store, shared_pair, monkeypatch):
    a, _ = shared_pair
    session = store.wrap_session("alice", a, 60)
    node_store.unwrap_session(session.token, issued_at=session.creation_time, ttl=session.ttl)

    def must_not_unwrap(*args, **kwargs):
        raise AssertionError("unwrapped a token that the lookup should have refused")

    monkeypatch.setattr(node_store, "_unwrap", must_not_unwrap)
    with pytest.raises(TokenUsedOrRevoked) as refused:
        node_store.unwrap_session(session.token, issued_at=session.creation_time, ttl=session.ttl)
    assert "already used or revoked: if you did not use it, someone else did — report this" in str(refused.value)
    assert session.token not in str(refused.value)


@needs_openbao
def test_expired_token_is_told_apart_by_the_job_spec_times(store, node_store, shared_pair):
    a, _ = shared_pair
    session = store.wrap_session("alice", a, 1)
    time.sleep(2)
    with pytest.raises(TokenExpired, match=r"expired at .* start the session again"):
        node_store.unwrap_session(session.token, issued_at=session.creation_time, ttl=session.ttl)
    # Unix times work as well as datetimes.
    with pytest.raises(TokenExpired):
        node_store.lookup(session.token, issued_at=session.creation_time.timestamp(), ttl=1)
    # Without them OpenBao's answer cannot tell expired from used, and the message says so.
    with pytest.raises(TokenUsedOrRevoked, match="may also have expired"):
        node_store.lookup(session.token)


class _CannedLookup:
    """Stands in for OpenBao's lookup answer, for a state the real server shows only for an instant."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.adapter = self

    def post(self, url: str, **kwargs) -> dict:
        assert url == "/v1/sys/wrapping/lookup"
        return {"data": self.data}

    def close(self) -> None:
        pass


def test_token_that_looks_valid_but_is_past_its_ttl_is_refused(monkeypatch):
    store = make_store("http://127.0.0.1:1", "")
    issued = "2020-01-01T00:00:00.123456789Z"
    canned = {"creation_path": CREATE_ORPHAN_PATH, "creation_time": issued, "creation_ttl": 60}
    monkeypatch.setattr(store, "_make_client", lambda token: _CannedLookup(canned))
    with pytest.raises(TokenExpired, match="expired at 2020-01-01 00:01:00 UTC"):
        store.lookup("s.wrapping")
    canned["creation_time"] = datetime.now(timezone.utc).isoformat()
    assert store.lookup("s.wrapping")["creation_ttl"] == 60


@needs_openbao
def test_token_from_another_endpoint_is_refused_without_using_it(local_cluster, bao, node_store):
    wrapped = bao.sys.wrap(payload={"note": "not a session"}, ttl=60)["wrap_info"]
    with pytest.raises(TokenForeignPath, match=f"created at sys/wrapping/wrap, expected {CREATE_ORPHAN_PATH}"):
        node_store.unwrap_session(wrapped["token"])
    unwrapped = hvac.Client(url=local_cluster.layout.openbao_addr, token=wrapped["token"]).sys.unwrap()
    assert unwrapped["data"] == {"note": "not a session"}


@needs_openbao
def test_unshared_dataset_is_denied_and_the_session_token_revoked(bao, store, node_store, shared_pair):
    a, b = shared_pair
    session = store.wrap_session("alice", a, 60, datasets=[(b, "private")])
    with pytest.raises(KeyStoreDenied, match=f"key of dataset {b}/private.*not shared into project {a}") as denied:
        node_store.unwrap_session(session.token, datasets=[(b, "private")], project=a)
    assert session.token not in str(denied.value)
    assert token_gone(bao, session.wrapped_accessor)


@needs_openbao
def test_job_spec_that_does_not_match_the_token_is_refused(bao, store, node_store, shared_pair):
    a, b = shared_pair
    session = store.wrap_session("alice", a, 60, datasets=[(b, "scans")])
    with pytest.raises(WrappedTokenError, match=f"issued for project '{a}', but this job is for project 'other'"):
        node_store.unwrap_session(session.token, datasets=[(b, "scans")], project="other")
    assert token_gone(bao, session.wrapped_accessor)

    session = store.wrap_session("alice", a, 60)
    with pytest.raises(WrappedTokenError, match="allows 1 key reads, but the job spec lists 2 keys"):
        node_store.unwrap_session(session.token, datasets=[(b, "scans")])
    assert token_gone(bao, session.wrapped_accessor)


@needs_openbao
def test_revoking_a_session_before_the_job_starts(bao, store, node_store, shared_pair):
    a, _ = shared_pair
    session = store.wrap_session("alice", a, 60)
    assert store.revoke_session(session) is True
    assert token_gone(bao, session.accessor)
    assert token_gone(bao, session.wrapped_accessor)
    with pytest.raises(TokenUsedOrRevoked):
        node_store.unwrap_session(session.token, issued_at=session.creation_time, ttl=session.ttl)
    assert store.revoke_session(session) is False


@needs_openbao
def test_session_needs_the_project_policy(store):
    project = new_project()
    store.create_project_key(project)
    with pytest.raises(KeyMissing, match=f"project {project} has no policy {POLICY_PREFIX}{project}"):
        store.wrap_session("alice", project, 60)


@needs_openbao
def test_hub_policy_is_enough_for_the_hub_and_reads_no_key(local_cluster, bao, store, node_store):
    """The documented hub policy, on a real non-root token, runs the whole hub side."""
    name = f"test-{RUN}-hub"
    bao.sys.create_or_update_policy(name, store.hub_policy())
    hub_token = bao.auth.token.create(policies=[name], ttl="5m")["auth"]["client_token"]
    hub = make_store(local_cluster.layout.openbao_addr, hub_token)
    assert hub.ensure_mount() is False
    project = new_project()
    hub.create_project_key(project)
    with pytest.raises(KeyExists):
        hub.create_project_key(project)
    hub.write_project_policy(project, [])
    session = hub.wrap_session("alice", project, 60)
    assert node_store.unwrap_session(session.token).workspace == store.read_workspace_key(project)
    with pytest.raises(KeyStoreDenied, match="denied reading the workspace key") as denied:
        hub.read_workspace_key(project)
    assert hub_token not in str(denied.value)
    assert hub.revoke_session(hub.wrap_session("bob", project, 60)) is True
    hub.delete_project_key(project)
    hub.delete_project_policy(project)


@needs_openbao
def test_bad_token_is_denied_without_showing_it(local_cluster, store):
    token = "s.not-a-real-token-" + secrets.token_hex(8)
    bad = make_store(local_cluster.layout.openbao_addr, token)
    with pytest.raises(KeyStoreDenied) as denied:
        bad.create_project_key(new_project())
    assert token not in str(denied.value)
    assert local_cluster.layout.openbao_addr in str(denied.value)


def test_unreachable_server_names_the_url_not_the_token():
    url = f"http://127.0.0.1:{free_port()}"
    token = "s.unreachable-" + secrets.token_hex(8)
    store = make_store(url, token, timeout=2.0)
    for call in (store.ensure_mount, lambda: store.read_workspace_key("a"), lambda: store.lookup("s.wrapping-xyz")):
        with pytest.raises(KeyStoreUnavailable) as failed:
            call()
        assert url in str(failed.value)
        assert "KeyStoreConfig.url (VAULT_ADDR)" in str(failed.value)
        assert token not in str(failed.value) and "s.wrapping-xyz" not in str(failed.value)
        assert failed.value.__cause__ is None and failed.value.__suppress_context__


@pytest.fixture
def uninitialised_openbao(tmp_path):
    """A throw-away OpenBao that was never initialised: it answers every request as sealed."""
    port, cluster_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    config = tmp_path / "config.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{tmp_path / "data"}"\n  node_id = "sealed-test"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  cluster_address = "127.0.0.1:{cluster_port}"\n'
        "  tls_disable = true\n}\n"
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
    )
    daemon = Daemon(
        name="openbao-sealed",
        argv=[openbao.bao_binary(), "server", f"-config={config}"],
        run_dir=tmp_path / "run",
        log_file=tmp_path / "openbao.log",
    )
    daemon.start()
    url = f"http://127.0.0.1:{port}"
    try:
        probe = hvac.Client(url=url, token="", timeout=2)
        daemon.wait_ready(lambda: _answers(probe), timeout=30, what=f"answer on {url}")
        yield url
    finally:
        daemon.stop()


def _answers(client: hvac.Client) -> bool:
    try:
        client.sys.read_health_status(method="GET")
        return True
    except Exception:
        return False


@needs_openbao
def test_sealed_server_says_to_unseal_it(uninitialised_openbao):
    store = make_store(uninitialised_openbao, "s.whatever")
    for call in (store.ensure_mount, lambda: store.wrap_session("alice", "a", 60), lambda: store.lookup("s.x")):
        with pytest.raises(KeyStoreSealed) as sealed:
            call()
        assert str(sealed.value) == (
            f"OpenBao at {uninitialised_openbao} is sealed: unseal it (bao operator unseal) and retry"
        )
    assert issubclass(KeyStoreSealed, KeyStoreUnavailable)


@needs_openbao
def test_no_token_or_key_in_debug_logs(local_cluster, store, node_store, shared_pair, caplog, monkeypatch):
    a, b = shared_pair
    tokens = [openbao.root_token(local_cluster.layout)]
    make_client = KeyStore._make_client

    def recording(self, token):
        tokens.append(token)  # the session token is never exposed otherwise
        return make_client(self, token)

    monkeypatch.setattr(KeyStore, "_make_client", recording)
    for name in ("jupyter_securehpc", "hvac", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)

    session = store.wrap_session("alice", a, 60, datasets=[(b, "scans")])
    tokens.append(session.token)
    keys = node_store.unwrap_session(session.token, datasets=[(b, "scans")], project=a)
    with pytest.raises(TokenUsedOrRevoked):
        node_store.unwrap_session(session.token, datasets=[(b, "scans")], project=a)

    text = caplog.text
    assert "POST /v1/sys/wrapping/unwrap" in text  # urllib3 did log at DEBUG
    assert f"released the keys of project {a} to user alice" in text
    secrets_seen = [t for t in tokens if t] + [
        form
        for key in (keys.workspace, *keys.datasets.values())
        for form in (base64.b64encode(key).decode(), key.hex())
    ]
    assert len([t for t in tokens if t]) >= 3  # root, wrapping and session token were all in play
    for secret in secrets_seen:
        assert secret not in text


def test_keys_module_never_writes_files():
    """No key or token ever reaches disk: the package has no file output at all."""
    source = "\n".join(p.read_text() for p in Path(__file__).parents[1].joinpath("jupyter_securehpc/keys").glob("*.py"))
    for forbidden in ("open(", "write_text", "write_bytes", "atomic_write", "subprocess"):
        assert forbidden not in source
