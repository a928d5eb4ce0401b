# jupyter-securehpc project portal (the JupyterHub service): create project keys (never replace one),
# write the projects' ACL policies and session token roles. No key reads, no deletes, no tokens.
path "sys/mounts/securehpc" {
  capabilities = ["read"]
}
path "securehpc/data/projects/*" {
  capabilities = ["create"]
}
path "sys/policy/securehpc-project-*" {
  capabilities = ["create", "update"]
}
path "auth/token/roles/securehpc-project-*" {
  capabilities = ["create", "update"]
}
