"""The Unix names of a project's principals and group: deterministic, short, valid everywhere, never a person's.

A session (or headless run) of person ``user`` in project ``project`` runs as the *principal* of that pair, an
account that is nobody's login (Hopsworks' "one principal per user per project"). Its name is computed once,
when the person joins the project, and then read from the projects database, never recomputed from a request:

    <prefix><project>_<user>_<hash>      e.g. shpc-sleep_bob_q7c2xa
    <prefix><project>_<hash>             the project's group, e.g. shpc-sleep_k3m9ta

- **valid**: lower-case ASCII letters, digits, ``_`` and ``-``, starting with a letter, at most 32 characters
  (Linux' limit for user and group names; ``useradd``'s default rule, LDAP and Slurm take them as they are);
- **readable**: the project and the person, folded to ASCII letters and digits and shortened to fit;
- **deterministic**: the same pair always gives the same name (on every host, after a database restore);
- **collision-free**: the hash (six base32 characters, 30 bits of SHA-256) separates pairs whose readable parts
  agree, and the projects database refuses a name it already holds for another pair (``principals.name`` is
  unique); an account that exists without being recorded there is never taken over (``accounts.py``).

The prefix (``ProjectAccounts.prefix``) keeps the names apart from people's accounts and lets several hubs
share one directory.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

from ..vocabulary import name_key

MAX_NAME = 32
HASH_CHARS = 6
MAX_PREFIX = 8
DEFAULT_PREFIX = "shpc-"

# useradd's and groupadd's default rule (Debian's NAME_REGEX), without the trailing '$' of machine accounts.
UNIX_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_PREFIX = re.compile(r"[a-z][a-z0-9-]{0,7}")


class InvalidAccountName(ValueError):
    """A prefix or account name that cannot be used; the message says what is allowed."""


def validate_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix or ""):
        raise InvalidAccountName(
            f"account prefix {prefix!r} is not valid: use 1-{MAX_PREFIX} lower-case letters, digits or '-', "
            "starting with a letter (e.g. 'shpc-')"
        )
    return prefix


def validate_account_name(name: str) -> str:
    """``name`` if it is a principal or group name this module could have made (checked before any use)."""
    if not isinstance(name, str) or not UNIX_NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise InvalidAccountName(
            f"account name {name!r} is not valid: 1-{MAX_NAME} lower-case letters, digits, '_' or '-', "
            "starting with a letter"
        )
    return name


def _fold(text: str) -> str:
    """Letters and digits of ``text`` in lower-case ASCII (accents dropped, everything else left out)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return "".join(char for char in ascii_text if char.isalnum())


def _hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:HASH_CHARS]


def principal_name(prefix: str, project: str, user: str) -> str:
    """The principal of ``user`` in ``project`` (project names compare by their ``name_key``)."""
    validate_prefix(prefix)
    room = MAX_NAME - len(prefix) - HASH_CHARS - 2
    folded_project, folded_user = _fold(project) or "p", _fold(user) or "u"
    # The project gets at least half of the room (more when the person's part is short), the person the rest.
    project_part = folded_project[: max(room // 2, room - len(folded_user))]
    user_part = folded_user[: room - len(project_part)]
    name = f"{prefix}{project_part}_{user_part}_{_hash('principal', name_key(project), user)}"
    return validate_account_name(name)


def group_name(prefix: str, project: str) -> str:
    """The group of every principal of ``project``, which owns its workspace's ciphertext."""
    validate_prefix(prefix)
    room = MAX_NAME - len(prefix) - HASH_CHARS - 1
    name = f"{prefix}{(_fold(project) or 'p')[:room]}_{_hash('group', name_key(project))}"
    return validate_account_name(name)
