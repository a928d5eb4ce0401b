"""Data and cache handling shared by the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path


def make_data(root: Path, large_mib: int, small_files: int) -> int:
    """One large file (an MRI-like volume) and many 4 KiB files (annotations); returns the bytes."""
    (root / "small").mkdir(parents=True)
    with open(root / "volume.nii", "wb") as handle:
        for _ in range(large_mib):
            handle.write(os.urandom(1 << 20))
    for index in range(small_files):
        (root / "small" / f"event{index:05}.txt").write_bytes(os.urandom(4096))
    return large_mib * (1 << 20) + small_files * 4096


def drop_caches() -> None:
    """Empty the page cache (root only), so that the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
