# jupyter-securehpc hub (runtime token): issue response-wrapped session tokens through the projects'
# token roles, and revoke them. No key, policy or role writes, no key reads, no other tokens.
path "auth/token/create/securehpc-project-*" {
  capabilities = ["update"]
  min_wrapping_ttl = "1s"
  max_wrapping_ttl = "86400s"
}
path "auth/token/revoke-accessor" {
  capabilities = ["update"]
}
