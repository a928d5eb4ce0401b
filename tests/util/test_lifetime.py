"""A managed helper (the portal) ends with the process that started it, also when that one is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = """
import os, sys, time
if sys.argv[2] == "yes":
    from jupyter_securehpc.util.lifetime import end_with_parent
    end_with_parent()
with open(sys.argv[1] + ".tmp", "w") as file:
    file.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""

PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
time.sleep(300)
"""


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to collect it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("ends_with_parent", [True, False], ids=["asked", "not-asked"])
def test_the_child_ends_when_its_parent_is_killed_only_if_it_asked(tmp_path, ends_with_parent) -> None:
    pid_file = tmp_path / "child.pid"
    flag = "yes" if ends_with_parent else "no"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(pid_file), flag])
    child = None
    try:
        assert wait_for(pid_file.exists), "the child did not start"
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        if ends_with_parent:
            assert wait_for(lambda: not alive(child)), "the child outlived its killed parent"
        else:
            time.sleep(1)  # the control: without the request the orphan keeps running
            assert alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)
