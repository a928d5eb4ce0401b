"""The contents API rules: which file may be read as text by whom, and which write counts as an upload.

What "text" means, in this one place (``kind_of``), decided by the file's name, never its content:

- **notebook**: a name ending in ``.ipynb`` (exactly, as jupyter-server decides). Every member opens
  notebooks (``type=notebook``, or no type): what a notebook shows is on screen anyway (see the README).
- **code**: the last extension, in any case, is one of ``CODE_EXTENSIONS`` (``x.csv.py`` is code, ``x.PY``
  too). A code file of at most ``TEXT_LIMIT`` bytes opens as text for roles that may write the workspace
  (owners and scientists edit their scripts); a larger one is read like data.
- **data**: everything else (``.csv``, ``.txt``, ``.json``, ``.tsv``, no extension, any unknown one). As text
  only for the policy's ``text_content_roles`` and for roles that may download (``Action.FILE_READ_TEXT``).

A read is judged by what the server would send, whatever the query says: ``format=base64``, or
no format on a file that is not a notebook (jupyter-server answers base64 when the bytes are not UTF-8) need
download rights; ``type=notebook`` on a file that is not ``.ipynb`` is a text read of a data file (the server
would echo it in its error); ``type=directory`` on a file is judged as a read of that file. Metadata
(``content=0``), folder listings and 404s carry no file bytes. A ``hash=1`` is judged as a read of the content
in the asked format (with or without ``content=0``): a role that may open the file gets its hash, nobody else.

A write is an upload (``Action.FILE_UPLOAD``) unless an editor the role may use could have made it: a
notebook saved as ``type=notebook`` (JSON) into an existing ``.ipynb``, or text of at most ``TEXT_LIMIT``
bytes saved into an existing code file that the role may open as text. Everything else that carries
content is an upload: a new file with content, base64 or chunked content, any content saved into a data
file (also an existing or empty one), ``type=notebook`` into a file that is not ``.ipynb``. A rename or copy
that changes a file's kind needs upload and text rights both: otherwise data renamed to ``.py`` opens in
the code editor, and text typed in the code editor becomes a ``.csv``.

Not closed here: the kernel writes files directly, so code in a notebook can copy data into a ``.py`` file,
which then opens as text up to ``TEXT_LIMIT`` (what a kernel prints reaches the screen in any case); and a
file can change between this check and the server's read (the same race as in ``paths.py``).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from jupyter_securehpc.projects.authz import Action, Decision

from .facts import ALLOW, RequestFacts, Verdict, by_policy, refuse, refuse_route
from .paths import PathRefused

NOTEBOOK, CODE, DATA, DIRECTORY = "notebook", "code", "data", "directory"
# Source files researchers edit in the browser. Compared in lower case. Formats that usually hold data
# (.csv, .tsv, .txt, .json, .xml, .parquet...) are deliberately not here.
CODE_EXTENSIONS = frozenset(
    {
        ".py", ".pyi", ".r", ".rmd", ".jl", ".sh", ".bash", ".zsh", ".sql", ".md", ".markdown", ".rst", ".tex",
        ".bib", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".js", ".ts", ".css", ".c", ".h", ".cc", ".cpp",
        ".hpp", ".f90", ".m", ".stan", ".do", ".sas", ".slurm", ".smk", ".nf", ".wdl",
    }
)  # fmt: skip
# Code files larger than this open like data: a script is rarely larger, a table often is.
TEXT_LIMIT = 1 << 20


def kind_of(name: str) -> str:
    """The kind of a file by its name: notebook, code or data (see the module docstring)."""
    if name.endswith(".ipynb"):
        return NOTEBOOK
    extension = os.path.splitext(name)[1].lower()
    return CODE if extension in CODE_EXTENSIONS else DATA


def _kind_on_disk(real: str) -> str:
    return DIRECTORY if os.path.isdir(real) else kind_of(os.path.basename(real))


class ContentsRules:
    """Reads, writes, copies and renames through ``/api/contents`` for one session."""

    def __init__(self, root_real: str, resolve: Any, decisions: dict[Action, Decision]) -> None:
        self.root_real = root_real
        self._resolve = resolve  # (api_path, url_separator) -> real path, or PathRefused
        self.write = decisions[Action.WORKSPACE_WRITE]
        self.upload = decisions[Action.FILE_UPLOAD]
        self.download = decisions[Action.FILE_DOWNLOAD]
        self.text = decisions[Action.FILE_READ_TEXT]

    # --- reads -------------------------------------------------------------------------------------------

    def read(self, facts: RequestFacts, target: str) -> Verdict:
        query = facts.query
        fmt, kind = query.get("format"), query.get("type")
        if fmt == "base64":
            # Base64 is the file itself.
            return by_policy(self.download, Action.FILE_DOWNLOAD) or ALLOW
        if query.get("hash", "0") != "0":
            # A hash sums the content, and confirms guesses about a file: it is allowed exactly where the
            # content itself may be read in that format (JupyterLab 4.6 asks for one with every document it
            # opens), whether or not the content is asked for too.
            return self.content_read(target, fmt, kind)
        if query.get("content", "1") == "0":
            return ALLOW  # metadata only
        return self.content_read(target, fmt, kind)

    def content_read(self, target: str, fmt: str | None, kind: str | None) -> Verdict:
        """A read of the file's content in ``fmt`` (not base64), judged by the file's kind and the role."""
        try:
            info = os.stat(target)
        except (OSError, ValueError):
            return ALLOW  # a 404 carries no file bytes (as os.path.exists: what cannot be stat'ed is not there)
        if stat.S_ISDIR(info.st_mode):
            return ALLOW  # folder listings carry no file bytes
        name = os.path.basename(target)
        if kind_of(name) == NOTEBOOK and kind in (None, "notebook"):
            # Notebooks must open (and save); what they show is on screen anyway.
            return ALLOW
        if self.download:
            return ALLOW
        if fmt is None:
            # Without a format the server answers base64 for a file that is not UTF-8 (the file itself).
            return refuse(403, "ask for format=text: without a format binary files are sent whole", "file.download")
        if kind == "notebook":
            # A notebook read of a file that is not .ipynb: the server would parse it and echo its start.
            return self.data_text(name)
        return self.text_read(name, info.st_size)

    def text_read(self, name: str, size: int) -> Verdict:
        """format=text of a file that exists: code the role edits, or data for roles with text rights."""
        if kind_of(name) in (CODE, NOTEBOOK) and self.write and size <= TEXT_LIMIT:
            # The code editor (and "Open With > Editor" on a notebook): roles that write edit their scripts.
            return ALLOW
        return self.data_text(name)

    def data_text(self, name: str) -> Verdict:
        return by_policy(self.text, Action.FILE_READ_TEXT) or ALLOW

    # --- writes ------------------------------------------------------------------------------------------

    def put(self, facts: RequestFacts, target: str, body: dict[str, Any] | None) -> Verdict:
        refused = by_policy(self.write, Action.WORKSPACE_WRITE)
        if refused:
            return refused
        if not body:
            return ALLOW  # an empty PUT makes a new untitled notebook: writing, not uploading
        if body.get("path") is not None:
            self._resolve(body["path"], False)
        if body.get("copy_from") is not None:
            self._resolve(body["copy_from"], False)  # jupyter-server refuses it on PUT; checked all the same
        if body.get("type") == "directory" and body.get("content") is None and "chunk" not in body:
            return ALLOW  # a new folder
        if body.get("content") is None and "chunk" not in body:
            return ALLOW  # no content: the server makes an empty file or refuses the model
        if self._editor_save(target, body):
            return ALLOW
        return by_policy(self.upload, Action.FILE_UPLOAD) or ALLOW

    def _editor_save(self, target: str, body: dict[str, Any]) -> bool:
        """Could an editor this role may use have sent this save? Otherwise the content is an upload."""
        if "chunk" in body or not os.path.isfile(target):
            return False  # chunked transfers are uploads; new files with content are uploads
        kind, fmt = kind_of(os.path.basename(target)), body.get("format")
        if kind == NOTEBOOK:
            return body.get("type") == "notebook" and fmt in (None, "json") and isinstance(body["content"], dict)
        if kind == CODE:
            content = body["content"]
            return (
                body.get("type") == "file"
                and fmt == "text"
                and isinstance(content, str)
                and len(content.encode("utf-8", "surrogatepass")) <= TEXT_LIMIT
                and _size(target) <= TEXT_LIMIT
                and bool(self.write)
            )
        return False  # data files are written by the kernel or uploaded, never through an editor

    def change(self, facts: RequestFacts, target: str, body: dict[str, Any]) -> Verdict:
        """POST (new untitled file or folder, copy) and PATCH (rename): writes, kinds kept or uploads."""
        refused = by_policy(self.write, Action.WORKSPACE_WRITE)
        if refused:
            return refused
        if facts.method == "POST" and body.get("copy_from"):
            # Copies stay inside the project; the copy's name is the target's, or the source's in a folder.
            source = self._resolve(body["copy_from"], False)
            destination = target if not os.path.isdir(target) else source
            return self._same_kind(source, os.path.basename(destination), "copy")
        if facts.method == "PATCH" and "path" in body:
            # A rename's target must be inside the project too (renaming out of the root is a way out).
            new = self._resolve(body["path"], False)
            return self._same_kind(target, os.path.basename(new), "rename")
        return ALLOW

    def _same_kind(self, source: str, new_name: str, what: str) -> Verdict:
        if not os.path.exists(source):
            return ALLOW  # the server answers 404
        old = _kind_on_disk(source)
        if old == DIRECTORY or old == kind_of(new_name):
            return ALLOW
        # Changing a file's kind turns data into something that opens as code, or editor text into data.
        refused = by_policy(self.upload, Action.FILE_UPLOAD) or by_policy(self.text, Action.FILE_READ_TEXT)
        if refused:
            reason = f"a {what} from {old} to {kind_of(new_name)} needs upload and text rights: {refused.reason}"
            return refuse(403, reason, refused.action)
        return ALLOW

    def checkpoints(self, facts: RequestFacts) -> Verdict:
        if facts.method in ("GET", "HEAD"):
            return ALLOW  # the list of checkpoints holds ids and times only
        if facts.method not in ("POST", "DELETE"):
            return refuse_route(f"{facts.method} is not a checkpoint operation")
        # Creating, restoring and deleting checkpoints rewrites the file from its own earlier bytes.
        return by_policy(self.write, Action.WORKSPACE_WRITE) or ALLOW


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


__all__ = ["CODE_EXTENSIONS", "TEXT_LIMIT", "ContentsRules", "PathRefused", "kind_of"]
