"""``securehpc-node``: the launcher on the compute node.

- ``check``: what this node lacks to run secure sessions, and the fix;
- ``exec --spec FILE -- PROGRAM ARGS...``: run a program in the project sandbox (headless runs, tests);
- ``serve --spec FILE [--ip IP] [--port N]``: the user's Jupyter server in the sandbox, for the spawner;
- ``run --from-hub RUN_ID``: a headless run's notebook executed by papermill in the sandbox, its signed spec
  and key asked of the hub when the job starts (what a run's batch script runs); ``run --spec FILE`` for a run
  started by hand (the spec names the notebook).

The wrapped single-use token comes from ``$SECUREHPC_WRAPPED_TOKEN`` (removed from the environment before
anything else starts) or, with ``--token-stdin``, from the first line of standard input (``run --from-hub``:
from the hub's answer, in memory only). Never pass it as an argument.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from ..session.env import SESSION_SPEC_ENV, STORE_ROOT_ENV
from .errors import EX_USAGE, LaunchError
from .launcher import exec_program
from .prereqs import node_advice, node_problems, store_problems
from .run import run as run_headless
from .serve import serve
from .spec import SpecError, load_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="securehpc-node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="report what this node lacks to run secure sessions, and the fix")
    check.add_argument(
        "--store-root",
        type=Path,
        default=Path(os.environ[STORE_ROOT_ENV]) if os.environ.get(STORE_ROOT_ENV) else None,
        help=f"also check the store root's and the workspaces' ownership (default: ${STORE_ROOT_ENV}, if set)",
    )
    run = sub.add_parser("exec", help="run PROGRAM inside the project sandbox")
    run.add_argument("--spec", type=Path, help=f"session spec (JSON); default ${SESSION_SPEC_ENV}")
    run.add_argument("--token-stdin", action="store_true", help="read the wrapped token from standard input")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM ARGS...")
    srv = sub.add_parser("serve", help="run the Jupyter server in the sandbox behind two relays")
    srv.add_argument("--spec", type=Path, help=f"session spec (JSON); default ${SESSION_SPEC_ENV}")
    srv.add_argument("--token-stdin", action="store_true", help="read the wrapped token from standard input")
    srv.add_argument("--ip", default="127.0.0.1", help="address the hub's proxy connects to (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=0, help="TCP port for the proxy (default: any free port)")
    srv.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM (default: jupyterhub-singleuser)")
    headless = sub.add_parser("run", help="execute a headless run's notebook with papermill in the sandbox")
    source = headless.add_mutually_exclusive_group()
    source.add_argument("--spec", type=Path, help=f"the run's signed spec (JSON); default ${SESSION_SPEC_ENV}")
    source.add_argument("--from-hub", metavar="RUN_ID",
                        help="ask the hub for run RUN_ID's signed spec and key when the job starts (the hub's "
                        "runs; needs $SECUREHPC_REPORT_URL and $SECUREHPC_REPORT_TOKEN)")  # fmt: skip
    headless.add_argument("--token-stdin", action="store_true", help="read the wrapped token from standard input")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="securehpc-node: %(message)s")

    if args.command == "check":
        problems = node_problems() + (store_problems(args.store_root) if args.store_root else [])
        for problem in problems:
            print(f"NOT READY: {problem}", file=sys.stderr)
        for advice in node_advice():
            print(f"ADVICE: {advice}")
        if not problems:
            ready = "node ready: bubblewrap, gocryptfs, FUSE and user namespaces all work"
            print(f"{ready}; the store root's ownership is right" if args.store_root else ready)
        return 1 if problems else 0

    program = getattr(args, "program", [])
    program = program[1:] if program[:1] == ["--"] else program
    if args.command == "exec" and not program:
        parser.error("exec needs a program: securehpc-node exec --spec FILE -- PROGRAM ARGS...")
    try:
        if args.command == "run" and args.from_hub is not None:
            if args.token_stdin:
                parser.error("run --from-hub gets its token from the hub: --token-stdin goes with --spec only")
            return asyncio.run(run_headless(None, run_id=args.from_hub))
        spec = load_spec(args.spec)
        if args.command == "serve":
            return asyncio.run(serve(spec, program, ip=args.ip, port=args.port, token_from_stdin=args.token_stdin))
        if args.command == "run":
            return asyncio.run(run_headless(spec, token_from_stdin=args.token_stdin))
        return exec_program(spec, program, token_from_stdin=args.token_stdin)
    except SpecError as error:
        print(f"securehpc-node: {error}", file=sys.stderr)
        return EX_USAGE
    except LaunchError as error:
        if not getattr(error, "reported", False):
            print(f"securehpc-node: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
