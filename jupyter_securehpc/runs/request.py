"""A user's request for a headless run, as the hub receives it: parsed strictly and checked against the policy.

The notebook path, the parameters and the kernel are checked by the run contract's own functions
(``session.spec``: what the hub accepts, the node accepts); the resources by the spawner's option parser, against
the project's policy, with the same messages a session start gives. Every refusal is one line that names what was
wrong and how to fix it. Whether each parameter is in the notebook's ``parameters`` cell can only be checked
where the notebook can be read: by the runner in the sandbox, before any cell runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..projects.policy import PARSERS, Policy
from ..session.spec import (
    MAX_UPLOAD_BYTES,
    RunRequestError,
    validate_kernel,
    validate_notebook_path,
    validate_parameters,
    validate_upload_name,
    validate_upload_size,
)
from ..spawner import options

# What a submission may hold; anything else is refused by name. ``upload`` ({"name", "content"}) replaces
# ``notebook`` for a notebook from outside the workspace.
FIELDS = ("project", "notebook", "upload", "parameters", "kernel", "gpus", "cpus", "memory_gb", "time")
# Room for an upload (its JSON text escaped inside the request's JSON) besides the parameters.
MAX_BODY = 64 * 1024 + 2 * MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class Upload:
    """A notebook sent with the submission: its file name and text (checked: a notebook nbformat accepts)."""

    name: str
    content: str


def parse_upload(value: object) -> Upload:
    """``{"name": "local.ipynb", "content": "<the notebook's JSON text>"}``; RunRequestError otherwise."""
    if not isinstance(value, dict) or set(value) != {"name", "content"} or not isinstance(value["content"], str):
        raise RunRequestError('upload must be an object {"name": "NAME.ipynb", "content": "<the notebook\'s text>"}')
    name = validate_upload_name(value["name"])
    content = validate_upload_size(value["content"])
    import nbformat

    try:
        document = nbformat.reads(content, as_version=4)
        nbformat.validate(document)
    except Exception as error:  # nbformat's own errors: not JSON, not a notebook, not valid against its schema
        detail = " ".join(str(error).split())[:120]
        raise RunRequestError(
            f"upload {name!r} is not a valid notebook (nbformat: {type(error).__name__}: {detail}); open and save "
            "it in JupyterLab, or check the file"
        ) from None
    return Upload(name, content)


@dataclass(frozen=True)
class RunRequest:
    project: str
    notebook: str
    parameters: dict
    kernel: str | None
    upload: Upload | None
    gpus: int
    cpus: int
    memory_gb: int
    minutes: int

    @property
    def resources(self) -> dict[str, int]:
        return {"gpus": self.gpus, "cpus": self.cpus, "memory_gb": self.memory_gb, "minutes": self.minutes}


def _no_constant(name: str) -> float:
    raise RunRequestError(f"{name} is not JSON: give numbers as numbers, or the text as a JSON string")


def parse_body(body: bytes) -> dict:
    """The request's JSON object (``NaN`` and ``Infinity`` are not JSON and are refused)."""
    if len(body) > MAX_BODY:
        raise RunRequestError(
            f"the request is larger than {MAX_BODY} bytes: keep parameters small (data in files) and an uploaded "
            f"notebook at most {MAX_UPLOAD_BYTES} bytes"
        )
    try:
        data = json.loads(body or b"{}", parse_constant=_no_constant)
    except RunRequestError:
        raise
    except ValueError:
        raise RunRequestError("the request is not JSON: send an object with project, notebook, parameters") from None
    if not isinstance(data, dict):
        raise RunRequestError("the request must be a JSON object with project, notebook, parameters")
    return data


def requested_project(data: dict) -> str:
    project = data.get("project")
    if not isinstance(project, str) or not project:
        raise RunRequestError("name the project the notebook is in")
    return project


def _minutes(value: object) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RunRequestError(f"time {str(value)[:20]!r}: give minutes, or a number with m, h or d (e.g. 90, 2h)")
    try:
        return PARSERS["max_wall_time"](str(value))
    except ValueError as error:
        raise RunRequestError(f"time {str(value)[:20]!r}: {error}") from None


def parse(data: dict, policy: Policy) -> RunRequest:
    """The request of a member of ``data["project"]`` whose policy is ``policy``; RunRequestError otherwise."""
    unknown = sorted(str(key)[:40] for key in set(data) - set(FIELDS))
    if unknown:
        raise RunRequestError(f"unknown fields {', '.join(map(repr, unknown))}: a run takes {', '.join(FIELDS)}")
    project = requested_project(data)
    upload = None
    if data.get("upload") is not None:
        if data.get("notebook") is not None:
            raise RunRequestError("give either a notebook of the workspace or an upload, not both")
        upload = parse_upload(data["upload"])
        notebook = f"{upload.name}"  # where it goes is decided with the run's id (session.spec.upload_notebook_path)
    else:
        notebook = validate_notebook_path(data.get("notebook"))
    parameters = validate_parameters(data.get("parameters"))
    kernel = validate_kernel(data.get("kernel"))
    minutes = _minutes(data.get("time"))
    resources = {
        "project": project,
        # A run asks for no GPU unless it says so (sessions default to one where the policy allows any).
        "gpus": data.get("gpus") if data.get("gpus") not in (None, "") else 0,
        "cpus": data.get("cpus"),
        "memory_gb": data.get("memory_gb"),
        "minutes": minutes,
    }
    for name in ("gpus", "cpus", "memory_gb"):
        value = resources[name]
        if isinstance(value, bool) or not isinstance(value, (int, str, type(None))):
            raise RunRequestError(f"{name} must be a whole number, not {str(value)[:20]!r}")
    try:
        granted = options.parse(
            {key: value for key, value in resources.items() if value is not None}, {project: policy}
        )
    except options.OptionsError as error:
        message = str(error).replace("minutes must be", "time (minutes) must be")
        raise RunRequestError(message) from None
    return RunRequest(
        project=project,
        notebook=notebook,
        parameters=parameters,
        kernel=kernel,
        upload=upload,
        gpus=granted.gpus,
        cpus=granted.cpus,
        memory_gb=granted.memory_gb,
        minutes=granted.minutes,
    )
