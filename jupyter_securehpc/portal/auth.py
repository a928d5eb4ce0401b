"""Who is calling: the hub's answer about the request's token or OAuth cookie, as the portal uses it.

A person signs in with the hub's OAuth (``HubOAuth``: the service's cookie holds an OAuth token of the hub);
a script sends a JupyterHub API token (``Authorization: token ...``). Either way the hub says who it is and
which scopes the token carries. The portal needs :data:`ACCESS_SCOPE` to let anyone in, and treats as hub
admins the holders of :data:`ADMIN_SCOPE`.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyterhub.services.auth import HubOAuth

from . import ACCESS_SCOPE, ADMIN_SCOPE


@dataclass(frozen=True)
class Caller:
    """The person behind a request, as the hub vouches for them."""

    name: str
    is_admin: bool
    # Token in the Authorization header (a script) rather than the portal's OAuth cookie (a browser).
    token_authenticated: bool


def has_scope(model: dict, scope: str) -> bool:
    """Whether the hub's model of a token grants ``scope`` (exactly, or the unfiltered scope above it)."""
    scopes = set(model.get("scopes") or [])
    base = scope.partition("!")[0]
    return scope in scopes or base in scopes


def caller(model: dict, *, token_authenticated: bool) -> Caller:
    return Caller(name=model["name"], is_admin=has_scope(model, ADMIN_SCOPE), token_authenticated=token_authenticated)


def make_hub_auth(*, api_token: str, api_url: str, base_url: str, cache_max_age: int = 60) -> HubOAuth:
    """The portal's HubOAuth, from what the hub passes a managed service (``JUPYTERHUB_*`` variables).

    ``cache_max_age``: seconds the hub's answer about a token is reused; a removed scope or a revoked token
    stops working within that time.
    """
    return HubOAuth(
        api_token=api_token,
        api_url=api_url,
        base_url=base_url,
        access_scopes={ACCESS_SCOPE},
        cache_max_age=cache_max_age,
    )
