"""An environment that lives under the sandbox's private /tmp (a checkout in /tmp or /home) stays out of reach.

bwrap creates the folders on the way to a read-only bind on the sandbox's writable tmpfs, owned by the
sandbox's user, and a folder can be renamed with the mounts below it. Without a shield, the user's program
renames ``/tmp/<checkout>`` away and puts its own folder at the environment's path: the server extension would
then serve the files it planted as the environment's static files. The test runs the real sandbox layers
(``outer_argv`` and ``inner_argv``) as an unprivileged user, with the shield and, to show the attack is real,
once with plain binds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_securehpc.node import sandbox

pytestmark = pytest.mark.sandbox

# Runs inside the inner sandbox as the user; TOP is the first folder of the checkout below /tmp.
PROGRAM = r"""
import json, os, sys
from jupyter_securehpc.serverext.paths import writable_place
top, static = sys.argv[1], sys.argv[2]
def attempt(action):
    try:
        action()
        return "done"
    except OSError as error:
        return type(error).__name__
report = {"static_readable": open(static).read(), "writable_place": writable_place(static)}
report["rename"] = attempt(lambda: os.rename(top, "/tmp/moved-away"))
report["tmp_writable"] = attempt(lambda: open("/tmp/scratch.txt", "w").write("x"))
print(json.dumps(report))
"""


@pytest.fixture
def checkout_in_tmp() -> Iterator[tuple[Path, Path]]:
    """A stand-in for an environment's static folder, two folders deep below /tmp, world-readable."""
    top = Path(tempfile.mkdtemp(prefix="securehpc-shield-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "checkout" / "share"
    share.mkdir(parents=True)
    (share / "static.txt").write_text("the environment's file")
    for folder in (top / "checkout", share):
        folder.chmod(0o755)
    (share / "static.txt").chmod(0o644)
    yield top, share
    shutil.rmtree(top, ignore_errors=True)


def run_sandboxed(unix_user, outer: list[str], top: Path, share: Path) -> dict:
    program = [sys.executable, "-c", PROGRAM, str(top), str(share / "static.txt")]
    argv = [*outer, *sandbox.inner_argv(unix_user.uid, unix_user.gid, program)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **unix_user.run_as())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_checkout_under_tmp_can_be_neither_moved_nor_replaced(unix_user, checkout_in_tmp) -> None:
    top, share = checkout_in_tmp
    report = run_sandboxed(unix_user, sandbox.outer_argv([], extra_ro=[share]), top, share)
    assert report["rename"] in ("OSError", "PermissionError")  # EBUSY: a mount point
    assert report["static_readable"] == "the environment's file"
    assert report["writable_place"] is None  # so the server extension serves it
    assert report["tmp_writable"] == "done"  # the sandbox's own /tmp stays usable


def test_without_the_shield_the_program_could_move_the_checkout_away(unix_user, checkout_in_tmp) -> None:
    """The attack the shield closes, with the bind as it was before: the folder moves, and the guard knows."""
    top, share = checkout_in_tmp
    outer = sandbox.outer_argv([], extra_ro=[share])
    shielded = sandbox.readonly_binds([*sandbox.readonly_paths(), share])
    start = next(i for i in range(len(outer)) if outer[i : i + len(shielded)] == shielded)
    plain = [arg for path in [*sorted(sandbox.readonly_paths()), share] for arg in ("--ro-bind", str(path), str(path))]
    unshielded = outer[:start] + plain + outer[start + len(shielded) :]
    report = run_sandboxed(unix_user, unshielded, top, share)
    assert report["rename"] == "done"
    assert report["writable_place"] is not None


def test_shields_cover_each_first_folder_below_a_private_tmpfs_once() -> None:
    paths = [Path("/tmp/ci/main"), Path("/tmp/ci/main/.venv"), Path("/home/dev/env"), Path("/tmp/venv")]
    argv = sandbox.readonly_binds(paths)
    assert argv[:4] == ["--tmpfs", "/tmp/ci", "--tmpfs", "/home/dev"]
    assert argv[-4:] == ["--remount-ro", "/tmp/ci", "--remount-ro", "/home/dev"]
    binds = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ro-bind"]
    assert binds == ["/tmp/venv", "/tmp/ci/main", "/home/dev/env", "/tmp/ci/main/.venv"]
