"""Step 2 of the sandbox, inside the outer bubblewrap: mount the stores, then start the inner sandbox.

Runs as uid 0 of the outer user namespace (the real user outside, with no privilege on the host). Reads
its instructions from ``$SECUREHPC_INSIDE`` (JSON, no secrets); each store's key arrives on its own pipe.
After the mounts it replaces itself with the inner bubblewrap, so the program's exit status becomes the
sandbox's.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..stores.gocryptfs import StoreError, mount_store
from .sandbox import inner_argv

ENV_NAME = "SECUREHPC_INSIDE"
MOUNT_FAILED = 70


def main() -> None:
    config = json.loads(os.environ.pop(ENV_NAME))
    for store in config["mounts"]:
        try:
            mount_store(
                Path(store["cipher"]),
                Path(store["target"]),
                store["fd"],
                read_only=store["read_only"],
                options=store.get("options", ()),
            )
        except StoreError as error:
            print(f"securehpc-node: {error}", file=sys.stderr)
            sys.exit(MOUNT_FAILED)
        finally:
            os.close(store["fd"])
    argv = inner_argv(config["uid"], config["gid"], config["program"])
    os.execvpe(argv[0], argv, config["env"])  # noqa: S606 - an argument list, no shell


if __name__ == "__main__":
    main()
