"""The single-user server extension: no file leaves a project, no path leaves its root.

Enabled by ``jupyter-config/jupyter_server_config.d/jupyter_securehpc.json`` (installed by the wheel) and
set explicitly by the node launcher (``--ServerApp.jpserver_extensions``), so a user cannot switch it off.
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
