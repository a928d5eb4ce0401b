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
    SESSION_MAX_TTL,
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
    role_name,
    session_creation_path,
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
        ("policy_prefix", "-project-", "start of an OpenBao token role name"),
        ("policy_prefix", "site..project-", "leave out '..'"),
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
    for name in bao.adapter.list("/v1/auth/token/roles")["data"]["keys"]:
        if name.startswith(f"test-{RUN}-"):
            bao.adapter.delete(f"/v1/auth/token/roles/{name}")


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
    # Made through the project's own token role: the wrapping token's creation path names the project.
    assert session.creation_path == f"auth/token/create/{POLICY_PREFIX}{a}" == store.session_path(a)
    assert session.ttl == 60
    assert session.token not in repr(session)

    # The token inside: only the project policy, as many uses as keys, not renewable, an orphan, labelled.
    inner = bao.auth.token.lookup_accessor(session.wrapped_accessor)["data"]
    assert inner["policies"] == [store.policy_name(a)]
    assert int(inner["num_uses"]) == 2
    assert inner["renewable"] is False and inner["orphan"] is True
    assert inner["role"] == store.role_name(a) and inner["path"] == store.session_path(a)
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
    node_store.unwrap_session(session.token, project=a, issued_at=session.creation_time, ttl=session.ttl)

    def must_not_unwrap(*args, **kwargs):
        raise AssertionError("unwrapped a token that the lookup should have refused")

    monkeypatch.setattr(node_store, "_unwrap", must_not_unwrap)
    with pytest.raises(TokenUsedOrRevoked) as refused:
        node_store.unwrap_session(session.token, project=a, issued_at=session.creation_time, ttl=session.ttl)
    assert "already used or revoked: if you did not use it, someone else did — report this" in str(refused.value)
    assert session.token not in str(refused.value)


@needs_openbao
def test_expired_token_is_told_apart_by_the_job_spec_times(store, node_store, shared_pair):
    a, _ = shared_pair
    session = store.wrap_session("alice", a, 1)
    time.sleep(2)
    with pytest.raises(TokenExpired, match=r"expired at .* start the session again"):
        node_store.unwrap_session(session.token, project=a, issued_at=session.creation_time, ttl=session.ttl)
    # Unix times work as well as datetimes.
    with pytest.raises(TokenExpired):
        node_store.lookup(session.token, project=a, issued_at=session.creation_time.timestamp(), ttl=1)
    # Without them OpenBao's answer cannot tell expired from used, and the message says so.
    with pytest.raises(TokenUsedOrRevoked, match="may also have expired"):
        node_store.lookup(session.token, project=a)


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
    canned = {"creation_path": store.session_path("a"), "creation_time": issued, "creation_ttl": 60}
    monkeypatch.setattr(store, "_make_client", lambda token: _CannedLookup(canned))
    with pytest.raises(TokenExpired, match="expired at 2020-01-01 00:01:00 UTC"):
        store.lookup("s.wrapping", project="a")
    canned["creation_time"] = datetime.now(timezone.utc).isoformat()
    assert store.lookup("s.wrapping", project="a")["creation_ttl"] == 60


@needs_openbao
def test_token_from_another_endpoint_is_refused_without_using_it(local_cluster, bao, node_store):
    wrapped = bao.sys.wrap(payload={"note": "not a session"}, ttl=60)["wrap_info"]
    expected = node_store.session_path("a")
    with pytest.raises(TokenForeignPath, match=f"created at sys/wrapping/wrap, expected {expected} .* It was not used"):
        node_store.unwrap_session(wrapped["token"], project="a")
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
    # Another project: refused at the lookup, from the token's creation path, so the token stays unused.
    with pytest.raises(TokenForeignPath, match=f"created at {store.session_path(a)}, expected .*other.* not used"):
        node_store.unwrap_session(session.token, datasets=[(b, "scans")], project="other")
    assert accessor_exists(bao, session.wrapped_accessor)
    keys = node_store.unwrap_session(session.token, datasets=[(b, "scans")], project=a)
    assert keys.workspace == store.read_workspace_key(a)
    assert token_gone(bao, session.wrapped_accessor)

    session = store.wrap_session("alice", a, 60)
    with pytest.raises(WrappedTokenError, match="allows 1 key reads, but the job spec lists 2 keys"):
        node_store.unwrap_session(session.token, datasets=[(b, "scans")], project=a)
    assert token_gone(bao, session.wrapped_accessor)


