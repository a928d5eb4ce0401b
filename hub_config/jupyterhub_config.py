# JupyterHub configuration for a real cluster running jupyter-securehpc. Copy it to the hub host
# (e.g. /etc/jupyterhub/jupyterhub_config.py), read every comment, and change what names your site.
# Site settings (database, store root, key server) live in /etc/securehpc/securehpc_config.py
# (hub_config/securehpc_config.py), loaded below so that the hub and the `securehpc` command agree.
#
import os

# Before the hub builds its routes: drop batchspawner's attribute-setting callback (/hub/api/batchspawner),
# add the strict reports the secure jobs' launchers make with their per-start secret
# (/hub/api/securehpc/servers/USER/SERVER/port, .../stage, .../audit, .../activity), and refuse what would
# let anyone act as a user: API tokens created for another user (admins included), sharing a server, and
# activity timestamps sent by a server (see jupyter_securehpc/spawner/api.py).
import jupyter_securehpc.spawner.api
from jupyter_securehpc.portal import hubconfig as portal
from jupyter_securehpc.spawner.roles import operator_role

jupyter_securehpc.spawner.api.install_routes()

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

load_subconfig("/etc/securehpc/securehpc_config.py")  # noqa: F821 - SecureHPC.* and KeyStoreConfig.*

# --- the hub -------------------------------------------------------------------------------------------
# Public URL behind your TLS-terminating front end; the hub API must be reachable from the secure nodes,
# whose launchers report start stages, port, activity and the server extension's audit events to it with a
# secret made for each start, and whose servers reach only its version, whoami and OAuth token exchange
# through the launcher's relay (see jupyter_securehpc/spawner/api.py and node/hubrelay.py).
c.JupyterHub.bind_url = "http://0.0.0.0:8000"
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = "http://hub.example.org:8081"
c.JupyterHub.db_url = "postgresql://jupyterhub@db.example.org/jupyterhub"
# Servers are Slurm jobs: a hub restart must not stop them; the spawner re-adopts them from its state.
# A spawn interrupted by a hub crash leaves a tagged job: cancelled at the server's next start, or it ends
# itself when the hub refuses its port.
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.should_start = True
# One server per project: the server's name is the project's name.
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 5

# --- login: the institution's OpenID Connect provider, with MFA ----------------------------------------
c.JupyterHub.authenticator_class = "securehpc"
c.SecureHPCAuthenticator.oidc_issuer = "https://idp.example.org/realms/research"
c.SecureHPCAuthenticator.client_id = "jupyterhub"
# The client secret comes from the environment (systemd EnvironmentFile, mode 0600), never this file.
c.SecureHPCAuthenticator.client_secret = os.environ["OIDC_CLIENT_SECRET"]
c.SecureHPCAuthenticator.oauth_callback_url = "https://hub.example.org/hub/oauth_callback"
c.SecureHPCAuthenticator.scope = ["openid", "profile", "groups"]
c.SecureHPCAuthenticator.username_claim = "preferred_username"
# Refuse logins without a second factor (on by default; the provider must send `amr`, or use required_acr).
c.SecureHPCAuthenticator.enforce_mfa = True
# Optional: project roles from the directory, as groups securehpc:PROJECT:ROLE.
c.SecureHPCAuthenticator.project_roles_claim = "groups"
# Who may log in at all. Hub groups follow the provider's `groups` claim at every login.
c.SecureHPCAuthenticator.manage_groups = True
# Operators (below) log in to run the hub; they get no project and no server of their own by being operators.
c.SecureHPCAuthenticator.allowed_groups = {"securehpc-users", "securehpc-operators"}
c.SecureHPCAuthenticator.claim_groups_key = "groups"
# A login lasts as long as the provider says so: the refresh token is kept encrypted in the hub database and
# used every 15 minutes and before each server start; a refused or revoked grant, a removed second factor or
# lost groups log the person out everywhere (audited as login.refresh). Needs JUPYTERHUB_CRYPT_KEY in the
# hub's environment (`openssl rand -hex 32`, kept like the client secret); the hub refuses to start without.
c.SecureHPCAuthenticator.enable_auth_state = True
c.SecureHPCAuthenticator.refresh_with_provider = True
c.SecureHPCAuthenticator.auth_refresh_age = 15 * 60
c.SecureHPCAuthenticator.refresh_pre_spawn = True
# A person the provider removed also loses API access at the next check (JupyterHub's default keeps it).
c.SecureHPCAuthenticator.auth_refresh_strict = True
# While the provider does not answer, logins confirmed within the last hour are kept (each one audited).
c.SecureHPCAuthenticator.refresh_outage_grace = 3600
# The hub's cookie ends after a day whatever happens; the provider's checks end it sooner.
c.JupyterHub.cookie_max_age_days = 1

