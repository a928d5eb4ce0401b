"""One principal per person per project: the Unix accounts that sessions and headless runs run as.

A person's session in a project never runs as the person's own login account, which the person's shell, an
extra Slurm job step, cron or SSH could act as; it runs as that pair's principal, which nobody can log in as
and only the spawner submits jobs for. All principals of a project share its group, which owns the project's
workspace ciphertext, so that several members work in one workspace at once (see the README's Security
section).
"""

from .accounts import (
    AccountError,
    AccountProvisioner,
    CommandAccounts,
    LocalAccounts,
    PrincipalAccount,
    RecordOnly,
    check_principal,
    group_id,
)
from .config import ProjectAccounts
from .names import DEFAULT_PREFIX, InvalidAccountName, group_name, principal_name, validate_account_name

__all__ = [
    "DEFAULT_PREFIX",
    "AccountError",
    "AccountProvisioner",
    "CommandAccounts",
    "InvalidAccountName",
    "LocalAccounts",
    "PrincipalAccount",
    "ProjectAccounts",
    "RecordOnly",
    "check_principal",
    "group_id",
    "group_name",
    "principal_name",
    "validate_account_name",
]
