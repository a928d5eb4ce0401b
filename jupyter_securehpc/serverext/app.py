"""The jupyter-server extension app: reads the session policy, hardens the server, installs the guard.

At link time (before kernels, the web app or the HTTP server exist): the process becomes not dumpable
without core files, the launcher's listening socket (``SECUREHPC_SERVER_FD``) replaces jupyter-server's own
binding, and the audit sink is opened (the launcher's pipe ``SECUREHPC_AUDIT_FD``, else the file
``SECUREHPC_AUDIT_LOG``); see ``process.py`` and ``sink.py``. At initialize: tokens are read and removed from
the environment (kernels and terminals start later), tracebacks are never served, and the guard is installed;
for roles that may write, notebook saves, renames and deletes tell the hub their parameter names
(``parameters.py``).

Fail closed: a missing or invalid session policy file, no audit sink, a descriptor that is not what the
launcher promised, a contents manager that is not file based, or any other error while setting up makes the
server exit with status 1 and a CRITICAL log line saying what to fix. jupyter-server would otherwise log a
failed extension as a warning and serve files unguarded (``ExtensionManager`` catches ``Exception``;
``SystemExit`` passes through).
"""

from __future__ import annotations

import os
import time
from functools import wraps
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.services.contents.fileio import FileManagerMixin
from jupyter_server.utils import url_path_join
from jupyterhub.singleuser.extension import JupyterHubIdentityProvider
from traitlets import Bool, List, Unicode, default

from jupyter_securehpc.projects.authz import Action
from jupyter_securehpc.session.env import SESSION_POLICY_ENV

from .authorizer import SecureHPCAuthorizer
from .guard import Guard
from .parameters import ParameterIndexReporter
from .process import ProcessSetupError, not_dumpable, read_tokens, scrub_tokens, serve_on, take_listening_socket
from .rules import Rules
from .session import Session, SessionPolicyError, load_session
from .session_api import SESSION_PATH, SETTINGS_KEY, SessionInfoHandler, add_to_page_config, session_info
from .sink import AUDIT_LOG_ENV, AuditSink, AuditSinkError, sink_from_environment

POLICY_ENV = SESSION_POLICY_ENV
AUDIT_ENV = AUDIT_LOG_ENV


class SetupError(Exception):
    """The extension cannot guard this server; the message says what to fix."""


def _fatal(method: Any) -> Any:
    """Exit the server on any setup error: better no server than a server without the guard."""

    @wraps(method)
    def wrapped(self: SecureHPCServerExtension, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (SetupError, SessionPolicyError, ProcessSetupError, AuditSinkError) as err:
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
        help="""Audit log that records every refusal (hash-chained, see ``jupyter_securehpc.audit``) when the
        launcher passes no audit pipe (``$SECUREHPC_AUDIT_FD``). Default: ``$SECUREHPC_AUDIT_LOG``. Neither:
        the server does not start, as refusals must be recorded.""",
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

    require_login_session = Bool(
        False,
        config=True,
        help="""Under JupyterHub, accept only tokens that come from a hub login session (the browser's OAuth
        login): API tokens made on the hub's token page or REST API are refused by this server even when they
        belong to the session's user. Off by default, as scripts and checks use such tokens; the hub's role
        configuration keeps admins from minting tokens for other users.""",
    )

    classification = Unicode(
        "",
        config=True,
        help="""The data classification label every session of this site shows in JupyterLab's banner, e.g.
        ``Confidential: pseudonymised patient data``. Set it in the nodes' system-wide Jupyter configuration
        (for example ``/etc/jupyter/jupyter_server_config.json``: sessions ignore per-user configuration).
        Empty: no label.""",
    )

    support_contact = Unicode(
        "the project's data owner",
        config=True,
        help="""Whom JupyterLab tells people to ask when something is refused (a download, an upload), e.g.
        ``the research data office (rdo@example.org)``.""",
    )

    session: Session | None = None
    guard: Guard | None = None
    audit_sink: AuditSink | None = None

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
        # Before anything holds secrets or data: no core file, no reading of this process by the kernel.
        not_dumpable()
        self.audit_sink = sink_from_environment(self.audit_log)
        app = self.serverapp
        listening = take_listening_socket()
        if listening is not None:
            serve_on(app, listening)
            self.log.info("securehpc: serving on the launcher's socket (fd %d); no path is bound", listening.fileno())
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
        if self.audit_sink is None:
            raise SetupError("the audit sink was not opened")
        # Tokens were read into the hub's auth object and the identity provider: kernels and terminals,
        # started from now on, must not find them in their environment.
        read_tokens(app)
        removed = scrub_tokens()
        if removed:
            self.log.info("securehpc: removed %s from the environment of kernels and terminals", ", ".join(removed))
        # A traceback can quote a file (a parser's error); write_error of guarded handlers says less still.
        app.web_app.settings["serve_traceback"] = False
        hub = isinstance(app.identity_provider, JupyterHubIdentityProvider)
        rules = Rules(
            self.session,
            root_real,
            kernelspec_files_on_disk=not hasattr(app.kernel_spec_manager, "get_kernel_spec_resource"),
        )
        self.guard = Guard(
            self.session, rules, self.audit_sink, app.base_url, self.log,
            hub_identity=hub, require_login_session=self.require_login_session,
        )  # fmt: skip
        self.guard.install(app.web_app)
        # What the JupyterLab extension shows and hides; the guard above decides every request on its own.
        app.web_app.settings[SETTINGS_KEY] = session_info(
            self.session, classification=self.classification, support_contact=self.support_contact,
            started_at=time.time(),
        )  # fmt: skip
        app.web_app.add_handlers(".*$", [(url_path_join(app.base_url, SESSION_PATH), SessionInfoHandler)])
        add_to_page_config(app.web_app.settings)  # and in JupyterLab's page, read without a request
        if rules.write:
            # Roles that may save notebooks tell the hub their parameter names (headless runs check them before
            # submitting; the hub records them only for such roles in any case).
            ParameterIndexReporter(self.audit_sink, root_real, self.log).install(contents)
        session = self.session
        self.log.info(
            "securehpc: guarding project %s for %s as %s in %s (download: %s, upload: %s, terminals: %s, write: %s)",
            session.project, session.user, session.role.value, root_real, _yes(rules.download), _yes(rules.upload),
            _yes(rules.terminals), _yes(rules.write),
        )  # fmt: skip

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # Every extension has initialized now: jupyterhub-singleuser's (after ours by name) replaced the page
        # config hook with its own; ours wraps it, so that JupyterLab's page still carries the session.
        if self.guard is not None:
            add_to_page_config(serverapp.web_app.settings)


def _yes(decision: object) -> str:
    return "yes" if decision else "no"
