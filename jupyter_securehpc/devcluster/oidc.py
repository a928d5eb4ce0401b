"""The local cluster's OpenID Connect provider (npm ``oidc-provider`` on loopback) with demo accounts.

``up`` writes, mode 0600 in ``oidc/private``: the provider configuration (the hub's client and its secret,
cookie keys, an RSA signing key) and the demo accounts with their passwords. Node reads both files through
environment variables, so no secret is ever on a command line. The secret, keys and passwords are made once
and kept, so the hub's configuration stays valid across ``down``/``up``.

Demo accounts (``securehpc dev oidc-accounts`` prints them with their passwords):

- ``alice``: hub user, data owner of ``sleep``; signs in with password *and* one-time code (MFA) or only
  with the password (then the hub refuses her);
- ``bob``: hub user, data scientist in ``sleep``; has a one-time code too;
- ``mallory``: hub user without a second factor: her logins never carry MFA;
- ``nemo``: a provider that says nothing about how he signed in (no ``amr`` claim);
- ``root-admin``: hub admin (group ``hub-admins``), with a one-time code.

The hub's client may use refresh tokens. An account entry may also carry ``disabled``, ``sessions_revoked_at``
(epoch seconds) or lose its ``otp``; the provider applies them at the next login and the next refresh (see
``oidc_provider.mjs``). :func:`set_account` changes one entry.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ..session.env import OIDC_ACCOUNTS_ENV, OIDC_CONFIG_ENV
from ..util.files import atomic_write
from .daemon import Daemon
from .layout import ClusterLayout

HUB_CLIENT_ID = "securehpc-hub"
HUB_USERS_GROUP = "hub-users"
HUB_ADMINS_GROUP = "hub-admins"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


def _demo_accounts() -> list[dict[str, Any]]:
    def account(username: str, groups: list[str], *, otp: bool = True, omit_amr: bool = False) -> dict[str, Any]:
        return {
            "username": username,
            "password": secrets.token_urlsafe(12),
            # A fixed code per account stands in for a TOTP app: what matters here is the amr it produces.
            "otp": f"{secrets.randbelow(10**6):06d}" if otp else None,
            "groups": groups,
            "name": username.replace("-", " ").title(),
            "email": f"{username}@securehpc.invalid",
            "omit_amr": omit_amr,
        }

    return [
        account("alice", [HUB_USERS_GROUP, "securehpc:sleep:data_owner"]),
        account("bob", [HUB_USERS_GROUP, "securehpc:sleep:data_scientist", "securehpc:cardio:data_scientist"]),
        account("carol", [HUB_USERS_GROUP, "securehpc:cardio:data_owner"]),
        account("mallory", [HUB_USERS_GROUP], otp=False),
        account("nemo", [HUB_USERS_GROUP], omit_amr=True),
        account("root-admin", [HUB_ADMINS_GROUP]),
    ]


def daemon(layout: ClusterLayout) -> Daemon:
    from .packages import node_root

    return Daemon(
        name="oidc-provider",
        argv=["node", str(SCRIPT)],
        run_dir=layout.run_dir,
        log_file=layout.log_dir / "oidc-provider.log",
        env={
            OIDC_CONFIG_ENV: str(layout.oidc_config_file),
            OIDC_ACCOUNTS_ENV: str(layout.oidc_accounts_file),
            "NODE_ENV": "production",
        },
        # Node resolves `oidc-provider` from the script's folder upwards: the checkout's or the package's
        # node_modules (packages.node_root).
        cwd=node_root(),
    )


def hub_redirect_uris(layout: ClusterLayout) -> list[str]:
    return [f"http://127.0.0.1:{layout.hub_port}/hub/oauth_callback"]


def _signing_jwk() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.update({"kid": secrets.token_hex(8), "alg": "RS256", "use": "sig"})
    return jwk


def client_secret(layout: ClusterLayout) -> str:
    """The hub's client secret (read by the hub's configuration; never printed)."""
    return json.loads(layout.oidc_config_file.read_text())["clients"][0]["client_secret"]


def accounts(layout: ClusterLayout) -> list[dict[str, Any]]:
    """The demo accounts with their passwords and one-time codes (for the demo and the tests)."""
    return json.loads(layout.oidc_accounts_file.read_text())["accounts"]


def write_accounts(layout: ClusterLayout, new_accounts: list[dict[str, Any]]) -> None:
    """Replace the directory of demo accounts; the provider reads it at the next login."""
    atomic_write(layout.oidc_accounts_file, json.dumps({"accounts": new_accounts}, indent=2) + "\n", mode=0o600)


def set_account(layout: ClusterLayout, username: str, **changes: Any) -> None:
    """Change one account in the directory, e.g. ``disabled=True``, ``otp=None``, ``sessions_revoked_at=time()``."""
    current = accounts(layout)
    if not any(account["username"] == username for account in current):
        raise KeyError(f"no account {username!r} at the local provider (see `securehpc dev oidc-accounts`)")
    write_accounts(layout, [{**a, **changes} if a["username"] == username else a for a in current])


def render_config(layout: ClusterLayout, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The provider's configuration; secrets and keys are kept from ``previous`` when there is one."""
    previous = previous or {}
    old_client = (previous.get("clients") or [{}])[0]
    return {
        "issuer": layout.oidc_issuer,
        "port": layout.oidc_port,
        "clients": [
            {
                "client_id": HUB_CLIENT_ID,
                "client_secret": old_client.get("client_secret") or secrets.token_urlsafe(32),
                "redirect_uris": hub_redirect_uris(layout),
                # Refresh tokens let the hub confirm logins again (SecureHPCAuthenticator.refresh_with_provider).
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                # oauthenticator sends the secret in the form body unless basic_auth is set.
                "token_endpoint_auth_method": "client_secret_post",
                "id_token_signed_response_alg": "RS256",
            }
        ],
        "cookie_keys": previous.get("cookie_keys") or [secrets.token_urlsafe(32)],
        "jwks": previous.get("jwks") or {"keys": [_signing_jwk()]},
    }


def discovery(layout: ClusterLayout) -> dict | None:
    """The provider's discovery document, or None when it does not answer."""
    try:
        response = requests.get(f"{layout.oidc_issuer}/.well-known/openid-configuration", timeout=3)
        return response.json() if response.ok else None
    except (requests.RequestException, ValueError):
        return None


def up(layout: ClusterLayout) -> None:
    private = layout.oidc_config_file.parent
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    previous = json.loads(layout.oidc_config_file.read_text()) if layout.oidc_config_file.exists() else None
    config = render_config(layout, previous)
    server = daemon(layout)
    if config != previous:
        atomic_write(layout.oidc_config_file, json.dumps(config, indent=2) + "\n", mode=0o600)
        server.stop()
    if not layout.oidc_accounts_file.exists():
        write_accounts(layout, _demo_accounts())
    if server.pid() is None:
        server.start()
    server.wait_ready(lambda: discovery(layout) is not None, timeout=30, what=f"answer on {layout.oidc_issuer}")


def down(layout: ClusterLayout) -> None:
    daemon(layout).stop()
