"""The session spec: what a job may mount and run, written by the hub, read by the launcher.

It holds no secret (the wrapped token travels separately). Issue-wise, the spawner signs it with the hub's
key and the launcher verifies the signature before it unwraps anything; here it is parsed and checked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..projects.names import InvalidName, validate_name
from ..projects.policy import Policy
from ..projects.roles import Role


class SpecError(ValueError):
    """The session spec is missing, unreadable or inconsistent; the message says which field."""


@dataclass(frozen=True)
class SessionSpec:
    project: str
    user: str
    role: Role
    store_root: Path
    vault_addr: str
    # (owner project, dataset) of every dataset the session mounts read-only: its own and shared ones.
    datasets: tuple[tuple[str, str], ...] = ()
    issued_at: float | None = None
    ttl: int | None = None
    # Datasets whose ciphertext adds up to at most this many MiB are copied into the sandbox's memory at
    # start (faster reads, more memory); 0 = never. Set from the project's memory policy by the spawner.
    stage_limit_mib: int = 0
    # Datasets not staged are read once in the background at start into the page cache (node/prefetch.py):
    # faster first analysis, at the cost of competing with a program that reads at once. The spawner's
    # ``prefetch_datasets``; off when a spec does not say.
    prefetch: bool = False
    # The project's policy (Policy.as_dict()), for the server extension's session file.
    policy: dict = field(default_factory=dict)
    # The hub's KeyStoreConfig names (mount, prefix, policy prefix): the node must look where the hub wrote.
    key_store: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def workspace_writable(self) -> bool:
        # Observers look; only owners and scientists write (authz.Action.WORKSPACE_WRITE).
        return self.role in {Role.DATA_OWNER, Role.DATA_SCIENTIST}

    def workspace_store(self) -> Path:
        return self.store_root / "projects" / self.project / "workspace"

    def dataset_store(self, owner: str, dataset: str) -> Path:
        return self.store_root / "projects" / owner / "datasets" / dataset

    def to_json(self) -> str:
        data = asdict(self)
        data.update(
            role=self.role.value, store_root=str(self.store_root), datasets=[f"{o}/{d}" for o, d in self.datasets]
        )
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SessionSpec:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise SpecError(f"the session spec is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise SpecError("the session spec must be a JSON object")
        try:
            project = validate_name("project", _field(data, "project", str))
            datasets = []
            for ref in data.get("datasets") or []:
                owner, _, dataset = str(ref).partition("/")
                datasets.append((validate_name("project", owner), validate_name("dataset", dataset)))
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
            datasets=tuple(datasets),
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


def _policy(data: object) -> dict:
    if not isinstance(data, dict):
        raise SpecError("session spec: policy must be an object (Policy.as_dict())")
    try:
        return Policy.from_dict(data).as_dict()
    except (TypeError, ValueError) as error:
        raise SpecError(f"session spec: policy: {error}") from None


def _non_negative(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"session spec: {name} must be a whole number >= 0, got {value!r}")
    return value


KEY_STORE_FIELDS = ("kv_mount", "prefix", "policy_prefix")


def _key_store(data: object) -> dict:
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
