"""``securehpc``: the admin's command line on the hub host.

Each component adds its own verbs (``register(subparsers)``); this module only dispatches, turns
expected failures into one clear line on stderr and a non-zero exit, and never prints a traceback for
them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from traitlets import TraitError

from . import config_reference
from .audit import AuditError
from .devcluster import cli as devcluster_cli
from .keys import KeyStoreError
from .projects import cli as projects_cli
from .projects.db import SchemaError
from .projects.names import InvalidName
from .projects.service import BadInput, Refused
from .stores.gocryptfs import StoreError

# Failures a person can act on: one line on stderr, no traceback.
EXPECTED_ERRORS = (
    BadInput, InvalidName, KeyStoreError, StoreError, SchemaError, AuditError, TraitError, FileNotFoundError,
    RuntimeError,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securehpc",
        description="Manage jupyter-securehpc: the local cluster, projects, keys, audit.",
        parents=[projects_cli.common_options()],
    )
    parser.add_argument("--debug", action="store_true", help="log every step (never secrets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    devcluster_cli.register(sub)
    projects_cli.register(sub)
    reference = sub.add_parser("config-reference", help="print the configuration reference (Markdown)")
    reference.set_defaults(handler=lambda args: print(config_reference.reference()))
    projects_cli.add_global_defaults(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except Refused as error:
        print(f"securehpc: refused: {error}", file=sys.stderr)
        return 1
    except EXPECTED_ERRORS as error:
        print(f"securehpc: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
