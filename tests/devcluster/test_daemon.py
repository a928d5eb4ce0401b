"""Daemons are stopped by pid, and only when that pid is still the process we started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from jupyter_securehpc.devcluster.daemon import Daemon


def make_daemon(tmp_path, argv) -> Daemon:
    return Daemon(name="sleeper", argv=argv, run_dir=tmp_path / "run", log_file=tmp_path / "log" / "sleeper.log")


def test_start_stop_by_pid(tmp_path):
    daemon = make_daemon(tmp_path, ["sleep", "300"])
    pid = daemon.start()
    assert daemon.pid() == pid
    assert daemon.stop() is True
    assert daemon.pid() is None
    assert not daemon.pid_file.exists()
    assert daemon.stop() is False


def test_a_recycled_pid_is_not_ours_and_is_not_killed(tmp_path):
    """A pid file that names a live, unrelated process (here: another sleep) must not make us kill it."""
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        daemon = make_daemon(tmp_path, ["sleep", "300"])
        daemon.run_dir.mkdir(parents=True)
        record = {"pid": stranger.pid, "start_time": 1, "exe": "/usr/bin/sleep", "argv": daemon.argv}
        daemon.pid_file.write_text(json.dumps(record))
        assert daemon.pid() is None
        assert daemon.stop() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_sigterm_resistant_process_is_killed(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(300)"
    )
    daemon = make_daemon(tmp_path, [sys.executable, "-c", script])
    pid = daemon.start()
    # Wait until the handler is installed, or SIGTERM may arrive first and end it the easy way.
    deadline = time.monotonic() + 10
    while "ready" not in daemon.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.stop(timeout=1) is True
    assert daemon.pid() is None
    os.waitpid(pid, 0)  # our child: reaped only now, so it was dead (a zombie) when stop() returned
