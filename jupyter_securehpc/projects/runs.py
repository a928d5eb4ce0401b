"""``ProjectService``'s headless runs: every submission, refusal, state change, cancel and end is decided here,
written in one transaction and recorded as an audit event.

Mixed into ``ProjectService`` (the one door to the database): the hub's runs API and its Slurm poller
(``runs/hub.py``) call these methods, never the model. A person submits, lists, shows and cancels as themselves
(``Actor.signed_in``); the hub records what its jobs report and what Slurm says as the hub (an admin actor).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from ..session.reports import RunEnd
from ..session.spec import RUN_LOG, RUNS_FOLDER, RunRequestError, RunSpec, upload_notebook_path
from ..spawner.options import OptionsError
from . import accounts as principals
from .authz import Action, decide
from .model import Project, Run, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..runs.request import RunRequest
    from .policy import Policy

# States of a run. "unknown": Slurm did not answer when the hub last asked (the run may be fine).
ACTIVE = ("submitting", "queued", "running", "unknown")
ENDED = ("succeeded", "failed", "cancelled", "timed out")
# Slurm's job states (squeue's %T) and what they mean for a run.
SLURM_STATES = {
    "PENDING": "queued",
    "CONFIGURING": "queued",
    "REQUEUED": "queued",
    "RESIZING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "COMPLETED": "succeeded",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timed out",
    "DEADLINE": "timed out",
    "FAILED": "failed",
    "NODE_FAIL": "failed",
    "BOOT_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "failed",
    "REVOKED": "failed",
    "SPECIAL_EXIT": "failed",
}
# What the runner's problem codes mean (session.reports.RUN_PROBLEMS), for people.
PROBLEMS = {
    "notebook_missing": "there is no such notebook in the project's workspace",
    "outside_workspace": "the notebook's path leads out of the workspace (a symbolic link)",
    "not_a_notebook": "the file is not a notebook papermill can read",
    "output_exists": "the run's folder in the workspace exists already; submit the run again",
    "kernel": "the kernel did not start (is it installed in the nodes' environment? see the run's log)",
    "sandbox": "the run ended without saying why (see `securehpc run logs`)",
    "start": "the run's job did not get as far as its sandbox (see `securehpc run logs` for why)",
}
MAX_MESSAGES = 50
REPORTS_AFTER_END = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class RunRecord:
    """A run as the service hands it out (never the model object)."""

    run_id: str
    project: str
    user: str
    notebook: str
    parameters: dict
    kernel: str | None
    resources: dict
    state: str
    job_id: str | None
    cells_done: int | None
    cells_total: int | None
    reason: str | None
    failed_cell: int | None
    exception: str | None
    messages: tuple[str, ...]
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    ended_by: str | None
    report_hash: str | None
    # An uploaded notebook's text, only in the record ``submit_run`` returns to the hub for the signed spec (never
    # stored: the runner writes it into the encrypted workspace, at ``notebook``).
    upload: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def spec(self) -> RunSpec:
        return RunSpec(self.run_id, self.notebook, dict(self.parameters), self.kernel, self.upload)

    def public(self, viewer: str) -> dict[str, Any]:
        """What the API shows ``viewer``: parameter values only to the one who submitted them (others in the
        project see their names); never the report secret's hash, never the launcher's messages (``logs``)."""

        def when(value: dt.datetime | None) -> str | None:
            return value.isoformat(timespec="seconds") + "Z" if value else None

        output = f"{RUNS_FOLDER}/{self.run_id}"
        spec = self.spec if self.run_id and not self.run_id.startswith("legacy-") else None
        return {
            "run_id": self.run_id,
            "project": self.project,
            "user": self.user,
            "notebook": self.notebook,
            "parameters": dict(self.parameters) if viewer == self.user else None,
            "parameter_names": sorted(self.parameters),
            "kernel": self.kernel,
            "resources": dict(self.resources),
            "state": self.state,
            "job_id": self.job_id,
            "cells_done": self.cells_done,
            "cells_total": self.cells_total,
            "reason": self.reason,
            "failed_cell": self.failed_cell,
            "exception": self.exception,
            "output": output,
            "executed_notebook": spec.output_notebook if spec else None,
            "log": f"{output}/{RUN_LOG}",
            "created_at": when(self.created_at),
            "submitted_at": when(self.submitted_at),
            "started_at": when(self.started_at),
            "ended_at": when(self.ended_at),
            "ended_by": self.ended_by,
        }


def _record(run: Run, project: str) -> RunRecord:
    return RunRecord(
        run_id=run.run_id or f"legacy-{run.id}",
        project=project,
        user=run.username,
        notebook=run.notebook,
        parameters=dict(run.parameters or {}),
        kernel=run.kernel,
        resources=dict(run.resources or {}),
        state=run.state,
        job_id=run.job_id,
        cells_done=run.cells_done,
        cells_total=run.cells_total,
        reason=run.reason,
        failed_cell=run.failed_cell,
        exception=run.exception,
        messages=tuple(run.messages or ()),
        created_at=run.created_at,
        submitted_at=run.submitted_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        ended_by=run.ended_by,
        report_hash=run.report_hash,
    )


def end_reason(end: RunEnd) -> str:
    """One line for people about how the runner says the run ended (names and numbers only)."""
    if end.outcome == "succeeded":
        return "the notebook ran to its end"
    if end.outcome == "refused":
        known = ", ".join(end.known) or "nothing (no cell is tagged 'parameters')"
        plural = "s" if len(end.unknown) > 1 else ""
        return (
            f"unknown parameter{plural} {', '.join(end.unknown)}: the notebook's parameters cell defines {known}; "
            "nothing was executed"
        )
    if end.cell is not None:
        return f"cell {end.cell} of the executed notebook raised {end.exception or 'an exception'}"
    text = PROBLEMS.get(end.problem or "sandbox", PROBLEMS["sandbox"])
    return f"{text} ({end.exception})" if end.exception else text


@dataclass(frozen=True)
class RunJob:
    """What the hub submits a run's job with (``run_job``): the account it runs as and the policy in effect."""

    project: str
    user: str
    principal: str
    group: str
    policy: Policy


