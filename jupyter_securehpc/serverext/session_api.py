"""``GET /securehpc/session``: what the JupyterLab extension shows and hides, from the session the guard enforces.

The answer is the single source of the UI's decisions (the labextension removes what a role may not use and
shows the project, role and classification in a banner). It never widens anything: the guard decides every
request on its own, from the same ``Session``. No secrets, no paths: names, rights and limits only.
"""

from __future__ import annotations

import json
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from jupyter_securehpc.projects.authz import Action

from .session import Session

SESSION_PATH = "/securehpc/session"
SETTINGS_KEY = "securehpc_session_info"  # the web app setting the handler reads (set by the extension)

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
