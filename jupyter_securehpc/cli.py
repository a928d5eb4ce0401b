"""``securehpc``: the admin's command line on the hub host.

Each component adds its own verbs (``register(subparsers)``); this module only dispatches, turns
expected failures into one clear line on stderr and a non-zero exit, and never prints a traceback for
them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .devcluster import cli as devcluster_cli


class CommandError(Exception):
    """A refusal or bad input, reported to the user as one line; exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securehpc", description="Manage jupyter-securehpc: the local cluster, projects, keys, audit."
    )
    parser.add_argument("--debug", action="store_true", help="log every step (never secrets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    devcluster_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except (CommandError, RuntimeError) as error:
        print(f"securehpc: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
