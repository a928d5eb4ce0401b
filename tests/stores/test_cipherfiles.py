"""Staging decrypts gocryptfs files itself (stores/cipherfiles.py): checked against real gocryptfs stores.

Each store is made by ``gocryptfs -init`` and written through a real gocryptfs mount (root mounts it on the
host here; the launcher does it inside its sandbox); what staging decrypts from the ciphertext must be what
the mount shows, byte for byte, and changed ciphertext must be refused, never passed on.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_securehpc.node import staging
from jupyter_securehpc.stores import cipherfiles
from jupyter_securehpc.stores.gocryptfs import key_to_password, pipe_with
from jupyter_securehpc.util.polling import wait_until


class MountedStore:
    """A gocryptfs store mounted on the host by this test (gocryptfs in the foreground, stopped by pid)."""

    def __init__(self, root: Path, init_options: tuple[str, ...] = ()) -> None:
        self.key = secrets.token_bytes(32)
        self.cipher, self.plain, self.ctlsock = root / "cipher", root / "plain", root / "control"
        self.cipher.mkdir()
        self.plain.mkdir()
        init = ["gocryptfs", "-init", "-q", "-scryptn", "10", *init_options, str(self.cipher)]
        subprocess.run(init, input=self.password, check=True, capture_output=True)
        key_fd = pipe_with(self.password)
        try:
            self.process = subprocess.Popen(
                ["gocryptfs", "-fg", "-q", "-nosyslog", "-ctlsock", str(self.ctlsock), str(self.cipher),
                 str(self.plain)],
                stdin=key_fd,
            )  # fmt: skip
        finally:
            os.close(key_fd)
        assert wait_until(lambda: os.path.ismount(self.plain), 20), "gocryptfs did not mount"

    @property
    def password(self) -> bytes:
        return key_to_password(self.key)

    def write(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            (self.plain / name).parent.mkdir(parents=True, exist_ok=True)
            (self.plain / name).write_bytes(data)

    def cipher_file(self, name: str) -> Path:
        translator = cipherfiles.PathTranslator(self.ctlsock)
        try:
            return self.cipher / translator.cipher_path(Path(name))
        finally:
            translator.close()

    def stop(self) -> None:
        subprocess.run(["fusermount", "-u", str(self.plain)], check=False, capture_output=True)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def store(tmp_path):
    mounted = MountedStore(tmp_path)
    yield mounted
    mounted.stop()


@pytest.fixture
def small_chunks(monkeypatch):
    # Chunks of two blocks: a file of a few KiB spans several chunks, decrypted on several threads.
    monkeypatch.setattr(staging, "CHUNK", 8192)


def sample_files() -> dict[str, bytes]:
    block = cipherfiles.PLAIN_BLOCK
    files = {f"sizes/{size}.bin": os.urandom(size) for size in (0, 1, block - 1, block, block + 1, 5 * block + 7)}
    files["deep/a/b/c/" + "long-name-" * 20 + ".csv"] = b"id,value\n" * 1000  # a gocryptfs.longname file
    files["unicode/Schlafstörung, Nacht 1 (Ü).txt"] = "Schlafstörung".encode() * 100
    return files


def staged_copy(store: MountedStore, target: Path) -> int:
    decrypter = staging.Decrypter(store.cipher, store.password, store.ctlsock)
    return staging.copy_tree(store.plain, target, decrypter)


def test_decrypted_files_are_byte_for_byte_what_the_mount_shows(store, tmp_path, small_chunks):
    files = sample_files()
    store.write(files)
    with open(store.plain / "sparse.bin", "wb") as sparse:  # holes: all-zero blocks in the ciphertext
        sparse.seek(7 * cipherfiles.PLAIN_BLOCK + 100)
        sparse.write(b"end of a sparse file")
    files["sparse.bin"] = (store.plain / "sparse.bin").read_bytes()
    (store.plain / "empty folder").mkdir()
    (store.plain / "link-to-1.bin").symlink_to("sizes/1.bin")  # not a regular file: copied through the mount
    files["link-to-1.bin"] = files["sizes/1.bin"]
    target = tmp_path / "staged"
    target.mkdir()
    assert staged_copy(store, target) == sum(map(len, files.values()))
    assert {name: (target / name).read_bytes() for name in files} == files
    assert (target / "empty folder").is_dir()
    # The holes really are all-zero stored blocks (decrypted as zeros), the rest really is ciphertext.
    assert bytes(cipherfiles.CIPHER_BLOCK) in store.cipher_file("sparse.bin").read_bytes()
    for name, data in files.items():
        if name.startswith("sizes/") and len(data) > 16:
            assert data[:16] not in store.cipher_file(name).read_bytes()


def test_a_wrong_key_is_refused(store):
    with pytest.raises(cipherfiles.CipherError, match="does not open this store"):
        staging.Decrypter(store.cipher, key_to_password(secrets.token_bytes(32)), store.ctlsock)


def flip_a_byte(path: Path, donor: Path, block: int) -> None:
    data = bytearray(path.read_bytes())
    data[cipherfiles.HEADER + block * cipherfiles.CIPHER_BLOCK + 100] ^= 1
    path.write_bytes(bytes(data))


def swap_blocks(path: Path, donor: Path, block: int) -> None:
    data = bytearray(path.read_bytes())
    first = cipherfiles.HEADER + block * cipherfiles.CIPHER_BLOCK
    second = first + cipherfiles.CIPHER_BLOCK
    end = second + cipherfiles.CIPHER_BLOCK
    data[first:end] = data[second:end] + data[first:second]
    path.write_bytes(bytes(data))


def cut_inside_the_last_block(path: Path, donor: Path, block: int) -> None:
    os.truncate(path, path.stat().st_size - 10)


def block_of_another_file(path: Path, donor: Path, block: int) -> None:
    data, foreign = bytearray(path.read_bytes()), donor.read_bytes()
    start = cipherfiles.HEADER + block * cipherfiles.CIPHER_BLOCK
    data[start : start + cipherfiles.CIPHER_BLOCK] = foreign[start : start + cipherfiles.CIPHER_BLOCK]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper", [flip_a_byte, swap_blocks, cut_inside_the_last_block, block_of_another_file])
def test_changed_ciphertext_is_refused_naming_the_file(store, tmp_path, small_chunks, tamper):
    # The donor: another file with the same block layout, whose blocks are valid, just not the victim's.
    store.write({name: os.urandom(4 * cipherfiles.PLAIN_BLOCK + 300) for name in ("victim.bin", "donor.bin")})
    victim = store.cipher_file("victim.bin")
    tamper(victim, store.cipher_file("donor.bin"), 1)
    target = tmp_path / "staged"
    target.mkdir()
    # A cut file may still have its old size in the mount's attribute cache: refused either way.
    with pytest.raises(cipherfiles.CipherError, match=r"does not authenticate|changed while staging") as refused:
        staged_copy(store, target)
    assert victim.name in str(refused.value) or "victim.bin" in str(refused.value)


def test_a_ciphertext_that_does_not_match_the_listing_is_refused(store):
    store.write({"data.bin": os.urandom(10_000)})
    decrypter = staging.Decrypter(store.cipher, store.password, store.ctlsock)
    with pytest.raises(cipherfiles.CipherError, match="changed while staging"):
        decrypter.locate([(Path("data.bin"), 10_001, (store.plain / "data.bin").stat().st_ino)])


@pytest.mark.parametrize(
    ("options", "expected"), [((), True), (("-aessiv",), False), (("-xchacha",), False), (("-plaintextnames",), False)]
)
def test_only_the_default_format_is_decrypted_directly(tmp_path, options, expected):
    mounted = MountedStore(tmp_path, options)
    try:
        assert cipherfiles.supported(cipherfiles.read_config(mounted.cipher)) is expected
    finally:
        mounted.stop()


# inside.mount() as the launcher's sandbox calls it, as root in a private mount namespace (unshare), with
# the outer sandbox's private folder moved into the test's folder.
STAGE_ONE = r"""
import hashlib, json, os, sys
from pathlib import Path
from jupyter_securehpc.node import mount_then_run as inside, staging
inside.PRIVATE = sys.argv[1]
decrypted = []
original = staging.Decrypter.__call__
def counting(self, target, relative, *rest):
    decrypted.append(str(relative))
    return original(self, target, relative, *rest)
