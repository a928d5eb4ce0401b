"""Every ``SECUREHPC_*`` environment variable that crosses a process boundary, named once.

The hub sets some for the job, the node launcher reads them and sets others for the sandbox, the server
extension reads those; each side imports the name from here, so that a rename cannot leave one side behind.
"""

from __future__ import annotations

# --- the site (hub, admin command): where the database, the stores and the audit log are -------------------
DB_ENV = "SECUREHPC_DB"
STORE_ROOT_ENV = "SECUREHPC_STORE_ROOT"
AUDIT_LOG_ENV = "SECUREHPC_AUDIT_LOG"  # also the server extension's audit file outside a session

# --- the hub -> the job (spawner/spawner.py -> node/) ---------------------------------------------------------
WRAPPED_TOKEN_ENV = "SECUREHPC_WRAPPED_TOKEN"  # noqa: S105 - the variable's name, not a token
SESSION_SPEC_ENV = "SECUREHPC_SESSION_SPEC"
HUB_PUBLIC_KEY_ENV = "SECUREHPC_HUB_PUBLIC_KEY"
REPORT_URL_ENV = "SECUREHPC_REPORT_URL"
REPORT_TOKEN_ENV = "SECUREHPC_REPORT_TOKEN"  # noqa: S105 - the variable's name

# --- the node launcher -> its sandbox (node/) -------------------------------------------------------------
# The pipe with the outer sandbox's instructions (node/mount_then_run.py).
SANDBOX_CONFIG_FD_ENV = "SECUREHPC_INSIDE_FD"
# The pipe with a store's key in the store sandbox (stores/copy_or_hash.py).
STORE_KEY_FD_ENV = "SECUREHPC_KEY_FD"

# --- the node launcher -> the Jupyter server and its extension (serverext/) --------------------------------
SERVER_FD_ENV = "SECUREHPC_SERVER_FD"
AUDIT_FD_ENV = "SECUREHPC_AUDIT_FD"
SESSION_POLICY_ENV = "SECUREHPC_SESSION_POLICY"

# --- the node launcher -> a headless run's runner in the sandbox (node/run.py -> runs/runner.py) ------------
RUN_SPEC_ENV = "SECUREHPC_RUN_SPEC"  # the read-only file with the run's RunSpec
RUN_PROGRESS_FD_ENV = "SECUREHPC_RUN_PROGRESS_FD"  # the pipe on which the runner tells its progress and end

# --- what the program in the sandbox may read about its session --------------------------------------------
PROJECT_ENV = "SECUREHPC_PROJECT"
ROLE_ENV = "SECUREHPC_ROLE"
WORKSPACE_ENV = "SECUREHPC_WORKSPACE"
DATASETS_ENV = "SECUREHPC_DATASETS"

# --- the local cluster (`securehpc dev`, the [dev] extra): its own folders and the OpenID provider's files ---
DEV_STATE_ENV = "SECUREHPC_DEV_STATE"
NODE_ROOT_ENV = "SECUREHPC_NODE_ROOT"
OIDC_CONFIG_ENV = "SECUREHPC_OIDC_CONFIG"  # read by devcluster/oidc_provider.mjs
OIDC_ACCOUNTS_ENV = "SECUREHPC_OIDC_ACCOUNTS"  # read by devcluster/oidc_provider.mjs
