"""The hub role of the people who run a secure hub: they administer, they never act as a user.

JupyterHub's built-in ``admin`` role cannot be redefined, and it can act as anyone: ``tokens`` (create API
tokens owned by any user), ``access:servers`` (open any user's server), ``shares`` (grant itself access to any
server), ``admin:users`` (which includes ``admin:auth_state``, the users' provider tokens, and renaming users),
``proxy`` (point a user's URL anywhere). So a secure hub has no JupyterHub admins (``admin_users`` and
``admin_groups`` empty) and gives its operators this role instead. The hub also refuses token creation for
another user and every share, whoever asks (``api.py``), so a role configured more widely by mistake still
cannot be used to impersonate.
"""

from __future__ import annotations

OPERATOR_ROLE = "securehpc-operator"

# Each scope with the reason it is there. Left out on purpose: tokens, access:servers, shares,
# admin:users, admin:auth_state, users (rename), admin:servers (server state), admin:groups, proxy, shutdown,
# access:services.
OPERATOR_SCOPES: dict[str, str] = {
    "admin-ui": "the admin page (each action on it needs its own scope below)",
    "list:users": "user names",
    "read:users": "user models: names, groups, last activity (no auth state)",
    "read:servers": "server models: name, URL, ready or pending (not the server's state)",
    "start:servers": "start a user's server (it runs as that user, under the project's policy)",
    "delete:servers": "stop a user's server",
    "list:groups": "group names",
    "read:groups": "group models (membership comes from the identity provider)",
    "read:roles": "who has which role",
    "list:services": "service names",
    "read:services": "service models",
    "read:hub": "the hub's version and configuration summary",
    "read:metrics": "/hub/metrics for monitoring",
}


def operator_role(*, groups: list[str] = (), users: list[str] = ()) -> dict:
    """The ``c.JupyterHub.load_roles`` entry that makes ``groups`` and ``users`` hub operators."""
    return {
        "name": OPERATOR_ROLE,
        "description": "Runs the hub: sees users and servers, starts and stops servers; cannot act as anyone",
        "scopes": list(OPERATOR_SCOPES),
        "groups": list(groups),
        "users": list(users),
    }
