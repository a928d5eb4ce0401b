"""Text reads and uploads through the contents API, tried the ways a member's browser or script would.

Default policy: data owners read data files as text and upload; data scientists edit notebooks and small code
files, neither read data files as text nor upload; observers only look. Every refusal is a 403 with an audit
event and no file bytes; errors of requests the guard lets through carry no file bytes either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverext_helpers import CANARY, Server, launch, make_projects, notebook_json

from jupyter_securehpc.serverext.contents import TEXT_LIMIT, kind_of

OWNER, SCIENTIST, OBSERVER = "data_owner", "data_scientist", "observer"
ROLES = (OWNER, SCIENTIST, OBSERVER)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    base = tmp_path_factory.mktemp("contents")
    started: dict[str, Server] = {}
    try:
        for role in ROLES:
            root = make_projects(base / role / "data")
            (root / "DATA.CSV").write_text(f"a,b\n1,{CANARY}\n")
            (root / "script.py").write_text(f"print('{CANARY}')\n")
            (root / "Script.Py").write_text(f"print('{CANARY}')\n")
            (root / "table.csv.py").write_text(f"x = '{CANARY}'\n")
            (root / "big.py").write_text("#" * TEXT_LIMIT + CANARY)
            (root / "empty.csv").write_text("")
            (root / "notes.txt").write_text(CANARY)
            session = {"project": "cardio", "user": "alice", "role": role, "policy": {}}
            started[role] = launch(base / role / "server", root, session=session, audit=base / role / "audit.log")
        yield started
    finally:
        for server in started.values():
            server.stop()


def ask(server: Server, method: str, path: str, body: object = None) -> tuple[int, bytes, list[dict]]:
    before = len(server.audit_lines())
    response = server.client("token").request(method, path, body=body)
    return response.status, response.body, server.audit_lines()[before:]


def assert_refused(server: Server, method: str, path: str, body: object = None) -> None:
    status, text, events = ask(server, method, path, body)
    assert status == 403, (method, path, status, text[:300])
    assert CANARY.encode() not in text
    assert events and events[-1]["outcome"] == "denied", (method, path)


def assert_passes(server: Server, method: str, path: str, body: object = None, status: int | None = None) -> bytes:
    got, text, events = ask(server, method, path, body)
    assert not events, (method, path, got, events)
    assert got != 403, (method, path, text[:300])
    if status is not None:
        assert got == status, (method, path, got, text[:300])
    return text


# --- reads: (query, who may) --------------------------------------------------------------------------------

DATA_TEXT = {OWNER}  # text_content_roles by default
CODE_TEXT = {OWNER, SCIENTIST}  # roles that write the workspace
NOBODY: set[str] = set()  # download rights only (nobody by default)
READS = [
    ("data.csv?type=file&format=text", DATA_TEXT),
    ("data.csv?format=text", DATA_TEXT),
    ("data.csv", NOBODY),  # no format: binary files would come back whole
    ("data.csv?type=file", NOBODY),
    ("data.csv?type=notebook", NOBODY),  # no format again
    ("data.csv?type=notebook&format=text", DATA_TEXT),  # the server would echo the file's start
    ("data.csv?type=directory&format=text", DATA_TEXT),
    ("data.csv?content=1&type=directory", NOBODY),
    ("data.csv?format=text&hash=1", DATA_TEXT),  # a hash is worth the content it sums
    ("data.csv?content=0&hash=1", NOBODY),  # no format: as the content would be sent
    ("data.csv?content=0&format=text&hash=1", DATA_TEXT),
    ("script.py?type=file&format=text&hash=1", CODE_TEXT),
    ("script.py?content=0&hash=1", NOBODY),
    ("notebook.ipynb?type=notebook&hash=1", {OWNER, SCIENTIST, OBSERVER}),  # JupyterLab 4.6 opening a notebook
    ("notebook.ipynb?type=notebook&content=0&hash=1", {OWNER, SCIENTIST, OBSERVER}),
    ("notebook.ipynb?format=base64&hash=1", NOBODY),
    ("data.csv?format=base64&format=text", DATA_TEXT),  # the handler reads the last value
    ("data.csv?format=text&format=base64", NOBODY),
    ("data.csv?format=%20text%20", DATA_TEXT),  # stripped as the handler strips it
    ("data.csv?type=file&type=notebook&format=text", DATA_TEXT),
    ("DATA.CSV?type=file&format=text", DATA_TEXT),
    ("notes.txt?type=file&format=text", DATA_TEXT),
    ("empty.csv?type=file&format=text", DATA_TEXT),
    ("script.py?type=file&format=text", CODE_TEXT),
    ("Script.Py?type=file&format=text", CODE_TEXT),
    ("table.csv.py?type=file&format=text", CODE_TEXT),  # the last extension counts
    ("big.py?type=file&format=text", DATA_TEXT),  # code larger than the limit reads like data
    ("script.py", NOBODY),
    ("notebook.ipynb?type=file&format=text", CODE_TEXT),  # "Open With > Editor"
    ("notebook.ipynb?type=notebook", {OWNER, SCIENTIST, OBSERVER}),
    ("notebook.ipynb", {OWNER, SCIENTIST, OBSERVER}),
    ("data.csv?content=0", {OWNER, SCIENTIST, OBSERVER}),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("query", "allowed"), READS, ids=[query for query, _ in READS])
def test_reads(servers: dict[str, Server], role: str, query: str, allowed: set[str]) -> None:
    server = servers[role]
    path = f"/api/contents/{query}"
    if role in allowed:
        assert_passes(server, "GET", path)
    else:
        assert_refused(server, "GET", path)


def test_errors_carry_no_file_content(servers: dict[str, Server]) -> None:
    """A role with text rights passes the guard; the server's own errors must not quote the file."""
    server = servers[OWNER]
    for path in (
        "/api/contents/data.csv?type=notebook&format=text",
        "/api/contents/notes.txt?type=notebook&format=text",
        "/api/contents/image.bin?type=file&format=text",
        "/api/contents/data.csv?format=json",
    ):
        text = assert_passes(server, "GET", path)
        assert b"patient" not in text and b"CANARY" not in text and b"Traceback" not in text, (path, text[:300])
    # A notebook that does not parse: "Unreadable Notebook: ... NotJSONError('...<content>...')" upstream.
    (server.root / "broken.ipynb").write_text(f'{{"cells": "{CANARY}"')
    status, text, _ = ask(server, "GET", "/api/contents/broken.ipynb?type=notebook")
    assert status == 400 and CANARY.encode() not in text and json.loads(text)["message"] == "Bad Request", text
    missing = assert_passes(server, "GET", "/api/contents/absent.csv", status=404)
    assert b"absent.csv" in missing  # "file or directory '/absent.csv' does not exist": the path alone, kept


