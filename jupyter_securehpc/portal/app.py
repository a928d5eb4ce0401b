"""``securehpc-portal`` (``python -m jupyter_securehpc.portal``): the portal's tornado application.

JupyterHub starts it as a managed service (see hubconfig.py) and passes what it needs in ``JUPYTERHUB_*``
variables: where to listen, the hub's API, the service's token and OAuth client. Site settings come from the
same traitlets configuration as the command line (``--config``, default /etc/securehpc/securehpc_config.py)
and from the command line (``--SecureHPC.db_url=...``); the key server's token from ``PortalApp.key_token_file``.
Project accounts (principals) are made by the site's ``ProjectAccounts`` provisioner, as by the command line and
the login's group sync: with ``local`` the portal must run as root (it runs as the hub's user).

Routes: the API (``api/__init__.py``: paths relative to ``<prefix>api/v1``, in OpenAPI's ``{name}``
form), the OAuth callback, and the pages (``pages/__init__.py``: ``routes()``, paths relative to the prefix).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from jupyterhub._data import DATA_FILES_PATH
from tornado import ioloop, web
from tornado.log import access_log
from traitlets import Integer, Unicode, default
from traitlets.config import Application

from ..audit import AuditLog
from ..config import SecureHPC, load_config
from ..keys import KeyStore, KeyStoreConfig
from ..principals import AccountProvisioner, ProjectAccounts
from ..projects.db import open_database
from ..projects.service import Actor, ProjectService
from ..util.lifetime import end_with_parent
from . import API_PREFIX, SERVICE_NAME, pages
from .api import ROUTES as API_ROUTES
from .auth import make_hub_auth
from .base import OAuthCallbackHandler, SignInHandler, UnknownRouteHandler
from .hub import HubClient

HERE = Path(__file__).parent
_PARAM = re.compile(r"\{([a-z_]+)\}")


def route_pattern(template: str) -> str:
    """``/projects/{project}`` -> a tornado pattern with a named group per ``{name}`` (one path segment)."""
    return _PARAM.sub(lambda match: f"(?P<{match[1]}>[^/]+)", template)


def api_routes(prefix: str) -> list[tuple[str, type]]:
    base = prefix.rstrip("/") + "/" + API_PREFIX
    return [(base + route_pattern(path), handler) for path, handler in API_ROUTES]


class PortalApp(Application):
    """The project portal, a JupyterHub service: REST API and pages over ProjectService."""

    name = "securehpc-portal"
    description = "The jupyter-securehpc project portal (a JupyterHub service)."
    classes = [SecureHPC, KeyStoreConfig, ProjectAccounts]  # noqa: RUF012 - traitlets.Application declares it so

    config_file = Unicode(
        "",
        help="""Site configuration file (traitlets, as for the ``securehpc`` command line). Default:
        /etc/securehpc/securehpc_config.py when it exists.""",
    ).tag(config=True)

    key_token_file = Unicode(
        "",
        help="""File (mode 0600, readable by the hub's user only) with the portal's OpenBao token, whose policy is
        ``KeyStore.portal_policy()``: it creates project keys and writes the projects' OpenBao policies (project
        creation, shares), never reads a key, never deletes one, makes no token. Empty: ``$VAULT_TOKEN`` of the
        service's environment (JupyterHub passes a managed service only what its ``environment`` names).""",
    ).tag(config=True)

    service_url = Unicode(
        help="Where the portal listens. Default: ``$JUPYTERHUB_SERVICE_URL`` (the ``url`` of the service's entry)."
    ).tag(config=True)

    service_prefix = Unicode(
        help="The portal's URL path. Default: ``$JUPYTERHUB_SERVICE_PREFIX``, else ``/services/securehpc/``."
    ).tag(config=True)

    hub_api_url = Unicode(help="The hub's REST API. Default: ``$JUPYTERHUB_API_URL``.").tag(config=True)

    token_cache_seconds = Integer(
        60,
        help="""Seconds the hub's answer about a person's token is reused: a revoked token or a removed role
        stops working in the portal within that time.""",
    ).tag(config=True)

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        cli_config = self.config
        config = load_config(Path(self.config_file) if self.config_file else None)
        config.merge(cli_config)  # the command line wins over the file
        self.update_config(config)

    def keystore_config(self) -> KeyStoreConfig:
        keys = KeyStoreConfig(config=self.config)
        if self.key_token_file:
            try:
                keys.token = Path(self.key_token_file).read_text().strip()
            except OSError as error:
                # Still serve what needs no key server; project creation and shares answer 503 and say why.
                self.log.error("PortalApp.key_token_file %s cannot be read (%s)", self.key_token_file, error.strerror)
        return keys

    def account_provisioner(self) -> AccountProvisioner:
        """What makes the principals of members added and projects created here: the site's
        ``ProjectAccounts``, as for ``securehpc member add`` and the login's group sync."""
        settings = ProjectAccounts(config=self.config)
        if settings.provisioner == "local" and os.geteuid() != 0:
            # Still serve everything else; adding a member or creating a project answers 503 saying why.
            self.log.error(
                "ProjectAccounts.provisioner is 'local' but the portal runs as uid %d, not root: useradd will "
                "fail, and members added here cannot start sessions. Run the hub as root, give the site's "
                "account command (provisioner 'command'), or set provisioner 'none' and run "
                "`securehpc account sync` (see the admin guide)",
                os.geteuid(),
            )
        return settings.make_provisioner()

    def make_app(self) -> web.Application:
        site = SecureHPC(config=self.config)
        sessions = open_database(site.db_url)
        audit = AuditLog(Path(site.audit_log))
        keys_config = self.keystore_config()
        accounts = self.account_provisioner()
        api_token = os.environ.get("JUPYTERHUB_API_TOKEN", "")

        def project_service(actor: Actor) -> ProjectService:
            return ProjectService(sessions, KeyStore(keys_config), audit, Path(site.store_root), actor, accounts)

        prefix = self.service_prefix
        hub_auth = make_hub_auth(
            api_token=api_token, api_url=self.hub_api_url, base_url=prefix, cache_max_age=self.token_cache_seconds
        )
        templates = [str(HERE / "templates")]
        # JupyterHub's own templates, so that pages can extend its page.html.
        hub_templates = Path(DATA_FILES_PATH) / "templates"
        if hub_templates.is_dir():
            templates.append(str(hub_templates))
        routes = [
            *api_routes(prefix),
            (prefix.rstrip("/") + "/oauth_callback", OAuthCallbackHandler),
            (prefix.rstrip("/") + "/sign-in", SignInHandler),
            *[(prefix.rstrip("/") + route_pattern(path), handler) for path, handler in pages.routes()],
            (prefix.rstrip("/") + "/" + API_PREFIX + "/.*", UnknownRouteHandler),
        ]
        return web.Application(
            routes,
            hub_auth=hub_auth,
            project_service=project_service,
            hub=HubClient(self.hub_api_url, api_token),
            service_prefix=prefix,
            # A fresh secret per start: the portal's cookie only holds the hub's OAuth token, and after a restart
            # the browser signs in again through the hub without being asked.
            cookie_secret=secrets.token_bytes(32),
            # XSRF is checked by HubOAuth when it reads the cookie (base.py), not by tornado, which would also
            # ask token-authenticated scripts for it.
            xsrf_cookies=False,
            jinja2_env=jinja2.Environment(
                loader=jinja2.FileSystemLoader(templates), autoescape=True, undefined=jinja2.StrictUndefined
            ),
            log_function=log_request,
            static_path=str(HERE / "static"),
            static_url_prefix=prefix.rstrip("/") + "/static/",
        )

    def start(self) -> None:
        url = urlsplit(self.service_url)
        app = self.make_app()
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("securehpc portal listening on %s (prefix %s)", self.service_url, self.service_prefix)
        ioloop.IOLoop.current().start()


def log_request(handler: web.RequestHandler) -> None:
    """One access log line per request, without the query string (OAuth codes and states travel there)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    user = getattr(handler, "caller", None)
    who = f" ({user.name})" if user is not None else ""
    millis = 1000 * handler.request.request_time()
    access_log.log(level, "%d %s %s%s %.1fms", status, handler.request.method, handler.request.path, who, millis)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s securehpc-portal] %(message)s")
    if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
        end_with_parent()  # a managed service: it ends with its hub, also a killed one
    app = PortalApp.instance()
    app.initialize(argv)
    app.start()
