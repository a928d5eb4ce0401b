"""Tell the hub the parameter names of each notebook JupyterLab saves, renames or deletes (headless runs' index).

The hub cannot read the encrypted workspace, yet refuses a run's unknown parameter names before anything is
submitted (``projects/notebooks.py``). So the session tells it, for every notebook saved through the contents
API (a post-save hook: new, saved, copied and uploaded notebooks), the names its ``parameters`` cell defines,
read with papermill as the runner reads them (``session.parameters.parameter_names``); and for every rename or
delete through the contents API (what the contents manager emits as its ``rename`` and ``delete`` events), the
paths that moved or went.

The contents manager's ``emit`` is wrapped rather than listened to on the server's event logger: a listener on
the contents schema makes the logger copy, validate and schedule a task for every event, ``get`` included,
which is one per entry of every folder listing (a 200-entry listing took half as long again).

A change is one line on the launcher's audit pipe (``sink.PipeSink.parameters``), which the launcher parses
strictly and posts with the session's report secret; the hub records it for this session's project and user
only, and only for a role that may write the workspace. Names only, never values; bounded (at most
``MAX_NAMES`` identifiers of at most ``MAX_NAME`` characters). A notebook papermill cannot read is reported as
deleted: the hub then refuses its runs with parameters until it is saved readable again.

Not seen here: files a kernel or a terminal writes, renames or deletes, and a checkpoint restored over a notebook.
The runner checks the names once more in the sandbox when the job starts.
"""

from __future__ import annotations

import logging
import os
from functools import wraps
from typing import Any

from jupyter_securehpc.session.parameters import (
    NotebookUnreadable,
    ParametersChange,
    parameter_names,
    parameters_report,
    workspace_path,
)
from jupyter_securehpc.session.reports import ReportError

from .sink import AuditSink


class ParameterIndexReporter:
    """Reports changes of the session's notebooks to the launcher's pipe (see the module docstring)."""

    def __init__(self, sink: AuditSink, root_real: str, log: logging.Logger) -> None:
        self.sink = sink
        self.root_real = root_real
        self.log = log

    def install(self, contents_manager: Any) -> None:
        """Hook into ``contents_manager``: its post-save hooks, and its ``emit`` (see the module docstring)."""
        contents_manager.register_post_save_hook(self.post_save)
        emit = contents_manager.emit

        @wraps(emit)
        def emit_and_report(data: dict) -> None:
            emit(data)  # jupyter-server's own (it returns at once while nobody listens to the event logger)
            self.contents_event(data)

        # An instance attribute: ContentsManager.delete and .rename call ``self.emit`` after they succeeded.
        contents_manager.emit = emit_and_report

    # --- the contents manager's calls ------------------------------------------------------------------------

    def post_save(self, model: dict, os_path: str, contents_manager: Any) -> None:
        """jupyter-server's post-save hook (after every save through the contents API)."""
        if model.get("type") != "notebook" or not os_path.endswith(".ipynb"):
            return
        path = self._relative(os_path)
        if path is None:
            return
        try:
            names: tuple[str, ...] | None = parameter_names(os_path)
        except NotebookUnreadable as error:
            self.log.warning("securehpc: %s for headless runs: %s", path, error)
            names = None
        # Every save, also with the names of the last one: another member's session may have saved the notebook
        # with other names meanwhile, and the hub must have the names of the file as it is now.
        if names is None:
            self._send(ParametersChange(path, deleted=True))
        else:
            self._send(ParametersChange(path, names=names))

    def contents_event(self, data: dict) -> None:
        """The contents manager's events: ``rename`` (``source_path`` to ``path``) and ``delete``; others pass."""
        action = data.get("action") if isinstance(data, dict) else None
        if action == "rename":
            old, new = str(data.get("source_path", "")).strip("/"), str(data.get("path", "")).strip("/")
            self._send(ParametersChange(old, renamed_to=new))
        elif action == "delete":
            path = str(data.get("path", "")).strip("/")
            self._send(ParametersChange(path, deleted=True))

    # --- helpers ---------------------------------------------------------------------------------------------

    def _relative(self, os_path: str) -> str | None:
        real = os.path.realpath(os_path)
        if os.path.commonpath([self.root_real, real]) != self.root_real:
            return None
        return os.path.relpath(real, self.root_real).replace(os.sep, "/")

    def _send(self, change: ParametersChange) -> None:
        try:
            # The paths as the launcher and the hub will check them: a path they refuse is not sent.
            workspace_path(change.path, "path")
            if change.renamed_to is not None:
                workspace_path(change.renamed_to, "to")
        except ReportError:
            return
        try:
            self.sink.parameters(parameters_report(change))
        except (OSError, ValueError) as error:
            self.log.warning("securehpc: could not tell the launcher about %s: %s", change.path, error)
