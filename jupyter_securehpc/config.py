"""Site settings shared by the CLI, the hub and the spawner: where the database, stores and audit log are.

Set them in a traitlets config file (``/etc/securehpc/securehpc_config.py`` or ``--config``), e.g.
``c.SecureHPC.store_root = "/gpfs/secure/stores"``; the environment variables named in each help text
give the default when the file does not set a value.
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Unicode, default, validate
from traitlets.config import Config, Configurable, PyFileConfigLoader

from .session.env import AUDIT_LOG_ENV, DB_ENV, STORE_ROOT_ENV

DEFAULT_CONFIG_FILE = Path("/etc/securehpc/securehpc_config.py")


class SecureHPC(Configurable):
    """Where this site keeps its projects database, encrypted stores and audit log."""

    db_url = Unicode(
        help="""SQLAlchemy URL of the projects database, e.g. ``sqlite:////var/lib/securehpc/securehpc.sqlite``
        or ``postgresql://securehpc@db/securehpc``. Default: ``$SECUREHPC_DB``, else a SQLite file in
        /var/lib/securehpc.""",
    ).tag(config=True)

    store_root = Unicode(
        help="""Folder on shared storage that holds the encrypted stores (ciphertext only): one per project
        workspace and per dataset. Compute nodes must see the same path. Default: ``$SECUREHPC_STORE_ROOT``,
        else /var/lib/securehpc/stores.""",
    ).tag(config=True)

    audit_log = Unicode(
        help="""Append-only, hash-chained JSON-lines audit log. Default: ``$SECUREHPC_AUDIT_LOG``, else
        /var/log/securehpc/audit.jsonl.""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get(DB_ENV) or "sqlite:////var/lib/securehpc/securehpc.sqlite"

    @default("store_root")
    def _default_store_root(self) -> str:
        return os.environ.get(STORE_ROOT_ENV) or "/var/lib/securehpc/stores"

    @default("audit_log")
    def _default_audit_log(self) -> str:
        return os.environ.get(AUDIT_LOG_ENV) or "/var/log/securehpc/audit.jsonl"

    @validate("store_root", "audit_log")
    def _absolute(self, proposal: dict) -> str:
        if not os.path.isabs(proposal["value"]):
            name = proposal["trait"].name
            raise ValueError(f"SecureHPC.{name} must be an absolute path, got {proposal['value']!r}")
        return proposal["value"]


def load_config(path: Path | None) -> Config:
    """Read a traitlets config file; the default file is optional, an explicitly named one is not."""
    if path is None:
        if not DEFAULT_CONFIG_FILE.exists():
            return Config()
        path = DEFAULT_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    loader = PyFileConfigLoader(path.name, path=str(path.parent))
    return loader.load_config()
