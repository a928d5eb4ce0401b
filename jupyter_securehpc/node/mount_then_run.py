"""Step 2 of the sandbox, inside the outer bubblewrap: mount the stores, then run the inner sandbox.

Runs as uid 0 of the outer user namespace (the real user outside, with no privilege on the host). Reads
its instructions (JSON, with the program's environment) from the pipe named by ``$SECUREHPC_INSIDE_FD``;
each store's key arrives on its own pipe.
After the mounts it replaces itself with the inner bubblewrap, so the program's exit status becomes the
sandbox's.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from ..session.env import SANDBOX_CONFIG_FD_ENV
from ..stores import cipherfiles
from ..stores.gocryptfs import StoreError, pipe_with, serve_store
from .errors import EX_SOFTWARE
from .prefetch import start_in_background
from .sandbox import gocryptfs_argv, inner_argv
from .staging import Decrypter, stage

MOUNT_FAILED = EX_SOFTWARE
# The outer sandbox's private folder for mounts that the program never sees.
PRIVATE = "/run/securehpc"
SESSION_UMASK = 0o007


def read_key(fd: int) -> bytearray:
    key = bytearray()
    while chunk := os.read(fd, 4096):
        key += chunk
    return key


def mount(index: int, store: dict, runner: list[str]) -> None:
    """Mount one store at its place; a staged dataset is mounted aside, copied into memory at its place
    (decrypted from its ciphertext where the format allows), and the mount dropped. gocryptfs runs through
    ``runner`` (``sandbox.gocryptfs_argv``: the principal's uid, no capabilities)."""
    cipher, target = Path(store["cipher"]), Path(store["target"])
    options = {
        "read_only": store["read_only"],
        "options": store.get("options", ()),
        "runner": runner,
        "messages": Path(f"{PRIVATE}/gocryptfs{index}.log"),
    }
    Path(PRIVATE).mkdir(parents=True, exist_ok=True)
    if not store.get("stage_bytes"):
        serve_store(cipher, target, store["fd"], **options)
        return
    plain = Path(f"{PRIVATE}/plain{index}")
    plain.mkdir(parents=True, exist_ok=True)
    if not cipherfiles.supported(cipherfiles.read_config(cipher)):
        serve_store(cipher, plain, store["fd"], **options)
        stage(plain, target, store["stage_bytes"])
        return
    key, ctlsock = read_key(store["fd"]), Path(f"{PRIVATE}/control{index}")
    try:
        key_fd = pipe_with(bytes(key))
        try:
            serve_store(cipher, plain, key_fd, ctlsock=ctlsock, **options)
        finally:
            os.close(key_fd)
        decrypter = Decrypter(cipher, key, ctlsock)
    finally:
        key[:] = bytes(len(key))  # best effort: this process is replaced by the inner sandbox soon anyway
    stage(plain, target, store["stage_bytes"], decrypter)


def main() -> None:
    config_fd = int(os.environ.pop(SANDBOX_CONFIG_FD_ENV))
    with os.fdopen(config_fd, "rb") as pipe:
        config = json.loads(pipe.read())
    # What the session creates in the workspace is the project's: the other members' principals (the project's
    # group) may read and change it, nobody else (the workspace's ciphertext folder is 2770, root:group).
    os.umask(SESSION_UMASK)
    runner = gocryptfs_argv(config["uid"], config["gid"])
    for index, store in enumerate(config["mounts"]):
        try:
            mount(index, store, runner)
        except (StoreError, OSError) as error:
            print(f"securehpc-node: {error}", file=sys.stderr)
            sys.exit(MOUNT_FAILED)
        finally:
            os.close(store["fd"])
    prefetched = [Path(store["target"]) for store in config["mounts"] if store.get("prefetch")]
    # Serving: warm the cache once the launcher says the server answers (it closes the ready pipe), so that
    # the prefetch does not slow the spawn. The prefetch keeps none of the program's descriptors.
    ready_fd, status_fd = config.get("ready_fd"), config.get("status_fd")
    start_in_background(
        prefetched, config.get("prefetch_bytes", 0), after_fd=ready_fd, close_fds=config.get("program_fds", [])
    )
    if ready_fd is not None:
        os.close(ready_fd)
    if status_fd is not None:  # tell the launcher outside that the mounts are done
        os.write(status_fd, b"mounted\n")
        os.close(status_fd)
    # A crashing program must not write a core file with decrypted data in it (the hard limit too, so that
    # nothing inside raises it again).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The program's environment travels on a pipe (node/envexec.py): bubblewrap's init would show it.
    env_fd = pipe_with(json.dumps(config["env"]).encode())
    os.set_inheritable(env_fd, True)
    program = [sys.executable, "-m", "jupyter_securehpc.node.envexec", str(env_fd), "--", *config["program"]]
    argv = inner_argv(config["uid"], config["gid"], program)
    os.execvpe(argv[0], argv, {"PATH": config["env"].get("PATH", "/usr/bin:/bin")})  # noqa: S606


if __name__ == "__main__":
    main()
