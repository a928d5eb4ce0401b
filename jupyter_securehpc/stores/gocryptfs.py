"""Create gocryptfs stores and run code on their plaintext inside a private sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The key is 256 random bits from OpenBao, not a human password: scrypt's hardening buys nothing, so use
# gocryptfs' cheapest setting and spare every mount a second of CPU.
SCRYPT_N = "10"


class StoreError(RuntimeError):
    """A store could not be created, mounted or written; the message says what and where."""


def key_to_password(key: bytes) -> bytes:
    return key.hex().encode()


def pipe_with(data: bytes) -> int:
    """A pipe's read end that yields ``data`` then EOF (the key never touches a disk or argv)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def init_store(cipher_dir: Path, key: bytes) -> None:
    """Make an empty, initialised gocryptfs store in ``cipher_dir`` (which must not exist yet)."""
    cipher_dir.mkdir(mode=0o755)
    result = subprocess.run(
        ["gocryptfs", "-init", "-q", "-scryptn", SCRYPT_N, str(cipher_dir)],
        input=key_to_password(key),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise StoreError(f"gocryptfs could not initialise {cipher_dir}: {result.stderr.decode().strip()}")
    # The config holds the master key encrypted with the store key; readers of the store need it.
    (cipher_dir / "gocryptfs.conf").chmod(0o444)


ALLOWED_OPTIONS = frozenset({"-kernel_cache", "-sharedstorage", "-noprealloc", "-serialize_reads"})


def mount_store(
    cipher: Path,
    target: Path,
    key_fd: int,
    *,
    read_only: bool,
    options: tuple[str, ...] | list[str] = (),
    ctlsock: Path | None = None,
) -> None:
    """Mount a store with the key read from ``key_fd`` (a pipe); must run inside a sandbox that may mount.

    ``ctlsock``: where gocryptfs answers path translations (for staging; a private path in the sandbox).

    Raises StoreError with gocryptfs' own message ("Password incorrect.", ...) if it fails.
    """
    unknown = set(options) - ALLOWED_OPTIONS
    if unknown:
        raise StoreError(f"gocryptfs options {sorted(unknown)} are not allowed; use {sorted(ALLOWED_OPTIONS)}")
    argv = ["gocryptfs", "-q", "-nosyslog", *(["-ro"] if read_only else []), *options]
    argv += [*(["-ctlsock", str(ctlsock)] if ctlsock else []), str(cipher), str(target)]
    # gocryptfs forks a daemon that keeps its output open: collect messages in a file (in the sandbox's
    # private /tmp), not a pipe, or waiting for the pipe's end would wait for the unmount.
    with tempfile.TemporaryFile("w+") as messages:
        result = subprocess.run(argv, stdin=key_fd, stdout=messages, stderr=messages, timeout=120, check=False)
        if result.returncode != 0:
            messages.seek(0)
            raise StoreError(f"cannot mount {target}: {messages.read().strip() or result.returncode}")


def run_inside(
    cipher_dir: Path,
    key: bytes,
    mode: str,
    *,
    binds: dict[str, Path] | None = None,
    writable: bool = False,
    timeout: float = 3600,
) -> dict:
    """Mount the store inside a fresh sandbox (``node/sandbox.store_argv``) and run ``mode`` of
    ``stores/copy_or_hash.py`` on it.

    Returns the JSON that the step printed; raises StoreError with its message if it failed.
    """
    # Here, not at the top: every bubblewrap command line lives in node/sandbox.py, which imports this package.
    from ..node.sandbox import store_argv
    from ..session.env import STORE_KEY_FD_ENV

    key_fd = pipe_with(key_to_password(key))
    try:
        result = subprocess.run(
            [
                *store_argv(cipher_dir, binds=binds or {}, writable=writable),
                sys.executable,
                "-m",
                "jupyter_securehpc.stores.copy_or_hash",
                mode,
            ],
            pass_fds=(key_fd,),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), STORE_KEY_FD_ENV: str(key_fd)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(key_fd)
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no message"
        raise StoreError(f"{mode} in {cipher_dir} failed: {message}")
    return json.loads(result.stdout)
