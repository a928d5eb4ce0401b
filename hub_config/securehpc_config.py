# Site configuration of jupyter-securehpc: copy to /etc/securehpc/securehpc_config.py on the hub host.
# Read by the `securehpc` admin command, the hub and its portal. Every setting is listed, with its help, in the
# README's configuration reference (`securehpc config-reference`).
c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# The projects database. SQLite is fine for one hub; use PostgreSQL when the hub is replicated.
c.SecureHPC.db_url = "postgresql://securehpc@db.example.org/securehpc"

# Ciphertext of every project workspace and dataset, on storage that every secure node mounts at the
# same path. Only ciphertext is ever written here.
c.SecureHPC.store_root = "/gpfs/secure/securehpc/stores"

# Append-only, hash-chained audit log; ship it to your SIEM and record `securehpc audit verify` anchors.
c.SecureHPC.audit_log = "/var/log/securehpc/audit.jsonl"

# The key server, with two identities, each given through VAULT_TOKEN in its own environment, never here:
# - the hub's runtime token (hub_config/openbao-hub-policy.hcl): creates response-wrapped session tokens
#   through the projects' token roles and revokes them; it cannot read or write a key or a policy;
# - the provisioning token of the `securehpc` admin command line (hub_config/openbao-provisioner-policy.hcl):
#   writes project keys, policies and token roles; it cannot read a key or make a token.
# After an upgrade from a version without token roles, run `securehpc key sync` once with the provisioning
# token (it writes every project's policy and role again; idempotent).
c.KeyStoreConfig.url = "https://openbao.example.org:8200"
c.KeyStoreConfig.ca_cert = "/etc/securehpc/openbao-ca.pem"
c.KeyStoreConfig.kv_mount = "securehpc"
# Several hubs can share one key server, each under its own prefix and policy prefix.
c.KeyStoreConfig.prefix = ""
c.KeyStoreConfig.policy_prefix = "securehpc-project-"

# Sessions and headless runs run as principals, one Unix account per person and project
# (`shpc-<project>_<user>_<hash>`), in a group per project that owns its workspace; never as a person's own
# account. They must exist, with the same ids, on the hub host and every secure node. What makes them:
# "local" (useradd/groupadd/usermod on the host running `securehpc` and the hub: nodes that share its
# /etc/passwd), "command" (your directory's command, called with fixed arguments: see the README's admin
# guide) or "none" (your directory creates what `securehpc account list --json` lists).
c.ProjectAccounts.prefix = "shpc-"
c.ProjectAccounts.provisioner = "command"
c.ProjectAccounts.command = ["/usr/local/sbin/securehpc-accounts"]
