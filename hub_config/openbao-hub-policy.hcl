# jupyter-securehpc hub: manage project keys and policies, issue wrapped session tokens.
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
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/token/create-orphan" {
  capabilities = ["create", "update", "sudo"]
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
