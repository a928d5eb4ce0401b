"""``securehpc-node``: the launcher on the compute node.

This release has ``check``, which reports what the node lacks; ``exec`` and ``serve`` come with the
launcher itself.
"""

from __future__ import annotations

import argparse
import sys

from .prereqs import node_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="securehpc-node", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="report what this node lacks to run secure sessions, and the fix")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = node_problems()
        for problem in problems:
            print(f"NOT READY: {problem}", file=sys.stderr)
        if not problems:
            print("node ready: bubblewrap, gocryptfs, FUSE and user namespaces all work")
        return 1 if problems else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
