# jupyter-securehpc provisioning (the `securehpc` admin command line): create and delete project keys,
# write and delete the projects' ACL policies and session token roles. No key reads, no tokens.
path "sys/mounts/securehpc" {
  capabilities = ["read", "create", "update"]
}
path "securehpc/config" {
  capabilities = ["read"]
}
path "securehpc/data/projects/*" {
  capabilities = ["create", "update"]
}
path "securehpc/metadata/projects/*" {
  capabilities = ["delete"]
}
path "sys/policy/securehpc-project-*" {
  capabilities = ["create", "update", "delete"]
}
path "auth/token/roles/securehpc-project-*" {
  capabilities = ["create", "update", "delete"]
}
