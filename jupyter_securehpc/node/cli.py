"""``securehpc-node``: the launcher on the compute node.

- ``check``: what this node lacks to run secure sessions, and the fix;
- ``exec --spec FILE -- PROGRAM ARGS...``: run a program in the project sandbox (headless runs, tests).

The wrapped single-use token comes from ``$SECUREHPC_WRAPPED_TOKEN`` (removed from the environment before
anything else starts) or, with ``--token-stdin``, from the first line of standard input. Never pass it as
an argument.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .launcher import LaunchError, exec_program, load_spec
from .prereqs import node_problems
from .spec import SpecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="securehpc-node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="report what this node lacks to run secure sessions, and the fix")
    run = sub.add_parser("exec", help="run PROGRAM inside the project sandbox")
    run.add_argument("--spec", type=Path, help="session spec (JSON); default $SECUREHPC_SESSION_SPEC")
    run.add_argument("--token-stdin", action="store_true", help="read the wrapped token from standard input")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="securehpc-node: %(message)s")

    if args.command == "check":
        problems = node_problems()
        for problem in problems:
            print(f"NOT READY: {problem}", file=sys.stderr)
        if not problems:
            print("node ready: bubblewrap, gocryptfs, FUSE and user namespaces all work")
        return 1 if problems else 0

    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("exec needs a program: securehpc-node exec --spec FILE -- PROGRAM ARGS...")
    try:
        return exec_program(load_spec(args.spec), program, token_from_stdin=args.token_stdin)
    except SpecError as error:
        print(f"securehpc-node: {error}", file=sys.stderr)
        return 64
    except LaunchError as error:
        print(f"securehpc-node: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
