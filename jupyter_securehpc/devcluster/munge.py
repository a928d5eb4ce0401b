"""munged with a generated key and its own socket, for the local Slurm."""

from __future__ import annotations

import os
import subprocess

from ..util.files import atomic_write
from .daemon import Daemon
from .layout import ClusterLayout


def daemon(layout: ClusterLayout) -> Daemon:
    private = layout.munge_private_dir
    return Daemon(
        name="munged",
        argv=[
            "munged",
            "--foreground",
            f"--socket={layout.munge_socket}",
            f"--key-file={layout.munge_key}",
            f"--pid-file={private / 'munged.pid'}",
            f"--seed-file={private / 'munged.seed'}",
            f"--log-file={layout.log_dir / 'munged.log'}",
        ],
        run_dir=layout.run_dir,
        log_file=layout.log_dir / "munged.out",
    )


def ensure_key(layout: ClusterLayout) -> None:
    """Generate the cluster's munge key once (1 KiB from the OS's CSPRNG, readable by root only)."""
    layout.munge_dir.mkdir(parents=True, exist_ok=True)
    layout.munge_dir.chmod(0o755)
    layout.munge_private_dir.mkdir(exist_ok=True)
    layout.munge_private_dir.chmod(0o700)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    if not layout.munge_key.exists():
        atomic_write(layout.munge_key, os.urandom(1024), mode=0o400)


def works(layout: ClusterLayout) -> bool:
    """Whether a credential encoded through our socket decodes again (munge's own self test)."""
    sock = f"--socket={layout.munge_socket}"
    try:
        cred = subprocess.run(["munge", "--no-input", sock], capture_output=True, timeout=5, check=True).stdout
        subprocess.run(["unmunge", sock], input=cred, capture_output=True, timeout=5, check=True)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def up(layout: ClusterLayout) -> None:
    ensure_key(layout)
    munged = daemon(layout)
    if munged.pid() is not None and works(layout):
        return
    munged.stop()
    munged.start()
    munged.wait_ready(lambda: works(layout), timeout=15, what="decode its own credentials")