class RunService:
    """The runs part of ``ProjectService`` (it provides ``_transaction``, ``_project``, ``_role``, ``_policy``,
    ``_event`` and ``actor``)."""

    # --- a person's requests --------------------------------------------------------------------------
    def submit_run(self, data: dict, *, report_hash: str) -> RunRecord:
        """Record a new run of the acting person, or refuse it (audited, nothing recorded): not a member, not a
        role that may run, bad notebook path, parameters or kernel, resources beyond the policy, too many runs
        of theirs at once. The run starts as ``submitting``; the hub submits its job next."""
        from ..runs.request import parse, requested_project

        user = self.actor.subject.username
        try:
            name = requested_project(data)
        except RunRequestError as error:
            raise self._run_refused(f"runs:{user}", None, str(error), bad_input=True) from None
        with self._transaction() as session:
            project = self._project(session, name, Action.RUN_SUBMIT)
            obj = f"runs:{project.name}/{user}"
            self._authorize(session, Action.RUN_SUBMIT, project, obj)
            policy = self._policy(project)
            if data.get("upload") is not None:
                # A notebook from outside the workspace is an upload: the roles the policy's upload_roles lists,
                # decided before its content is even looked at.
                role = self._role(session, project, user)
                decision = decide(self.actor.subject, Action.FILE_UPLOAD, role, policy)
                if not decision:
                    reason = (
                        f"{user} may not upload a notebook into {project.name}: {decision.reason} (upload_roles); "
                        "save the notebook in the project's workspace in JupyterLab and run it from there"
                    )
                    raise self._run_refused(obj, project.name, reason)
            try:
                request: RunRequest = parse(data, policy)
            except (RunRequestError, OptionsError) as error:
                raise self._run_refused(obj, project.name, str(error), bad_input=True) from None
            # Every parameter name must be in the notebook's parameters cell (projects/notebooks.py), deny by default.
            self._check_run_parameters(session, project, request, obj)
            # One submission of a project at a time (PostgreSQL: the project's row is locked; SQLite's writers
            # are serialised anyway), so that concurrent submissions cannot all pass the count.
            session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
            active = session.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.project_id == project.id, Run.username == user, Run.state.in_(ACTIVE))
            )
            if active >= policy.max_concurrent_runs:
                reason = (
                    f"{user} has {active} runs queued or running in {project.name}, and its policy allows "
                    f"max_concurrent_runs={policy.max_concurrent_runs}: wait for one to end, or cancel one"
                )
                raise self._run_refused(obj, project.name, reason)
            run_id = secrets.token_hex(6)
            notebook = upload_notebook_path(run_id, request.upload.name) if request.upload else request.notebook
            run = Run(
                project_id=project.id,
                username=user,
                notebook=notebook,
                parameters=request.parameters,
                kernel=request.kernel,
                resources=request.resources,
                state="submitting",
                run_id=run_id,
                report_hash=report_hash,
                output_path=f"{RUNS_FOLDER}/",
            )
            session.add(run)
            session.flush()
            run.output_path = f"{RUNS_FOLDER}/{run.run_id}"
            record = _record(run, project.name)
        uploaded = {}
        if request.upload is not None:
            content = request.upload.content.encode()
            uploaded = {"upload_bytes": len(content), "upload_sha256": hashlib.sha256(content).hexdigest()}
            record = dataclasses.replace(record, upload=request.upload.content)
        self._event(
            Action.RUN_SUBMIT, f"run:{record.project}/{record.run_id}", "allowed", record.project,
            "member who may run notebooks", notebook=record.notebook, parameter_names=sorted(record.parameters),
            resources=record.resources, kernel=record.kernel, **uploaded,
        )  # fmt: skip
        return record

    def _run_refused(self, obj: str, project: str | None, reason: str, *, bad_input: bool = False) -> Exception:
        from .service import BadInput, Refused

        self._event(Action.RUN_SUBMIT, obj, "denied", project, reason)
        return BadInput(reason) if bad_input else Refused(reason)

    def _run(self, session: Session, run_id: str, action: Action) -> tuple[Run, Project]:
        from .service import NotFound

        row = session.execute(select(Run, Project).join(Project).where(Run.run_id == run_id)).first()
        if row is None:
            self._event(action, f"run:{run_id[:40]}", "denied", None, "no such run")
            raise NotFound(f"there is no run {run_id[:40]!r} (see `securehpc run list PROJECT`)")
        return row[0], row[1]

    def _readable_run(self, session: Session, run_id: str) -> tuple[Run, Project]:
        """The run, if the acting person may see it: a member of its project (or an admin); refusals answer
        as for a run that does not exist, so that run ids of other projects do not leak."""
        from .service import NotFound

        run, project = self._run(session, run_id, Action.RUN_READ)
        role = self._role(session, project, self.actor.subject.username)
        decision = decide(self.actor.subject, Action.RUN_READ, role, self._policy(project))
        if not decision:
            self._event(Action.RUN_READ, f"run:{project.name}/{run_id}", "denied", project.name, decision.reason)
            raise NotFound(f"there is no run {run_id!r} (see `securehpc run list PROJECT`)")
        return run, project

    def list_runs(self, project_name: str, limit: int = 50) -> list[RunRecord]:
        """The project's runs, newest first (members see every member's runs: their outputs are in the
        workspace they share)."""
        with self.sessions() as session:
            project = self._project(session, project_name, Action.RUN_READ)
            self._authorize(session, Action.RUN_READ, project, f"runs:{project_name}")
            runs = session.scalars(
                select(Run).where(Run.project_id == project.id).order_by(Run.created_at.desc(), Run.id.desc())
                .limit(limit)
            ).all()  # fmt: skip
            return [_record(run, project.name) for run in runs]

    def show_run(self, run_id: str) -> RunRecord:
        with self.sessions() as session:
            run, project = self._readable_run(session, run_id)
            return _record(run, project.name)

    def check_cancel(self, run_id: str) -> RunRecord:
        """The run, if the acting person may cancel it now (whoever submitted it, the project's data owners, hub
        admins; a run that has ended cannot be), else Refused or BadInput, audited."""
        from .service import BadInput, Refused

        with self.sessions() as session:
            run, project = self._readable_run(session, run_id)
            obj = f"run:{project.name}/{run_id}"
            subject = self.actor.subject
            if subject.username != run.username:
                decision = decide(subject, Action.RUN_CANCEL, self._role(session, project, subject.username),
                                  self._policy(project))  # fmt: skip
                if not decision:
                    reason = f"{decision.reason}; {run.username} submitted it"
                    self._event(Action.RUN_CANCEL, obj, "denied", project.name, reason)
                    raise Refused(f"{subject.username} may not cancel run {run_id}: {reason}")
            if run.state in ENDED:
                reason = f"run {run_id} has ended already ({run.state})"
                self._event(Action.RUN_CANCEL, obj, "denied", project.name, reason)
                raise BadInput(reason)
            if run.job_id is None:
                reason = f"run {run_id} is being submitted: cancel it again in a moment"
                self._event(Action.RUN_CANCEL, obj, "denied", project.name, reason)
                raise BadInput(reason)
            return _record(run, project.name)

    def record_cancel(self, run_id: str) -> RunRecord:
        """After ``scancel``: the run is cancelled, by the acting person (audited)."""
        subject = self.actor.subject.username
        with self._transaction() as session:
            run, project = self._run(session, run_id, Action.RUN_CANCEL)
            if run.state not in ENDED:
                run.state, run.ended_at, run.ended_by = "cancelled", utcnow(), subject
                run.reason = f"cancelled by {subject}"
            record = _record(run, project.name)
        self._event(Action.RUN_CANCEL, f"run:{record.project}/{run_id}", "allowed", record.project,
                    "whoever submitted it, a data owner or a hub admin", job_id=record.job_id,
                    submitted_by=record.user)  # fmt: skip
        return record

    # --- the hub's records (its jobs' reports, Slurm's answers) -------------------------------------------
    def _hub_only(self, what: str) -> None:
        self._require_admin("run.record", "runs", what)

    def run_submitted(self, run_id: str, job_id: str) -> RunRecord:
        self._hub_only("record runs' jobs")
        with self._transaction() as session:
            run, project = self._run(session, run_id, Action.RUN_SUBMIT)
            run.job_id, run.submitted_at = job_id, utcnow()
            if run.state == "submitting":
                run.state = "queued"
            record = _record(run, project.name)
        self._event("run.job", f"run:{record.project}/{run_id}", "allowed", record.project, "submitted to Slurm",
                    job_id=job_id, user=record.user)  # fmt: skip
        return record

    def run_not_submitted(self, run_id: str, reason: str) -> RunRecord:
        """The job could not be submitted (Slurm refused, the key could not be wrapped, the hub restarted)."""
        self._hub_only("record runs' jobs")
        return self._end(run_id, "failed", f"not submitted: {reason}", action="run.submit", outcome="failed")

    def active_runs(self) -> list[RunRecord]:
        self._hub_only("list every project's runs")
        with self.sessions() as session:
            rows = session.execute(select(Run, Project.name).join(Project).where(Run.state.in_(ACTIVE))).all()
            return [_record(run, name) for run, name in rows]

    def run_report_hash(self, run_id: str) -> str | None:
        """The hash of the run's report secret while its job may still report: while it is active, and for
        ``REPORTS_AFTER_END`` after its end (the launcher's last messages after a cancel; an end or progress
        report changes nothing then). None otherwise."""
        with self.sessions() as session:
            run = session.scalar(select(Run).where(Run.run_id == run_id))
            if run is None:
                return None
            if run.state in ACTIVE:
                return run.report_hash
            recent = run.ended_at is not None and utcnow() - run.ended_at < REPORTS_AFTER_END
            return run.report_hash if recent else None

    def run_job(self, run_id: str) -> RunJob:
        """What the hub submits the run's job with, no key wrapped: the account of the person's principal in the
        project (from this database, never a request) and the project's policy (partition, GRES). Refused
        (audited) when the person has no active principal there."""
        from .service import Refused

        self._hub_only("submit runs' jobs")
        with self.sessions() as session:
            run, project = self._run(session, run_id, Action.RUN_SUBMIT)
            principal = principals.active_principal(session, project, run.username)
            if principal is None or project.unix_group is None:
                reason = (
                    f"{run.username} has no project account (principal) in {project.name} yet: a hub admin runs "
                    "`securehpc account sync`"
                )
                self._event(Action.RUN_SUBMIT, f"run:{project.name}/{run_id}", "denied", project.name, reason)
                raise Refused(reason)
            return RunJob(project.name, run.username, principal.name, project.unix_group, self._policy(project))

    def hub_run(self, run_id: str) -> RunRecord | None:
        """The run, for the hub (its job's requests; no audit event: the caller records what it decides)."""
        self._hub_only("read runs' jobs")
        with self.sessions() as session:
            row = session.execute(select(Run, Project.name).join(Project).where(Run.run_id == run_id)).first()
            return _record(row[0], row[1]) if row else None

    def claim_run_start(self, run_id: str, slurm_state: str | None) -> RunRecord:
        """The run's job asks for its spec and key (``/runs/ID/start``): granted once, while the run is queued or
        running and was never started, and only while Slurm shows its job RUNNING (``slurm_state``, as the hub
        just asked). The claim (``started_at``, state running) is written in one conditional update before any
        key is wrapped, so that neither a second request nor a restarted hub hands a key out twice. Refusals
        raise Refused, audited as ``run.start``."""
        from .service import Refused

        self._hub_only("start runs")
        with self._transaction() as session:
            run, project = self._run(session, run_id, Action.RUN_SUBMIT)
            obj, record = f"run:{project.name}/{run_id}", _record(run, project.name)
            if run.started_at is not None:
                reason = f"run {run_id} was started already (its job took its spec and key once)"
            elif run.state not in ("queued", "running", "unknown"):
                reason = f"run {run_id} is {run.state}: it cannot start"
            elif slurm_state != "RUNNING":
                reason = f"job {run.job_id} of run {run_id} is not running in Slurm ({slurm_state or 'unknown'})"
            else:
                now = utcnow()
                # Conditional: of two requests at once (or two hub processes), one updates the row.
                claimed = session.execute(
                    update(Run).where(Run.id == run.id, Run.started_at.is_(None), Run.state.in_(ACTIVE))
                    .values(started_at=now, state="running")
                    .execution_options(synchronize_session=False)
                ).rowcount  # fmt: skip
                reason = None if claimed == 1 else f"run {run_id} was started already (its job took its spec once)"
                record = dataclasses.replace(record, started_at=now, state="running")
        if reason is not None:
            self._event("run.start", obj, "denied", record.project, reason, job_id=record.job_id)
            raise Refused(reason)
        self._event("run.start", obj, "allowed", record.project, "the run's job is running and asked once",
                    job_id=record.job_id, user=record.user)  # fmt: skip
        return record

    def run_not_started(self, run_id: str, reason: str) -> RunRecord:
        """The job started but may not run: no key for its person now (removed, policy changed), or the hub could
        not give it one. The run ends failed, saying why."""
        self._hub_only("record runs' starts")
        return self._end(run_id, "failed", f"not started: {reason}", outcome="denied")

    def record_run_progress(self, run_id: str, done: int, total: int) -> None:
        self._hub_only("record runs' progress")
        with self._transaction() as session:
            run, _ = self._run(session, run_id, Action.RUN_SUBMIT)
            if run.state in ENDED:
                return
            run.cells_done, run.cells_total = done, total
            if run.state != "running":
                run.state, run.started_at = "running", run.started_at or utcnow()

    def record_run_message(self, run_id: str, text: str) -> None:
        self._hub_only("record runs' messages")
        with self._transaction() as session:
            run, _ = self._run(session, run_id, Action.RUN_SUBMIT)
            run.messages = [*(run.messages or []), text][-MAX_MESSAGES:]

    def record_run_end(self, run_id: str, end: RunEnd) -> RunRecord:
        """The launcher's account of the end (after its sandbox is gone)."""
        self._hub_only("record runs' ends")
        state = "succeeded" if end.outcome == "succeeded" else "failed"
        return self._end(run_id, state, end_reason(end), cell=end.cell, exception=end.exception,
                         exit_code=end.exit_code, outcome_reported=end.outcome)  # fmt: skip

    def record_slurm_state(self, run_id: str, slurm_state: str | None, detail: str = "") -> RunRecord:
        """What Slurm says about the run's job: its state (squeue's words), or None when Slurm no longer knows
        the job. The run's own end report, when it came, has ended the run already; this ends the others."""
        self._hub_only("record runs' states")
        with self._transaction() as session:
            run, project = self._run(session, run_id, Action.RUN_SUBMIT)
            record = _record(run, project.name)
            if run.state in ENDED:
                return record
            state = SLURM_STATES.get(slurm_state or "", "failed")
            if state in ACTIVE:
                # Not started_at: that is the job's claim of its spec and key (claim_run_start), made once.
                run.state = state
                if run.reason and run.reason.startswith("Slurm did not answer"):
                    run.reason = None
                return _record(run, project.name)
        if slurm_state is None:
            reason = f"Slurm no longer knows job {record.job_id}, and the run's end was not reported"
        elif state == "timed out":
            reason = f"job {record.job_id} reached its time limit ({record.resources.get('minutes', '?')} min)"
        elif state == "cancelled":
            reason = f"job {record.job_id} was cancelled in Slurm"
        elif state == "succeeded":
            reason = "the notebook ran to its end"
        else:
            reason = f"job {record.job_id} ended {slurm_state}" + (f": {detail}" if detail else "")
        return self._end(run_id, state, reason, slurm_state=slurm_state or "gone")

    def record_slurm_unknown(self, run_id: str, error: str) -> None:
        """Slurm did not answer: the run may be fine; its state is unknown until Slurm answers again."""
        self._hub_only("record runs' states")
        with self._transaction() as session:
            run, _ = self._run(session, run_id, Action.RUN_SUBMIT)
            if run.state in ("queued", "running", "unknown"):
                run.state, run.reason = "unknown", f"Slurm did not answer: {error}"[:1000]

    def _end(self, run_id: str, state: str, reason: str, *, action: str = "run.end", outcome: str | None = None,
             cell: int | None = None, exception: str | None = None, **details: Any) -> RunRecord:  # fmt: skip
        with self._transaction() as session:
            run, project = self._run(session, run_id, Action.RUN_SUBMIT)
            if run.state in ENDED:
                return _record(run, project.name)
            run.state, run.reason, run.ended_at = state, reason[:1000], utcnow()
            run.failed_cell, run.exception = cell, exception
            record = _record(run, project.name)
        if outcome is None:
            outcome = "ok" if state == "succeeded" else "failed"
        self._event(action, f"run:{record.project}/{run_id}", outcome, record.project, reason, state=state,
                    user=record.user, job_id=record.job_id, **details)  # fmt: skip
        return record
