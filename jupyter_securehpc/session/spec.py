"""The session spec: what one session may mount and run, as the hub signs it and the node verifies it.

The spawner constructs it, ``jobspec`` signs ``to_dict()``, the node launcher checks the signature and parses
the same dict back with ``from_dict`` (untrusted: every field is checked, the policy by
``Policy.from_untrusted``), and ``session_file()`` is what the server extension reads in the sandbox. It holds
no secret: the wrapped token travels separately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..projects.policy import InvalidPolicy, Policy
from ..projects.roles import Role
from ..vocabulary import DatasetRef, InvalidName, StoreLayout, validate_name
from .sessionfile import SessionFile

# Ends the signed spec in the batch script's here-document (spawner/script.py); a spec never contains it.
SPEC_END = "SECUREHPC_SPEC_END"
# The names of the hub's KeyStoreConfig that the node needs: it must look where the hub wrote.
KEY_STORE_FIELDS = ("kv_mount", "prefix", "policy_prefix")


class SpecError(ValueError):
    """The session spec is missing, unreadable or inconsistent; the message says which field."""


@dataclass(frozen=True)
class SessionSpec:
    project: str
    user: str
    role: Role
    store_root: Path
    vault_addr: str
    # Every dataset the session mounts read-only, its own and shared ones, in the order the session token lists
    # them. Pairs given here are checked and become DatasetRef (``__post_init__``); on the wire each is the
    # string ``OWNER/DATASET``.
    datasets: tuple[DatasetRef, ...] = ()
    issued_at: float | None = None
    ttl: int | None = None
    # Datasets whose ciphertext adds up to at most this many MiB are copied into the sandbox's memory at
    # start (faster reads, more memory); 0 = never. Set from the project's memory policy by the spawner.
    stage_limit_mib: int = 0
    # Datasets not staged are read once in the background at start into the page cache (node/prefetch.py):
    # faster first analysis, at the cost of competing with a program that reads at once. The spawner's
    # ``prefetch_datasets``; off when a spec does not say.
    prefetch: bool = False
    # The project's policy, for the server extension's session file.
    policy: Policy = field(default_factory=Policy)
    # The hub's KeyStoreConfig names (KEY_STORE_FIELDS).
    key_store: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen: the checked references replace what was given (a DatasetRef is itself an (owner, dataset) pair).
        object.__setattr__(self, "datasets", tuple(DatasetRef.of(*ref) for ref in self.datasets))

    @property
    def workspace_writable(self) -> bool:
        # Observers look; only owners and scientists write (authz.Action.WORKSPACE_WRITE).
        return self.role in {Role.DATA_OWNER, Role.DATA_SCIENTIST}

    def workspace_store(self) -> Path:
        return StoreLayout(self.store_root).workspace(self.project)

    def dataset_store(self, ref: DatasetRef) -> Path:
        return StoreLayout(self.store_root).dataset(ref.owner, ref.dataset)

    def session_file(self) -> SessionFile:
        """What the server extension enforces in the sandbox: who, where, which role and policy."""
        return SessionFile(project=self.project, user=self.user, role=self.role, policy=self.policy)

    def to_dict(self) -> dict:
        """The JSON-ready form that the hub signs and ``from_dict`` reads back."""
        return {
            "project": self.project,
            "user": self.user,
            "role": self.role.value,
            "store_root": str(self.store_root),
            "vault_addr": self.vault_addr,
            "datasets": [str(ref) for ref in self.datasets],
            "issued_at": self.issued_at,
            "ttl": self.ttl,
            "stage_limit_mib": self.stage_limit_mib,
            "prefetch": self.prefetch,
            "policy": self.policy.as_dict(),
            "key_store": dict(self.key_store),
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SessionSpec:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise SpecError(f"the session spec is not JSON: {error}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> SessionSpec:
        """The spec in untrusted data (the node's copy of what the hub signed); SpecError names the field."""
        if not isinstance(data, dict):
            raise SpecError("the session spec must be a JSON object")
        try:
            project = validate_name("project", _field(data, "project", str))
            datasets = tuple(DatasetRef.parse(ref) for ref in data.get("datasets") or [])
            role = Role.parse(_field(data, "role", str))
        except (InvalidName, ValueError) as error:
            raise SpecError(f"session spec: {error}") from None
        store_root = Path(_field(data, "store_root", str))
        if not store_root.is_absolute():
            raise SpecError(f"session spec: store_root {store_root} is not an absolute path")
        issued_at, ttl = data.get("issued_at"), data.get("ttl")
        return cls(
            project=project,
            user=_field(data, "user", str),
            role=role,
            store_root=store_root,
            vault_addr=_field(data, "vault_addr", str),
            datasets=datasets,
            issued_at=float(issued_at) if issued_at is not None else None,
            ttl=int(ttl) if ttl is not None else None,
            stage_limit_mib=_non_negative(data.get("stage_limit_mib", 0), "stage_limit_mib"),
            prefetch=_flag(data.get("prefetch", False), "prefetch"),
            policy=_policy(data.get("policy") or {}),
            key_store=_key_store(data.get("key_store") or {}),
            extra=data.get("extra") or {},
        )


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"session spec: {name} must be true or false, not {value!r}")
    return value


def _policy(data: object) -> Policy:
    try:
        return Policy.from_untrusted(data)
    except InvalidPolicy as error:
        raise SpecError(f"session spec: {error}") from None


def _non_negative(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"session spec: {name} must be a whole number >= 0, got {value!r}")
    return value


def _key_store(data: object) -> dict[str, str]:
    if not isinstance(data, dict) or set(data) - set(KEY_STORE_FIELDS):
        raise SpecError(f"session spec: key_store may hold only {', '.join(KEY_STORE_FIELDS)}")
    if not all(isinstance(value, str) for value in data.values()):
        raise SpecError("session spec: key_store values must be strings")
    return dict(data)


def _field(data: dict, name: str, kind: type) -> object:
    value = data.get(name)
    if not isinstance(value, kind) or value == "":
        raise SpecError(f"session spec: {name!r} is missing or not a {kind.__name__}")
    return value
