"""The jupyter-server extension app: reads the session policy, hardens the server, installs the guard.

Fail closed: a missing or invalid session policy file, a missing audit log path, a contents manager that is
not file based, or any other error while setting up makes the server exit with status 1 and a CRITICAL log
line saying what to fix. jupyter-server would otherwise log a failed extension as a warning and serve
files unguarded (``ExtensionManager`` catches ``Exception``; ``SystemExit`` passes through).
"""

from __future__ import annotations

import os
from functools import wraps
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.services.contents.fileio import FileManagerMixin
from traitlets import List, Unicode, default

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.projects.authz import Action

from .authorizer import SecureHPCAuthorizer
from .guard import Guard
from .rules import Rules
from .session import Session, SessionPolicyError, load_session

POLICY_ENV = "SECUREHPC_SESSION_POLICY"
AUDIT_ENV = "SECUREHPC_AUDIT_LOG"


class SetupError(Exception):
    """The extension cannot guard this server; the message says what to fix."""


def _fatal(method: Any) -> Any:
    """Exit the server on any setup error: better no server than a server without the guard."""

    @wraps(method)
    def wrapped(self: SecureHPCServerExtension, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (SetupError, SessionPolicyError) as err:
            self.log.critical("securehpc: refusing to start: %s", err)
        except Exception:
            self.log.critical("securehpc: refusing to start: the server extension failed to set up", exc_info=True)
        self.serverapp.exit(1)

    return wrapped


class SecureHPCServerExtension(ExtensionApp):
    """Enforces a project's policy on every request of the single-user server."""

    name = "jupyter_securehpc.serverext"
    description = "jupyter-securehpc: no file leaves a project, no path leaves its root"
    # No pages of our own; jupyter-server needs a value.
    extension_url = "/"
    load_other_extensions = True

    policy_file = Unicode(
        config=True,
        help="""Session policy file (JSON: project, user, role, policy) that the node launcher places read-only
        in the sandbox. Default: ``$SECUREHPC_SESSION_POLICY``. Missing or invalid: the server does not start.""",
    )

    @default("policy_file")
    def _default_policy_file(self) -> str:
        return os.environ.get(POLICY_ENV, "")

    audit_log = Unicode(
        config=True,
        help="""Audit log that records every refusal (hash-chained, see ``jupyter_securehpc.audit``).
        Default: ``$SECUREHPC_AUDIT_LOG``. Unset: the server does not start, as refusals must be recorded.""",
    )

    @default("audit_log")
    def _default_audit_log(self) -> str:
        return os.environ.get(AUDIT_ENV, "")

    disabled_extensions = List(
        Unicode(),
        default_value=["jupyter_server_proxy", "jupyter_collaboration", "jupyter_server_ydoc", "jupyter_server_fileid"],
        config=True,
        help="""Server extensions switched off in secure projects: the proxy reaches other ports, collaboration
        and file ids share documents and reveal paths (their routes are refused as well). One that was already
        linked before this extension (names sort before ``jupyter_securehpc``) makes the server refuse to start:
        switch it off in ``ServerApp.jpserver_extensions`` too.""",
    )

    session: Session | None = None
    guard: Guard | None = None

    # --- link: before the server creates its authorizer, contents manager and web app ---------------------

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        self._harden_server()

    @_fatal
    def _harden_server(self) -> None:
        if not self.policy_file:
            raise SetupError(
                f"no session policy file: set ${POLICY_ENV} or SecureHPCServerExtension.policy_file (the node "
                "launcher does both)"
            )
        self.session = load_session(self.policy_file)
        if not self.audit_log:
            raise SetupError(f"no audit log: set ${AUDIT_ENV} or SecureHPCServerExtension.audit_log")
        app = self.serverapp
        # Set as attributes (now) and as config (so that an extension linked later that reloads config,
        # as jupyterhub-singleuser does, applies our values again); checked once more in initialize().
        forced = {
            "authorizer_class": SecureHPCAuthorizer,
            # Every handler must authenticate unless it says it need not (login, static files, redirects).
            "allow_unauthenticated_access": False,
            "terminals_enabled": bool(self.session.decision(Action.TERMINAL_OPEN)),
        }
        for name, value in forced.items():
            setattr(app, name, value)
            app.config.ServerApp[name] = value
        # Hidden files are never served (see paths.py); the contents manager must agree.
        app.config.ContentsManager.allow_hidden = False
        manager = app.extension_manager
        for name in self.disabled_extensions:
            app.jpserver_extensions[name] = False
            if name not in manager.extensions:
                continue
            if manager.linked_extensions.get(name):
                raise SetupError(f"server extension {name} is already active; disable it in jpserver_extensions")
            manager.extensions[name].enabled = False
            self.log.info("securehpc: server extension %s is off in secure projects", name)

    # --- initialize: the web app exists ------------------------------------------------------------------

    @_fatal
    def initialize(self) -> None:
        super().initialize()
        app = self.serverapp
        if self.session is None:
            raise SetupError("the session policy was not loaded")
        contents = app.contents_manager
        if not isinstance(contents, FileManagerMixin):
            raise SetupError(f"contents manager {type(contents).__name__} is not file based; paths cannot be checked")
        contents.allow_hidden = False
        root_real = os.path.realpath(contents.root_dir)
        policy_real = os.path.realpath(self.policy_file)
        if os.path.commonpath([root_real, policy_real]) == root_real:
            raise SetupError(
                f"the session policy file {self.policy_file} lies inside the project, where members can edit it"
            )
        if os.access(policy_real, os.W_OK) and os.geteuid() != 0:
            self.log.warning("securehpc: the session policy file %s is writable; mount it read-only", self.policy_file)
        # The web app copied this when it was made; JupyterHandler.prepare reads it for every request.
        app.web_app.settings["allow_unauthenticated_access"] = False
        app.terminals_enabled = bool(self.session.decision(Action.TERMINAL_OPEN))
        if not isinstance(app.authorizer, SecureHPCAuthorizer):
            # Another extension or config replaced the authorizer class after we set it: put ours back.
            self.log.warning("securehpc: authorizer %s replaced by ours", type(app.authorizer).__name__)
            app.authorizer = SecureHPCAuthorizer(parent=app, log=app.log, identity_provider=app.identity_provider)
            app.web_app.settings["authorizer"] = app.authorizer
        rules = Rules(self.session, root_real)
        self.guard = Guard(self.session, rules, AuditLog(self.audit_log), app.base_url, self.log)
        self.guard.install(app.web_app)
        session = self.session
        self.log.info(
            "securehpc: guarding project %s for %s as %s in %s (download: %s, upload: %s, terminals: %s, write: %s)",
            session.project, session.user, session.role.value, root_real, _yes(rules.download), _yes(rules.upload),
            _yes(rules.terminals), _yes(rules.write),
        )  # fmt: skip


def _yes(decision: object) -> str:
    return "yes" if decision else "no"
