"""A stand-in spawner for the portal's tests (loaded by the test hub from tests/): it starts nothing and keeps
the state a Slurm spawner keeps (batchspawner's ``job_id`` and ``job_status``: state and node), so that the
portal's sessions are read from the real hub's REST API without a Slurm job behind them. The secure spawner's
own starts are tested in tests/spawner/ and tests/e2e/.
"""

from __future__ import annotations

import itertools
import os

from jupyterhub.spawner import Spawner

_JOBS = itertools.count(4200)


class RecordedSlurmSpawner(Spawner):
    job_id = ""

    async def start(self) -> tuple[str, int]:
        self.job_id = str(next(_JOBS))
        # Where the hub checks that the server answers: a page the test serves.
        return "127.0.0.1", int(os.environ["PORTAL_TEST_PAGE_PORT"])

    async def poll(self) -> int | None:
        return None if self.job_id else 0

    async def stop(self, now: bool = False) -> None:
        self.job_id = ""

    def get_state(self) -> dict:
        state = super().get_state()
        if self.job_id:
            state.update(job_id=self.job_id, job_status="RUNNING securehpc-n1", securehpc_accessors=["not-shown"])
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.job_id = state.get("job_id", "")

    def clear_state(self) -> None:
        super().clear_state()
        self.job_id = ""
