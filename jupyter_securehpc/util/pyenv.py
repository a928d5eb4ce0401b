"""Where this Python environment lives, for sandboxes that must run it read-only."""

from __future__ import annotations

import sys
from pathlib import Path

import jupyter_securehpc

# Top-level system folders that sandboxes bind read-only (or recreate as the symlinks they are on merged-/usr
# systems). /home, /root, /srv, /var, /mnt, /media and the store root are never bound.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")


def readonly_paths() -> list[Path]:
    """Python environment and this package (for editable installs), which may live outside /usr."""
    package_root = Path(jupyter_securehpc.__file__).resolve().parent.parent
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), package_root}
    return sorted(p for p in paths if not any(p.is_relative_to(f"/{d}") for d in SYSTEM_DIRS))
