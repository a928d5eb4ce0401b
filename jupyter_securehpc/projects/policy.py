"""A project's policy: what hub admins allow its sessions and members. Deny by default.

Each setting has a parser that turns the text an admin types (``policy set P max_gpus=2``) into a value,
or refuses it with a message naming the setting, the bad value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from .roles import Role


class InvalidPolicy(ValueError):
    """An unknown policy key or a bad value; nothing was changed."""


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]+", text.strip()):
            raise ValueError(f"expected a whole number from {low} to {high}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    parse.bounds = (low, high)  # type: ignore[attr-defined]  # for describe()
    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"true", "yes", "on", "1"}:
        return True
    if lowered in {"false", "no", "off", "0"}:
        return False
    raise ValueError("expected true or false")


def _minutes(text: str) -> int:
    """``90``, ``90m``, ``8h`` or ``2d`` -> minutes (Slurm's --time takes minutes)."""
    match = re.fullmatch(r"([0-9]+)([mhd]?)", text.strip())
    if not match:
        raise ValueError("expected minutes, or a number with m, h or d (e.g. 90, 8h, 2d)")
    minutes = int(match[1]) * {"": 1, "m": 1, "h": 60, "d": 1440}[match[2]]
    if not 1 <= minutes <= 30 * 1440:
        raise ValueError("expected 1 minute to 30 days")
    return minutes


_minutes.bounds = (1, 30 * 1440)  # type: ignore[attr-defined]


def _partition(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise ValueError("expected a Slurm partition name (letters, digits, '-', '_')")
    return text


def _roles(text: str) -> frozenset[Role]:
    """``data_owner,data_scientist``; ``none`` (or nothing) for no role."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if parts == ["none"]:
        return frozenset()
    return frozenset(Role.parse(part) for part in parts)


@dataclass(frozen=True)
class Policy:
    """Per-project limits and permissions. The defaults are the safe choice for sensitive data."""

    partition: str = "gpu"
    max_gpus: int = 1
    max_cpus: int = 4
    max_memory_gb: int = 16
    max_wall_time: int = 8 * 60  # minutes
    exclusive: bool = True
    terminals: bool = False
    download_roles: frozenset[Role] = frozenset()
    upload_roles: frozenset[Role] = frozenset({Role.DATA_OWNER})
    # Roles that may read files other than notebooks and small code files as text through the contents API
    # (what JupyterLab's editor does to open a .csv): reading a data file whole is a download by other means.
    # Roles that may download may always; see ``serverext/contents.py`` for what counts as which kind of file.
    text_content_roles: frozenset[Role] = frozenset({Role.DATA_OWNER})
    key_ttl: int = 300  # seconds a wrapped session token stays valid
    release_reviewers: int = 1
    # Headless runs (runs/) of one person in the project that may be queued or running at once; 0: no runs.
    max_concurrent_runs: int = 4

    def as_dict(self) -> dict:
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            out[item.name] = sorted(role.value for role in value) if isinstance(value, frozenset) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        """The policy stored in the database (``as_dict`` output); missing keys take the defaults."""
        values = {}
        for key, value in data.items():
            if key not in PARSERS:
                continue  # written by a newer version; this version does not enforce it
            values[key] = frozenset(Role(v) for v in value) if key.endswith("_roles") else value
        return cls(**values)

    @classmethod
    def from_untrusted(cls, data: object) -> Policy:
        """The policy in data that crossed a process boundary (a session spec, a session file): every known
        key must have exactly its type, or InvalidPolicy names the key; unknown keys are ignored, as in
        ``from_dict`` (written by a newer version).

        ``from_dict`` trusts its input (our own database); here ``"terminals": "false"`` would otherwise be a
        non-empty string, and so true.
        """
        if not isinstance(data, dict):
            raise InvalidPolicy("the policy must be an object as written by Policy.as_dict()")
        defaults = cls()
        for item in fields(cls):
            if item.name not in data:
                continue
            value, default = data[item.name], getattr(defaults, item.name)
            if isinstance(default, frozenset):
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            elif isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, type(default))
            if not ok:
                expected = "a list of role names" if isinstance(default, frozenset) else type(default).__name__
                raise InvalidPolicy(f"policy {item.name!r} must be {expected}, got {value!r}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise InvalidPolicy(f"invalid policy: {error}") from None

    def with_settings(self, assignments: list[str]) -> Policy:
        """A copy with ``KEY=VALUE`` assignments applied; all are checked before any is applied."""
        if not assignments:
            raise InvalidPolicy(f"nothing to set: give KEY=VALUE pairs; keys: {', '.join(PARSERS)}")
        changes = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep:
                raise InvalidPolicy(f"{assignment!r} is not KEY=VALUE")
            if key not in PARSERS:
                raise InvalidPolicy(f"unknown policy key {key!r}: use one of {', '.join(PARSERS)}")
            try:
                changes[key] = PARSERS[key](text)
            except ValueError as error:
                raise InvalidPolicy(f"bad value {text!r} for {key}: {error}") from None
        return replace(self, **changes)


PARSERS: dict[str, Callable[[str], object]] = {
    "partition": _partition,
    "max_gpus": _int_in(0, 64),
    "max_cpus": _int_in(1, 1024),
    "max_memory_gb": _int_in(1, 16384),
    "max_wall_time": _minutes,
    "exclusive": _bool,
    "terminals": _bool,
    "download_roles": _roles,
    "upload_roles": _roles,
    "text_content_roles": _roles,
    "key_ttl": _int_in(30, 86400),
    "release_reviewers": _int_in(1, 10),
    "max_concurrent_runs": _int_in(0, 1000),
}


# What each setting means, for people choosing a value (the portal's policy editor, the API's description).
HELP: dict[str, str] = {
    "partition": "Slurm partition the project's sessions and runs are submitted to.",
    "max_gpus": "Most GPUs one session may ask for (0: CPU only).",
    "max_cpus": "Most CPU cores one session may ask for.",
    "max_memory_gb": "Most memory one session may ask for, in GB (staged datasets count against it).",
    "max_wall_time": "Longest a session may run, in minutes (or a number with m, h or d: 90, 8h, 2d).",
    "exclusive": "Whether sessions get whole nodes to themselves (no other job beside them).",
    "terminals": "Whether data owners and scientists may open terminals in their sessions.",
    "download_roles": "Roles that may download files from their sessions (none: nobody).",
    "upload_roles": "Roles that may upload files into the workspace (none: nobody).",
    "text_content_roles": "Roles that may open data files (.csv, .txt, ...) as text in the browser.",
    "key_ttl": "Seconds a session's single-use key token stays valid before the node must use it.",
    "release_reviewers": "Data owners who must approve a release request before files leave the project.",
    "max_concurrent_runs": "Headless runs one person may have queued or running at once (0: no runs).",
}


def describe() -> dict[str, dict]:
    """Every setting: its kind (integer, boolean, roles, partition, minutes), allowed range, default and help."""
    defaults = Policy().as_dict()
    kinds = {_bool: "boolean", _roles: "roles", _partition: "partition", _minutes: "minutes"}
    out = {}
    for key, parser in PARSERS.items():
        info: dict = {"kind": kinds.get(parser, "integer"), "default": defaults[key], "help": HELP.get(key, "")}
        if hasattr(parser, "bounds"):
            info["minimum"], info["maximum"] = parser.bounds
        out[key] = info
    return out


def assignments_from_json(data: object) -> list[str]:
    """A JSON object of settings (``{"max_gpus": 2, "terminals": false, "upload_roles": ["data_owner"]}``) as
    the ``KEY=VALUE`` assignments ``Policy.with_settings`` takes: InvalidPolicy names a key of the wrong type;
    ``with_settings`` then checks the values as it does for the command line."""
    if not isinstance(data, dict) or not data:
        raise InvalidPolicy(f"give an object of settings to change; keys: {', '.join(PARSERS)}")
    kinds = describe()
    out = []
    for key, value in data.items():
        if key not in kinds:
            raise InvalidPolicy(f"unknown policy key {key!r}: use one of {', '.join(PARSERS)}")
        kind = kinds[key]["kind"]
        if kind == "boolean" and isinstance(value, bool):
            text = "true" if value else "false"
        elif kind in ("integer", "minutes") and isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif kind == "minutes" and isinstance(value, str):
            text = value
        elif kind == "partition" and isinstance(value, str):
            text = value
        elif kind == "roles" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            if any(v.strip() in ("", "none") or "," in v for v in value):
                raise InvalidPolicy(f"{key} must list role names (an empty list for none), got {value!r}")
            text = ",".join(value) or "none"
        else:
            expected = {"boolean": "true or false", "integer": "a whole number", "roles": "a list of role names",
                        "partition": "a partition name", "minutes": "minutes, or text like 8h"}[kind]  # fmt: skip
            raise InvalidPolicy(f"{key} must be {expected}, got {value!r}")
        out.append(f"{key}={text}")
    return out
