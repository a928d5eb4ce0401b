"""``ProjectService``'s index of notebook parameter names: what sessions report when JupyterLab saves a notebook,
and the check of a run's parameter names against it before anything is submitted.

The hub holds no project key and cannot read a notebook of the encrypted workspace. Sessions can: their server
extension reads a saved notebook's ``parameters`` cell with papermill (``session/parameters.py``) and the node
launcher reports the names (never values) with the session's report secret. The hub records a report for the
session's own project and user only, and only while that user's role may write the workspace (an observer's
session cannot change the index); renames and deletes move and drop entries.

At submission (``submit_run``), a run with parameters is checked here, deny by default:

- a notebook of the workspace in the index: every name must be one its parameters cell defined when it was last
  saved, or the run is refused naming the unknown and the known names (400);
- a notebook never saved in a session since the index exists: refused (403), telling the person to open and
  save it once in a JupyterLab session of the project, or to run it without parameters;
- an upload: the hub has its text and reads its parameters cell with the same function.

The runner checks the names once more in the sandbox when the job starts (a notebook changed by a kernel or a
terminal since its last save in JupyterLab). Only members who may submit runs ever see the names (in a refusal);
everyone else gets the refusals of ``submit_run`` that come before this check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, delete, or_, select

from ..session.parameters import NotebookUnreadable, ParametersChange, text_parameter_names
from .authz import Action, Subject, decide
from .model import NotebookParameters, Project, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..runs.request import RunRequest

ACTION = "notebook.parameters"


def _under(path: str) -> ColumnElement[bool]:
    """The entry ``path`` itself and every entry in the folder ``path``."""
    return or_(NotebookParameters.path == path, NotebookParameters.path.startswith(path + "/", autoescape=True))


def _listed(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names) if names else "nothing (no cell is tagged 'parameters')"


class NotebookService:
    """The notebook parameter index part of ``ProjectService`` (it provides ``_transaction``, ``_project``,
    ``_role``, ``_policy``, ``_event``, ``_require_admin``, ``_authorize`` and ``actor``)."""

    # --- the hub records what a session reports ------------------------------------------------------------
    def record_notebook_parameters(self, project_name: str, user: str, change: ParametersChange) -> None:
        """Apply a session's report (already parsed strictly) to ``project_name``'s index, for ``user``'s session
        of it; hub only. Refused (audited, nothing changed) when ``user`` may not write the workspace now."""
        from .service import Refused

        obj = f"notebooks:{project_name}/{change.path}"[:1100]
        self._require_admin(ACTION, obj, "record sessions' notebook parameters")
        with self._transaction() as session:
            project = self._project(session, project_name, Action.WORKSPACE_WRITE)
            role = self._role(session, project, user)
            decision = decide(Subject(user), Action.WORKSPACE_WRITE, role, self._policy(project))
            if not decision:
                reason = f"{user}'s session may not change the notebook index of {project.name}: {decision.reason}"
                self._event(ACTION, obj, "denied", project.name, reason, user=user)
                raise Refused(reason)
            changed = self._apply(session, project, user, change)
        if not changed:
            return  # saved with the names the index has (JupyterLab's autosaves), or nothing to move: no event
        what = "saved" if change.names is not None else "renamed" if change.renamed_to is not None else "deleted"
        details = {"names": len(change.names)} if change.names is not None else {"entries": changed}
        if change.renamed_to is not None:
            details["to"] = change.renamed_to
        self._event(ACTION, obj, "allowed", project_name, f"{what} in {user}'s session ({decision.reason})",
                    user=user, **details)  # fmt: skip

    @staticmethod
    def _apply(session: Session, project: Project, user: str, change: ParametersChange) -> int:
        """The change on the index; how many entries it changed (a save with the names the entry has: none)."""
        if change.names is not None:
            entry = session.scalar(
                select(NotebookParameters).where(
                    NotebookParameters.project_id == project.id, NotebookParameters.path == change.path
                )
            )
            if entry is None:
                entry = NotebookParameters(project_id=project.id, path=change.path)
                session.add(entry)
            elif entry.names == list(change.names):
                entry.updated_at, entry.reported_by = utcnow(), user
                return 0
            entry.names, entry.updated_at, entry.reported_by = list(change.names), utcnow(), user
            return 1
        entries = session.scalars(
            select(NotebookParameters).where(NotebookParameters.project_id == project.id, _under(change.path))
        ).all()
        if change.renamed_to is None:
            for entry in entries:
                session.delete(entry)
            return len(entries)
        new = change.renamed_to
        if new == change.path:
            return 0
        # A file or folder moved onto a place the index knows: what was there is gone (the server replaced it).
        session.execute(
            delete(NotebookParameters).where(NotebookParameters.project_id == project.id, _under(new))
        )  # fmt: skip
        session.flush()
        for entry in entries:
            moved = new + entry.path[len(change.path) :]
            if moved.endswith(".ipynb"):
                entry.path = moved
            else:
                session.delete(entry)  # a notebook renamed to another kind of file is no notebook any more
        return len(entries)

    def notebook_parameters(self, project_name: str, path: str) -> dict | None:
        """The index's entry for a notebook (``names``, ``updated_at``, ``reported_by``), None if there is none;
        for the project's members and hub admins."""
        with self.sessions() as session:
            project = self._project(session, project_name, Action.RUN_READ)
            self._authorize(session, Action.RUN_READ, project, f"notebooks:{project_name}/{path}"[:1100])
            entry = session.scalar(
                select(NotebookParameters).where(
                    NotebookParameters.project_id == project.id, NotebookParameters.path == path
                )
            )
            if entry is None:
                return None
            return {"path": entry.path, "names": list(entry.names), "updated_at": entry.updated_at,
                    "reported_by": entry.reported_by}  # fmt: skip

    # --- submission: the names of a run, checked before anything is submitted --------------------------------
    def _check_run_parameters(self, session: Session, project: Project, request: RunRequest, obj: str) -> None:
        """Refuse (audited; ``_run_refused``) a run whose parameter names its notebook does not define, or whose
        notebook's names the hub does not know. A run without parameters is not checked."""
        if not request.parameters:
            return
        given = list(request.parameters)
        if request.upload is not None:
            where = f"the uploaded {request.upload.name}"
            try:
                known = list(text_parameter_names(request.upload.content))
            except NotebookUnreadable as error:
                reason = f"{where}: {error}; nothing was submitted"
                raise self._run_refused(obj, project.name, reason, bad_input=True) from None
            saved = ""
        else:
            where = f"{project.name}'s {request.notebook}"
            entry = session.scalar(
                select(NotebookParameters).where(
                    NotebookParameters.project_id == project.id, NotebookParameters.path == request.notebook
                )
            )
            if entry is None:
                # Deny by default: the hub cannot read the notebook, and no session told it the names.
                reason = (
                    f"the hub does not know the parameters cell of {where}: open the notebook in a JupyterLab "
                    f"session of {project.name} and save it once (the session tells the hub its parameter names), "
                    "or run it without parameters; nothing was submitted"
                )
                raise self._run_refused(obj, project.name, reason)
            known = list(entry.names)
            saved = f" (as saved in JupyterLab on {entry.updated_at:%Y-%m-%d %H:%M} UTC)"
        unknown = [name for name in given if name not in known]
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            reason = (
                f"unknown parameter{plural} {', '.join(unknown)} for {where}: its parameters cell defines "
                f"{_listed(known)}{saved}; nothing was submitted"
            )
            raise self._run_refused(obj, project.name, reason, bad_input=True)