@needs_openbao
def test_revoking_a_session_before_the_job_starts(bao, store, node_store, shared_pair):
    a, _ = shared_pair
    session = store.wrap_session("alice", a, 60)
    assert store.revoke_session(session) is True
    assert token_gone(bao, session.accessor)
    assert token_gone(bao, session.wrapped_accessor)
    with pytest.raises(TokenUsedOrRevoked):
        node_store.unwrap_session(session.token, project=a, issued_at=session.creation_time, ttl=session.ttl)
    assert store.revoke_session(session) is False


@needs_openbao
def test_session_needs_the_project_policy(store):
    project = new_project()
    store.create_project_key(project)
    with pytest.raises(KeyMissing, match=f"project {project} has no policy {POLICY_PREFIX}{project}") as missing:
        store.wrap_session("alice", project, 60)
    assert "run `securehpc key sync`" in str(missing.value)


def token_with_policy(bao: hvac.Client, name: str, text: str) -> str:
    """A real non-root token that holds exactly ``text`` (and OpenBao's default policy, as a site's would)."""
    bao.sys.create_or_update_policy(name, text)
    return bao.auth.token.create(policies=[name], ttl="5m")["auth"]["client_token"]


def raw(local_cluster, token: str) -> hvac.Client:
    return hvac.Client(url=local_cluster.layout.openbao_addr, token=token)


@pytest.fixture(scope="module")
def provisioner(local_cluster, bao, store) -> KeyStore:
    """The admin command line's view: a token with the documented provisioning policy only."""
    token = token_with_policy(bao, f"test-{RUN}-provisioner", store.provisioner_policy())
    return make_store(local_cluster.layout.openbao_addr, token)


@pytest.fixture(scope="module")
def hub(local_cluster, bao, store) -> KeyStore:
    """The hub's view: a token with the documented runtime policy only."""
    token = token_with_policy(bao, f"test-{RUN}-hub", store.hub_policy())
    return make_store(local_cluster.layout.openbao_addr, token)


@needs_openbao
def test_provisioning_token_sets_projects_up_and_reads_no_key_nor_makes_tokens(
    local_cluster, bao, store, provisioner, hub, node_store
):
    """The documented provisioning policy, on a real non-root token, runs every provisioning step."""
    assert provisioner.ensure_mount() is False
    project, owner = new_project(), new_project()
    provisioner.create_project_key(project)
    with pytest.raises(KeyExists):
        provisioner.create_project_key(project)
    provisioner.create_dataset_key(owner, "scans")
    provisioner.write_project_policy(project, [(owner, "scans")])
    role = bao.adapter.get(f"/v1/auth/token/roles/{store.role_name(project)}")["data"]
    assert role["allowed_policies"] == [store.policy_name(project)]
    assert role["orphan"] is True and role["renewable"] is False and role["token_no_default_policy"] is True
    assert role["token_explicit_max_ttl"] == SESSION_MAX_TTL
    # The hub's runtime token starts the session the provisioning token prepared.
    session = hub.wrap_session("alice", project, 60, datasets=[(owner, "scans")])
    keys = node_store.unwrap_session(session.token, project=project, datasets=[(owner, "scans")])
    assert keys.workspace == store.read_workspace_key(project)

    provisioner_token = provisioner.config.token
    with pytest.raises(KeyStoreDenied, match="denied reading the workspace key") as denied:
        provisioner.read_workspace_key(project)
    assert provisioner_token not in str(denied.value)
    with pytest.raises(KeyStoreDenied, match=r"KeyStore.hub_policy\(\)"):
        provisioner.wrap_session("alice", project, 60)
    client = raw(local_cluster, provisioner_token)
    for path in ("auth/token/create-orphan", "auth/token/create", f"auth/token/create/{store.role_name(project)}"):
        with pytest.raises(Forbidden):
            client.adapter.post(f"/v1/{path}", json={"policies": [store.policy_name(project)]}, wrap_ttl="60s")

    provisioner.delete_project_policy(project)
    provisioner.delete_project_policy(project)  # idempotent
    with pytest.raises(InvalidRequest, match="unknown role"):
        bao.adapter.post(f"/v1/auth/token/create/{store.role_name(project)}", json={})
    assert store.policy_name(project) not in bao.sys.list_policies()["data"]["policies"]
    provisioner.delete_dataset_key(owner, "scans")
    provisioner.delete_project_key(project)
    with pytest.raises(KeyMissing):
        store.read_workspace_key(project)


