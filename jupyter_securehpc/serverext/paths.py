"""No path leaves the project root: every API path is checked as text, then resolved and compared.

Two steps, both required:

1. As text, before touching the file system: no NUL or other control characters, no backslash, no percent
   escape left after the server decoded the URL once (double encoding, ``%252e%252e``, is how ``..`` hides
   from a single decode), no absolute path, no empty, ``.`` or ``..`` segment, no hidden segment.
2. On the file system: ``realpath`` of the joined path (symlinks followed, also ones a kernel created a
   second ago) must lie under ``realpath`` of the root by whole components (the root and a separator),
   never by a bare string prefix: ``/data/projAB`` starts with ``/data/projA`` but is a sibling, not a child.

Hidden files (a segment starting with ``.``) are refused here whatever ``ContentsManager.allow_hidden``
says, and the extension also forces ``allow_hidden = False``: ``.ipynb_checkpoints``, ``.git`` or a
kernel's ``.cache`` are not project documents, and jupyter-server's own hidden-file checks have had gaps.

What this cannot close: a kernel runs as the same user and may swap a checked directory for a symlink
between this check and the server's ``open`` (a race). The sandbox is what keeps such a symlink from
reaching another project: other projects' stores are not mounted in it.
"""

from __future__ import annotations

import os
import re
import stat
from urllib.parse import unquote

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(Exception):
    """The path is not a path inside the project; ``reason`` is short and safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_text(api_path: str, url_separator: bool = True) -> list[str]:
    """The segments of ``api_path``, or ``PathRefused``.

    ``url_separator``: the path comes from a URL pattern that keeps the ``/`` before it (``/api/contents/a``
    gives ``/a``), so one leading ``/`` is a separator; elsewhere (``/files/`` arguments, JSON bodies) a
    leading ``/`` makes an absolute path. One trailing ``/`` names a folder.
    """
    if _CONTROL.search(api_path):
        raise PathRefused("control character in path")
    if "\\" in api_path:
        raise PathRefused("backslash in path")
    if unquote(api_path) != api_path:
        raise PathRefused("percent escape in a decoded path (double encoding)")
    text = api_path[1:] if url_separator and api_path.startswith("/") else api_path
    text = text[:-1] if text.endswith("/") else text
    if not text:
        return []
    if text.startswith("/"):
        raise PathRefused("absolute path")
    segments = text.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise PathRefused("empty, '.' or '..' segment in path")
        if segment.startswith("."):
            raise PathRefused("hidden file or folder")
    return segments


def resolve_inside(root_real: str, api_path: str, url_separator: bool = True) -> str:
    """The real file-system path of ``api_path`` under ``root_real`` (itself a realpath), or ``PathRefused``.

    The target need not exist (a PUT creates it); what exists of it is resolved through symlinks.
    """
    segments = check_text(api_path, url_separator)
    real = os.path.realpath(os.path.join(root_real, *segments))
    if real == root_real:
        return real
    # Both are realpaths (absolute, normalised): ``real`` lies under the root exactly when it starts with the
    # root followed by a separator, which is what os.path.commonpath decides, by whole components.
    under = root_real if root_real.endswith(os.sep) else root_real + os.sep
    if not real.startswith(under):
        raise PathRefused("path resolves outside the project")
    if any(part.startswith(".") for part in real[len(under) :].split(os.sep)):
        raise PathRefused("path resolves to a hidden file or folder")
    return real


def writable_place(path: str) -> str | None:
    """The first of ``path`` (resolved) and its folders up to ``/`` that this process may write, or None.

    Static files (kernel-spec resources, the UI's files, themes) are served only when None: the kernel runs
    as the same user, so a file in a folder it can write (or under one it can rename) may be its own, planted
    there to be fetched as a file. Root can write everywhere but read-only mounts, so a server run as root
    serves no static file at all: run it as the user, with read-only system and data folders, as the
    sandbox does.
    """
    effective = os.access in os.supports_effective_ids
    place = os.path.realpath(path)
    if os.access(place, os.W_OK, effective_ids=effective):
        return place
    while True:
        parent = os.path.dirname(place)
        if parent == place:
            return None
        # A writable folder lets this process rename what is in it, except that a sticky one (/tmp) only lets
        # it rename its own entries (or any, if the folder is its own).
        if os.access(parent, os.W_OK, effective_ids=effective) and _may_rename(parent, place):
            return parent
        place = parent


def _may_rename(folder: str, entry: str) -> bool:
    # A mount point cannot be renamed (EBUSY), whoever owns its folder: the sandbox shields an environment
    # that lives under its private /tmp or /home with such a mount (node/sandbox.py, readonly_binds).
    if _is_mount_point(entry):
        return False
    info = os.stat(folder)
    if not info.st_mode & stat.S_ISVTX:
        return True
    me = os.geteuid()
    return me in (0, info.st_uid, os.lstat(entry).st_uid)


def _is_mount_point(path: str) -> bool:
    if os.path.ismount(path):
        return True
    # A bind mount of a folder of the same file system has its parent's device: only the mount table tells.
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as table:
            points = {_unescape(line.split(" ")[4]) for line in table}
    except OSError:
        return False
    return path in points


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in a mount point as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)
