"""``GET /securehpc/session``: what the JupyterLab extension shows and hides, from the session the guard enforces.

The answer is the single source of the UI's decisions (the labextension removes what a role may not use and
shows the project, role and classification in a banner). It never widens anything: the guard decides every
request on its own, from the same ``Session``. No secrets, no paths: names, rights and limits only.

The same answer is also in JupyterLab's (and Notebook 7's) page configuration, under ``securehpcSession``
(see ``add_to_page_config``), so that the labextension has it when it activates, without a request that would
hold up the page; the endpoint stays for a page without it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from jupyter_securehpc.projects.authz import Action

from .session import Session

SESSION_PATH = "/securehpc/session"
SETTINGS_KEY = "securehpc_session_info"  # the web app setting the handler reads (set by the extension)
PAGE_CONFIG_KEY = "securehpcSession"  # where the labextension finds the same answer in the page configuration

# What each right means for the UI, in the order the banner lists them.
RIGHTS = {
    "write": Action.WORKSPACE_WRITE,
    "download": Action.FILE_DOWNLOAD,
    "upload": Action.FILE_UPLOAD,
    "read_data_as_text": Action.FILE_READ_TEXT,
    "terminals": Action.TERMINAL_OPEN,
}


def session_info(session: Session, *, classification: str, support_contact: str, started_at: float) -> dict[str, Any]:
    """The session as the UI needs it; every right with the policy's reason when it is refused."""
    rights: dict[str, bool] = {}
    reasons: dict[str, str] = {}
    for name, action in RIGHTS.items():
        decision = session.may_read_text if action is Action.FILE_READ_TEXT else session.decision(action)
        rights[name] = bool(decision)
        if not decision:
            reasons[name] = decision.reason
    policy = session.policy
    return {
        "project": session.project,
        "user": session.user,
        "role": session.role.value,
        "rights": rights,
        "refusal_reasons": reasons,
        "limits": {
            "max_wall_time_minutes": policy.max_wall_time,
            "max_gpus": policy.max_gpus,
            "key_ttl_seconds": policy.key_ttl,
        },
        # The server started at most this long after its job: the job ends no later than this plus the limit.
        "server_started_at": started_at,
        "classification": classification,
        "support_contact": support_contact,
    }


class SessionInfoHandler(APIHandler):
    """The session's project, role, rights and limits for the JupyterLab extension (members only)."""

    @web.authenticated
    def get(self) -> None:
        info = self.settings[SETTINGS_KEY]
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({**info, "now": time.time()}))


PageConfigHook = Callable[[Any, dict[str, Any]], dict[str, Any]]


def add_to_page_config(settings: MutableMapping[str, Any]) -> None:
    """Make the web app's ``page_config_hook`` add the session info, after the hook set before (if any).

    jupyterlab_server's ``LabHandler`` and Notebook 7's pages call ``settings["page_config_hook"](handler,
    page_config)`` when they render, behind their own login check. There is one hook: jupyterhub-singleuser
    sets its own at initialize (the hub user and token), after this extension when the names sort so. Ours
    calls the one it found, and calling this again (once all extensions are loaded) wraps a hook set since;
    it does nothing when ours is already the outermost.
    """
    previous: PageConfigHook | None = settings.get("page_config_hook")
    if getattr(previous, "securehpc_session", False):
        return

    def hook(handler: Any, page_config: dict[str, Any]) -> dict[str, Any]:
        if previous is not None:
            page_config = previous(handler, page_config)
        # A copy: jupyterlab_server hands in the web app's shared page_config_data; "now" is this page's.
        return {**page_config, PAGE_CONFIG_KEY: {**settings[SETTINGS_KEY], "now": time.time()}}

    hook.securehpc_session = True  # type: ignore[attr-defined]
    settings["page_config_hook"] = hook
