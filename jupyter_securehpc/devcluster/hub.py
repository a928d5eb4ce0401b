"""A real JupyterHub (with configurable-http-proxy) for the demo and the tests, logging in through the local
OpenID Connect provider with :class:`~jupyter_securehpc.authenticator.SecureHPCAuthenticator`.

Not part of ``LocalCluster.up``: the hub needs a site (projects database, audit log) that the demo and each
test choose. ``up`` writes ``hub/jupyterhub_config.py`` (no secret in it: the client secret is read from the
provider's 0600 file when the hub loads its config) and starts ``jupyterhub`` as a :class:`Daemon`.
The hub starts the proxy itself and stops it on SIGTERM; ``down`` also stops a proxy that outlived its hub
(hub killed with SIGKILL), by the pid JupyterHub recorded, after checking that the pid is that proxy.

Logins only: servers are not started here (the spawner for the secure partitions is another component).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import requests

from ..spawner.roles import operator_role
from ..util.files import atomic_write
from . import commands, oidc, portal
from .daemon import Daemon, wait_until
from .layout import ClusterLayout
from .packages import node_bin

log = logging.getLogger(__name__)

INSPECTOR = "securehpc-inspector"


def config_file(layout: ClusterLayout) -> Path:
    return layout.hub_dir / "jupyterhub_config.py"


def api_token_file(layout: ClusterLayout) -> Path:
    return layout.hub_dir / "private" / "inspector-token"


def crypt_key_file(layout: ClusterLayout) -> Path:
    """The hub's JUPYTERHUB_CRYPT_KEY (auth state: the provider's refresh tokens), kept across restarts."""
    return layout.hub_dir / "private" / "crypt-key"


def proxy_pid_file(layout: ClusterLayout) -> Path:
    return layout.hub_dir / "proxy.pid"


def api_token(layout: ClusterLayout) -> str:
    """A read-only hub API token (users and groups) for the tests and the demo; never printed."""
    return api_token_file(layout).read_text().strip()


def default_site(layout: ClusterLayout) -> dict[str, str]:
    """Where the demo hub keeps its projects database, audit log and stores (inside the state folder)."""
    site = layout.state_dir / "site"
    return {
        "SecureHPC.db_url": f"sqlite:///{site / 'securehpc.sqlite'}",
        "SecureHPC.audit_log": str(site / "audit" / "audit.jsonl"),
        "SecureHPC.store_root": str(site / "stores"),
    }


def render_config(layout: ClusterLayout, settings: dict[str, Any], *, stock_batchspawner: bool = False) -> str:
    """The hub's configuration; ``settings`` (``"Class.trait": value``) override and extend the defaults.

    ``stock_batchspawner=True`` gives the hub batchspawner's own callback route instead of the strict job
    reports: only for the spawn benchmark's stock side (``benchmarks/spawn_time.py``)."""
    hub = layout.hub_dir
    values: dict[str, Any] = {
        "JupyterHub.bind_url": f"{layout.hub_url}/",
        "JupyterHub.hub_bind_url": f"http://127.0.0.1:{layout.hub_api_port}",
        "JupyterHub.db_url": f"sqlite:///{hub / 'jupyterhub.sqlite'}",
        "JupyterHub.cookie_secret_file": str(hub / "private" / "cookie_secret"),
        # After login, the home page: never start a server on the way (no spawner is set up here).
        "JupyterHub.redirect_to_server": False,
        # No server may start here until the secure Slurm spawner exists: the base Spawner refuses every
        # start (a local process spawner would run the user's server as the hub's user, root, unsandboxed).
        "JupyterHub.spawner_class": "jupyterhub.spawner.Spawner",
        "JupyterHub.authenticator_class": "securehpc",
        "ConfigurableHTTPProxy.command": [str(node_bin("configurable-http-proxy"))],
        "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{layout.proxy_api_port}",
        "ConfigurableHTTPProxy.pid_file": str(proxy_pid_file(layout)),
        "SecureHPCAuthenticator.oidc_issuer": layout.oidc_issuer,
        "SecureHPCAuthenticator.client_id": oidc.HUB_CLIENT_ID,
        "SecureHPCAuthenticator.oauth_callback_url": oidc.hub_redirect_uris(layout)[0],
        "SecureHPCAuthenticator.scope": ["openid", "profile", "email", "groups"],
        # Hub groups (and so allowed_groups and the operators) come from the provider's `groups` claim.
        # Nobody is a JupyterHub admin (an admin can act as anyone): hub-admins are operators (spawner/roles.py).
        "SecureHPCAuthenticator.manage_groups": True,
        "SecureHPCAuthenticator.allowed_groups": {oidc.HUB_USERS_GROUP, oidc.HUB_ADMINS_GROUP},
        "SecureHPCAuthenticator.admin_groups": set(),
        "SecureHPCAuthenticator.project_roles_claim": "groups",
        # As hub_config/jupyterhub_config.py: logins confirmed with the provider again (refresh tokens in
        # encrypted auth state; the key comes from the environment, see up()).
        "SecureHPCAuthenticator.enable_auth_state": True,
        "SecureHPCAuthenticator.support_contact": "the demo's administrator (see `securehpc dev status`)",
        "KeyStoreConfig.url": layout.openbao_addr,
        **default_site(layout),
        **settings,
    }
    lines = [
        "# Generated by jupyter_securehpc.devcluster.hub: rewritten at every `up`; edit the settings there.",
        "import json",
        "",
    ]
    if not stock_batchspawner:
        lines += [
            "# Replaces batchspawner's attribute-setting callback with the strict job reports, before the hub",
            "# builds its routes.",
            "import jupyter_securehpc.spawner.api",
            "",
            "jupyter_securehpc.spawner.api.install_routes()",
        ]
    else:
        lines += [
            "# Stock batchspawner, for the spawn benchmark only: its callback route as batchspawner installs it",
            "# (JupyterHub imports every spawner entry point for its config, ours too, which removes it).",
            "from batchspawner.api import BatchSpawnerAPIHandler",
            "from jupyterhub.apihandlers import default_handlers",
            "",
            "if not any(route[0] == '/api/batchspawner' for route in default_handlers):",
            "    default_handlers.append(('/api/batchspawner', BatchSpawnerAPIHandler))",
        ]
    lines += ["c = get_config()  # noqa: F821"]
    lines += [f"c.{name} = {value!r}" for name, value in values.items()]
    lines += [
        "",
        "# Secrets are read from 0600 files when the hub starts, so that they are in no config file or argv.",
        f"with open({str(layout.oidc_config_file)!r}) as f:",
        "    c.SecureHPCAuthenticator.client_secret = json.load(f)['clients'][0]['client_secret']",
        f"with open({str(api_token_file(layout))!r}) as f:",
        f"    c.JupyterHub.services = [{{'name': {INSPECTOR!r}, 'api_token': f.read().strip()}}]",
        "c.JupyterHub.load_roles = [",
        f"    {{'name': {INSPECTOR!r}, 'scopes': ['list:users', 'read:users', 'list:groups', 'read:groups'],",
        f"     'services': [{INSPECTOR!r}]}},",
        f"    {operator_role(groups=[oidc.HUB_ADMINS_GROUP])!r},",
        "]",
        *portal.config_lines(layout, values, admin_groups=[oidc.HUB_ADMINS_GROUP]),
        "",
    ]
    return "\n".join(lines)


