"""Encrypted stores (gocryptfs): one per project workspace and one per dataset, under the store root.

Plaintext exists only inside a bubblewrap sandbox's private mount namespace; the store root on shared
storage holds ciphertext only. Keys reach gocryptfs on a pipe, never as a file or an argument.
"""
