"""Runs inside the store sandbox (see gocryptfs.run_inside): mount, then copy or hash the plaintext.

Invoked as ``python -m jupyter_securehpc.stores.copy_or_hash MODE`` with the store key on the file descriptor
``$SECUREHPC_KEY_FD``, the ciphertext at /mnt/cipher and (for ``copy``) the source folder at /mnt/src. Prints
one JSON object on stdout; on failure a one-line reason on stderr and a non-zero exit status.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..session.env import STORE_KEY_FD_ENV
from .gocryptfs import StoreError, mount_store

CIPHER = Path("/mnt/cipher")
PLAIN = Path("/mnt/plain")
SOURCE = Path("/mnt/src")
MANIFEST = ".securehpc-manifest.json"
CHUNK = 1 << 20
WORKERS = 4


def mount(read_only: bool) -> None:
    PLAIN.mkdir()
    key_fd = int(os.environ.pop(STORE_KEY_FD_ENV))
    try:
        mount_store(CIPHER, PLAIN, key_fd, read_only=read_only)
    except StoreError as error:
        sys.exit(str(error))
    finally:
        os.close(key_fd)


def copy_file(source: Path, target: Path) -> str:
    # No fsync per file through FUSE: the importer syncs the ciphertext's file system once, outside.
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "xb") as writer:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy() -> dict:
    """Copy /src into the store; return the manifest (relative path -> sha256) of what was written."""
    names = []
    for folder, dirnames, filenames in os.walk(SOURCE):
        relative = Path(folder).relative_to(SOURCE)
        for name in sorted(dirnames):
            (PLAIN / relative / name).mkdir()
        names += [relative / name for name in sorted(filenames)]
    # Several files at once: gocryptfs encrypts concurrent requests on all cores.
    with ThreadPoolExecutor(WORKERS) as pool:
        digests = pool.map(lambda rel: copy_file(SOURCE / rel, PLAIN / rel), names)
        files = {str(rel): digest for rel, digest in zip(names, digests, strict=True)}
    manifest = {"files": files}
    with open(PLAIN / MANIFEST, "x") as handle:
        json.dump(manifest, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


def hashes() -> dict:
    """Hash every file in the mounted store; also return the manifest stored at import."""
    names = [
        str((Path(folder) / name).relative_to(PLAIN))
        for folder, _dirnames, filenames in os.walk(PLAIN)
        for name in filenames
    ]
    names = [name for name in names if name != MANIFEST]
    with ThreadPoolExecutor(WORKERS) as pool:
        files = dict(zip(names, pool.map(lambda rel: hash_file(PLAIN / rel), names), strict=True))
    stored = json.loads((PLAIN / MANIFEST).read_text()) if (PLAIN / MANIFEST).exists() else None
    return {"files": files, "stored_manifest": stored}


def main() -> None:
    mode = sys.argv[1]
    try:
        if mode == "copy":
            mount(read_only=False)
            result = copy()
        elif mode == "hashes":
            mount(read_only=True)
            result = hashes()
        else:
            sys.exit(f"unknown mode {mode!r}")
    except OSError as error:
        sys.exit(f"{error.strerror or error} ({Path(error.filename).name if error.filename else mode})")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
