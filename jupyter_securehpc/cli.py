"""``securehpc``: the admin's command line on the hub host.

Each component adds its own verbs (``register(subparsers)``); this module only dispatches, turns
expected failures into one clear line on stderr and a non-zero exit, and never prints a traceback for
them. Verbs of optional parts (``dev``: the local cluster, from the ``[dev]`` extra) are plugins: entry points
of the group ``jupyter_securehpc.cli_plugins``, imported only when their verb is used, so that the admin
command of a production hub neither loads nor needs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import EntryPoint, entry_points

from traitlets import TraitError

from . import config_reference
from .audit import AuditError
from .keys import KeyStoreError
from .projects import cli as projects_cli
from .projects.db import SchemaError
from .projects.service import BadInput, Refused
from .runs import cli as runs_cli
from .stores.gocryptfs import StoreError
from .vocabulary import InvalidName

# Failures a person can act on: one line on stderr, no traceback.
EXPECTED_ERRORS = (
    BadInput, InvalidName, KeyStoreError, StoreError, SchemaError, AuditError, TraitError, FileNotFoundError,
    RuntimeError,
)  # fmt: skip

PLUGIN_GROUP = "jupyter_securehpc.cli_plugins"
# Verbs that come from an optional part: the top-level help, and what to install when the part is missing.
OPTIONAL_VERBS = {
    "dev": ("the local single-machine cluster (demo and tests)", "pip install 'jupyter-securehpc[dev]'"),
}


class PluginMissing(Exception):
    """A plugin verb whose code is not installed (or does not import)."""


def plugins() -> dict[str, EntryPoint | None]:
    """Plugin verbs by name: their entry point, or None for an optional verb that nothing provides."""
    found: dict[str, EntryPoint | None] = dict.fromkeys(OPTIONAL_VERBS)
    found.update({entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)})
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="securehpc",
        description="Manage jupyter-securehpc: the local cluster, projects, keys, audit.",
        parents=[projects_cli.common_options()],
    )
    parser.add_argument("--debug", action="store_true", help="log every step (never secrets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, entry in plugins().items():
        # No options here: everything after the verb goes to the plugin's own parser (see plugin_parser).
        help_text = OPTIONAL_VERBS[name][0] if name in OPTIONAL_VERBS else f"from {entry.value.split(':')[0]}"
        sub.add_parser(name, help=help_text, add_help=False).set_defaults(plugin=name)
    projects_cli.register(sub)
    runs_cli.register(sub)
    reference = sub.add_parser("config-reference", help="print the configuration reference (Markdown)")
    reference.set_defaults(handler=lambda args: print(config_reference.reference()))
    projects_cli.add_global_defaults(parser)
    parser.set_defaults(plugin=None)
    return parser


def plugin_parser(name: str) -> argparse.ArgumentParser:
    """The parser of a plugin verb, filled by the plugin; PluginMissing with what to install if it is not there."""
    entry = plugins().get(name)
    install = OPTIONAL_VERBS[name][1] if name in OPTIONAL_VERBS else "install the package that provides it"
    if entry is None:
        raise PluginMissing(f"`securehpc {name}` is not installed: {install}")
    try:
        configure = entry.load()
    except ImportError as error:
        raise PluginMissing(f"`securehpc {name}` cannot be loaded ({error}): {install}") from None
    parser = argparse.ArgumentParser(prog=f"securehpc {name}")
    configure(parser)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.plugin is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args
    # The global options given before the verb stay set (argparse does not overwrite them with defaults).
    return plugin_parser(args.plugin).parse_args(rest, namespace=args)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except (PluginMissing, *EXPECTED_ERRORS) as error:
        print(f"securehpc: error: {error}", file=sys.stderr)
        return 1
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
