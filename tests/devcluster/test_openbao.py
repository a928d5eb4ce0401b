"""A real OpenBao round trip: store a key, hand it out response-wrapped, unwrap it exactly once."""

from __future__ import annotations

import secrets
import time

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidRequest, VaultError

from jupyter_securehpc.devcluster import openbao

pytestmark = pytest.mark.openbao


@pytest.fixture
def kv_mount(bao: hvac.Client):
    mount = f"kv-{secrets.token_hex(4)}"
    bao.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    yield mount
    bao.sys.disable_secrets_engine(mount)


def wrapped_read(bao: hvac.Client, mount: str, path: str, ttl: str) -> dict:
    """Read a KV v2 secret as a response-wrapped token instead of its value."""
    response = bao.adapter.get(f"/v1/{mount}/data/{path}", wrap_ttl=ttl)
    return response["wrap_info"]


def lookup_wrapping(bao: hvac.Client, token: str) -> dict:
    return bao.adapter.post("/v1/sys/wrapping/lookup", json={"token": token})["data"]


def unwrap(addr: str, wrapping_token: str) -> dict:
    # The wrapping token authenticates the unwrap itself; no other token is involved.
    return hvac.Client(url=addr, token=wrapping_token).adapter.post("/v1/sys/wrapping/unwrap")


def test_wrapped_key_unwraps_once(local_cluster, bao, kv_mount):
    key = secrets.token_hex(32)
    bao.secrets.kv.v2.create_or_update_secret("projects/demo", secret={"key": key}, mount_point=kv_mount)
    wrap = wrapped_read(bao, kv_mount, "projects/demo", "60s")
    assert wrap["creation_path"] == f"{kv_mount}/data/projects/demo"
    assert key not in str(wrap)

    # A lookup tells where the token came from without using it up.
    lookup = lookup_wrapping(bao, wrap["token"])
    assert lookup["creation_path"] == f"{kv_mount}/data/projects/demo"

    first = unwrap(local_cluster.layout.openbao_addr, wrap["token"])
    assert first["data"]["data"] == {"key": key}

    with pytest.raises((InvalidRequest, Forbidden)) as second:
        unwrap(local_cluster.layout.openbao_addr, wrap["token"])
    assert "wrapping token is not valid or does not exist" in str(second.value)
    with pytest.raises(VaultError):
        lookup_wrapping(bao, wrap["token"])


def test_expired_wrapping_token_is_refused(local_cluster, bao, kv_mount):
    bao.secrets.kv.v2.create_or_update_secret("k", secret={"key": "x"}, mount_point=kv_mount)
    wrap = wrapped_read(bao, kv_mount, "k", "1s")
    time.sleep(2.5)
    with pytest.raises(VaultError):
        unwrap(local_cluster.layout.openbao_addr, wrap["token"])


def test_keys_survive_a_server_restart(local_cluster, bao, kv_mount):
    """The demo's OpenBao keeps its data: stop it, start it (init file unseals it), read the key back."""
    key = secrets.token_hex(32)
    bao.secrets.kv.v2.create_or_update_secret("persist", secret={"key": key}, mount_point=kv_mount)
    old_pid = openbao.daemon(local_cluster.layout).pid()
    openbao.down(local_cluster.layout)
    assert openbao.health(local_cluster.layout) is None
    openbao.up(local_cluster.layout)
    assert openbao.daemon(local_cluster.layout).pid() not in (None, old_pid)
    read = bao.secrets.kv.v2.read_secret_version("persist", mount_point=kv_mount, raise_on_deleted_version=True)
    assert read["data"]["data"] == {"key": key}


def test_token_roles_fix_the_creation_path_and_refuse_parent_references(local_cluster, bao):
    """What the key store relies on: a role's tokens are wrapped with ``auth/token/create/<role>`` as their
    creation path (so the node can tell projects apart before unwrapping), and a role name with '..' is
    accepted but cannot create tokens (so role names never contain it)."""
    policy = f"roletest-{secrets.token_hex(4)}"
    bao.sys.create_or_update_policy(policy, 'path "nothing/here" { capabilities = ["read"] }')
    good, dotted = policy, f"{policy}-x..y"
    try:
        for role in (good, dotted):
            bao.adapter.post(f"/v1/auth/token/roles/{role}", json={"allowed_policies": policy, "orphan": True})
        wrap = bao.adapter.post(f"/v1/auth/token/create/{good}", json={}, wrap_ttl="60s")["wrap_info"]
        assert wrap["creation_path"] == f"auth/token/create/{good}"
        assert lookup_wrapping(bao, wrap["token"])["creation_path"] == f"auth/token/create/{good}"
        with pytest.raises(VaultError):
            bao.adapter.post(f"/v1/auth/token/create/{dotted}", json={}, wrap_ttl="60s")
    finally:
        for role in (good, dotted):
            bao.adapter.delete(f"/v1/auth/token/roles/{role}")
        bao.sys.delete_policy(policy)
