"""What a request may do, from its handler class, route, method, arguments and body. Deny by default.

``Rules.decide`` first refuses the prefixes that are off for every role (collaboration, file ids, the proxy,
the extension manager...), then looks the handler class up in the allow-list (``routes.ROUTES``) and runs its
rule: a class without a rule is refused and audited (``route.refused``), so a route of a server extension
installed later serves nothing until a rule for it exists. The contents API's rules (what "text" means,
which write is an upload) are in ``contents.py``.

Role decisions are never made here: they come from ``Session.decision`` (``projects.authz.decide``).
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_core.paths import jupyter_config_dir

from jupyter_securehpc.projects.authz import Action

from .contents import ContentsRules
from .facts import (
    ALLOW,
    PATH_ACTION,
    ROUTE_ACTION,
    RequestFacts,
    Verdict,
    by_policy,
    read_only_method,
    refuse,
    refuse_route,
)
from .paths import PathRefused, resolve_inside, writable_place
from .routes import RouteTable, import_path
from .session import Session

# Routes through which file bytes or paths leave: an unknown route (404) under these is a refusal to record.
FILE_PREFIXES = ("/files", "/view", "/nbconvert", "/api/contents", "/api/notebooks")

# Refused for every role, whatever handler serves them. Collaboration rooms stream documents to whoever joins;
# fileid maps ids to paths; resolvePath reveals paths; the proxy reaches other processes'
# ports; the extension manager installs code.
REFUSED_PREFIXES = {
    "/api/collaboration": "collaboration rooms are off in secure projects",
    "/api/yjs": "collaboration rooms are off in secure projects",
    "/api/fileid": "file ids are off in secure projects",
    "/api/resolvePath": "path resolution is off in secure projects",
    "/proxy": "jupyter-server-proxy is off in secure projects",
    "/server-proxy": "jupyter-server-proxy is off in secure projects",
    "/lab/api/extensions": "the extension manager is off in secure projects",
}
# Where terminals live when the policy enables them (when it does not, nobody serves these routes: refused).
TERMINAL_PREFIXES = ("/terminals", "/api/terminals")
# Refused for every method but GET and HEAD (reading the list is harmless; changing it is not).
READ_ONLY_PREFIXES = {"/lab/api/plugins": "the plugin manager is read-only in secure projects"}

_REFUSED_STARTS = (*REFUSED_PREFIXES, *READ_ONLY_PREFIXES)  # a route under one starts with it

__all__ = ["ALLOW", "PATH_ACTION", "ROUTE_ACTION", "RequestFacts", "Rules", "Verdict"]


def _under(route: str, prefix: str) -> bool:
    return route == prefix or route.startswith(prefix + "/")


class Rules:
    """The decisions for one session (role and policy are fixed for a server's lifetime)."""

    def __init__(self, session: Session, root_real: str, *, kernelspec_files_on_disk: bool = True) -> None:
        self.session = session
        self.root_real = root_real
        self.download = session.decision(Action.FILE_DOWNLOAD)
        self.upload = session.decision(Action.FILE_UPLOAD)
        self.terminals = session.decision(Action.TERMINAL_OPEN)
        self.write = session.decision(Action.WORKSPACE_WRITE)
        self.text = session.may_read_text
        # False when the kernel-spec manager serves resources itself (gateway): no file to check, refused.
        self.kernelspec_files_on_disk = kernelspec_files_on_disk
        self.routes = RouteTable()
        self.contents = ContentsRules(
            root_real,
            self._resolve,
            {
                Action.WORKSPACE_WRITE: self.write,
                Action.FILE_UPLOAD: self.upload,
                Action.FILE_DOWNLOAD: self.download,
                Action.FILE_READ_TEXT: self.text,
            },
        )

    # --- entry point -------------------------------------------------------------------------------------

    def decide(self, facts: RequestFacts) -> Verdict:
        route = facts.route
        if route.startswith(_REFUSED_STARTS):  # only then can one of them hold: most requests pass at once
            for prefix, reason in REFUSED_PREFIXES.items():
                if _under(route, prefix):
                    return refuse_route(reason)
            for prefix, reason in READ_ONLY_PREFIXES.items():
                if _under(route, prefix) and facts.method not in ("GET", "HEAD"):
                    return refuse_route(reason)
        entry = self.routes.rule_for(facts.handler_class)
        if entry is None:
            return refuse_route(f"no rule allows {import_path(facts.handler_class)} in secure projects")
        name, why = entry
        try:
            return getattr(self, f"_rule_{name}")(facts, why)
        except PathRefused as refused:
            # 404: whether something exists outside the project (or hidden in it) must not leak.
            return refuse(404, f"not found in this project ({refused.reason})", PATH_ACTION)

    def is_static(self, handler_class: type) -> bool:
        """Serves files from folders (checked per file by ``static_file``)."""
        entry = self.routes.rule_for(handler_class)
        return entry is not None and entry[0] in ("static", "kernelspec_resource")

    def static_file(self, absolute_path: str) -> Verdict:
        """A static file is served only from a place this process (and so the kernel) cannot write."""
        writable = writable_place(absolute_path)
        if writable is None:
            return ALLOW
        return refuse_route("static files are served only from read-only folders; this one lies in a writable one")

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

    # --- rules without file bytes ------------------------------------------------------------------------

    def _rule_public(self, facts: RequestFacts, why: str) -> Verdict:
        return ALLOW  # login, logout and the OAuth callback: they reveal nothing and must work logged out

    def _rule_redirect(self, facts: RequestFacts, why: str) -> Verdict:
        return ALLOW  # the redirect's target is a request of its own, decided again

    def _rule_page(self, facts: RequestFacts, why: str) -> Verdict:
        return read_only_method(facts, "this page") or ALLOW

    def _rule_api_read(self, facts: RequestFacts, why: str) -> Verdict:
        return read_only_method(facts, "this API") or ALLOW

    def _rule_read_only(self, facts: RequestFacts, why: str) -> Verdict:
        return read_only_method(facts, why.split(";")[0]) or ALLOW

    def _rule_lab_state(self, facts: RequestFacts, why: str) -> Verdict:
        # JupyterLab's settings and workspaces: reading keeps the UI working; writing would store what the
        # browser sends in folders outside the project (a later version keeps them in memory).
        if facts.method in ("GET", "HEAD"):
            return ALLOW
        return refuse_route(f"{why.split(';')[0]} are read-only in secure projects for now")

    def _rule_refused(self, facts: RequestFacts, why: str) -> Verdict:
        return refuse_route(why)

    def _rule_csp_report(self, facts: RequestFacts, why: str) -> Verdict:
        # Browsers POST violation reports; the server only logs them (inside the session).
        return ALLOW if facts.method == "POST" else refuse_route("CSP reports are POST only")

    def _rule_not_found(self, facts: RequestFacts, why: str) -> Verdict:
        if any(_under(facts.route, prefix) for prefix in FILE_PREFIXES):
            return refuse_route("unknown route under a file-serving prefix")
        if any(_under(facts.route, prefix) for prefix in TERMINAL_PREFIXES):
            return by_policy(self.terminals, Action.TERMINAL_OPEN) or ALLOW
        return ALLOW  # a 404 page carries nothing

    def _rule_licenses(self, facts: RequestFacts, why: str) -> Verdict:
        if facts.query.get("download", "0") not in ("0", "false", ""):
            return refuse_route("licence downloads are off in secure projects")
        return read_only_method(facts, "the licences API") or ALLOW

    def _rule_terminals(self, facts: RequestFacts, why: str) -> Verdict:
        return by_policy(self.terminals, Action.TERMINAL_OPEN) or ALLOW

    def _rule_kernels(self, facts: RequestFacts, why: str) -> Verdict:
        # Listing kernels and sessions is reading; starting, changing or stopping one runs or stops code,
        # which can write anywhere the workspace can: observers only look.
        if facts.method in ("GET", "HEAD"):
            return ALLOW
        return by_policy(self.write, Action.WORKSPACE_WRITE) or ALLOW

    def _rule_write(self, facts: RequestFacts, why: str) -> Verdict:
        if "path" in facts.path_kwargs:
            self._resolve_arg(facts)
        return by_policy(self.write, Action.WORKSPACE_WRITE) or ALLOW

    # --- static files --------------------------------------------------------------------------------------

    def _rule_static(self, facts: RequestFacts, why: str) -> Verdict:
        # Each file is checked when it is found (``static_file``, from validate_absolute_path).
        return read_only_method(facts, "static files") or ALLOW

    def _rule_kernelspec_resource(self, facts: RequestFacts, why: str) -> Verdict:
        if not self.kernelspec_files_on_disk:
            return refuse_route("kernel-spec resources that are not files cannot be checked")
        return self._rule_static(facts, why)

    def _rule_custom_css(self, facts: RequestFacts, why: str) -> Verdict:
        refused = read_only_method(facts, "custom.css")
        if refused:
            return refused
        # Notebook 7 reads <config dir>/custom/custom.css itself (no static handler to check the file).
        css = os.path.join(jupyter_config_dir(), "custom", "custom.css")
        return self.static_file(css if os.path.exists(css) else jupyter_config_dir())

    # --- file bytes out ----------------------------------------------------------------------------------

    def _rule_files(self, facts: RequestFacts, why: str) -> Verdict:
        # /files serves raw bytes (GET, HEAD, Range, ?download=1 alike), /view frames it: download rights.
        self._resolve_arg(facts)
        refused = read_only_method(facts, "/files")
        return refused or by_policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    def _rule_nbconvert(self, facts: RequestFacts, why: str) -> Verdict:
        # Every exporter turns a notebook into a file to take away (HTML, PDF, script, ...).
        if "path" in facts.path_kwargs:
            self._resolve_arg(facts)
        return by_policy(self.download, Action.FILE_DOWNLOAD) or ALLOW

    # --- contents API ------------------------------------------------------------------------------------

    def _rule_contents(self, facts: RequestFacts, why: str) -> Verdict:
        target = self._resolve_arg(facts)
        method = facts.method
        if method in ("GET", "HEAD"):
            return self.contents.read(facts, target)
        if method == "PUT":
            return self.contents.put(facts, target, self._body(facts))
        if method not in ("POST", "PATCH", "DELETE"):
            return refuse_route(f"{method} is not a contents operation")
        refused = by_policy(self.write, Action.WORKSPACE_WRITE)
        return refused or self.contents.change(facts, target, self._body(facts) or {})

    def _rule_checkpoints(self, facts: RequestFacts, why: str) -> Verdict:
        self._resolve_arg(facts)
        return self.contents.checkpoints(facts)