# --- who runs the hub: operators administer, they do not impersonate ------------------------------------
# JupyterHub's built-in `admin` role can act as anyone (tokens for any user, any server opened or shared, the
# users' auth state): nobody is a JupyterHub admin here, keep both lists empty. (The hub also refuses token
# creation for another user and sharing, whoever asks: spawner/api.py.)
c.SecureHPCAuthenticator.admin_users = set()
c.SecureHPCAuthenticator.admin_groups = set()
# Hub operators are the members of the provider's group `securehpc-operators`, with the scopes listed (each
# with its reason) in jupyter_securehpc/spawner/roles.py: admin page, users, servers (start, stop, status),
# groups, roles, services, hub info, metrics. Not: tokens, access:servers, shares, admin:users,
# admin:auth_state, admin:servers, admin:groups, proxy, shutdown.
c.JupyterHub.load_roles = [operator_role(groups=["securehpc-operators"])]

# --- the project portal: a JupyterHub service at /services/securehpc/ (jupyter_securehpc/portal) -----------
# People sign in with the hub (no second login); scripts send an API token with the scope
# access:services!service=securehpc. It runs as the hub's user (it appends to the same audit log and
# database), listens on loopback, and reaches the hub's API with its own token (roles below).
c.JupyterHub.services = [
    portal.service(
        url="http://127.0.0.1:10101",
        # Its own OpenBao token, in a file only the hub's user can read (mode 0600), with the policy in
        # hub_config/openbao-portal-policy.hcl: it creates project keys (never replaces one) and writes the
        # projects' OpenBao policies (project creation, shares); it reads no key, deletes nothing, makes no token.
        key_token_file="/etc/securehpc/portal-openbao-token",  # noqa: S106 - a path, not the token
    )
]
# Hub admins of the portal (create projects, set policies, read the audit log) hold a custom scope; here the
# operators. Every user may open the portal (the `user` role gets its access scope); the service's own token
# may list users' servers, read their Slurm job and node, and stop them (portal/hubconfig.py says why each).
c.JupyterHub.custom_scopes = portal.custom_scopes()
# The hub's home page gets a link to the portal (for the people who may open it); the rest is JupyterHub's own.
c.JupyterHub.template_paths = portal.template_paths()
c.JupyterHub.load_roles += portal.roles(admin_groups=["securehpc-operators"])

# --- sessions and tokens ---------------------------------------------------------------------------------
# API tokens made through the REST API (the `securehpc` CLI, scripts) live at most one day; asking for
# longer is refused, asking for no expiry gives one day. A person removed at the identity provider keeps a
# token no longer than this. (Servers' own tokens end with their server; OAuth tokens with the login.)
c.JupyterHub.token_expires_in_max_seconds = 24 * 3600
c.SecureHPCAuthenticator.support_contact = "the research computing service desk (hpc-support@example.org)"

# --- servers: Slurm jobs in the node launcher's sandbox ------------------------------------------------
c.JupyterHub.spawner_class = "securehpc"
# Jobs are submitted with `sbatch --uid/--gid` of the user: the hub runs as root (or give it that right).
c.SecureSlurmSpawner.signing_key_file = "/etc/securehpc/hub-signing.pem"  # its .pub goes to every node
c.SecureSlurmSpawner.node_command = "/opt/securehpc/venv/bin/securehpc-node"
c.SecureSlurmSpawner.extra_sbatch_options = ["--account=secure"]
c.SecureSlurmSpawner.stage_limit_mib = 2048
c.SecureSlurmSpawner.start_timeout = 600  # queue wait included
c.SecureSlurmSpawner.http_timeout = 120
c.SecureSlurmSpawner.command_timeout = 30
# How often the hub asks Slurm about each running server (squeue). Errors (slurmctld down) keep the server.
c.SecureSlurmSpawner.poll_interval = 60
# slurm.conf outside /etc/slurm? Keep SLURM_CONF in the hub's environment (the spawner passes it on).
# Nothing else of the hub's environment goes to the job: the spawner gives Slurm PATH and SLURM_CONF itself.
# JUPYTERHUB_ACTIVITY_URL is not given to the server either: the node launcher reports activity (as `{}`, the
# hub records its own clock), so that a kernel cannot write timestamps into the hub.
c.SecureSlurmSpawner.env_keep = []
c.SecureSlurmSpawner.environment = {}
# The job's output (launcher messages only): unique per start through {nonce}, created 0600 (SLURM_UMASK).
c.SecureSlurmSpawner.job_output = "/tmp/securehpc-%u-%j-{nonce}.log"  # noqa: S108 - on the node

# --- headless runs: `securehpc run`, jupyter_securehpc.runs.submit (README: Headless runs) --------------------
# The hub serves /hub/api/securehpc/runs (installed with the routes above) and submits each run as a Slurm job
# of the person's principal, with the settings of SecureSlurmSpawner above (signing key, node command, extra
# sbatch options, command timeout; job output unless SecureRuns.job_output says otherwise). Staging and
# prefetching are off for runs by default: a run reads its data once. How many runs of one person may be queued
# or running in a project at once is the project's policy (max_concurrent_runs).
c.SecureRuns.poll_interval = 30  # seconds between the hub's questions to Slurm about queued and running runs
