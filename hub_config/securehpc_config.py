# Site configuration of jupyter-securehpc: copy to /etc/securehpc/securehpc_config.py on the hub host.
# Read by the `securehpc` admin command and by the hub. Every setting is listed, with its help, in the
# README's configuration reference (`securehpc config-reference`).
c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

# The projects database. SQLite is fine for one hub; use PostgreSQL when the hub is replicated.
c.SecureHPC.db_url = "postgresql://securehpc@db.example.org/securehpc"

# Ciphertext of every project workspace and dataset, on storage that every secure node mounts at the
# same path. Only ciphertext is ever written here.
c.SecureHPC.store_root = "/gpfs/secure/securehpc/stores"

# Append-only, hash-chained audit log; ship it to your SIEM and record `securehpc audit verify` anchors.
c.SecureHPC.audit_log = "/var/log/securehpc/audit.jsonl"

# The key server. The hub's token needs exactly the capabilities in hub_config/openbao-hub-policy.hcl
# (no key reads); give it through VAULT_TOKEN in the hub's environment, not in this file.
c.KeyStoreConfig.url = "https://openbao.example.org:8200"
c.KeyStoreConfig.ca_cert = "/etc/securehpc/openbao-ca.pem"
c.KeyStoreConfig.kv_mount = "securehpc"
# Several hubs can share one key server, each under its own prefix and policy prefix.
c.KeyStoreConfig.prefix = ""
c.KeyStoreConfig.policy_prefix = "securehpc-project-"
