"""The single-user server extension: no file leaves a project, no path leaves its root.

Enabled only by the node launcher, on the session server's command line (``node/serve.py``,
``SERVER_EXTENSION_ARGS``), so that no configuration file can switch it off; the package installs no Jupyter
configuration file, so other Jupyter servers of the environment stay stock.
Modules: ``session`` (the policy file), ``paths`` (containment, read-only places), ``routes`` (the
allow-list of handler classes), ``rules`` (what a request may do), ``contents`` (text reads and uploads),
``facts`` (what rules see and answer), ``guard`` (applies the rules to every request, safe errors, CSP,
audit), ``sink`` (the audit pipe or file), ``process`` (the launcher's socket, tokens, no dumps),
``authorizer`` (jupyter-server's authorizer hook), ``app`` (the extension app and its settings).
"""

from __future__ import annotations

from .app import SecureHPCServerExtension


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    return [{"module": "jupyter_securehpc.serverext", "app": SecureHPCServerExtension}]


__all__ = ["SecureHPCServerExtension"]
