# JupyterHub configuration for a real cluster running jupyter-securehpc. Copy it to the hub host
# (e.g. /etc/jupyterhub/jupyterhub_config.py), read every comment, and change what names your site.
# Site settings (database, store root, key server) live in /etc/securehpc/securehpc_config.py
# (hub_config/securehpc_config.py), loaded below so that the hub and the `securehpc` command agree.
#
import os

# Before the hub builds its routes: drop batchspawner's attribute-setting callback (/hub/api/batchspawner)
# and add the strict reports the secure jobs use (/hub/api/securehpc/port, .../stage, .../audit).
import jupyter_securehpc.spawner.api

jupyter_securehpc.spawner.api.install_routes()

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

load_subconfig("/etc/securehpc/securehpc_config.py")  # noqa: F821 - SecureHPC.* and KeyStoreConfig.*

# --- the hub -------------------------------------------------------------------------------------------
# Public URL behind your TLS-terminating front end; the hub API must be reachable from the secure nodes,
# which report their start stages, port and the server extension's audit events to it (nothing else: see
# jupyter_securehpc/spawner/api.py).
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
# Who may log in at all, and who administers the hub (nobody by default).
c.SecureHPCAuthenticator.manage_groups = True
c.SecureHPCAuthenticator.allowed_groups = {"securehpc-users"}
c.SecureHPCAuthenticator.admin_groups = {"securehpc-admins"}
c.SecureHPCAuthenticator.claim_groups_key = "groups"
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
