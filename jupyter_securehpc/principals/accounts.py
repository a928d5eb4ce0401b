"""Making, checking and locking the Unix accounts of principals and project groups.

``ProjectService`` names the accounts (``names.py``) and records them in the projects database; a provisioner
makes them exist on the site:

- :class:`LocalAccounts`: ``groupadd``, ``useradd`` and ``usermod`` on this host (the local cluster, a site
  whose nodes share this host's ``/etc/passwd``);
- :class:`CommandAccounts`: a command the site provides (LDAP, IPA, an identity-management API), called with
  fixed arguments for each step;
- :class:`RecordOnly`: nothing is made here; the site's directory creates the accounts from
  ``securehpc account list --json``.

Whatever made them, :func:`check_principal` checks an account before it is used: it exists, its primary group
is the project's group, it has no login shell, and the group has no supplementary members (a person's login
account in the group could write the workspace's ciphertext). Commands run as argument lists with timeouts;
every name is validated before it reaches one (``validate_account_name``), so nothing a user typed becomes an
option or a path.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .names import DEFAULT_PREFIX, validate_account_name, validate_prefix

log = logging.getLogger(__name__)

# Shells that let nobody log in; a principal must have one of them.
NOLOGIN_SHELLS = frozenset({"/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"})
NOLOGIN = "/usr/sbin/nologin"
# The GECOS field of the accounts LocalAccounts makes: an existing account without it is never taken over.
MARKER = "securehpc principal"
NO_HOME = "/nonexistent"


class AccountError(RuntimeError):
    """An account or group is missing, not as it must be, or could not be made; the message says the fix."""


@dataclass(frozen=True)
class PrincipalAccount:
    """A checked principal: the Unix account a session or headless run is submitted as."""

    name: str
    uid: int
    gid: int
    group: str
    home: str = NO_HOME
    shell: str = NOLOGIN


def _lookup(name: str, group: str) -> tuple[pwd.struct_passwd, grp.struct_group]:
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise AccountError(
            f"there is no Unix account {name!r} (the project principal): run `securehpc account sync` "
            "(or let the site's directory create it, see `securehpc account list`)"
        ) from None
    try:
        group_entry = grp.getgrnam(group)
    except KeyError:
        raise AccountError(
            f"there is no Unix group {group!r} (the project's group): run `securehpc account sync`"
        ) from None
    return account, group_entry


def check_principal(name: str, group: str) -> PrincipalAccount:
    """The principal ``name`` of project group ``group``, checked; AccountError says what is wrong and the fix."""
    validate_account_name(name)
    validate_account_name(group)
    account, group_entry = _lookup(name, group)
    if account.pw_uid == 0 or group_entry.gr_gid == 0:
        raise AccountError(f"the principal {name!r} or its group {group!r} is root's: that is never a principal")
    if account.pw_gid != group_entry.gr_gid:
        raise AccountError(
            f"the principal {name!r} has primary group {account.pw_gid}, not the project's group {group!r} "
            f"({group_entry.gr_gid}): fix it with `usermod --gid {group} {name}`"
        )
    if account.pw_shell not in NOLOGIN_SHELLS:
        raise AccountError(
            f"the principal {name!r} has the login shell {account.pw_shell!r}: nobody may log in as a principal; "
            f"fix it with `usermod --shell {NOLOGIN} {name}`"
        )
    if group_entry.gr_mem:
        members = ", ".join(sorted(group_entry.gr_mem))
        raise AccountError(
            f"the project group {group!r} has supplementary members ({members}): it holds principals only, as "
            f"their primary group; remove them with `gpasswd -d USER {group}`"
        )
    return PrincipalAccount(name, account.pw_uid, account.pw_gid, group, account.pw_dir, account.pw_shell)


def group_id(group: str) -> int | None:
    """The group's id, or None while it does not resolve on this host."""
    try:
        return grp.getgrnam(validate_account_name(group)).gr_gid
    except KeyError:
        return None


class AccountProvisioner:
    """Makes principals and project groups exist (base: records only; see the module's docstring).

    ``prefix`` is used when a principal is first named (``names.principal_name``); later the name comes from
    the projects database.
    """

    #: Whether this provisioner makes accounts on this host (then ``ProjectService`` checks them at once).
    makes_accounts = False

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = validate_prefix(prefix)

    def ensure_group(self, group: str, *, project: str) -> None:
        """Make the project's group exist (idempotent)."""

    def ensure_principal(self, name: str, group: str, *, project: str, user: str) -> None:
        """Make the principal exist and usable, in ``group`` (idempotent; unlocks a locked one)."""

    def lock_principal(self, name: str, *, project: str, user: str) -> None:
        """Make the principal unusable (a removed member): locked and expired, its files keep their owner."""


class RecordOnly(AccountProvisioner):
    """Records principals in the projects database only; the site's directory makes the accounts."""


def _run(argv: Sequence[str], timeout: float, what: str) -> None:
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise AccountError(f"cannot {what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise AccountError(f"cannot {what}: {argv[0]} did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}").splitlines()
        raise AccountError(f"cannot {what}: {argv[0]}: {message[-1][:300]}")


