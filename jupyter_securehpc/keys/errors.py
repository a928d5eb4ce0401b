"""What can go wrong with the key store, as exceptions a person can act on.

Every message names the server, project, dataset or path involved and what to do; none ever contains a
token or a key. The launcher tells the wrapped-token refusals apart (:class:`WrappedTokenError` subclasses)
because "someone else used your token" is an incident, while "your token expired" is a long queue.
"""

from __future__ import annotations


class KeyStoreError(Exception):
    """Base class of every key store error."""


class KeyStoreConfigError(KeyStoreError, ValueError):
    """The key store configuration is incomplete or inconsistent."""


class InvalidName(KeyStoreError, ValueError):
    """A project, dataset or user name cannot be used in a key path or a policy name."""


class KeyStoreUnavailable(KeyStoreError):
    """OpenBao cannot be reached (network, TLS, standby, timeout)."""


class KeyStoreSealed(KeyStoreUnavailable):
    """OpenBao answers but is sealed (or not initialised), so it cannot hand out keys."""


class KeyStoreDenied(KeyStoreError):
    """OpenBao refused the request: the token lacks a capability, or is invalid."""


class KeyExists(KeyStoreError):
    """A key was to be created where one already exists; keys are never overwritten."""


class KeyMissing(KeyStoreError):
    """No key (or no project policy) exists where one was expected."""


class WrappedTokenError(KeyStoreError):
    """A response-wrapping token was refused before (or instead of) unwrapping it."""


class TokenUsedOrRevoked(WrappedTokenError):
    """The wrapping token no longer exists and was not due to expire yet: someone used or revoked it."""


class TokenExpired(WrappedTokenError):
    """The wrapping token's TTL has passed (for example, the job waited in the queue for too long)."""


class TokenForeignPath(WrappedTokenError):
    """The wrapping token wraps the response of another endpoint than the one we issue tokens from."""
