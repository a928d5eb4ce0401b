"""Step 3 of the sandbox, the inner sandbox's first program: take the program's environment from a pipe,
then become the program.

Why not hand bubblewrap the environment: bubblewrap's init (pid 1 of the inner sandbox) keeps the
environment it was started with, and the program's own user may read ``/proc/1/environ``. The program's
environment holds the Jupyter server's hub token; only the program (which the server extension then makes
unreadable, not dumpable) may have it.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m jupyter_securehpc.node.envexec FD -- PROGRAM ARGS...")
    fd = int(sys.argv[1])
    with os.fdopen(fd, "rb") as pipe:
        env = json.loads(pipe.read())
    program = sys.argv[3:]
    os.execvpe(program[0], program, env)  # noqa: S606 - an argument list, no shell


if __name__ == "__main__":
    main()
