"""Start a service in the background, know whether it runs, stop it by pid.

A pid file alone is not proof: after a reboot or a crash the pid can belong to another program. A pid
counts as ours only if the process still runs the executable we started (``/proc/PID/exe``) and its start
time matches the one we recorded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..util.files import atomic_write
from ..util.polling import wait_until

log = logging.getLogger(__name__)


def _start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


@dataclass
class Daemon:
    """One long-running process of the local cluster, run in the foreground of its own session."""

    name: str
    argv: list[str]
    run_dir: Path
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid.json"

    def pid(self) -> int | None:
        """The pid of our running process, or None when it does not run."""
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        if _start_time(pid) != record["start_time"] or _exe(pid) != record["exe"]:
            return None
        return pid

    def start(self) -> int:
        """Start the process (detached, so it outlives the command that started it)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
        start_time = None
        for _ in range(50):
            start_time = _start_time(proc.pid)
            exe = _exe(proc.pid)
            # Right after fork /proc/PID/exe is still the Python interpreter; wait for the exec.
            if start_time is not None and exe and Path(exe).name != Path(sys.executable).name:
                break
            time.sleep(0.02)
        record = {"pid": proc.pid, "start_time": start_time, "exe": _exe(proc.pid), "argv": self.argv}
        atomic_write(self.pid_file, json.dumps(record) + "\n", mode=0o644)
        log.info("started %s (pid %d), log in %s", self.name, proc.pid, self.log_file)
        return proc.pid

    def stop(self, timeout: float = 15.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns whether a process of ours was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() == pid:
            _reap(pid)
            time.sleep(0.05)
        if self.pid() == pid:
            log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, pid, timeout)
            os.kill(pid, signal.SIGKILL)
            while self.pid() == pid:
                _reap(pid)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", self.name, pid)
        return True

    def wait_ready(self, check, timeout: float, what: str, strict: bool = True) -> bool:  # noqa: ANN001
        """Wait until ``check()`` holds; fail at once, with the log, if the process has exited.

        With ``strict=False`` a timeout returns False instead of raising (the caller has a remedy).
        """
        if wait_until(lambda: check() or self.pid() is None, timeout):
            if self.pid() is not None:
                return True
            raise RuntimeError(f"{self.name} exited before it could {what}; its log says:\n{self.log_tail()}")
        if strict:
            raise RuntimeError(f"{self.name} did not {what} in {timeout:.0f}s; its log says:\n{self.log_tail()}")
        return False

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the service's log, for error messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child (the test process started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
