"""``/projects/{project}/runs`` and ``/runs/{run_id}``: the project's headless runs, read only (authz ``run.read``:
members and hub admins, as ``securehpc run list`` and ``run show``), through ``ProjectService``.

What a run is, never what it produced: state, cells done of the total, times, who submitted it, the failing
cell's index and the exception's class name; parameter names, not values (the hub's API shows those to the one
who submitted them). Submitting and cancelling stay with the hub's runs API (``/hub/api/securehpc/runs``), which
holds the signing key and talks to Slurm; the states here are the ones the hub last recorded.
"""

from __future__ import annotations

import re
from typing import Any

from ...projects.runs import RunRecord
from ..base import APIHandler
from ..errors import ApiError
from . import common

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
MAX_RUNS = 50


def run_id(value: str) -> str:
    if not _RUN_ID.fullmatch(value):
        raise ApiError(400, f"run id {value[:40]!r} is not one: lower-case letters, digits and '-' (see GET .../runs)")
    return value


def shown(record: RunRecord) -> dict[str, Any]:
    """The run as the portal shows it: ``public`` without parameter values, whoever asks."""
    data = record.public("")
    del data["parameters"]
    return data


class RunsHandler(APIHandler):
    async def get(self, project: str) -> None:
        project = common.project_name(project)
        common.query(self, ())
        records = await self.call("list_runs", project, MAX_RUNS, about=project)
        self.reply({"project": project, "runs": [shown(record) for record in records]})


class RunHandler(APIHandler):
    async def get(self, project: str, run: str) -> None:
        project, run = common.project_name(project), run_id(run)
        record = await self.call("show_run", run, about=project)
        if record.project != project:
            # A run of another project (that the caller may see, as a hub admin): not this project's run.
            raise ApiError(404, f"there is no run {run!r} in project {project!r} (GET .../projects/{project}/runs)")
        self.reply(shown(record))
