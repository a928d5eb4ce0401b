"""What ``jupyterhub_config.py`` sets for the portal: the service entry, its roles and its custom scope.

::

    from jupyter_securehpc.portal import hubconfig
    c.JupyterHub.services = [hubconfig.service(url="http://127.0.0.1:10101",
                                               key_token_file="/etc/securehpc/portal-openbao-token")]
    c.JupyterHub.custom_scopes = hubconfig.custom_scopes()
    c.JupyterHub.template_paths = hubconfig.template_paths()
    c.JupyterHub.load_roles = [*hubconfig.roles(admin_groups=["securehpc-operators"]), ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import ACCESS_SCOPE, ADMIN_SCOPE, SERVICE_NAME

ADMIN_ROLE = "securehpc-portal-admin"
SERVICE_ROLE = "securehpc-portal-service"

# The service's own token (sessions of a project), each scope with its reason. Not: tokens, access:servers,
# admin:users, admin:auth_state, start:servers, shares, proxy.
SERVICE_SCOPES: dict[str, str] = {
    "list:users": "find the users who have servers running (GET /hub/api/users?state=active)",
    "read:users:name": "their names",
    "read:servers": "their servers: name, ready, started, last activity, the spawn options (GPUs, CPUs, memory)",
    "admin:server_state": "the spawner's state, for the Slurm job id and node (the portal keeps nothing else of it)",
    "delete:servers": "stop a session when a data owner or hub admin asks (ProjectService decides who may)",
}


def service(
    *,
    url: str,
    key_token_file: str = "",
    settings: dict[str, object] | None = None,
    python: str = sys.executable,
    environment: dict[str, str] | None = None,
) -> dict:
    """The ``c.JupyterHub.services`` entry of the portal, started and stopped by the hub.

    ``url``: where it listens (loopback; the hub's proxy routes ``/services/securehpc/`` to it).
    ``key_token_file``: its OpenBao token (policy ``KeyStore.portal_policy()``), read by the portal itself.
    ``settings``: ``{"SecureHPC.db_url": ..., "KeyStoreConfig.prefix": ...}`` passed on its command line (no
    secrets there: they are visible in the process list); by default it reads
    /etc/securehpc/securehpc_config.py as the command line does.
    """
    argv = [python, "-m", "jupyter_securehpc.portal"]
    if key_token_file:
        argv.append(f"--PortalApp.key_token_file={key_token_file}")
    for name, value in (settings or {}).items():
        if name.rpartition(".")[2] == "token":
            raise ValueError(f"{name} is a secret: give the portal a key_token_file instead of a command-line option")
        argv.append(f"--{name}={value}")
    return {
        "name": SERVICE_NAME,
        "url": url,
        "command": argv,
        "environment": dict(environment or {}),
        # An admin-operated service: people are not asked to confirm that it may know who they are.
        "oauth_no_confirm": True,
        # The browser's sign-in carries the admin scope when the person holds it (hub admins of the portal).
        "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        "info": {"description": "Projects, members, datasets, shares, policies, sessions and the audit log"},
    }


def template_paths() -> list[str]:
    """``c.JupyterHub.template_paths``: the hub's home page with a link to the portal (``templates/hub/``: it
    extends JupyterHub's own home.html, for people who may open the portal)."""
    return [str(Path(__file__).parent / "templates" / "hub")]


def custom_scopes() -> dict[str, dict[str, str]]:
    return {
        ADMIN_SCOPE: {
            "description": "Administer the projects portal: create projects, set policies, read the audit log",
        }
    }


def roles(
    *, admin_groups: list[str] = (), admin_users: list[str] = (), user_scopes: list[str] = ("self",)
) -> list[dict]:
    """The roles the portal needs: everyone may open it (the ``user`` role gets its access scope), the site's
    operators are its admins, and the service's token may read and stop servers (``SERVICE_SCOPES``).

    ``user_scopes``: what the ``user`` role holds besides the portal's access (JupyterHub's default: ``self``).
    """
    return [
        {"name": "user", "scopes": [*user_scopes, ACCESS_SCOPE]},
        {
            "name": ADMIN_ROLE,
            "description": "Administers the projects portal (projects, policies, audit log); no data rights",
            "scopes": [ADMIN_SCOPE, ACCESS_SCOPE],
            "groups": list(admin_groups),
            "users": list(admin_users),
        },
        {
            "name": SERVICE_ROLE,
            "description": "The portal service's own token: reads and stops the servers of projects",
            "scopes": list(SERVICE_SCOPES),
            "services": [SERVICE_NAME],
        },
    ]