@needs_openbao
def test_hub_runtime_token_only_wraps_and_revokes_sessions(local_cluster, bao, store, hub, node_store, shared_pair):
    """What a stolen hub token can and cannot do, tried against the real server."""
    a, b = shared_pair
    hub_token = hub.config.token
    session = hub.wrap_session("alice", a, 60, datasets=[(b, "scans")])
    assert session.creation_path == store.session_path(a)
    assert hub.revoke_session(hub.wrap_session("bob", a, 60)) is True
    keys = node_store.unwrap_session(session.token, project=a, datasets=[(b, "scans")])
    assert keys.workspace == store.read_workspace_key(a)

    # No key reads, no key, policy or role writes or deletes.
    for call in (
        lambda: hub.read_workspace_key(a),
        lambda: hub.read_dataset_key(b, "scans"),
        lambda: hub.create_project_key(new_project()),
        lambda: hub.create_dataset_key(a, "planted"),
        lambda: hub.delete_project_key(a),
        lambda: hub.write_project_policy(a, [(b, "private")]),
        lambda: hub.delete_project_policy(a),
        lambda: hub._client.sys.enable_secrets_engine("kv", path=f"x-{RUN}"),
    ):
        with pytest.raises((KeyStoreDenied, Forbidden)) as denied:
            call()
        assert hub_token not in str(denied.value)
    client = raw(local_cluster, hub_token)
    assert not can_read(client, store.paths.workspace(a)) and not can_read(client, store.paths.dataset(b, "scans"))
    everything = 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }'
    with pytest.raises(Forbidden):
        client.sys.create_or_update_policy(store.policy_name(a), everything)
    with pytest.raises(Forbidden):
        client.sys.create_or_update_policy(f"{POLICY_PREFIX}new", everything)
    with pytest.raises(Forbidden):  # a role that would hand out another project's policy too
        client.adapter.post(
            f"/v1/auth/token/roles/{store.role_name(a)}",
            json={"allowed_policies": f"{store.policy_name(a)},{store.policy_name(b)}", "orphan": True},
        )
    with pytest.raises(Forbidden):
        client.adapter.delete(f"/v1/auth/token/roles/{store.role_name(a)}")

    # No token from any other endpoint, wrapped or not.
    for path in ("auth/token/create-orphan", "auth/token/create", "auth/token/create/some-other-role"):
        with pytest.raises(Forbidden):
            client.adapter.post(f"/v1/{path}", json={"policies": [store.policy_name(a)]}, wrap_ttl="60s")
    # Through a project's role: never unwrapped (OpenBao refuses a request without a wrapping TTL) ...
    with pytest.raises(Forbidden):
        client.adapter.post(f"/v1/auth/token/create/{store.role_name(a)}", json={"policies": [store.policy_name(a)]})
    # ... never wrapped for longer than the longest session ...
    with pytest.raises(Forbidden):
        client.adapter.post(f"/v1/auth/token/create/{store.role_name(a)}", json={}, wrap_ttl=f"{SESSION_MAX_TTL + 1}s")
    with pytest.raises(ValueError, match=f"from 1 to {SESSION_MAX_TTL}"):
        hub.wrap_session("alice", a, SESSION_MAX_TTL + 1)
    # ... and never with a policy beyond the role's own project: not another project's, not default, not root.
    for policies in ([store.policy_name(a), store.policy_name(b)], [store.policy_name(b)], ["default"], ["root"]):
        with pytest.raises(InvalidRequest, match="must be subset of the role's allowed policies"):
            client.adapter.post(
                f"/v1/auth/token/create/{store.role_name(a)}", json={"policies": policies}, wrap_ttl="60s"
            )
    # A periodic token (renewable for ever) needs sudo, which the hub does not have.
    with pytest.raises(InvalidRequest, match="sudo privileges required to create periodic token"):
        client.adapter.post(f"/v1/auth/token/create/{store.role_name(a)}", json={"period": "1h"}, wrap_ttl="60s")
    # Asking for more through the role changes nothing: OpenBao caps renewal, parent and lifetime itself.
    wrap = client.adapter.post(
        f"/v1/auth/token/create/{store.role_name(a)}",
        json={"renewable": True, "no_parent": False, "ttl": "1000000s", "explicit_max_ttl": "0"},
        wrap_ttl="60s",
    )["wrap_info"]
    inner = bao.auth.token.lookup_accessor(wrap["wrapped_accessor"])["data"]
    assert inner["policies"] == [store.policy_name(a)]
    assert inner["renewable"] is False and inner["orphan"] is True and inner["ttl"] <= SESSION_MAX_TTL
    assert hub.revoke_wrapping(wrap["accessor"], wrapped_accessor=wrap["wrapped_accessor"]) is True


