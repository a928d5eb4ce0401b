"""The session spec: what one session may mount and run, as the hub signs it and the node verifies it.

The spawner constructs it, ``jobspec`` signs ``to_dict()``, the node launcher checks the signature and parses
the same dict back with ``from_dict`` (untrusted: every field is checked, the policy by
``Policy.from_untrusted``), and ``session_file()`` is what the server extension reads in the sandbox. It holds
no secret: the wrapped token travels separately. A headless run is a session spec with a ``RunSpec`` (notebook,
parameters, kernel), checked by the same parser on the node and, for a user's request, at the hub.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..principals.names import InvalidAccountName, validate_account_name
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
    # A headless run (``securehpc-node run``): the notebook and its parameters. None: a session or ``exec``.
    run: RunSpec | None = None
    # The Unix account the job runs as: ``user``'s principal in ``project`` (the grant's, from the projects
    # database), never the person's own login account. The node refuses to start under any other account.
    principal: str = ""

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
            "principal": self.principal,
            # Only for runs: the spec of a session keeps the form that nodes of earlier releases read.
            **({"run": self.run.to_dict()} if self.run is not None else {}),
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
            run=RunSpec.from_dict(data["run"]) if data.get("run") is not None else None,
            principal=_principal(data.get("principal")),
        )


def _principal(value: object) -> str:
    try:
        return validate_account_name(value)
    except InvalidAccountName:
        raise SpecError(
            f"session spec: principal {value!r} is missing or not a project account name (the hub names the "
            "principal the job runs as)"
        ) from None


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


# --- headless runs ------------------------------------------------------------------------------------------
#
# A run's notebook, parameters and kernel, as the hub signs them inside the session spec (``SessionSpec.run``)
# and the node's runner reads them in the sandbox (``runs/runner.py``). The same checks parse a user's request
# at the hub (``runs/request.py``): a request the hub accepts is a spec the node accepts.

# Parameters are data, never code: JSON values (papermill writes them into its own parameters cell), bounded.
MAX_PARAMETERS = 100
MAX_PARAMETERS_BYTES = 32 * 1024
MAX_PARAMETER_DEPTH = 10
MAX_NOTEBOOK_PATH = 1024
RUNS_FOLDER = "runs"  # in the workspace: runs/RUN_ID/ holds a run's executed notebook and its log
RUN_LOG = "run.log"
# A notebook from outside the workspace (an upload, decided by the policy's upload_roles) travels inside the
# signed spec; the runner writes it to runs/RUN_ID/input/NAME.ipynb before running it (the executed copy is
# runs/RUN_ID/NAME.ipynb). Bounded so that the signed spec stays well inside Slurm's batch script limit (4 MB).
UPLOAD_FOLDER = "input"
MAX_UPLOAD_BYTES = 1024 * 1024
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 ._+-]{0,120}\.ipynb")
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_KERNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class RunRequestError(ValueError):
    """A run's notebook, parameters or kernel cannot be accepted; the message names what and how to fix it."""


def validate_notebook_path(value: object) -> str:
    """A notebook path inside the workspace: relative, no ``..``, no hidden parts, ending in ``.ipynb``."""
    if not isinstance(value, str) or not value:
        raise RunRequestError("give the notebook as a path inside the project's workspace, e.g. analysis/sweep.ipynb")
    shown = repr(value[:80])
    if len(value) > MAX_NOTEBOOK_PATH or _CONTROL.search(value) or "\\" in value:
        raise RunRequestError(
            f"notebook path {shown} is not usable: at most {MAX_NOTEBOOK_PATH} characters, no control characters "
            "or backslashes"
        )
    if value.startswith("/"):
        raise RunRequestError(
            f"notebook path {shown} is outside the project's workspace: give it relative to the workspace "
            "(as JupyterLab's file browser shows it), e.g. analysis/sweep.ipynb"
        )
    parts = value.split("/")
    if ".." in parts:
        raise RunRequestError(f"notebook path {shown} contains '..': a run's notebook must be inside the workspace")
    if any(part in ("", ".") for part in parts):
        raise RunRequestError(f"notebook path {shown} has an empty or '.' part: write it as JupyterLab shows it")
    if any(part.startswith(".") for part in parts):
        raise RunRequestError(f"notebook path {shown} has a hidden part (starting with '.'): not in the workspace")
    if not value.endswith(".ipynb"):
        raise RunRequestError(f"notebook path {shown} is not a notebook (.ipynb)")
    return value


def validate_kernel(value: object) -> str | None:
    """A kernel name as ``jupyter kernelspec list`` shows it, or None for the notebook's own kernel."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _KERNEL.fullmatch(value):
        raise RunRequestError(
            f"kernel {str(value)[:80]!r} is not a kernel name (letters, digits, '.', '_', '-', e.g. python3)"
        )
    return value


def validate_upload_name(value: object) -> str:
    """An uploaded notebook's file name (no folder): letters, digits, ``._+-`` and spaces, ending in ``.ipynb``."""
    if not isinstance(value, str) or not _UPLOAD_NAME.fullmatch(value):
        raise RunRequestError(
            f"upload name {str(value)[:80]!r} is not usable: a file name ending in .ipynb (letters, digits, spaces "
            "and ._+- only, at most 127 characters, no folder); rename the local file"
        )
    return value


def upload_notebook_path(run_id: str, name: str) -> str:
    """Where the runner writes an uploaded notebook in the workspace (relative to it)."""
    return f"{RUNS_FOLDER}/{run_id}/{UPLOAD_FOLDER}/{validate_upload_name(name)}"


