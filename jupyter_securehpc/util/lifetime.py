"""A helper process that must not outlive the process that started it."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """Ask the kernel to send SIGTERM to this process when its parent ends, however it ends.

    JupyterHub stops the services it manages when it shuts down, but a hub that is killed (SIGKILL, the OOM
    killer, a crash) leaves them running, listening and holding their credentials. Linux only.
    """
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
