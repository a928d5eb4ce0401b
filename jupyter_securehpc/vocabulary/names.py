"""Names of projects and datasets: checked once, here, before they become paths, policies or job tags.

A name ends up as a folder under the store root, an OpenBao path and policy name, and a Slurm comment, so
the rules are strict: 1 to 64 characters, Unicode letters and digits plus ``-``, ``_`` and ``.``, starting
with a letter or digit, in NFC form. Two names that differ only by case or compatibility form (``Genome``
and ``genome``, ``ﬁle`` and ``file``) collide: OpenBao folds policy names to lower case, and people confuse
them.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 64
_PUNCTUATION = frozenset("-_.")


class InvalidName(ValueError):
    """A name that may not be used; the message says what is wrong and what is allowed."""


def _describe(char: str) -> str:
    return f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})"


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` name (``project``, ``dataset``), else raise InvalidName."""
    rules = f"use 1-{MAX_LENGTH} letters, digits, '-', '_' or '.', starting with a letter or digit"
    if not isinstance(value, str) or value == "":
        raise InvalidName(f"{kind} name is empty: {rules}")
    if "\0" in value:
        raise InvalidName(f"{kind} name contains a NUL byte: {rules}")
    if unicodedata.normalize("NFC", value) != value:
        raise InvalidName(f"{kind} name {value!r} is not in Unicode NFC form: retype it, or normalise it to NFC")
    if len(value) > MAX_LENGTH:
        raise InvalidName(f"{kind} name is {len(value)} characters long, more than {MAX_LENGTH}: {rules}")
    if ".." in value:
        raise InvalidName(f"{kind} name {value!r} contains '..': {rules}")
    for char in value:
        if char == "/" or char == "\\":
            raise InvalidName(f"{kind} name {value!r} contains {char!r}: {rules}")
        if char.isspace():
            raise InvalidName(f"{kind} name {value!r} contains whitespace {_describe(char)}: {rules}")
        if not (char in _PUNCTUATION or unicodedata.category(char)[0] in "LN"):
            raise InvalidName(f"{kind} name {value!r} contains {_describe(char)}: {rules}")
    if not unicodedata.category(value[0]).startswith(("L", "N")):
        raise InvalidName(f"{kind} name {value!r} starts with {value[0]!r}: {rules}")
    return value


def name_key(value: str) -> str:
    """The form in which two names collide: compatibility-normalised and case-folded."""
    return unicodedata.normalize("NFKC", value).casefold()
