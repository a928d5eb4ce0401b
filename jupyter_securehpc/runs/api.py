"""The hub's REST API for headless runs, and the strict endpoints where a run's launcher reports.

For people (a JupyterHub API token or the hub's cookie, with the scope to start the person's own servers,
``servers!user=NAME``: a server's own token has no such scope), under ``/hub/api/securehpc/runs``:

- ``POST /runs`` ``{"project", "notebook", "parameters", "parameters_json", "kernel", "gpus", "cpus", "memory_gb",
  "time"}``: submit
  (201 and the run; 400 for a bad request, 403 for a refusal, 404 for a project that does not exist or that the
  person is not a member of; each a one-line ``message``, nothing submitted, an audit event); instead of
  ``notebook``, ``"upload": {"name": "NAME.ipynb", "content": "<the notebook's text>"}`` sends a notebook from
  outside the workspace (the policy's ``upload_roles``; at most ``session.spec.MAX_UPLOAD_BYTES``; nbformat-valid;
  a client sends ``{"name", "size", "withheld"}`` without the text for a file it will not send, so that the hub
  refuses it, audited); ``parameters_json`` holds values as the command line got them, JSON text parsed here
  (``runs/request.py``);
- ``GET /runs?project=P``: the project's runs; ``GET /runs/ID``: one run (state, cells done of the total, how it
  ended); ``POST /runs/ID/cancel``: ``scancel``, recorded; ``GET /runs/ID/logs``: the launcher's messages.

For the run's job only, with ``Authorization: securehpc-report <the run's secret>`` (made at submission, in sbatch's
environment only, never in the sandbox, only its SHA-256 kept): ``POST /runs/ID/start`` ``{}`` answers the run's
signed spec and its wrapped key (``session.reports.run_start_answer``, ``Cache-Control: no-store``), once: while
the run is queued or running, was never started (``ProjectService.claim_run_start`` records the claim before any
key is wrapped; a second start is 409, audited) and Slurm shows its job running (so a copy of the secret from
slurmctld's stored environment is no use before the job runs); membership and policy are decided then
(``session_grant``: a person removed while the run was queued gets 403 and the run ends failed); 503 while the hub
cannot decide yet (nothing claimed; the launcher asks again). ``POST /runs/ID/progress``
``{"cells_done", "cells_total"}``, ``/end`` (``session.reports.parse_run_end``), ``/message`` ``{"message"}``.
Refusals are 403 (400 for a malformed body from the right job), audited and bounded per source like the
sessions' reports (``spawner/api.py``).

The project portal (``/services/securehpc/api/v1``) will offer the same through ``ProjectService`` later; until
then the hub serves this.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.user import User
from tornado import web

from ..projects.service import BadInput, NotFound, NotMember, Refused
from ..session.reports import (
    KIND_RUN_END,
    KIND_RUN_MESSAGE,
    KIND_RUN_PROGRESS,
    KIND_RUN_START,
    MAX_RUN_END_BODY,
    ReportError,
    parse_run_end,
    parse_run_message,
    parse_run_progress,
    run_start_answer,
)
from ..session.spec import RunRequestError
from ..spawner.api import _limiter, refuse
from ..spawner.reports import secret_from_authorization, secret_matches
from ..spawner.slurm import SlurmError
from .hub import REFRESH_AGE, RunManager, RunNotStarted, RunNotSubmitted, RunStartLater
from .request import MAX_BODY, parse_body

_MANAGER = "securehpc_runs"  # where the hub's one RunManager lives in the tornado settings
_RUN_ID = r"([a-z0-9][a-z0-9-]{0,39})"


def manager(handler: web.RequestHandler) -> RunManager:
    runs = handler.settings.get(_MANAGER)
    if runs is None:
        runs = handler.settings[_MANAGER] = RunManager(handler.settings.get("config"), handler.hub.api_url)
    runs.ensure_poller()
    return runs


class _PersonHandler(APIHandler):
    """A person's request: their own identity (a hub user, not a service), with the scope to start their own
    servers; the answer is JSON, refusals one line."""

    def person(self) -> str:
        user = self.current_user
        if not isinstance(user, User):
            raise web.HTTPError(403, "runs are submitted by a person with their own JupyterHub API token")
        if not self.has_scope(f"servers!user={user.name}"):
            refuse(self, 403, action="run.api", actor=user.name, obj=f"runs:{user.name}",
                   reason="this token may not start servers (scope servers!user): use a token of your own, made "
                   "on the hub's token page")  # fmt: skip
        return user.name

    def answer(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def fail(self, error: Exception, project: str | None = None) -> NoReturn:
        """Each expected failure as its status and one line (the service has audited it)."""
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, NotMember) or (isinstance(error, NotFound) and project):
            # A project that exists but is not the person's answers as one that does not exist.
            raise web.HTTPError(404, f"project {project!r} does not exist or you are not a member of it")
        if isinstance(error, NotFound):
            raise web.HTTPError(404, message)
        if isinstance(error, Refused):
            raise web.HTTPError(403, message)
        if isinstance(error, (BadInput, RunRequestError)):
            raise web.HTTPError(400, message)
        if isinstance(error, (RunNotSubmitted, SlurmError)):
            raise web.HTTPError(503, message)
        raise error


class RunsHandler(_PersonHandler):
    async def post(self) -> None:
        user = self.person()
        runs = manager(self)
        try:
            data = parse_body(self.request.body[: MAX_BODY + 1])
        except RunRequestError as error:
            runs.as_person(user).record_refusal("run.submit", f"runs:{user}", str(error))
            raise web.HTTPError(400, str(error)) from None
        try:
            record = await runs.submit(user, data)
        except Exception as error:
            self.fail(error, project=data.get("project") if isinstance(data.get("project"), str) else None)
        self.answer(201, record.public(user))

    async def get(self) -> None:
        user = self.person()
        project = self.get_argument("project", "")
        if not project:
            raise web.HTTPError(400, "name the project: /runs?project=NAME")
        runs = manager(self)
        try:
            records = runs.as_person(user).list_runs(project)
        except Exception as error:
            self.fail(error, project=project)
        await runs.refresh(records, max_age=REFRESH_AGE)
        if any(record.active for record in records):
            records = runs.as_person(user).list_runs(project)
        self.answer(200, {"project": project, "runs": [record.public(user) for record in records]})


class RunHandler(_PersonHandler):
    async def get(self, run_id: str) -> None:
        user = self.person()
        runs = manager(self)
        try:
            record = runs.as_person(user).show_run(run_id)
            if record.active:
                await runs.refresh([record], max_age=REFRESH_AGE)
                record = runs.as_person(user).show_run(run_id)
        except Exception as error:
            self.fail(error)
        self.answer(200, record.public(user))


class CancelHandler(_PersonHandler):
    async def post(self, run_id: str) -> None:
        user = self.person()
        try:
            record = await manager(self).cancel(user, run_id)
        except Exception as error:
            self.fail(error)
        self.answer(200, record.public(user))


class LogsHandler(_PersonHandler):
    async def get(self, run_id: str) -> None:
        user = self.person()
        try:
            record = manager(self).as_person(user).show_run(run_id)
        except Exception as error:
            self.fail(error)
        self.answer(200, {"run_id": record.run_id, "messages": list(record.messages)})


# --- the run's job reports -----------------------------------------------------------------------------------


@web.stream_request_body
class RunReportHandler(APIHandler):
    """A report of a run's launcher, found by the run's report secret; refused from anyone else (audited)."""

    _accept_token_auth = False
    _accept_cookie_auth = False

    async def prepare(self) -> None:
        if _limiter(self).blocked(self.request.remote_ip or "?"):
            raise web.HTTPError(429, "too many refused reports from this address; try again in a minute")
        self.request.connection.set_max_body_size(MAX_RUN_END_BODY + 1024)
        self._body = bytearray()
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        self._body.extend(chunk)

    def check_xsrf_cookie(self) -> None:
        """No cookie ever authenticates a report: there is nothing to forge across sites."""

    def _refuse(self, kind: str, run_id: str, status: int, reason: str, answer: str | None = None) -> NoReturn:
        refuse(self, status, action=f"run.report.{kind}", actor="anonymous", obj=f"run:{run_id}", reason=reason,
               answer=answer)  # fmt: skip

    def _check_secret(self, runs: RunManager, kind: str, run_id: str) -> None:
        secret = secret_from_authorization(self.request.headers.get("Authorization"))
        if secret is None:
            self._refuse(kind, run_id, 403, "no report credential (Authorization: securehpc-report ...)",
                         "not a report credential of this run")  # fmt: skip
        stored = runs.as_hub().run_report_hash(run_id)
        if not stored or not secret_matches(secret, stored):
            # Unknown run, ended run, wrong secret: one answer for all.
            self._refuse(kind, run_id, 403, "no such active run, or a wrong report credential for it",
                         "not a report credential of this run")  # fmt: skip

    async def post(self, run_id: str, kind: str) -> None:
        runs = manager(self)
        self._check_secret(runs, kind, run_id)
        body = bytes(self._body)
        hub = runs.as_hub()
        try:
            if kind == KIND_RUN_PROGRESS:
                hub.record_run_progress(run_id, *parse_run_progress(body))
            elif kind == KIND_RUN_END:
                hub.record_run_end(run_id, parse_run_end(body))
            elif kind == KIND_RUN_MESSAGE:
                hub.record_run_message(run_id, parse_run_message(body))
        except ReportError as error:
            self._refuse(kind, run_id, 400, str(error))
        self.set_status(204)
        self.finish()


class RunStartHandler(RunReportHandler):
    """The run's job asks for its signed spec and key, once, when it has started (see the module's docstring)."""

    async def post(self, run_id: str) -> None:  # type: ignore[override]
        runs = manager(self)
        self._check_secret(runs, KIND_RUN_START, run_id)
        if bytes(self._body).strip() not in (b"", b"{}"):
            self._refuse(KIND_RUN_START, run_id, 400, "the start takes no body but {}")
        try:
            signed, token = await runs.start(run_id)
        except RunStartLater as error:
            raise web.HTTPError(503, str(error)) from None
        except Refused as error:  # claim_run_start recorded it: started already, ended, or its job not running
            raise web.HTTPError(409, str(error).splitlines()[0]) from None
        except RunNotStarted as error:  # no key for its person now (audited key.wrap); the run has ended
            raise web.HTTPError(403, str(error).splitlines()[0]) from None
        # Only to the holder of the run's secret, and kept by nobody on the way.
        self.set_status(200)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(run_start_answer(signed, token)))


ROUTES = [
    (r"/api/securehpc/runs", RunsHandler),
    (rf"/api/securehpc/runs/{_RUN_ID}", RunHandler),
    (rf"/api/securehpc/runs/{_RUN_ID}/cancel", CancelHandler),
    (rf"/api/securehpc/runs/{_RUN_ID}/logs", LogsHandler),
    (rf"/api/securehpc/runs/{_RUN_ID}/{KIND_RUN_START}", RunStartHandler),
    (rf"/api/securehpc/runs/{_RUN_ID}/({KIND_RUN_PROGRESS}|{KIND_RUN_END}|{KIND_RUN_MESSAGE})", RunReportHandler),
]