@needs_openbao
def test_project_without_a_token_role_says_to_run_key_sync(bao, store, hub, node_store):
    """A project provisioned before token roles (policy only) gets its role on the next policy write."""
    project = new_project()
    store.create_project_key(project)
    bao.sys.create_or_update_policy(store.policy_name(project), store.render_project_policy(project))
    with pytest.raises(KeyMissing) as missing:
        hub.wrap_session("alice", project, 60)
    message = str(missing.value)
    assert f"session token role {store.role_name(project)}" in message
    assert "run `securehpc key sync` with the provisioning token" in message
    assert hub.config.token not in message
    store.write_project_policy(project, [])
    session = hub.wrap_session("alice", project, 60)
    assert node_store.unwrap_session(session.token, project=project).workspace == store.read_workspace_key(project)


def test_role_names_are_one_to_one_and_usable_in_openbao():
    names = ["sleep", "sleep2", "Sleep-2", "x.y_z", "a-", "b.", "Génome", "数据", "0" * 64, "a_"]
    roles = {name: role_name("securehpc-project-", name) for name in names}
    assert roles["sleep"] == "securehpc-project-sleep" and roles["sleep2"] == "securehpc-project-sleep2"
    assert roles["x.y_z"] == "securehpc-project-x.y_z" and roles["a_"] == "securehpc-project-a_"
    assert roles["Sleep-2"] == "securehpc-project-sleep-2"  # like the policy name: OpenBao lowercases those
    # Names OpenBao's role names cannot hold are hashed behind a '_', which no project name starts with.
    for name in ("a-", "b.", "Génome", "数据"):
        assert re.fullmatch(r"securehpc-project-_[0-9a-f]{32}", roles[name]), name
    assert len(set(roles.values())) == len(names)
    for role in roles.values():
        assert re.fullmatch(r"\w(([\w.-]+)?\w)?", role, flags=re.ASCII) and ".." not in role
    assert session_creation_path("securehpc-project-", "sleep") == "auth/token/create/securehpc-project-sleep"
    assert role_name("", "sleep") == "sleep" and role_name("", "数据").startswith("_")
    with pytest.raises(InvalidName):
        role_name("securehpc-project-", "a/b")


def test_the_openbao_policy_examples_are_current():
    store = KeyStore(KeyStoreConfig(url="http://127.0.0.1:1", token=""))
    hub_config = Path(__file__).parents[2] / "hub_config"
    assert (hub_config / "openbao-hub-policy.hcl").read_text() == store.hub_policy()
    assert (hub_config / "openbao-provisioner-policy.hcl").read_text() == store.provisioner_policy()
    # The hub's policy grants token creation through the roles only, wrapped only, and nothing to write.
    rules = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', store.hub_policy()))
    assert rules == {
        "auth/token/create/securehpc-project-*": '"update"',
        "auth/token/revoke-accessor": '"update"',
    }
    assert 'min_wrapping_ttl = "1s"' in store.hub_policy()
    assert "sys/policy" not in store.hub_policy() and "securehpc/data" not in store.hub_policy()
    provisioner = store.provisioner_policy()
    assert "auth/token/create" not in provisioner and '"read"]' not in provisioner.split("securehpc/data")[1]
    # The portal's: creates keys (never "update": a key that exists cannot be replaced), writes project
    # policies and roles; no reads of keys, no deletes, no tokens.
    assert (hub_config / "openbao-portal-policy.hcl").read_text() == store.portal_policy()
    rules = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', store.portal_policy()))
    assert rules == {
        "sys/mounts/securehpc": '"read"',
        "securehpc/data/projects/*": '"create"',
        "sys/policy/securehpc-project-*": '"create", "update"',
        "auth/token/roles/securehpc-project-*": '"create", "update"',
    }


# --- a token that is not this job's: refused before it is used ----------------------------------------------


def _wrapped_elsewhere(local_cluster, bao: hvac.Client, store: KeyStore, how: str, project: str) -> dict:
    """A real wrapping token for a session of ``project``'s key policy, made some other way than our hub's."""
    policy = store.policy_name(project)
    if how == "create-orphan":  # how sessions were issued before token roles
        body = {"policies": [policy], "no_default_policy": True, "ttl": "60s", "num_uses": 1}
        return bao.adapter.post(f"/v1/{CREATE_ORPHAN_PATH}", json=body, wrap_ttl="60s")["wrap_info"]
    if how == "child token":
        body = {"policies": [policy], "no_default_policy": True, "ttl": "60s", "meta": {"project": project}}
        return bao.adapter.post("/v1/auth/token/create", json=body, wrap_ttl="60s")["wrap_info"]
    raise AssertionError(how)


