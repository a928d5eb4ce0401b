"""Key management in OpenBao/Vault: project and dataset keys, per-project policies, wrapped session tokens.

The hub creates keys and policies and issues response-wrapped session tokens (:meth:`KeyStore.wrap_session`);
the launcher on a node unwraps such a token once and gets the keys, in memory only
(:meth:`KeyStore.unwrap_session`). See :mod:`jupyter_securehpc.keys.vault` for the whole flow.
"""

from .config import KeyStoreConfig
from .errors import (
    InvalidName,
    KeyExists,
    KeyMissing,
    KeyStoreConfigError,
    KeyStoreDenied,
    KeyStoreError,
    KeyStoreSealed,
    KeyStoreUnavailable,
    TokenExpired,
    TokenForeignPath,
    TokenUsedOrRevoked,
    WrappedTokenError,
)
from .paths import KeyPaths, check_name, policy_name, render_hub_policy, render_project_policy
from .vault import CREATE_ORPHAN_PATH, KEY_BYTES, KeyStore, SessionKeys, WrappedSession

__all__ = [
    "CREATE_ORPHAN_PATH",
    "KEY_BYTES",
    "InvalidName",
    "KeyExists",
    "KeyMissing",
    "KeyPaths",
    "KeyStore",
    "KeyStoreConfig",
    "KeyStoreConfigError",
    "KeyStoreDenied",
    "KeyStoreError",
    "KeyStoreSealed",
    "KeyStoreUnavailable",
    "SessionKeys",
    "TokenExpired",
    "TokenForeignPath",
    "TokenUsedOrRevoked",
    "WrappedSession",
    "WrappedTokenError",
    "check_name",
    "policy_name",
    "render_hub_policy",
    "render_project_policy",
]