def validate_upload_size(content: str) -> str:
    size = len(content.encode())
    if size > MAX_UPLOAD_BYTES:
        raise RunRequestError(
            f"the uploaded notebook has {size} bytes: at most {MAX_UPLOAD_BYTES} (clear its outputs, keep data in "
            "files of the project's workspace or datasets)"
        )
    return content


def validate_run_id(value: object) -> str:
    if not isinstance(value, str) or not _RUN_ID.fullmatch(value):
        raise RunRequestError(f"{str(value)[:40]!r} is not a run id")
    return value


def _json_value(value: object, where: str, depth: int) -> None:
    if depth > MAX_PARAMETER_DEPTH:
        raise RunRequestError(f"parameter {where} is nested deeper than {MAX_PARAMETER_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise RunRequestError(f"parameter {where} is too large a number (at most 2**63 - 1 in size)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RunRequestError(f"parameter {where} is not a JSON number (NaN and infinities are not JSON)")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _json_value(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RunRequestError(f"parameter {where} has a key that is not a string: JSON objects have text keys")
            _json_value(item, f"{where}[{key[:20]!r}]", depth + 1)
        return
    raise RunRequestError(
        f"parameter {where} is a {type(value).__name__}, not a JSON value (a string, number, true/false, null, list "
        "or object)"
    )


def validate_parameter_name(name: object) -> str:
    """A parameter's name: an ASCII Python identifier, not a keyword, not ``__...``, at most 64 characters.

    ASCII only: a name with a look-alike letter (U+0430, Cyrillic a, for a Latin a) is a valid Python identifier
    but names another variable than the one the notebook defines."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or len(name) > 64:
        raise RunRequestError(
            f"parameter name {str(name)[:40]!r} is not a Python identifier (letters, digits and '_', not "
            "starting with a digit, not a keyword, at most 64 characters)"
        )
    if not name.isascii():
        raise RunRequestError(
            f"parameter name {name[:40]!r} ({name[:40]!a}) has letters outside ASCII (a look-alike of a "
            "Latin letter?): parameter names are a-z, A-Z, digits and '_'; type it again"
        )
    if name.startswith("__"):
        raise RunRequestError(f"parameter name {name!r} starts with '__': such names are Python's own")
    return name


def validate_parameters(value: object) -> dict:
    """Parameters as papermill takes them: ASCII Python identifiers mapped to JSON values, within the size limits.

    Whether each name is in the notebook's ``parameters`` cell is checked at the hub before submission, against
    the names the project's sessions reported when the notebook was saved (``projects/notebooks.py``; the hub never
    holds a project's key), and again where the notebook can be read: by the runner in the sandbox, before any cell
    runs."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunRequestError("parameters must be a JSON object of NAME: VALUE")
    if len(value) > MAX_PARAMETERS:
        raise RunRequestError(f"{len(value)} parameters: at most {MAX_PARAMETERS}")
    for name, item in value.items():
        _json_value(item, repr(validate_parameter_name(name)), 1)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_PARAMETERS_BYTES:
        raise RunRequestError(f"the parameters take {size} bytes as JSON: at most {MAX_PARAMETERS_BYTES}")
    return dict(value)


@dataclass(frozen=True)
class RunSpec:
    """One headless run: which notebook of the workspace, with which parameters, in which kernel."""

    run_id: str
    notebook: str  # relative to the workspace (``/project`` in the sandbox)
    parameters: dict = field(default_factory=dict)
    kernel: str | None = None  # None: the notebook's own kernel
    upload: str | None = None  # an uploaded notebook's text; then ``notebook`` is where the runner writes it

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_notebook_path(self.notebook)
        validate_parameters(self.parameters)
        validate_kernel(self.kernel)
        if self.upload is not None:
            if not isinstance(self.upload, str):
                raise RunRequestError("an uploaded notebook must be the notebook's text (JSON)")
            validate_upload_size(self.upload)
            prefix = f"{RUNS_FOLDER}/{self.run_id}/{UPLOAD_FOLDER}/"
            if not self.notebook.startswith(prefix):
                raise RunRequestError(f"an uploaded notebook is written to {prefix}NAME.ipynb, not {self.notebook!r}")
            validate_upload_name(self.notebook.removeprefix(prefix))

    @property
    def output_dir(self) -> str:
        """Where the executed notebook and the run's log go, relative to the workspace."""
        return f"{RUNS_FOLDER}/{self.run_id}"

    @property
    def output_notebook(self) -> str:
        return f"{self.output_dir}/{PurePosixPath(self.notebook).name}"

    @property
    def log_file(self) -> str:
        return f"{self.output_dir}/{RUN_LOG}"

    def to_dict(self) -> dict:
        data = {"run_id": self.run_id, "notebook": self.notebook, "parameters": dict(self.parameters),
                "kernel": self.kernel}  # fmt: skip
        if self.upload is not None:  # absent otherwise: a run without upload reads as before
            data["upload"] = self.upload
        return data

    @classmethod
    def from_dict(cls, data: object) -> RunSpec:
        """The run in untrusted data (the signed spec on the node, the run file in the sandbox)."""
        if not isinstance(data, dict) or set(data) - {"run_id", "notebook", "parameters", "kernel", "upload"}:
            raise SpecError("run spec: must be an object of run_id, notebook, parameters, kernel (and upload)")
        try:
            return cls(
                run_id=data.get("run_id"),
                notebook=data.get("notebook"),
                parameters={} if data.get("parameters") is None else data["parameters"],
                kernel=data.get("kernel"),
                upload=data.get("upload"),
            )
        except RunRequestError as error:
            raise SpecError(f"run spec: {error}") from None
