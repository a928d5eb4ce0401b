"""A notebook's parameter names, as papermill reads them, and the report that tells the hub about them.

Headless runs take ``-p NAME VALUE`` for names of the notebook's ``parameters`` cell only. The runner checks
that in the sandbox when the job starts (``runs/runner.py``); the hub checks it before anything is submitted,
from an index of names it cannot read itself (the notebook is in the encrypted workspace, the hub holds no
key). The index is kept by the sessions:

- the server extension (``serverext/parameters.py``) reads a notebook's names whenever JupyterLab saves it
  (``parameter_names``: papermill's own ``inspect_notebook``, the function the runner calls) and writes a
  change to the audit pipe: ``{"parameters": {"saved": PATH, "names": [...]}}``, ``{"parameters":
  {"renamed": OLD, "to": NEW}}`` or ``{"parameters": {"deleted": PATH}}`` (paths relative to the workspace);
- the node launcher parses the inner object with ``parse_parameters_report`` and posts it to the hub's
  ``.../servers/<user>/<server>/parameters`` endpoint (``spawner/api.py``), which parses it again and records
  it for the session's project and user (``ProjectService.record_notebook_parameters``).

Names only, never values (defaults in the cell are project data): at most ``MAX_NAMES`` Python identifiers of
at most ``MAX_NAME`` characters each. An uploaded notebook's text is at the hub: ``text_parameter_names`` reads
it with the same function, from a memory file.
"""

from __future__ import annotations

import keyword
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .reports import ReportError, _json
from .spec import MAX_NOTEBOOK_PATH, RunRequestError, validate_notebook_path

KIND_PARAMETERS = "parameters"
MAX_NAMES = 100
MAX_NAME = 64
MAX_PARAMETERS_BODY = 16 * 1024
# The key of a parameters change on the server extension's audit pipe (an audit event has no such key).
PIPE_KEY = "parameters"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class NotebookUnreadable(ValueError):
    """papermill could not read the notebook or its parameters cell; the message says why (no cell content)."""


def is_parameter_name(value: object) -> bool:
    """A name papermill can inject and the run contract takes: a Python identifier, no keyword, <= MAX_NAME."""
    return isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value) and len(value) <= MAX_NAME


def parameter_names(notebook: str | Path) -> tuple[str, ...]:
    """The names the notebook's ``parameters`` cell defines, in the cell's order (papermill's
    ``inspect_notebook``, as the runner uses it), bounded: only valid names, at most ``MAX_NAMES``. No cell
    tagged ``parameters``: ``()``. NotebookUnreadable when papermill cannot read it."""
    import papermill

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # papermill warns about names without .ipynb (a memory file)
            found = papermill.inspect_notebook(str(notebook))
    except Exception as error:  # nbformat's and papermill's own errors: not JSON, no translator for the kernel
        raise NotebookUnreadable(f"papermill cannot read its parameters cell: {_why(error)}") from None
    return tuple(name for name in found if is_parameter_name(name))[:MAX_NAMES]


def _why(error: Exception) -> str:
    """What papermill said, when it is papermill's own sentence about the notebook's kernel (never a quote of
    the notebook, as nbformat's validation errors may hold); else the error's class."""
    text = str(error)
    if type(error).__module__.startswith("papermill") or text.startswith("No kernel name found"):
        return " ".join(text.split())[:200] + " (open the notebook in JupyterLab, choose its kernel and save it)"
    return type(error).__name__


def text_parameter_names(text: str) -> tuple[str, ...]:
    """``parameter_names`` of a notebook's text (an upload at the hub), read from a memory file: the text is
    never written to a disk."""
    fd = os.memfd_create("notebook.ipynb", os.MFD_CLOEXEC)
    try:
        os.write(fd, text.encode())
        return parameter_names(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ParametersChange:
    """One change to the index: a notebook saved with its names, a file or folder renamed, or deleted."""

    path: str
    names: tuple[str, ...] | None = None  # saved
    renamed_to: str | None = None  # renamed
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        if self.names is not None:
            return {"saved": self.path, "names": list(self.names)}
        if self.renamed_to is not None:
            return {"renamed": self.path, "to": self.renamed_to}
        return {"deleted": self.path}


def workspace_path(value: object, what: str) -> str:
    """A file or folder path relative to the workspace, as the contents API names it: no leading ``/``, no
    empty, ``.``, ``..`` or hidden part, no control characters or backslashes."""
    if not isinstance(value, str) or not value or len(value) > MAX_NOTEBOOK_PATH:
        raise ReportError(f"{what} must be a path in the workspace of 1 to {MAX_NOTEBOOK_PATH} characters")
    if _CONTROL.search(value) or "\\" in value or value.startswith("/"):
        raise ReportError(f"{what} must be a relative path without control characters or backslashes")
    if any(part in ("", ".", "..") or part.startswith(".") for part in value.split("/")):
        raise ReportError(f"{what} must not have empty, '.', '..' or hidden parts")
    return value


def parse_parameters_change(data: object) -> ParametersChange:
    """The change of an already decoded report: exactly one of the three shapes, every field checked."""
    if not isinstance(data, dict):
        raise ReportError("the report must be a JSON object")
    keys = sorted(data)
    if keys == ["names", "saved"]:
        path = workspace_path(data["saved"], "saved")
        try:
            validate_notebook_path(path)
        except RunRequestError:
            raise ReportError("saved must be a notebook's path (.ipynb) in the workspace") from None
        names = data["names"]
        if (
            not isinstance(names, list)
            or len(names) > MAX_NAMES
            or not all(is_parameter_name(name) for name in names)
            or len(set(names)) != len(names)
        ):
            raise ReportError(
                f"names must be a list of at most {MAX_NAMES} distinct Python identifiers of at most {MAX_NAME} "
                "characters"
            )
        return ParametersChange(path, names=tuple(names))
    if keys == ["renamed", "to"]:
        return ParametersChange(workspace_path(data["renamed"], "renamed"), renamed_to=workspace_path(data["to"], "to"))
    if keys == ["deleted"]:
        return ParametersChange(workspace_path(data["deleted"], "deleted"), deleted=True)
    raise ReportError(
        'the report must be exactly {"saved": PATH, "names": [...]}, {"renamed": PATH, "to": PATH} or {"deleted": PATH}'
    )


def parse_parameters_report(body: bytes) -> ParametersChange:
    """A parameters report as the hub's endpoint takes it (at most ``MAX_PARAMETERS_BODY`` bytes)."""
    return parse_parameters_change(_json(body, MAX_PARAMETERS_BODY))


def parameters_report(change: ParametersChange) -> dict[str, Any]:
    """The payload the launcher posts, exactly as ``parse_parameters_report`` takes it."""
    return change.as_dict()
