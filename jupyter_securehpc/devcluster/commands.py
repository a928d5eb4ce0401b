"""Commands that the local cluster prints for a person to run: each must work when pasted into a root shell.

``securehpc`` is often not on the shell's PATH (``scripts/local.sh`` installs it into the checkout's ``.venv``):
:func:`program` is then its full path. A cluster in another state folder than the default gets its
``--state-dir``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from .layout import default_state_dir


def program() -> str:
    """``securehpc`` when the shell finds this very program under that name, else its full path."""
    ours = Path(sys.executable).with_name("securehpc")
    found = shutil.which("securehpc")
    if found is not None and ours.exists() and os.path.samefile(found, ours):
        return "securehpc"
    return str(ours)


def bin_dir() -> Path:
    """The folder of this environment's programs (``securehpc``, ``securehpc-node``, ``jupyterhub``)."""
    return Path(sys.executable).parent


def dev(verb: str, state_dir: Path | None = None) -> str:
    """The command line of ``securehpc dev VERB`` for the cluster in ``state_dir`` (None: the default one)."""
    words = [program(), "dev"]
    if state_dir is not None and Path(state_dir).absolute() != default_state_dir().absolute():
        words += ["--state-dir", str(state_dir)]
    return " ".join(shlex.quote(word) for word in words) + f" {verb}"


def source_env(state_dir: Path | None = None) -> str:
    """The one line that gives a root shell the demo's environment (``securehpc dev env``)."""
    return f"source <({dev('env', state_dir)})"
