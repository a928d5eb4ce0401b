"""Key management in OpenBao/Vault: project and dataset keys, per-project policies, wrapped session tokens.

The admin command line (provisioning token) creates keys, project policies and token roles; the hub (runtime
token) issues response-wrapped session tokens through a project's role (:meth:`KeyStore.wrap_session`); the
launcher on a node checks that such a token belongs to its project, unwraps it once and gets the keys, in
memory only (:meth:`KeyStore.unwrap_session`). See :mod:`jupyter_securehpc.keys.vault` for the whole flow.
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
from .paths import (
    SESSION_MAX_TTL,
    KeyPaths,
    check_name,
    policy_name,
    project_role,
    render_hub_policy,
    render_portal_policy,
    render_project_policy,
    render_provisioner_policy,
    role_name,
    session_creation_path,
)
from .vault import CREATE_ORPHAN_PATH, KEY_BYTES, KeyStore, SessionKeys, WrappedSession

__all__ = [
    "CREATE_ORPHAN_PATH",
    "KEY_BYTES",
    "SESSION_MAX_TTL",
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
    "project_role",
    "render_hub_policy",
    "render_portal_policy",
    "render_project_policy",
    "render_provisioner_policy",
    "role_name",
    "session_creation_path",
]
