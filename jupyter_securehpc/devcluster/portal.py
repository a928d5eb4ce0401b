"""The project portal (``jupyter_securehpc.portal``) on the local cluster's hub: its port, its OpenBao token,
and its entries in the hub's configuration (``hub.render_config`` writes them).

The portal gets its own OpenBao token with ``KeyStore.portal_policy()`` for the hub's key layout (never the
root token): what a real site gives it. Made with the local cluster's root token, kept 0600 in the hub's
private folder, made again at every ``up`` (the previous one revoked).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import hvac

from ..keys import KeyStore, KeyStoreConfig
from ..portal import SERVICE_NAME, hubconfig
from ..util.files import atomic_write
from . import openbao
from .layout import DEFAULT_PORTS, ClusterLayout, free_port

DEMO_PORT = 18002  # beside the demo hub's 18000 (and its proxy API's 18001)


def port(layout: ClusterLayout) -> int:
    """The portal's loopback port: chosen once per state folder (the demo's: 18002) and kept in ``hub/``."""
    path = layout.hub_dir / "portal.port"
    if path.exists():
        return int(path.read_text())
    chosen = DEMO_PORT if layout.hub_port == DEFAULT_PORTS["hub_port"] else free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{chosen}\n", mode=0o644)
    return chosen


def url(layout: ClusterLayout) -> str:
    """Where people open the portal (through the hub's proxy)."""
    return f"{layout.hub_url}/services/{SERVICE_NAME}/"


def token_file(layout: ClusterLayout) -> Path:
    return layout.hub_dir / "private" / "portal-openbao-token"


def _accessor_file(layout: ClusterLayout) -> Path:
    return layout.hub_dir / "private" / "portal-openbao-accessor"


def _keys(layout: ClusterLayout, settings: dict[str, Any], token: str) -> KeyStore:
    names = ("kv_mount", "prefix", "policy_prefix")
    values = {name: settings[f"KeyStoreConfig.{name}"] for name in names if f"KeyStoreConfig.{name}" in settings}
    return KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=token, **values))


def make_token(layout: ClusterLayout, settings: dict[str, Any]) -> bool:
    """Write the portal's OpenBao policy for the hub's key layout (``settings``: the hub's ``KeyStoreConfig.*``)
    and keep a token holding only it in :func:`token_file`; made again (the previous one revoked) when it is
    missing, for another policy, or within a day of its end. Returns whether a new token was made (a running
    portal still has the old one: restart the hub)."""
    root = openbao.client(layout)
    keys = _keys(layout, settings, openbao.root_token(layout))
    keys.ensure_mount()  # the portal may not enable the engine; the admin side does
    digest = hashlib.sha256(f"{keys.paths.mount}/{keys.paths.prefix}|{keys.config.policy_prefix}".encode()).hexdigest()
    name = f"securehpc-portal-{digest[:12]}"
    root.sys.create_or_update_policy(name=name, policy=keys.portal_policy())
    path, accessor = token_file(layout), _accessor_file(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if path.exists():
        try:
            info = hvac.Client(url=layout.openbao_addr, token=path.read_text().strip(), timeout=10)
            data = info.auth.token.lookup_self()["data"]
            if data.get("policies") == [name] and (data.get("ttl") or 0) > 24 * 3600:
                return False
        except hvac.exceptions.VaultError:
            pass  # revoked or expired: make a new one
    if accessor.exists():
        try:
            root.auth.token.revoke_accessor(accessor.read_text().strip())
        except hvac.exceptions.VaultError:
            pass  # expired or revoked already
    created = root.auth.token.create_orphan(
        policies=[name], no_default_policy=True, ttl="768h", renewable=False, display_name="securehpc-portal"
    )["auth"]
    atomic_write(path, created["client_token"] + "\n", mode=0o600)
    atomic_write(accessor, created["accessor"] + "\n", mode=0o600)
    return True


def service_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Of the hub's settings, those the portal needs on its command line: the site, the key layout and the
    project accounts (the portal makes the principals of members added there, as the hub's group sync does)."""
    wanted = ("SecureHPC.", "KeyStoreConfig.", "ProjectAccounts.")
    return {name: value for name, value in values.items() if name.startswith(wanted) and not name.endswith(".token")}


def config_lines(layout: ClusterLayout, values: dict[str, Any], admin_groups: list[str]) -> list[str]:
    """The lines ``hub.render_config`` appends: the service, its custom scope and its roles."""
    entry = hubconfig.service(
        url=f"http://127.0.0.1:{port(layout)}",
        key_token_file=str(token_file(layout)),
        settings=service_settings(values),
    )
    return [
        "# The project portal (jupyter_securehpc/portal, devcluster/portal.py).",
        f"c.JupyterHub.services.append({entry!r})",
        f"c.JupyterHub.custom_scopes = {hubconfig.custom_scopes()!r}",
        f"c.JupyterHub.template_paths = {hubconfig.template_paths()!r}",
        f"c.JupyterHub.load_roles += {hubconfig.roles(admin_groups=admin_groups)!r}",
    ]
