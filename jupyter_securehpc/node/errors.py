"""How the node launcher fails: a message that says what to do, and an exit status that says which step."""

from __future__ import annotations

# sysexits.h codes, so that Slurm's job state tells an admin which step failed.
EX_USAGE, EX_UNAVAILABLE, EX_NOPERM = 64, 69, 77
# The sandbox could not mount a store, or the Jupyter server did not start in it.
EX_SOFTWARE = 70


class LaunchError(Exception):
    """The session cannot start; ``exit_code`` says which kind of failure, the message what to do."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
