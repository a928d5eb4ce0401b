"""A notebook's parameter names, as papermill reads them, and the report that tells the hub about them.

Headless runs take ``-p NAME VALUE`` for names of the notebook's ``parameters`` cell only. The runner checks
that in the sandbox when the job starts (``runs/runner.py``); the hub checks it before anything is submitted,
from an index of names it cannot read itself (the notebook is in the encrypted workspace, the hub holds no
key). The index is kept by the sessions:

- the server extension (``serverext/parameters.py``) reads a notebook's names whenever JupyterLab saves it
  (``parameter_names``: what papermill's ``inspect_notebook``, the function the runner calls, finds; for a
  well-formed notebook without validating all of it) and writes a change to the audit pipe:
  ``{"parameters": {"saved": PATH, "names": [...]}}``, ``{"parameters": {"renamed": OLD, "to": NEW}}`` or
  ``{"parameters": {"deleted": PATH}}`` (paths relative to the workspace);
- the node launcher parses the inner object with ``parse_parameters_report`` and posts it to the hub's
  ``.../servers/<user>/<server>/parameters`` endpoint (``spawner/api.py``), which parses it again and records
  it for the session's project and user (``ProjectService.record_notebook_parameters``).

Names only, never values (defaults in the cell are project data): at most ``MAX_NAMES`` Python identifiers of
at most ``MAX_NAME`` characters each. An uploaded notebook's text is at the hub: ``text_parameter_names`` reads
it with the same function, from a memory file.
"""

from __future__ import annotations

import contextlib
import contextvars
import keyword
import logging
import os
import re
import warnings
from collections.abc import Iterator
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
    tagged ``parameters``: ``()``. NotebookUnreadable when papermill cannot read it.

    A well-formed nbformat 4 notebook at an absolute path is read without nbformat's validation of the whole
    notebook (``_read_well_formed``: what ``inspect_notebook`` would answer, in a fraction of the time, as the
    server extension does this after every save); anything else goes through ``inspect_notebook`` itself."""
    import papermill

    path = str(notebook)
    try:
        with warnings.catch_warnings(), _papermill_quiet():
            warnings.simplefilter("ignore")  # papermill warns about names without .ipynb (a memory file)
            found = _read_well_formed(path)
            if found is None:
                found = list(papermill.inspect_notebook(path))
    except Exception as error:  # nbformat's and papermill's own errors: not JSON, no translator for the kernel
        raise NotebookUnreadable(f"papermill cannot read its parameters cell: {_why(error)}") from None
    return tuple(name for name in found if is_parameter_name(name))[:MAX_NAMES]


def _read_well_formed(path: str) -> list[str] | None:
    """The names ``papermill.inspect_notebook(path)`` finds, or None where only it can say.

    ``inspect_notebook`` formats the path with its built-in parameters (``{...}``), picks an I/O handler by the
    path's start, reads the text, and parses it with ``nbformat.reads(as_version=4)``, which validates the
    whole notebook (most of the time it takes: outputs included), then upgrades it, defaults each cell's tags
    and asks the kernel's translator about the first cell tagged ``parameters``. Validation only logs what is
    invalid and may renumber cell ids, but it raises on some malformed notebooks (cells that are not objects,
    ids that are not strings). So here: the same reading and the same papermill pieces, without the
    validation, and only for an absolute path without braces (the local handler, no formatting) whose text
    is nbformat 4 with a list of cells that are objects with object metadata and string ids, if any.
    Everything else: None. ``tests/session/test_parameter_reports.py`` compares both on a table of notebooks.
    """
    import nbformat
    from nbformat import reader
    from papermill.translators import papermill_translators
    from papermill.utils import find_first_tagged_cell_index, nb_kernel_name, nb_language

    if not path.startswith("/") or "{" in path or "}" in path:
        return None
    with open(path, encoding="utf-8") as file:  # as papermill's local handler reads it
        text = file.read()
    nb = reader.reads(text)  # what nbformat.reads does before its conversion (none for v4) and validation
    if not _well_formed_v4(nb):
        return None
    nb = nbformat.v4.upgrade(nb) or nb  # as papermill's load_notebook_node, whose defaults follow
    for cell in nb.cells:
        if "tags" not in cell.metadata:
            cell.metadata["tags"] = []
    index = find_first_tagged_cell_index(nb, "parameters")  # and then as papermill's _infer_parameters
    if index < 0:
        return []
    translator = papermill_translators.find_translator(nb_kernel_name(nb), nb_language(nb))
    try:
        return [parameter.name for parameter in translator.inspect(nb.cells[index])]
    except NotImplementedError:  # a language papermill cannot inspect: it finds no parameters either
        return []


def _well_formed_v4(nb: Any) -> bool:
    def exact_int(value: object) -> bool:
        return type(value) is int

    cells = nb.get("cells")
    return (
        exact_int(nb.get("nbformat"))
        and nb["nbformat"] == 4
        and exact_int(nb.get("nbformat_minor"))
        and nb["nbformat_minor"] >= 0
        and isinstance(nb.get("metadata"), dict)
        and isinstance(cells, list)
        and all(
            isinstance(cell, dict)
            and isinstance(cell.get("metadata"), dict)
            and ("id" not in cell or isinstance(cell["id"], str))
            for cell in cells
        )
    )


class _PapermillQuiet(logging.Filter):
    """Drops papermill's log records while ``parameter_names`` runs: its translators log a line of the cell they
    cannot parse (``Unable to parse line 2 'a = b = 1'``), a parameter's value, which a session or the hub would
    write into a log outside the project."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("securehpc_papermill_quiet", default=False)
_QUIET_FILTER = _PapermillQuiet()
# A logger's filters see only its own records, not its children's: each logger papermill logs to (2.7).
_PAPERMILL_LOGGERS = tuple(map(logging.getLogger, ("papermill", "papermill.translators", "papermill.utils")))


@contextlib.contextmanager
def _papermill_quiet() -> Iterator[None]:
    for logger in _PAPERMILL_LOGGERS:
        if _QUIET_FILTER not in logger.filters:  # again each time: a logging configuration may have reset them
            logger.addFilter(_QUIET_FILTER)
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


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
