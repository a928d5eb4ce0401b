"""The reading workloads of ``sandbox_read.py``; runs inside the sandbox and outside it, the same code.

    python read_workload.py large|small|analysis PATH

Prints one JSON object: seconds spent, bytes read, and for the analysis the seconds spent in reads (the
sandbox's start is not included).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

CHUNK = 1 << 20


def read_file(path: str) -> int:
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            total += len(chunk)
    return total


def files_under(root: str) -> list[str]:
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)


def main() -> None:
    mode, root = sys.argv[1], sys.argv[2]
    start, reading = time.perf_counter(), 0.0
    if mode == "large":
        total = read_file(os.path.join(root, "volume.nii"))
    elif mode == "small":
        total = sum(read_file(path) for path in files_under(os.path.join(root, "small")))
    elif mode == "analysis":
        # A realistic pass: read every file of the dataset and compute over it (a digest per file stands in
        # for feature extraction; it costs about as much CPU per byte as simple signal statistics).
        total = 0
        for path in files_under(root):
            began = time.perf_counter()
            with open(path, "rb") as handle:
                data = handle.read()
            reading += time.perf_counter() - began
            hashlib.sha256(data).hexdigest()
            hashlib.blake2b(data).hexdigest()
            total += len(data)
    else:
        sys.exit(f"unknown workload {mode!r}")
    print(json.dumps({"seconds": time.perf_counter() - start, "bytes": total, "reading_seconds": reading}))


if __name__ == "__main__":
    main()
