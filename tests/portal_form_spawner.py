"""The portal pages' stand-in spawner (loaded by the test hub from tests/): the secure spawner's own options
form over tests/portal_spawner.py's stand-in that starts no job, so that the hub's spawn page shows what it
shows with the real spawner (the person's projects and each policy's limits, read from the projects database)
and a started server is a session the portal lists."""

from __future__ import annotations

from portal_spawner import RecordedSlurmSpawner
from traitlets import default

from jupyter_securehpc.projects.service import ProjectService
from jupyter_securehpc.spawner.spawner import SecureSlurmSpawner


class FormSpawner(RecordedSlurmSpawner):
    # The real spawner's: its projects database, and the form built from it (spawner/options.py).
    project_policies = SecureSlurmSpawner.project_policies

    def projects(self) -> ProjectService:
        return SecureSlurmSpawner.site_projects(self.config)

    @default("options_form")
    def _options_form_default(self):
        return SecureSlurmSpawner._options_form_default(self)
