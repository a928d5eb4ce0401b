"""The allow-list: one rule per handler class of the single-user server, keyed by its import path.

A handler class that is not in ``ROUTES`` is refused (403) and audited, whatever its route: a server
extension installed later serves nothing until a rule for it exists here. Keys are import path strings
(``module.QualName``), resolved lazily against the class that actually handles a request, so the table
works whether or not JupyterLab, Notebook 7 or the terminals extension are installed, and a class that only
borrows a listed name (another module, a subclass) gets no rule. Subclasses never inherit a rule.

Each entry is ``(rule, why)``: ``rule`` names a method of ``rules.Rules`` (``_rule_<name>``), ``why`` is the
one-line reason the route may exist (for ``refused`` rules: the reason given to the user and the audit log).
"""

from __future__ import annotations

import sys
import threading

JS = "jupyter_server"
LAB = "jupyterlab"
LABSERVER = "jupyterlab_server"
NB = "notebook.app"
TERMS = "jupyter_server_terminals"
HUB = "jupyterhub.singleuser.extension"

ROUTES: dict[str, tuple[str, str]] = {
    # --- jupyter_server: login, pages, redirects -----------------------------------------------------------
    f"{JS}.auth.login.LoginFormHandler": ("public", "the login form (token login outside the hub)"),
    f"{JS}.auth.logout.LogoutHandler": ("public", "logging out clears the session's cookie"),
    f"{JS}.base.handlers.MainHandler": ("page", "the root page only redirects to the default UI"),
    f"{JS}.base.handlers.RedirectWithParams": ("redirect", "redirects to the default UI; the target is decided again"),
    f"{JS}.base.handlers.TrailingSlashHandler": ("redirect", "redirects 'a/' to 'a'; the target is decided again"),
    f"{JS}.base.handlers.FilesRedirectHandler": ("redirect", "redirects to /files or /notebooks, decided again"),
    f"{JS}.services.contents.handlers.NotebooksRedirectHandler": (
        "redirect", "redirects /api/notebooks to /api/contents; decided again there"),
    f"{JS}.base.handlers.Template404": ("not_found", "answers 404 for routes nobody serves"),
    # --- jupyter_server: static files (served only from folders this process cannot write) --------------
    f"{JS}.base.handlers.FileFindHandler": ("static", "the UI's own static files, from read-only folders"),
    f"{JS}.base.handlers.PublicStaticFileHandler": ("static", "favicon and robots.txt, from read-only folders"),
    f"{JS}.kernelspecs.handlers.KernelSpecResourceHandler": (
        "kernelspec_resource", "kernel logos, from read-only kernel-spec folders only (a kernel can write specs)"),
    f"{JS}.services.api.handlers.APISpecHandler": ("static", "the REST API's OpenAPI file, from the package"),
    # --- jupyter_server: REST API --------------------------------------------------------------------------
    f"{JS}.base.handlers.APIVersionHandler": ("api_read", "the server's version; the hub's readiness check"),
    f"{JS}.services.api.handlers.APIStatusHandler": ("api_read", "counts of kernels and connections"),
    f"{JS}.services.api.handlers.IdentityHandler": ("api_read", "who is logged in, and what the UI may offer"),
    f"{JS}.services.contents.handlers.ContentsHandler": ("contents", "the file browser and editors (contents.py)"),
    f"{JS}.services.contents.handlers.CheckpointsHandler": ("checkpoints", "saving and restoring file versions"),
    f"{JS}.services.contents.handlers.ModifyCheckpointsHandler": ("checkpoints", "restoring and deleting versions"),
    f"{JS}.services.contents.handlers.TrustNotebooksHandler": ("write", "trusting a notebook's outputs writes it"),
    f"{JS}.services.kernels.handlers.MainKernelHandler": ("kernels", "listing kernels; starting one runs code"),
    f"{JS}.services.kernels.handlers.KernelHandler": ("kernels", "a kernel's model; stopping one is a write"),
    f"{JS}.services.kernels.handlers.KernelActionHandler": ("write", "restarting or interrupting a kernel"),
    f"{JS}.services.kernels.websocket.KernelWebsocketHandler": ("write", "the kernel's channels run code"),
    f"{JS}.services.kernelspecs.handlers.MainKernelSpecHandler": ("api_read", "the kernels a user may start"),
    f"{JS}.services.kernelspecs.handlers.KernelSpecHandler": ("api_read", "one kernel spec's model"),
    f"{JS}.services.sessions.handlers.SessionRootHandler": ("kernels", "listing sessions; starting one runs code"),
    f"{JS}.services.sessions.handlers.SessionHandler": ("kernels", "a session's model; changing one is a write"),
    f"{JS}.services.nbconvert.handlers.NbconvertRootHandler": ("api_read", "the list of export formats"),
    f"{JS}.nbconvert.handlers.NbconvertFileHandler": ("nbconvert", "exports are files to take away: downloads"),
    f"{JS}.nbconvert.handlers.NbconvertPostHandler": ("nbconvert", "exports are files to take away: downloads"),
    f"{JS}.files.handlers.FilesHandler": ("files", "raw file bytes: downloads"),
    f"{JS}.base.handlers.AuthenticatedFileHandler": ("files", "raw file bytes: downloads"),
    f"{JS}.view.handlers.ViewHandler": ("files", "frames /files in a page: downloads"),
    f"{JS}.services.config.handlers.ConfigHandler": (
        "read_only", "front-end config sections; read-only as writes would persist outside the project"),
    f"{JS}.services.security.handlers.CSPReportHandler": ("csp_report", "the browser reports CSP violations"),
    f"{JS}.services.api.handlers.PathResolverHandler": ("refused", "path resolution is off in secure projects"),
    f"{JS}.services.events.handlers.EventHandler": ("refused", "browsers do not write into the server's events"),
    f"{JS}.services.events.handlers.SubscribeWebsocket": (
        "api_read", "the server's events (files saved, kernels started): names the session shows anyway"),
    f"{JS}.services.shutdown.ShutdownHandler": ("refused", "the hub stops servers, not the browser"),
    f"{JS}.base.handlers.PrometheusMetricsHandler": ("refused", "metrics are off in secure projects"),
    # --- this extension's own ----------------------------------------------------------------------------------
    "jupyter_securehpc.serverext.session_api.SessionInfoHandler": (
        "api_read", "the session's project, role and rights, for the JupyterLab extension"),
    # --- terminals (jupyter_server_terminals, and Notebook 7's terminal page) -------------------------------
    f"{TERMS}.api_handlers.TerminalRootHandler": ("terminals", "terminals where the policy enables them"),
    f"{TERMS}.api_handlers.TerminalHandler": ("terminals", "terminals where the policy enables them"),
    f"{TERMS}.handlers.TermSocket": ("terminals", "terminals where the policy enables them"),
    f"{NB}.TerminalHandler": ("terminals", "the terminal page, where the policy enables terminals"),
    # --- JupyterHub's single-user extension -----------------------------------------------------------------
    f"{HUB}.JupyterHubLogoutHandler": ("public", "logging out goes back to the hub"),
    f"{HUB}.JupyterHubOAuthCallbackHandler": ("public", "completes the hub's OAuth login"),
    # --- JupyterLab (jupyterlab_server, jupyterlab) -----------------------------------------------------------
    f"{LABSERVER}.handlers.LabHandler": ("page", "the JupyterLab page"),
    f"{LABSERVER}.handlers.NotFoundHandler": ("page", "JupyterLab's 404 page"),
    f"{LABSERVER}.themes_handler.ThemesHandler": ("static", "theme files, from read-only folders"),
    f"{LABSERVER}.listings_handler.ListingsHandler": ("api_read", "extension allow and block lists"),
    f"{LABSERVER}.translations_handler.TranslationsHandler": ("api_read", "installed language packs"),
    f"{LABSERVER}.licenses_handler.LicensesHandler": ("licenses", "front-end licences, shown but not downloaded"),
    f"{LABSERVER}.settings_handler.SettingsHandler": (
        "lab_state", "user settings; read-only for now: writes would persist outside the project"),
    f"{LABSERVER}.workspaces_handler.WorkspacesHandler": (
        "lab_state", "workspace layouts; read-only for now: writes would persist outside the project"),
    f"{LAB}.handlers.error_handler.ErrorHandler": ("page", "JupyterLab's build-error page"),
    f"{LAB}.handlers.build_handler.BuildHandler": ("read_only", "build status; building is off (read-only)"),
    f"{LAB}.handlers.plugin_manager_handler.PluginHandler": ("read_only", "the plugin list; enabling is off"),
    f"{LAB}.handlers.announcements.CheckForUpdateHandler": ("api_read", "update check (no network: none found)"),
    f"{LAB}.handlers.announcements.NewsHandler": ("api_read", "news feed (no network: empty)"),
    f"{LAB}.handlers.extension_manager_handler.ExtensionHandler": (
        "refused", "the extension manager is off in secure projects"),
    # --- Notebook 7 ------------------------------------------------------------------------------------------
    f"{NB}.TreeHandler": ("page", "the file browser page; files redirect to /files or /notebooks, decided again"),
    f"{NB}.NotebookHandler": ("page", "the notebook page (the notebook itself comes through contents)"),
    f"{NB}.FileHandler": ("page", "the editor page (the file itself comes through contents)"),
    f"{NB}.ConsoleHandler": ("page", "the console page (the kernel is decided on its own routes)"),
    f"{NB}.CustomCssHandler": ("custom_css", "the admin's custom.css, from a read-only config folder"),
    # --- known extensions that stay off ---------------------------------------------------------------------
    "jupyter_lsp.handlers.LanguageServersHandler": ("refused", "language servers are off in secure projects"),
    "jupyter_lsp.handlers.LanguageServerWebSocketHandler": ("refused", "language servers are off in secure projects"),
}  # fmt: skip


class RouteTable:
    """Finds the rule of a handler class (exact class, resolved lazily by import path), cached per class."""

    def __init__(self, routes: dict[str, tuple[str, str]] | None = None) -> None:
        self.routes = ROUTES if routes is None else routes
        self._cache: dict[type, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def rule_for(self, handler_class: type) -> tuple[str, str] | None:
        try:
            return self._cache[handler_class]
        except KeyError:
            pass
        entry = self.routes.get(import_path(handler_class))
        if entry is not None and _bound_name(handler_class) is not handler_class:
            entry = None  # a class that borrows a listed name (made elsewhere, or replaced since): no rule
        with self._lock:
            self._cache[handler_class] = entry
        return entry


def import_path(handler_class: type) -> str:
    return f"{handler_class.__module__}.{handler_class.__qualname__}"


def _bound_name(handler_class: type) -> object | None:
    """What the class's own module binds at its qualified name (no import: the module is loaded already)."""
    value: object | None = sys.modules.get(handler_class.__module__)
    for name in handler_class.__qualname__.split("."):
        value = getattr(value, name, None)
    return value