staging.Decrypter.__call__ = counting
store = json.loads(sys.argv[2])
store["fd"] = int(os.environ["KEY_FD"])
inside.mount(0, store, [])  # gocryptfs directly: this test runs as root, not in the principal's sandbox
target = Path(store["target"])
print(json.dumps({
    "files": {str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest() for p in target.rglob("*")
              if p.is_file()},
    "decrypted_directly": sorted(set(decrypted)),
    "read_only": os.statvfs(target).f_flag & os.ST_RDONLY != 0,
    "mounts": [line.split()[1] for line in open("/proc/mounts") if line.split()[1].startswith(sys.argv[1])],
}))
"""


@pytest.mark.parametrize(("options", "direct"), [((), True), (("-aessiv",), False)])
def test_the_launcher_stages_either_format_and_drops_the_mount(tmp_path, options, direct):
    mounted = MountedStore(tmp_path, options)
    files = sample_files()
    try:
        mounted.write(files)
    finally:
        mounted.stop()
    private, target = tmp_path / "private", tmp_path / "staged"
    target.mkdir()
    store = {"cipher": str(mounted.cipher), "target": str(target), "read_only": True, "stage_bytes": 1 << 20}
    key_fd = pipe_with(mounted.password)
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", STAGE_ONE, str(private),
             json.dumps(store)],
            env={**os.environ, "KEY_FD": str(key_fd)}, pass_fds=(key_fd,), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(key_fd)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert report["read_only"]
    assert report["decrypted_directly"] == (sorted(files) if direct else [])
    assert report["mounts"] == [], "the gocryptfs mount used for staging must be gone"
