"""A named server is a project: the hub creates one only under the name of a project in which the person may
start a session.

JupyterHub writes a named server's entry before it starts it (REST API ``POST`` and ``PUT``, the spawn page's
``GET`` and ``POST``, a rename with ``PATCH``), so a start refused for its name would leave that name in the
person's server list for good. Each of those requests first asks ``BaseHandler._check_named_server_request``
whether a name may be created; :func:`install` adds our rule there, for hubs whose spawner is the secure one: a
new name that is not one of the person's projects is refused with HTTP 400 that names their projects (an audit
event, written by the spawner class), and nothing is created. Names that already exist are left alone.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.handlers.base import BaseHandler
from tornado import web

_MARK = "_securehpc_projects_only"


def install(spawner_class: type) -> None:
    """Check new server names with ``spawner_class.refuse_server_name(config, user, name)`` (a message or None)
    on hubs whose spawner is ``spawner_class`` or a subclass. Idempotent."""
    original = BaseHandler._check_named_server_request
    if getattr(original, _MARK, False):
        return

    async def check_named_server_request(
        self: BaseHandler, user: Any, server_name: str, display_name: str, check_limit: bool = True
    ) -> None:
        await original(self, user, server_name, display_name, check_limit=check_limit)
        hub_spawner = self.settings.get("spawner_class")
        ours = isinstance(hub_spawner, type) and issubclass(hub_spawner, spawner_class)
        if not ours or not server_name or server_name in user.orm_spawners:
            return
        message = hub_spawner.refuse_server_name(self.settings["config"], user.name, server_name)
        if message:
            error = web.HTTPError(400, "%s", message)  # "%s": the message is not a format string
            error.jupyterhub_message = message
            raise error

    setattr(check_named_server_request, _MARK, True)
    BaseHandler._check_named_server_request = check_named_server_request