# --- writes -------------------------------------------------------------------------------------------------


def uid() -> str:
    return uuid.uuid4().hex[:8]


TEXT = {"type": "file", "format": "text", "content": "col\n1\n"}


@pytest.mark.parametrize("role", [SCIENTIST, OWNER])
def test_saving_into_data_files_is_an_upload(servers: dict[str, Server], role: str) -> None:
    server, check = servers[role], assert_refused if role == SCIENTIST else assert_passes
    # Into an existing (empty) data file, and into one made empty a moment ago.
    check(server, "PUT", "/api/contents/empty.csv", TEXT)
    name = f"made-{uid()}.csv"
    assert_passes(server, "PUT", f"/api/contents/{name}", {"type": "file", "format": "text"}, status=201)
    check(server, "PUT", f"/api/contents/{name}", TEXT)
    # A new untitled file (no content) is a write; saving content into it is not, when it is data.
    created = json.loads(assert_passes(server, "POST", "/api/contents/sub", {"type": "file", "ext": ".csv"}))
    check(server, "PUT", f"/api/contents/{created['path']}", TEXT)
    # Base64, chunks, notebooks into data files, uppercase extensions.
    check(server, "PUT", "/api/contents/empty.csv", {"type": "file", "format": "base64", "content": "aGk="})
    check(server, "PUT", "/api/contents/empty.csv", {**TEXT, "chunk": 1})
    check(server, "PUT", "/api/contents/DATA.CSV", TEXT)
    check(
        server, "PUT", "/api/contents/empty.csv", {"type": "notebook", "format": "json", "content": notebook_json("x")}
    )


