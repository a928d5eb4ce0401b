"""The project portal: a JupyterHub service at ``/services/securehpc/`` with a REST API (``api/v1``) and pages.

People sign in with the hub's own OAuth (``HubOAuth``); scripts send a JupyterHub API token that carries
:data:`ACCESS_SCOPE`. Every request goes through :class:`~jupyter_securehpc.projects.service.ProjectService`
(the same rules and audit log as the ``securehpc`` command line); the portal opens no database session itself,
holds no key-reading credential and serves no byte of project data.

Layout: ``app.py`` (the tornado application, ``securehpc-portal``), ``auth.py`` (who calls), ``base.py`` (the
handlers' base: sign-in, XSRF, security headers, errors), ``errors.py``, ``hub.py`` (the hub's REST API with
the service's token: sessions), ``hubconfig.py`` (what ``jupyterhub_config.py`` sets), ``openapi.py`` (the
API's OpenAPI 3 document), ``api/`` (one module per resource), ``pages/`` and ``templates/`` (the web pages).
"""

SERVICE_NAME = "securehpc"
# What a person's token needs to use the portal at all (JupyterHub grants it through a role, see hubconfig.py).
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
# The portal's hub admins (create projects, set policies, read the whole audit log): a custom scope that the
# site gives its operators through a role. Not JupyterHub's `admin` flag: a secure hub has no JupyterHub admins.
ADMIN_SCOPE = "custom:securehpc:admin"
API_PREFIX = "api/v1"
# Recorded as ``via`` in every audit event of a request that came through the portal.
VIA = "portal"
