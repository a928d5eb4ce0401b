"""A user's request for a headless run, as the hub receives it: parsed strictly and checked against the policy.

The hub is the one place that decides: the command line and the Python client send what the person gave (names
and values as typed, ``-p NAME VALUE`` as its text in ``parameters_json``, an upload they could not send as its
name and size), so that every refusal is an audit event. The notebook path, the parameters and the kernel are
checked by the run contract's own functions (``session.spec``: what the hub accepts, the node accepts); the
resources by the spawner's option parser, against the project's policy, with the same messages a session start
gives. Every refusal is one line that names what was wrong and how to fix it. Whether each parameter is in the
notebook's ``parameters`` cell can only be checked where the notebook can be read: by the runner in the sandbox,
before any cell runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NoReturn

from ..projects.policy import PARSERS, Policy
from ..session.spec import (
    MAX_UPLOAD_BYTES,
    RunRequestError,
    validate_kernel,
    validate_notebook_path,
    validate_parameter_name,
    validate_parameters,
    validate_upload_name,
    validate_upload_size,
)
from ..spawner import options

# What a submission may hold; anything else is refused by name. ``upload`` ({"name", "content"}) replaces
# ``notebook`` for a notebook from outside the workspace. ``parameters`` holds JSON values; ``parameters_json``
# NAME: the value's JSON text as the person typed it (``-p NAME VALUE``), parsed here, so that a value that is not
# JSON (``nan``, ``{bad``, a YAML date) is refused by the hub, naming the parameter, and audited.
FIELDS = ("project", "notebook", "upload", "parameters", "parameters_json", "kernel", "gpus", "cpus", "memory_gb",
          "time")  # fmt: skip
# An upload the client did not send, as {"name", "size", "withheld": WHY} (no content): so that the hub refuses it
# by name, audited, and no more than MAX_UPLOAD_BYTES ever travels.
WITHHELD = ("too large", "not UTF-8")
# Room for an upload (its JSON text escaped inside the request's JSON) besides the parameters.
MAX_BODY = 64 * 1024 + 2 * MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class Upload:
    """A notebook sent with the submission: its file name and text (checked: a notebook nbformat accepts)."""

    name: str
    content: str


def parse_upload(value: object) -> Upload:
    """``{"name": "local.ipynb", "content": "<the notebook's JSON text>"}``; RunRequestError otherwise, also for
    ``{"name", "size", "withheld"}``: a file the client did not send (over the limit, not UTF-8), refused here."""
    if isinstance(value, dict) and set(value) == {"name", "size", "withheld"}:
        _refuse_withheld(validate_upload_name(value["name"]), value["size"], value["withheld"])
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


def _refuse_withheld(name: str, size: object, why: object) -> NoReturn:
    if why == "too large" and isinstance(size, int) and not isinstance(size, bool) and size > MAX_UPLOAD_BYTES:
        raise RunRequestError(
            f"upload {name!r} has {size} bytes: an uploaded notebook may have at most {MAX_UPLOAD_BYTES} (clear its "
            "outputs, keep data in files of the project's workspace or datasets)"
        )
    if why == "not UTF-8":
        raise RunRequestError(
            f"upload {name!r} is not a notebook (not UTF-8 text): open and save it in JupyterLab, or check the file"
        )
    raise RunRequestError(
        f'upload {name!r} came without its content: send {{"name", "content"}} (withheld is for a file over '
        f"{MAX_UPLOAD_BYTES} bytes or not UTF-8: {', '.join(map(repr, WITHHELD))})"
    )


def _no_value_constant(name: str) -> float:
    raise ValueError(name)


def parameter_from_text(name: str, text: object) -> object:
    """``-p NAME VALUE``: VALUE is JSON text (numbers, true/false, null, "quoted text", [lists], {objects}); NaN
    and infinities are not JSON. RunRequestError naming the parameter and the fix otherwise."""
    if not isinstance(text, str):
        raise RunRequestError(
            f"parameter {name}: parameters_json holds each value's JSON text as a string, not {type(text).__name__}"
        )
    try:
        return json.loads(text, parse_constant=_no_value_constant)
    except ValueError:
        hint = json.dumps(text[:20])
        constant = " (NaN and infinities are not JSON numbers)" if text.strip().lower().lstrip("+-.") in (
            "nan", "inf", "infinity") else ""  # fmt: skip
        raise RunRequestError(
            f"parameter {name}: {text[:40]!r} is not JSON{constant}; quote text as JSON ({hint}) or give it as text "
            f"with -r {name} TEXT"
        ) from None


def parse_parameters(values: object, texts: object) -> dict:
    """``parameters`` (JSON values) and ``parameters_json`` (NAME: the value's JSON text) as one dict, checked by
    the run contract's rules (``validate_parameters``); a name in both is refused."""
    if texts is None:
        return validate_parameters(values)
    if not isinstance(texts, dict):
        raise RunRequestError('parameters_json must be a JSON object of NAME: "<the value as JSON text>"')
    merged = dict(validate_parameters(values))
    for name, text in texts.items():
        validate_parameter_name(name)
        if name in merged:
            raise RunRequestError(
                f"parameter {name} is given twice (in parameters and in parameters_json): give each name once"
            )
        merged[name] = parameter_from_text(name, text)
    return validate_parameters(merged)


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
    elif data.get("notebook") in (None, ""):
        raise RunRequestError(
            "give the notebook: a path in the project's workspace (e.g. analysis/sweep.ipynb), or a local notebook "
            "to upload (securehpc run submit PROJECT --upload FILE)"
        )
    else:
        notebook = validate_notebook_path(data.get("notebook"))
    parameters = parse_parameters(data.get("parameters"), data.get("parameters_json"))
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
