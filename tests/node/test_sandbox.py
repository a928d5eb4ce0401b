"""A real gocryptfs store, mounted inside a real bubblewrap sandbox without network, by a real user.

These are the building blocks of the node launcher, checked on this machine: the key reaches gocryptfs
on a pipe, the plaintext mount exists only inside the sandbox's namespaces, and it is gone (with
gocryptfs) once the sandbox ends, also when the sandbox is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

# Runs inside the sandbox as uid 0 of a fresh user namespace (the real uid outside). The password
# arrives on the file descriptor named by $PWFD; stdin is the test's control channel.
INNER = r"""
set -e
mkdir -p /mnt/plain
gocryptfs -q -nosyslog /mnt/cipher /mnt/plain <&"$PWFD"
printf '%s' "$CANARY" > /mnt/plain/canary.txt
python3 - <<'PY'
import json, os, socket
def attempt(fn):
    try:
        fn()
        return "connected"
    except OSError as error:
        return type(error).__name__
def tcp(host, port):
    with socket.create_connection((host, port), timeout=2):
        pass
report = {
    "read_back": open("/mnt/plain/canary.txt").read(),
    "mounted_inside": any(" /mnt/plain " in line for line in open("/proc/mounts")),
    "openbao": attempt(lambda: tcp("127.0.0.1", int(os.environ["BAO_PORT"]))),
    "external": attempt(lambda: tcp("192.0.2.1", 443)),
    "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
}
print(json.dumps(report), flush=True)
PY
read -r _
"""


def bwrap_argv(cipher: Path) -> list[str]:
    return [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-add",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--dev-bind",
        "/dev/fuse",
        "/dev/fuse",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/mnt",
        "--bind",
        str(cipher),
        "/mnt/cipher",
        "bash",
        "-c",
        INNER,
    ]


def init_store(cipher: Path, password: str, unix_user) -> None:
    cipher.mkdir()
    os.chown(cipher, unix_user.uid, unix_user.gid)
    subprocess.run(
        ["gocryptfs", "-init", "-q", str(cipher)],
        input=password,
        text=True,
        capture_output=True,
        check=True,
        timeout=60,
        **unix_user.run_as(),
    )


def start_sandbox(cipher: Path, password: str, canary: str, bao_port: int, unix_user) -> subprocess.Popen:
    read_end, write_end = os.pipe()
    os.write(write_end, password.encode())
    os.close(write_end)
    try:
        return subprocess.Popen(
            bwrap_argv(cipher),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(read_end,),
            env={"PATH": os.environ["PATH"], "PWFD": str(read_end), "CANARY": canary, "BAO_PORT": str(bao_port)},
            **unix_user.run_as(),
        )
    finally:
        os.close(read_end)


def host_mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def gocryptfs_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "gocryptfs" and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.fixture
def store(user_dir, unix_user):
    password = secrets.token_hex(32)
    cipher = user_dir / "cipher"
    init_store(cipher, password, unix_user)
    return cipher, password


def test_store_mounts_inside_sandbox_only_and_vanishes(local_cluster, unix_user, store, user_dir):
    cipher, password = store
    canary = f"CANARY-{secrets.token_hex(8)}"
    sandbox = start_sandbox(cipher, password, canary, local_cluster.layout.openbao_port, unix_user)
    try:
        report = json.loads(sandbox.stdout.readline() or "{}")
        assert report, sandbox.stderr.read()
        # While the sandbox runs, the host sees no plaintext mount and no gocryptfs mount at all.
        assert host_mounts_under(user_dir) == []
        assert "fuse.gocryptfs" not in Path("/proc/mounts").read_text()
        assert gocryptfs_pids(unix_user.uid), "gocryptfs should run (inside the sandbox) right now"
        sandbox.communicate("done\n", timeout=30)
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
    assert sandbox.returncode == 0
    assert report["read_back"] == canary
    assert report["mounted_inside"] is True
    # No network: only a loopback interface of its own, nothing outside reachable, no name resolution.
    assert report["interfaces"] == ["lo"]
    assert report["openbao"] == "ConnectionRefusedError"
    assert report["external"] in {"OSError", "ConnectionRefusedError", "TimeoutError"}
    assert report["dns"] == "gaierror"
    # After exit: no gocryptfs left, and the canary exists only as ciphertext.
    assert wait_for(lambda: gocryptfs_pids(unix_user.uid) == [])
    assert host_mounts_under(user_dir) == []
    files = [path for path in cipher.rglob("*") if path.is_file()]
    assert len(files) >= 3  # gocryptfs.conf, gocryptfs.diriv, the encrypted canary file
    assert not any(canary.encode() in path.read_bytes() for path in files)
    assert not any(canary in path.name for path in cipher.rglob("*"))


def test_sigkill_of_the_sandbox_takes_gocryptfs_and_mount_with_it(local_cluster, unix_user, store, user_dir):
    cipher, password = store
    sandbox = start_sandbox(cipher, password, "x", local_cluster.layout.openbao_port, unix_user)
    try:
        assert json.loads(sandbox.stdout.readline() or "{}").get("mounted_inside"), sandbox.stderr.read()
        assert gocryptfs_pids(unix_user.uid)
        os.kill(sandbox.pid, signal.SIGKILL)
        sandbox.wait(timeout=10)
    finally:
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()
    assert wait_for(lambda: gocryptfs_pids(unix_user.uid) == [])
    assert host_mounts_under(user_dir) == []


def test_wrong_key_mounts_nothing(local_cluster, unix_user, store):
    cipher, _ = store
    sandbox = start_sandbox(cipher, secrets.token_hex(32), "x", local_cluster.layout.openbao_port, unix_user)
    out, err = sandbox.communicate("done\n", timeout=60)
    assert sandbox.returncode != 0
    assert out == ""
    assert "password incorrect" in err.lower() or "wrong password" in err.lower(), err
