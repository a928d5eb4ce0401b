"""What a request may do, from its route, handler, method, arguments and body. Deny by default.

The resource names jupyter-server's authorizer sees are too coarse: ``/files``, ``/view`` and
``/api/contents`` all say "read contents". These rules look at the handler class and at what the request
asks for (``format=base64``, ``hash=1``, ``copy_from``, a rename target, a new file...). Every allow below
says why; every route under a file-serving prefix that no rule knows is refused.

Role decisions are never made here: they come from ``Session.decision`` (``projects.authz.decide``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.base.handlers import AuthenticatedFileHandler, TrailingSlashHandler
from jupyter_server.files.handlers import FilesHandler
from jupyter_server.nbconvert.handlers import NbconvertFileHandler, NbconvertPostHandler
from jupyter_server.services.contents.handlers import (
    CheckpointsHandler,
    ContentsHandler,
    ModifyCheckpointsHandler,
    NotebooksRedirectHandler,
    TrustNotebooksHandler,
)
from jupyter_server.view.handlers import ViewHandler

from jupyter_securehpc.projects.authz import Action, Decision

from .paths import PathRefused, resolve_inside
from .session import Session

# Routes through which file bytes or paths leave: a handler under these that no rule knows is refused.
FILE_PREFIXES = ("/files", "/view", "/nbconvert", "/api/contents", "/api/notebooks")

# Refused for every role. Collaboration rooms stream documents to whoever joins; fileid maps ids to paths;
# resolvePath and the event stream reveal paths; the proxy reaches other processes' ports; the extension
# manager and plugin manager install or disable code (our UI plugin among it).
REFUSED_PREFIXES = {
    "/api/collaboration": "collaboration rooms are off in secure projects",
    "/api/yjs": "collaboration rooms are off in secure projects",
    "/api/fileid": "file ids are off in secure projects",
    "/api/resolvePath": "path resolution is off in secure projects",
    "/api/events": "the event stream is off in secure projects",
    "/proxy": "jupyter-server-proxy is off in secure projects",
    "/server-proxy": "jupyter-server-proxy is off in secure projects",
    "/lab/api/extensions": "the extension manager is off in secure projects",
}
# Refused for every method but GET (reading the list is harmless; changing it is not).
READ_ONLY_PREFIXES = {"/lab/api/plugins": "the plugin manager is read-only in secure projects"}

TERMINAL_PREFIXES = ("/terminals", "/api/terminals")
# Kernels run code that can write anywhere the workspace can: they count as writing (observers only look).
KERNEL_PREFIXES = ("/api/kernels", "/api/sessions")

PATH_ACTION = "path.resolve"
ROUTE_ACTION = "route.refused"


@dataclass
class RequestFacts:
    """What the rules may look at; built by the guard from a tornado handler, or by tests from plain values."""

    method: str
    route: str  # percent-decoded path below base_url, starting with "/", no query
    handler_class: type
    path_args: list[str] = field(default_factory=list)
    path_kwargs: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)  # each argument as the handler reads it (last, stripped)
    body: bytes = b""

    def json_body(self) -> dict[str, Any] | None:
        """The body parsed the way jupyter-server's ``get_json_body`` does; ``ValueError`` if it cannot."""
        if not self.body:
            return None
        model = json.loads(self.body.strip().decode("utf-8"))
        if model is not None and not isinstance(model, dict):
            raise ValueError("JSON body is not an object")
        return model


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200
    reason: str = ""
    action: str = ""


ALLOW = Verdict(True)


def _refuse(status: int, reason: str, action: str) -> Verdict:
    return Verdict(False, status, reason, action)


def _policy(decision: Decision, action: Action) -> Verdict | None:
    """None when ``decision`` allows, else a 403 saying why (the reason comes from ``projects.authz``)."""
    return None if decision else _refuse(403, decision.reason, action.value)


def _under(route: str, prefix: str) -> bool:
    return route == prefix or route.startswith(prefix + "/")


