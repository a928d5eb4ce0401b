"""Fixtures of the tier that needs no root and no cluster: stub Slurm commands on PATH, a real SQLite
projects database in a temporary folder, a real hub signing key, and a stand-in for OpenBao.

Nothing here touches the session fixtures of ``tests/conftest.py`` (the real local cluster, test users):
they start only when a test asks for them, and no test of this folder does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# One program for every stub command (named by the file it is started as): it records its argv, stdin and
# environment as one JSON line in calls.jsonl, then prints NAME.out, writes NAME.err to stderr and exits with
# NAME.rc, each read from the stub folder when present. squeue's listing of a user's jobs (``--user=``, the
# spawner's search for jobs of an interrupted spawn) answers squeue-user.out instead, and its question for a
# waiting job's reason (``--format=%r``) squeue-reason.out.
STUB = """\
#!{python}
import json, os, sys
from pathlib import Path

here = Path(__file__).resolve().parent
name = Path(sys.argv[0]).name
if name == "squeue" and any(arg.startswith("--user=") for arg in sys.argv[1:]):
    name = "squeue-user"
if name == "squeue" and "--format=%r" in sys.argv[1:]:
    name = "squeue-reason"
# Every stub reads its standard input to the end, as a site's wrapper script might: a command whose standard
# input the spawner left open would hang here (until the spawner's command_timeout).
devnull = os.path.samestat(os.fstat(0), os.stat(os.devnull))
stdin = sys.stdin.read()
record = {{"argv": sys.argv, "stdin": stdin, "stdin_devnull": devnull, "env": dict(os.environ)}}
with open(here / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(record) + "\\n")

def answer(suffix, default=""):
    path = here / (name + suffix)
    return path.read_text() if path.exists() else default

sys.stdout.write(answer(".out"))
sys.stderr.write(answer(".err"))
sys.exit(int(answer(".rc", "0")))
"""

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")


class SlurmStubs:
    """The stub folder: what each command answers (``answer``) and what each was called with (``calls``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def answer(self, command: str, out: str = "", err: str = "", rc: int = 0) -> None:
        (self.folder / f"{command}.out").write_text(out)
        (self.folder / f"{command}.err").write_text(err)
        (self.folder / f"{command}.rc").write_text(str(rc))

    def calls(self, command: str | None = None) -> list[dict]:
        log = self.folder / "calls.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        calls = [json.loads(line) for line in lines]
        return [call for call in calls if command is None or Path(call["argv"][0]).name == command]


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmStubs:
    """Stub ``sbatch``/``squeue``/``scancel``/``scontrol`` first on PATH (the spawner passes PATH to them)."""
    folder = tmp_path / "slurm-stubs"
    folder.mkdir()
    for command in SLURM_COMMANDS:
        path = folder / command
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    stubs = SlurmStubs(folder)
    stubs.answer("sbatch", out="4242;local\n")
    stubs.answer("squeue", out="RUNNING node7\n")
    stubs.answer("scontrol", out="NodeName=node7 NodeAddr=127.0.0.7 State=ALLOCATED\n")
    return stubs
