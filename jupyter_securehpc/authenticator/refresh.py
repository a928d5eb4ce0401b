"""Renewing a login with the provider: what the hub keeps in auth state, how the token endpoint's answer to a
refresh is read, what happens while the provider cannot be reached, and one refresh at a time per person.

Pure logic and a small coordinator; :meth:`SecureHPCAuthenticator.refresh_user
<jupyter_securehpc.authenticator.oidc.SecureHPCAuthenticator.refresh_user>` puts them together.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .handlers import _printable

# Keys of the hub's (encrypted) auth state besides oauthenticator's ``user_auth_state_key`` (the ID token's
# claims). Access and ID tokens are not kept: the hub calls no API with them.
REFRESH_TOKEN_FIELD = "refresh_token"  # noqa: S105 - a key of auth state, not a secret
# Epoch seconds of the provider's last confirmation of the login (the login itself or a renewal).
VERIFIED_AT = "securehpc_verified_at"
# Set, alone, when the provider said no: ``{"at": epoch seconds, "check": name}``. The refresh token is gone
# with it, and later refreshes end at once without asking the provider or writing the audit event again.
LOGGED_OUT = "securehpc_logged_out"

# Answers that say "not now" rather than "no": the login is kept within the outage grace.
TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class TokenAnswer:
    """The token endpoint's answer to a ``refresh_token`` grant, read.

    ``detail`` is safe for logs and audit events: a status and the OAuth ``error`` code, never the body.
    """

    kind: Literal["renewed", "refused", "unreachable"]
    detail: str
    token_info: dict[str, Any] | None = None


def read_token_answer(status: int, body: bytes | None) -> TokenAnswer:
    """Classify an HTTP answer of the token endpoint.

    - 2xx with an ``access_token``: renewed. 2xx without one is an answer the hub cannot use: refused (closed).
    - 5xx, 599 (no answer), 408 and 429: the provider is unavailable, not refusing.
    - Any other status (400 ``invalid_grant``, 401 ``invalid_client``, ...): refused.
    """
    if status == 599 or status >= 500 or status in TRANSIENT_STATUSES:
        return TokenAnswer("unreachable", f"HTTP {status}")
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if 200 <= status < 300:
        if isinstance(data, dict) and isinstance(data.get("access_token"), str) and data["access_token"]:
            return TokenAnswer("renewed", f"HTTP {status}", data)
        return TokenAnswer("refused", f"HTTP {status} without an access token")
    error = data.get("error") if isinstance(data, dict) else None
    code = _printable(str(error), 60) if error else "no error code"
    return TokenAnswer("refused", f"HTTP {status} {code}")


def outage_verdict(verified_at: Any, now: float, grace: float) -> tuple[bool, str]:
    """Whether a login that the provider could not confirm just now is kept, and why.

    Kept while less than ``grace`` seconds have passed since the provider last confirmed it; a login without a
    valid record of that (older auth state, a clock that went backwards by more than the grace) is not kept.
    """
    if not isinstance(verified_at, (int, float)) or isinstance(verified_at, bool):
        return False, "no record of when the provider last confirmed this login"
    age = now - verified_at
    if age < -grace:
        return False, "the record of the provider's last confirmation is in the future"
    if age < grace:
        return True, f"last confirmed {max(age, 0):.0f}s ago, within refresh_outage_grace ({grace:.0f}s)"
    return False, f"last confirmed {age:.0f}s ago, longer than refresh_outage_grace ({grace:.0f}s)"


class RefreshGate:
    """One refresh at a time per person; a request that waited for another takes that one's answer.

    Two refreshes of one person at once would present the same refresh token twice. A provider that rotates
    refresh tokens sees the second as a replay of a used token and revokes the whole grant (oidc-provider,
    Keycloak, Auth0 do): the person would be logged out for nothing. A single hub process serves all requests,
    so an in-memory lock per name is enough.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._generation: dict[str, int] = {}
        self._answers: dict[str, bool] = {}

    async def run(self, name: str, refresh: Callable[[], Awaitable[Any]]) -> Any:
        seen = self._generation.get(name, 0)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if self._generation.get(name, 0) != seen:
                # Refreshed while this request waited: that answer is at most as old as this request.
                return self._answers[name]
            result = await refresh()
            self._answers[name] = bool(result)
            self._generation[name] = seen + 1
            return result
