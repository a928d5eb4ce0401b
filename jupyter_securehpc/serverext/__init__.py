"""The single-user server extension: no file leaves a project, no path leaves its root.

Enabled by ``jupyter-config/jupyter_server_config.d/jupyter_securehpc.json`` (installed by the wheel) and
set explicitly by the node launcher (``--ServerApp.jpserver_extensions``), so a user cannot switch it off.
Modules: ``session`` (the policy file), ``paths`` (containment), ``rules`` (what a request may do),
``guard`` (applies the rules to every request, CSP, audit), ``authorizer`` (jupyter-server's authorizer
hook), ``app`` (the extension app and its settings).
"""

from __future__ import annotations

from .app import SecureHPCServerExtension


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    return [{"module": "jupyter_securehpc.serverext", "app": SecureHPCServerExtension}]


__all__ = ["SecureHPCServerExtension"]