@pytest.fixture
def look_alike_projects(store):
    """Projects whose names are prefixes of each other's, each with its key, policy and role."""
    base = f"sleep{secrets.token_hex(2)}"
    names = [base, f"{base}2", f"{base}-2", f"{base}.2"]
    for name in names:
        store.create_project_key(name)
        store.write_project_policy(name, [])
    return names


@needs_openbao
@pytest.mark.parametrize(
    ("spec_index", "token_index"),
    [(0, 1), (1, 0), (0, 2), (0, 3), (3, 0), (2, 1)],
    ids=["sleep<-sleep2", "sleep2<-sleep", "sleep<-sleep-2", "sleep<-sleep.2", "sleep.2<-sleep", "sleep-2<-sleep2"],
)
def test_token_of_another_project_is_refused_before_it_is_used(
    local_cluster, bao, store, hub, node_store, look_alike_projects, spec_index, token_index, monkeypatch
):
    """A node whose signed spec says project A, given project B's wrapping token, leaves the token unused."""
    spec_project, token_project = look_alike_projects[spec_index], look_alike_projects[token_index]
    session = hub.wrap_session("bob", token_project, 60)

    def must_not_unwrap(*args, **kwargs):
        raise AssertionError("unwrapped a token that the lookup should have refused")

    monkeypatch.setattr(node_store, "_unwrap", must_not_unwrap)
    with pytest.raises(TokenForeignPath) as refused:
        node_store.unwrap_session(session.token, project=spec_project, issued_at=session.creation_time, ttl=session.ttl)
    message = str(refused.value)
    assert f"created at {store.session_path(token_project)}, expected {store.session_path(spec_project)}" in message
    assert f"(project {spec_project})" in message and "another project" in message
    assert "It was not used" in message and "Report this" in message
    assert session.token not in message
    monkeypatch.undo()
    # Still there, still unused: its own project's node unwraps it, exactly once.
    assert node_store.lookup(session.token, project=token_project)["creation_path"] == store.session_path(token_project)
    keys = node_store.unwrap_session(session.token, project=token_project)
    assert keys.project == token_project and keys.workspace == store.read_workspace_key(token_project)
    with pytest.raises(TokenUsedOrRevoked):
        node_store.unwrap_session(session.token, project=token_project)


@needs_openbao
@pytest.mark.parametrize("how", ["create-orphan", "child token"])
def test_token_not_from_the_projects_role_is_refused_before_it_is_used(
    local_cluster, bao, store, node_store, shared_pair, how
):
    a, _ = shared_pair
    wrap = _wrapped_elsewhere(local_cluster, bao, store, how, a)
    with pytest.raises(TokenForeignPath, match=f"created at {wrap['creation_path']}, expected .* It was not used"):
        node_store.unwrap_session(wrap["token"], project=a)
    # The refused token is intact: one unwrap still works, and gives the token that was wrapped.
    assert accessor_exists(bao, wrap["accessor"])
    unwrapped = raw(local_cluster, wrap["token"]).adapter.post("/v1/sys/wrapping/unwrap")
    assert unwrapped["auth"]["accessor"] == wrap["wrapped_accessor"]


@needs_openbao
def test_expired_token_of_another_project_is_refused_as_expired(store, hub, node_store, look_alike_projects):
    spec_project, token_project = look_alike_projects[0], look_alike_projects[1]
    session = hub.wrap_session("bob", token_project, 1)
    time.sleep(2)
    with pytest.raises(TokenExpired, match="start the session again"):
        node_store.unwrap_session(session.token, project=spec_project, issued_at=session.creation_time, ttl=1)


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
    calls = (
        store.ensure_mount,
        lambda: store.read_workspace_key("a"),
        lambda: store.lookup("s.wrapping-xyz", project="a"),
    )
    for call in calls:
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
    for call in (
        store.ensure_mount,
        lambda: store.wrap_session("alice", "a", 60),
        lambda: store.lookup("s.x", project="a"),
    ):
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
    source = "\n".join(p.read_text() for p in Path(__file__).parents[2].joinpath("jupyter_securehpc/keys").glob("*.py"))
    for forbidden in ("open(", "write_text", "write_bytes", "atomic_write", "subprocess"):
        assert forbidden not in source