class LocalAccounts(AccountProvisioner):
    """``groupadd``, ``useradd`` and ``usermod`` on this host (as root).

    Principals get no password (locked), no home (``/nonexistent``, none created, so nothing is followed), the
    no-login shell, the project's group as primary group and no other group, no subordinate ids, and the
    comment ``securehpc principal of USER in PROJECT``. An account of the principal's name that lacks that
    comment is never taken over.
    """

    makes_accounts = True

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, timeout: float = 60) -> None:
        super().__init__(prefix)
        self.timeout = timeout

    def ensure_group(self, group: str, *, project: str) -> None:
        validate_account_name(group)
        if group_id(group) is None:
            _run(["groupadd", "--", group], self.timeout, f"create the group {group!r} of project {project!r}")

    def ensure_principal(self, name: str, group: str, *, project: str, user: str) -> None:
        validate_account_name(name)
        validate_account_name(group)
        try:
            existing = pwd.getpwnam(name)
        except KeyError:
            existing = None
        if existing is None:
            comment = f"{MARKER} of {user} in {project}"[:200].replace(":", "_").replace("\n", " ")
            _run(
                ["useradd", "--no-create-home", "--home-dir", NO_HOME, "--shell", NOLOGIN, "--gid", group,
                 "--no-user-group", "--comment", comment, "--key", "SUB_UID_COUNT=0", "--key", "SUB_GID_COUNT=0",
                 "--", name],
                self.timeout, f"create the principal {name!r} of {user} in {project}",
            )  # fmt: skip
            return
        if not existing.pw_gecos.startswith(MARKER):
            raise AccountError(
                f"a Unix account {name!r} exists that securehpc did not make (its comment is not '{MARKER} ...'): "
                "it is never taken over; rename or remove it, or choose another ProjectAccounts.prefix"
            )
        # A member who comes back: the principal (and its files) again, no longer expired. Its password stays
        # locked: it never had one.
        _run(["usermod", "--expiredate", "", "--", name], self.timeout, f"unlock the principal {name!r}")

    def lock_principal(self, name: str, *, project: str, user: str) -> None:
        validate_account_name(name)
        try:
            pwd.getpwnam(name)
        except KeyError:
            return  # never made (or removed by an admin): nothing to lock
        _run(["usermod", "--lock", "--expiredate", "1", "--shell", NOLOGIN, "--", name], self.timeout,
             f"lock the principal {name!r} of {user} in {project}")  # fmt: skip

    def delete_principal(self, name: str) -> None:
        """Remove the account (tests, decommissioning; a removed member's principal is locked, not deleted)."""
        validate_account_name(name)
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
        _run(["userdel", "--", name], self.timeout, f"remove the principal {name!r}")

    def delete_group(self, group: str) -> None:
        """Remove the group (tests, decommissioning)."""
        if group_id(group) is not None:
            _run(["groupdel", "--", group], self.timeout, f"remove the group {group!r}")


class CommandAccounts(AccountProvisioner):
    """The site's own command makes the accounts (its directory), called as::

        COMMAND group-ensure GROUP PROJECT
        COMMAND principal-ensure PRINCIPAL GROUP PROJECT USER
        COMMAND principal-lock PRINCIPAL PROJECT USER

    Exit status 0 means done (and done again is fine); anything else is an error whose last line of output is
    shown. Afterwards the principal must resolve on this host within ``lookup_wait`` seconds (directory caches).
    """

    makes_accounts = True

    def __init__(self, command: Sequence[str], prefix: str = DEFAULT_PREFIX, *, timeout: float = 60,
                 lookup_wait: float = 30) -> None:  # fmt: skip
        super().__init__(prefix)
        if not command or not os.path.isabs(command[0]):
            raise AccountError(
                f"ProjectAccounts.command must start with an absolute path to the site's account command, got "
                f"{list(command)!r}"
            )
        self.command = list(command)
        self.timeout = timeout
        self.lookup_wait = lookup_wait

    def ensure_group(self, group: str, *, project: str) -> None:
        validate_account_name(group)
        _run([*self.command, "group-ensure", group, project], self.timeout, f"create the group {group!r}")
        self._wait_for(lambda: group_id(group) is not None, f"the group {group!r}")

    def ensure_principal(self, name: str, group: str, *, project: str, user: str) -> None:
        validate_account_name(name)
        validate_account_name(group)
        _run([*self.command, "principal-ensure", name, group, project, user], self.timeout,
             f"create the principal {name!r}")  # fmt: skip
        self._wait_for(lambda: _resolves(name), f"the principal {name!r}")

    def lock_principal(self, name: str, *, project: str, user: str) -> None:
        validate_account_name(name)
        _run([*self.command, "principal-lock", name, project, user], self.timeout, f"lock the principal {name!r}")

    def _wait_for(self, present, what: str) -> None:  # noqa: ANN001 - a callable returning bool
        deadline = time.monotonic() + self.lookup_wait
        while not present():
            if time.monotonic() >= deadline:
                raise AccountError(
                    f"the site's account command succeeded, but {what} does not resolve on this host after "
                    f"{self.lookup_wait:g} s: check the directory (nsswitch, sssd cache)"
                )
            time.sleep(0.5)


def _resolves(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