class Rules:
    """The decisions for one session (role and policy are fixed for a server's lifetime)."""

    def __init__(self, session: Session, root_real: str) -> None:
        self.session = session
        self.root_real = root_real
        self.download = session.decision(Action.FILE_DOWNLOAD)
        self.upload = session.decision(Action.FILE_UPLOAD)
        self.terminals = session.decision(Action.TERMINAL_OPEN)
        self.write = session.decision(Action.WORKSPACE_WRITE)
        self.text = session.may_read_text
        self._by_class: list[tuple[type, Callable[[RequestFacts], Verdict]]] = [
            (AuthenticatedFileHandler, self._files),
            (FilesHandler, self._files),
            (ViewHandler, self._view),
            (NbconvertFileHandler, self._nbconvert_file),
            (NbconvertPostHandler, self._nbconvert_post),
            (CheckpointsHandler, self._checkpoints),
            (ModifyCheckpointsHandler, self._checkpoints),
            (TrustNotebooksHandler, self._trust),
            (ContentsHandler, self._contents),
            (NotebooksRedirectHandler, self._redirect_only),
            (TrailingSlashHandler, self._redirect_only),
        ]

    # --- entry point -------------------------------------------------------------------------------------

    def decide(self, facts: RequestFacts) -> Verdict:
        route = facts.route
        for prefix, reason in REFUSED_PREFIXES.items():
            if _under(route, prefix):
                return _refuse(403, reason, ROUTE_ACTION)
        for prefix, reason in READ_ONLY_PREFIXES.items():
            if _under(route, prefix) and facts.method not in ("GET", "HEAD"):
                return _refuse(403, reason, ROUTE_ACTION)
        if any(_under(route, prefix) for prefix in TERMINAL_PREFIXES):
            return _policy(self.terminals, Action.TERMINAL_OPEN) or ALLOW
        if any(_under(route, prefix) for prefix in KERNEL_PREFIXES):
            # Listing kernels and sessions is reading; starting, connecting to or stopping one is not.
            if facts.method in ("GET", "HEAD") and not route.endswith("/channels"):
                return ALLOW
            return _policy(self.write, Action.WORKSPACE_WRITE) or ALLOW
        for handler_class, rule in self._by_class:
            if issubclass(facts.handler_class, handler_class):
                try:
                    return rule(facts)
                except PathRefused as refused:
                    # 404: whether something exists outside the project (or hidden in it) must not leak.
                    return _refuse(404, f"not found in this project ({refused.reason})", PATH_ACTION)
        if any(_under(route, prefix) for prefix in FILE_PREFIXES):
            return _refuse(403, "unknown route under a file-serving prefix", ROUTE_ACTION)
        # Anything else (pages, settings, kernelspecs, static files) serves no project file; jupyter-server
        # still authenticates it.
        return ALLOW

    # --- helpers -----------------------------------------------------------------------------------------

    def _resolve(self, api_path: Any, url_separator: bool = False) -> str:
        """Body paths have no separator before them: a leading ``/`` there is an absolute path."""
        if not isinstance(api_path, str):
            raise PathRefused("path is not a string")
        return resolve_inside(self.root_real, api_path, url_separator)

    def _resolve_arg(self, facts: RequestFacts) -> str:
        # ``path_regex`` routes capture the "/" before the path; ``/files/(.*)`` captures after it.
        if "path" in facts.path_kwargs:
            return self._resolve(facts.path_kwargs["path"], url_separator=True)
        return self._resolve(facts.path_args[0] if facts.path_args else "")

    def _body(self, facts: RequestFacts) -> dict[str, Any] | None:
        try:
            return facts.json_body()
        except (UnicodeDecodeError, ValueError):
            # The handler would answer 400 too; refusing here keeps us from guessing at what it would parse.
            raise PathRefused("request body is not a JSON object") from None

    # --- file bytes out ----------------------------------------------------------------------------------

    def _files(self, facts: RequestFacts) -> Verdict:
        # /files serves raw bytes (GET, HEAD, Range, ?download=1 alike): only for roles that may download.
        self._resolve_arg(facts)
        if facts.method not in ("GET", "HEAD"):
            return _refuse(403, "only GET and HEAD exist on /files", ROUTE_ACTION)
        return _policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    def _view(self, facts: RequestFacts) -> Verdict:
        # /view frames /files in a page: same right.
        self._resolve_arg(facts)
        return _policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    def _nbconvert_file(self, facts: RequestFacts) -> Verdict:
        # Every exporter turns a notebook into a file to take away (HTML, PDF, script, ...).
        self._resolve_arg(facts)
        return _policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    def _nbconvert_post(self, facts: RequestFacts) -> Verdict:
        return _policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    def _redirect_only(self, facts: RequestFacts) -> Verdict:
        # These only redirect (/api/notebooks to /api/contents, "a/" to "a"); the target is decided again.
        return ALLOW

    # --- contents API ------------------------------------------------------------------------------------

    def _contents(self, facts: RequestFacts) -> Verdict:
        target = self._resolve_arg(facts)
        method = facts.method
        if method in ("GET", "HEAD"):
            return self._contents_get(facts, target)
        if method == "PUT":
            return self._contents_put(facts, target)
        if method not in ("POST", "PATCH", "DELETE"):
            return _refuse(403, f"{method} is not a contents operation", ROUTE_ACTION)
        refused = _policy(self.write, Action.WORKSPACE_WRITE)
        if refused:
            return refused
        body = self._body(facts) or {}
        if method == "POST" and body.get("copy_from"):
            # Copies stay inside the project: the source is checked like any other path.
            self._resolve(body["copy_from"])
        if method == "PATCH" and "path" in body:
            # A rename's target must be inside the project too (renaming out of the root is a way out).
            self._resolve(body["path"])
        return ALLOW

    def _contents_get(self, facts: RequestFacts, target: str) -> Verdict:
        query = facts.query
        fmt, kind = query.get("format"), query.get("type")
        if kind not in (None, "directory", "file", "notebook"):
            kind = "file"  # as jupyter-server does
        if query.get("hash", "0") != "0" or fmt == "base64":
            # A hash confirms guesses about a file; base64 is the file itself.
            return _policy(self.download, Action.FILE_DOWNLOAD) or ALLOW
        if query.get("content", "1") == "0" or os.path.isdir(target) or not os.path.exists(target):
            # Metadata, directory listings and 404s carry no file bytes.
            return ALLOW
        if kind == "notebook" or (kind is None and target.endswith(".ipynb")):
            # Notebooks must open and save; what they show is on screen anyway (see the README).
            return ALLOW
        if self.download:
            return ALLOW
        if fmt is None:
            # Without a format the server answers base64 for a file that is not UTF-8 (the file itself).
            return _refuse(403, "ask for format=text: without a format binary files are sent whole", "file.download")
        return _policy(self.text, Action.FILE_DOWNLOAD) or ALLOW

    def _contents_put(self, facts: RequestFacts, target: str) -> Verdict:
        refused = _policy(self.write, Action.WORKSPACE_WRITE)
        if refused:
            return refused
        body = self._body(facts)
        if not body:
            return ALLOW  # an empty PUT makes a new untitled notebook: writing, not uploading
        if body.get("path"):
            self._resolve(body["path"])
        # Uploads bring bytes in: a new file with content, chunked transfers, or binary content.
        new_with_content = not os.path.exists(target) and body.get("content") is not None
        if new_with_content or "chunk" in body or body.get("format") == "base64":
            return _policy(self.upload, Action.FILE_UPLOAD) or ALLOW
        return ALLOW

    def _checkpoints(self, facts: RequestFacts) -> Verdict:
        self._resolve_arg(facts)
        if facts.method in ("GET", "HEAD"):
            return ALLOW  # the list of checkpoints holds ids and times only
        return _policy(self.write, Action.WORKSPACE_WRITE) or ALLOW

    def _trust(self, facts: RequestFacts) -> Verdict:
        self._resolve_arg(facts)
        return _policy(self.write, Action.WORKSPACE_WRITE) or ALLOW