def test_code_editor_saves_are_writes_within_limits(servers: dict[str, Server]) -> None:
    server = servers[SCIENTIST]
    created = json.loads(assert_passes(server, "POST", "/api/contents/sub", {"type": "file", "ext": ".py"}))
    path = f"/api/contents/{created['path']}"
    assert_passes(server, "PUT", path, {"type": "file", "format": "text", "content": "print(1)\n"}, status=200)
    # Not as an editor sends it, or too big: uploads.
    assert_refused(server, "PUT", path, {"type": "file", "format": "base64", "content": "aGk="})
    assert_refused(server, "PUT", path, {"type": "file", "format": "text", "content": "x", "chunk": -1})
    assert_refused(server, "PUT", path, {"type": "file", "format": "text", "content": "#" * (TEXT_LIMIT + 1)})
    assert_refused(server, "PUT", path, {"type": "notebook", "format": "json", "content": notebook_json("x")})
    assert_refused(server, "PUT", "/api/contents/big.py", {"type": "file", "format": "text", "content": "x"})
    assert_refused(server, "PUT", "/api/contents/notebook.ipynb", {"type": "file", "format": "text", "content": "{}"})
    # A new file with content is an upload even when it is code.
    assert_refused(server, "PUT", f"/api/contents/new-{uid()}.py", TEXT)
    # Notebooks saved as notebooks stay writes.
    model = {"type": "notebook", "format": "json", "content": notebook_json("saved")}
    assert_passes(server, "PUT", "/api/contents/notebook.ipynb", model, status=200)


@pytest.mark.parametrize("role", [SCIENTIST, OWNER])
def test_renames_and_copies_across_kinds(servers: dict[str, Server], role: str) -> None:
    server, check = servers[role], assert_refused if role == SCIENTIST else assert_passes
    # data -> code (then it would open in the code editor), code -> data (editor text becomes a table).
    for old, new in [("data.csv", "data.py"), ("DATA.CSV", "DATA.csv.py"), ("notes.txt", "notes.R"),
                     ("script.py", "script.csv"), ("Script.Py", "Script.tsv"), ("notebook.ipynb", "nb.csv"),
                     ("data.csv", "data.ipynb")]:  # fmt: skip
        source = f"{uid()}-{old}"
        (server.root / source).write_bytes((server.root / old).read_bytes())
        check(server, "PATCH", f"/api/contents/{source}", {"path": f"{uid()}-{new}"})
    # Same kind: a plain write.
    source = f"{uid()}-data.csv"
    (server.root / source).write_text("a\n")
    assert_passes(server, "PATCH", f"/api/contents/{source}", {"path": f"{uid()}-renamed.CSV"}, status=200)
    # Create code in the editor, then rename it to data.
    created = json.loads(assert_passes(server, "POST", "/api/contents", {"type": "file", "ext": ".py"}))
    check(server, "PATCH", f"/api/contents/{created['path']}", {"path": f"{uid()}.csv"})
    # Copies keep the name's kind in a folder; copying to a name of another kind changes it.
    assert_passes(server, "POST", "/api/contents/sub", {"copy_from": "data.csv"}, status=201)
    status, _, events = ask(server, "POST", f"/api/contents/sub/{uid()}.py", {"copy_from": "data.csv"})
    assert (status == 403 and events) if role == SCIENTIST else status != 403


def test_observers_write_nothing(servers: dict[str, Server]) -> None:
    server = servers[OBSERVER]
    assert_refused(server, "PUT", "/api/contents/script.py", {"type": "file", "format": "text", "content": "x"})
    assert_refused(server, "POST", "/api/contents/sub", {"type": "file", "ext": ".py"})
    assert_refused(server, "PATCH", "/api/contents/data.csv", {"path": "data2.csv"})


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.ipynb", "notebook"), ("a.IPYNB", "data"), ("a.py", "code"), ("a.Py", "code"), ("a.R", "code"),
     ("a.csv.py", "code"), ("a.py.csv", "data"), ("a.CSV", "data"), ("README", "data"), ("a.json", "data"),
     (".py", "data"), ("a.", "data")],
)  # fmt: skip
def test_kinds(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_refusals_leave_audit_events_with_no_content(servers: dict[str, Server]) -> None:
    for server in servers.values():
        for event in server.audit_lines():
            assert CANARY not in json.dumps(event)
    assert Path(servers[SCIENTIST].audit).exists()