def daemon(layout: ClusterLayout, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(
        name="jupyterhub",
        argv=[str(Path(sys.executable).with_name("jupyterhub")), "-f", str(config_file(layout))],
        run_dir=layout.run_dir,
        log_file=layout.log_dir / "jupyterhub.log",
        cwd=layout.hub_dir,
        env=env or {},
    )


def health(layout: ClusterLayout) -> bool:
    """Whether the hub answers through its proxy."""
    try:
        return requests.get(f"{layout.hub_url}/hub/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def up(
    layout: ClusterLayout,
    settings: dict[str, Any] | None = None,
    *,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    stock_batchspawner: bool = False,
) -> None:
    """Write the configuration and (re)start the hub; the provider must be up (``LocalCluster.up``).

    ``env`` adds to the hub's environment (VAULT_TOKEN, SLURM_CONF, ...: never in the config file)."""
    private = layout.hub_dir / "private"
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    if not api_token_file(layout).exists():
        atomic_write(api_token_file(layout), secrets.token_hex(32) + "\n", mode=0o600)
    if not crypt_key_file(layout).exists():
        atomic_write(crypt_key_file(layout), secrets.token_hex(32) + "\n", mode=0o600)
    # JupyterHub reads the crypt key from its environment only; the caller's own key wins.
    env = {"JUPYTERHUB_CRYPT_KEY": crypt_key_file(layout).read_text().strip(), **(env or {})}
    text = render_config(layout, settings or {}, stock_batchspawner=stock_batchspawner)
    server = daemon(layout, env)
    path = config_file(layout)
    new_portal_token = portal.make_token(layout, settings or {})
    if not path.exists() or path.read_text() != text or new_portal_token:
        atomic_write(path, text, mode=0o600)
        down(layout)
    if server.pid() is None:
        _stop_stray_proxy(layout)
        server.start()
    server.wait_ready(lambda: health(layout), timeout=timeout, what=f"answer on {layout.hub_url}")


def down(layout: ClusterLayout) -> None:
    """Stop the hub (it stops its proxy), then any proxy it left behind."""
    daemon(layout).stop()
    _stop_stray_proxy(layout)


def proxy_pid(layout: ClusterLayout) -> int | None:
    """The pid of this hub's proxy if it runs: the recorded pid, checked to be our proxy on our API port."""
    try:
        pid = int(proxy_pid_file(layout).read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    words = [arg.decode(errors="replace") for arg in argv]
    is_proxy = any(word.endswith("configurable-http-proxy") for word in words)
    our_port = str(layout.proxy_api_port) in words
    return pid if is_proxy and our_port else None


def _stop_stray_proxy(layout: ClusterLayout, timeout: float = 10) -> None:
    pid = proxy_pid(layout)
    if pid is None:
        proxy_pid_file(layout).unlink(missing_ok=True)
        return
    log.warning("stopping configurable-http-proxy (pid %d) left behind by its hub", pid)
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: proxy_pid(layout) != pid, timeout, interval=0.1):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: proxy_pid(layout) != pid, timeout, interval=0.1)
    proxy_pid_file(layout).unlink(missing_ok=True)


def hub_users(layout: ClusterLayout) -> dict[str, dict]:
    """The hub's users as its REST API shows them (``name -> model``)."""
    response = requests.get(
        f"{layout.hub_url}/hub/api/users",
        headers={"Authorization": f"token {api_token(layout)}"},
        timeout=10,
    )
    response.raise_for_status()
    data = response.json()
    # JupyterHub 5+ may page the answer; pagination is opt-in through the Accept header, so a list comes back.
    items = data["items"] if isinstance(data, dict) else data
    return {user["name"]: user for user in items}


def status_line(layout: ClusterLayout) -> tuple[bool, str]:
    pid = daemon(layout).pid()
    if pid is None:
        return False, f"not running (start it with `{commands.dev('hub up', layout.state_dir)}`)"
    if not health(layout):
        return False, f"pid {pid} does not answer on {layout.hub_url}"
    proxy = proxy_pid(layout)
    return True, f"pid {pid}, {layout.hub_url}, proxy pid {proxy if proxy else '?'}"
