"""Decrypt gocryptfs file contents directly, without FUSE, for staging a dataset into memory.

Reading through the FUSE mount costs gocryptfs 1.1-1.7 CPU seconds per GiB, mostly request traffic and
copies, not AES (benchmarks/sandbox_read.py). Staging reads every byte of a dataset exactly once, so it
decrypts the ciphertext files itself: one large read per chunk and AES-GCM from OpenSSL (via
``cryptography``), several GB/s on one core. The FUSE mount is still used for what is cheap and
format-heavy: listing the plaintext tree, and naming each file's ciphertext (``cipher_inodes``: the
inode number gocryptfs passes through; else its control socket, ``-ctlsock``), so file names are never
decrypted here.

Only gocryptfs' default format is read here (AES-256-GCM with 128-bit nonces and HKDF-derived keys, file
format version 2, as ``gocryptfs -init`` makes it since 1.3); ``supported`` says whether a store has it,
and staging copies through the mount otherwise. The format (gocryptfs' Documentation/file-format.md):

- ``gocryptfs.conf``: the master key, AES-GCM-encrypted (block 0, no file ID) with a key derived from
  the password by scrypt, then HKDF-SHA256 ("AES-GCM file content encryption").
- a non-empty file: a header (version 2, big endian uint16; a random 16-byte file ID), then blocks of
  4096 plaintext bytes, each stored as a 16-byte nonce, the ciphertext, a 16-byte tag; the associated data
  is the block number (big endian uint64) and the file ID, so blocks cannot be moved or swapped. An
  all-zero stored block is a hole (zeros). An empty file is stored empty.

Every block is authenticated: a changed, moved or truncated-inside-a-block file fails with CipherError.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .gocryptfs import StoreError

PLAIN_BLOCK = 4096
NONCE = 16
TAG = 16
CIPHER_BLOCK = NONCE + PLAIN_BLOCK + TAG
HEADER = 18
HEADER_VERSION = b"\x00\x02"
# Exactly what ``gocryptfs -init`` (2.x, default options) writes; LongNameMax only changes file names.
REQUIRED_FLAGS = frozenset({"HKDF", "GCMIV128", "DirIV", "EMENames", "LongNames", "Raw64"})
OPTIONAL_FLAGS = frozenset({"LongNameMax"})
GCM_CONTENT_INFO = b"AES-GCM file content encryption"
_ZERO_BLOCK = bytes(CIPHER_BLOCK)
_ZERO_NONCE = bytes(NONCE)
# Chunks after the current one that the kernel is asked to read ahead.
READ_AHEAD = 4


class CipherError(StoreError):
    """A store or file is not what its key and format say it should be; the message names it."""


def supported(config: dict) -> bool:
    """Whether this module reads the store that ``config`` (its gocryptfs.conf) describes."""
    flags = set(config.get("FeatureFlags") or ())
    return config.get("Version") == 2 and REQUIRED_FLAGS <= flags <= REQUIRED_FLAGS | OPTIONAL_FLAGS


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def content_key(config: dict, password: bytes) -> AESGCM:
    """The store's file-content cipher, from its gocryptfs.conf and password.

    Raises CipherError if the format is not supported or the password does not open the master key.
    """
    if not supported(config):
        raise CipherError(f"unsupported gocryptfs format (flags {sorted(config.get('FeatureFlags') or ())})")
    scrypt = config["ScryptObject"]
    unlock = hashlib.scrypt(
        password,
        salt=base64.b64decode(scrypt["Salt"]),
        n=scrypt["N"],
        r=scrypt["R"],
        p=scrypt["P"],
        dklen=scrypt["KeyLen"],
        maxmem=256 << 20,
    )
    sealed = base64.b64decode(config["EncryptedKey"])
    try:
        master = AESGCM(_hkdf(unlock, GCM_CONTENT_INFO)).decrypt(sealed[:NONCE], sealed[NONCE:], bytes(8))
    except InvalidTag:
        raise CipherError("the key does not open this store (gocryptfs: Password incorrect)") from None
    return AESGCM(_hkdf(master, GCM_CONTENT_INFO))


def read_config(cipher_dir: Path) -> dict:
    try:
        return json.loads((cipher_dir / "gocryptfs.conf").read_text())
    except (OSError, ValueError) as error:
        raise CipherError(f"cannot read {cipher_dir}/gocryptfs.conf: {error}") from None


def cipher_size(plain_size: int) -> int:
    """Bytes on disk of a file with ``plain_size`` bytes of plaintext."""
    if plain_size == 0:
        return 0
    return HEADER + plain_size + -(-plain_size // PLAIN_BLOCK) * (NONCE + TAG)


def cipher_span(offset: int, length: int) -> tuple[int, int]:
    """Where the blocks holding plaintext ``offset`` (block aligned) to ``offset + length`` are stored."""
    first = offset // PLAIN_BLOCK
    blocks = -(-length // PLAIN_BLOCK)
    return HEADER + first * CIPHER_BLOCK, length + blocks * (NONCE + TAG)


def _read_exactly(fd: int, buffer: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:]], offset + done)
        if n == 0:
            raise CipherError(f"{path} ends early at byte {offset + done} (truncated ciphertext?)")
        done += n


def decrypt_blocks(
    aead: AESGCM, stored: memoryview, plain: memoryview, first_block: int, file_id: bytes, path: Path
) -> None:
    """Decrypt consecutive stored blocks, the first being block number ``first_block``, into ``plain``."""
    for start in range(0, len(stored), CIPHER_BLOCK):
        block = stored[start : start + CIPHER_BLOCK]
        index = start // CIPHER_BLOCK
        number = first_block + index
        into = plain[index * PLAIN_BLOCK : index * PLAIN_BLOCK + len(block) - NONCE - TAG]
        try:
            if block[:NONCE] == _ZERO_NONCE:  # gocryptfs refuses these too (a zero nonce is never written)
                raise InvalidTag
            aead.decrypt_into(block[:NONCE], block[NONCE:], number.to_bytes(8, "big") + file_id, into)
        except InvalidTag:
            if block == _ZERO_BLOCK:  # a hole of a sparse file
                into[:] = bytes(PLAIN_BLOCK)
                continue
            raise CipherError(f"{path}: block {number} does not authenticate (changed or damaged ciphertext)") from None


def buffer_size(chunk: int) -> int:
    """The buffer that decrypt_range needs for chunks of up to ``chunk`` plaintext bytes."""
    return HEADER + cipher_span(0, chunk)[1] + chunk


def decrypt_range(aead: AESGCM, source: Path, target: Path, offset: int, length: int, buffer: bytearray) -> int:
    """Decrypt plaintext bytes ``offset`` (a multiple of 4096) to ``offset + length`` of the ciphertext file
    ``source`` into the same range of ``target``, using ``buffer`` (at least ``buffer_size(length)``)."""
    if offset % PLAIN_BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of {PLAIN_BLOCK}")
    dst = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if length == 0:
            return 0
        where, size = cipher_span(offset, length)
        view = memoryview(buffer)
        stored, plain = view[HEADER : HEADER + size], view[HEADER + size : HEADER + size + length]
        src = os.open(source, os.O_RDONLY)
        try:
            if offset == 0:  # header and blocks in one read: most files are a single chunk
                _read_exactly(src, view[: HEADER + size], 0, source)
                header = bytes(view[:HEADER])
            else:
                header = os.pread(src, HEADER, 0)
                _read_exactly(src, stored, where, source)
            # Each ciphertext byte is read once: drop it from the page cache at once, so that a staged
            # dataset takes memory once (its plaintext in the tmpfs), not twice.
            first = 0 if offset == 0 else where
            os.posix_fadvise(src, first, where + size - first, os.POSIX_FADV_DONTNEED)
            if os.fstat(src).st_size > where + size:
                # Ask for what follows now: the disk reads it while this chunk is decrypted and written.
                os.posix_fadvise(src, where + size, size * READ_AHEAD, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(src)
        if len(header) != HEADER or header[:2] != HEADER_VERSION:
            raise CipherError(f"{source}: not a gocryptfs version 2 file header")
        decrypt_blocks(aead, stored, plain, offset // PLAIN_BLOCK, header[2:], source)
        done = 0
        while done < length:
            done += os.pwrite(dst, plain[done:], offset + done)
    finally:
        os.close(dst)
    return length


def cipher_inodes(cipher_dir: Path) -> dict[int, Path]:
    """Inode number -> path of the store's ciphertext files.

    gocryptfs passes the backing file's inode number through to the plaintext file when it can (same
    device as the store's root, below 2**48), so a plaintext file's st_ino names its ciphertext without a
    question to the control socket; the callers check the size and ask the socket for anything not here.
    """
    root_device = cipher_dir.stat().st_dev
    found: dict[int, Path] = {}
    for folder, _, names in os.walk(cipher_dir):
        for name in names:
            info = os.lstat(os.path.join(folder, name))
            if info.st_dev == root_device and info.st_ino < 1 << 48 and stat.S_ISREG(info.st_mode):
                found[info.st_ino] = Path(folder, name)
    return found


class PathTranslator:
    """Plaintext path -> ciphertext path (relative to the store), asked of gocryptfs' control socket."""

    def __init__(self, ctlsock: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(10)
        self._socket.connect(str(ctlsock))

    def cipher_path(self, plain: Path) -> str:
        # One request, one answer, each a single JSON message (gocryptfs' ctlsock has no other framing).
        self._socket.sendall(json.dumps({"EncryptPath": str(plain)}).encode())
        answer = json.loads(self._socket.recv(65536))
        if answer.get("ErrNo") or not answer.get("Result"):
            raise CipherError(f"gocryptfs cannot name the ciphertext of {plain}: {answer.get('ErrText', 'no answer')}")
        return answer["Result"]

    def close(self) -> None:
        self._socket.close()
