"""A real jupyter-server with the extension and the launcher's audit pipe: saving, renaming and deleting notebooks
through the contents API (as JupyterLab does) writes the notebook parameter index's changes on the pipe, names
only (never a default value), each one the launcher's parser takes; an observer's server writes none."""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from serverext_helpers import CANARY, Server, launch, make_projects

from jupyter_securehpc.session.parameters import PIPE_KEY, parse_parameters_change


class Pipe:
    """The read end of the launcher's audit pipe: the lines the server wrote, decoded."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buffer = b""

    def lines(self, wait: float = 5.0, until: int = 1) -> list[dict]:
        """What came since the last call; waits up to ``wait`` seconds for ``until`` index changes."""
        found: list[dict] = []
        deadline = time.monotonic() + wait
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
            if ready:
                self._buffer += os.read(self.read_fd, 1 << 16)
            *complete, self._buffer = self._buffer.split(b"\n")
            found.extend(json.loads(line) for line in complete)
            if sum(PIPE_KEY in line for line in found) >= until or time.monotonic() >= deadline:
                return [line[PIPE_KEY] for line in found if PIPE_KEY in line]


def notebook(parameters: str) -> dict:
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    document.cells = [cell, nbformat.v4.new_code_cell("print(alpha)")]
    return json.loads(nbformat.writes(document))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Server, Pipe]]]:
    base = tmp_path_factory.mktemp("parameters")
    started: dict[str, tuple[Server, Pipe]] = {}
    try:
        for role in ("data_scientist", "observer"):
            root = make_projects(base / role / "data")
            pipe = Pipe()
            session = {"project": "sleep", "user": "alice", "role": role, "policy": {}}
            server = launch(base / role / "server", root, session=session, pass_fds=(pipe.write_fd,),
                            extra_env={"SECUREHPC_AUDIT_FD": str(pipe.write_fd)})  # fmt: skip
            os.close(pipe.write_fd)
            started[role] = (server, pipe)
        yield started
    finally:
        for server, pipe in started.values():
            server.stop()
            os.close(pipe.read_fd)


def test_saves_renames_and_deletes_of_notebooks_reach_the_pipe_as_the_launcher_takes_them(servers):
    server, pipe = servers["data_scientist"]
    client = server.client("token")
    pipe.lines(wait=0.5)
    assert client.request("PUT", "/api/contents/analysis", body={"type": "directory"}).status == 201
    # As JupyterLab makes a notebook: a new untitled one, renamed, then saved with its cells.
    made = client.request("POST", "/api/contents/analysis", body={"type": "notebook"})
    assert made.status == 201, made.body
    untitled = made.json()["path"]
    assert pipe.lines() == [{"saved": untitled, "names": []}]
    assert client.request("PATCH", f"/api/contents/{untitled}", body={"path": "analysis/sweep.ipynb"}).status == 200
    assert pipe.lines() == [{"renamed": untitled, "to": "analysis/sweep.ipynb"}]
    # A line papermill cannot parse (two '='): papermill alone would log it, value and all, on the server's stderr.
    content = notebook(f'alpha = 0.5\nsubjects = ["{CANARY}"]\nlabel = "x"\nstrict = mode == "{CANARY}"')
    body = {"type": "notebook", "format": "json", "content": content}
    assert client.request("PUT", "/api/contents/analysis/sweep.ipynb", body=body).status == 200
    changes = pipe.lines()
    assert changes == [{"saved": "analysis/sweep.ipynb", "names": ["alpha", "subjects", "label"]}]
    # The launcher's parser takes what the server wrote; no default value is in it.
    assert parse_parameters_change(changes[0]).names == ("alpha", "subjects", "label")
    assert CANARY not in json.dumps(changes)
    assert CANARY not in server.log.read_text(errors="replace")
    # Saved again with the same names: reported again (another session may have saved other names meanwhile).
    assert client.request("PUT", "/api/contents/analysis/sweep.ipynb", body=body).status == 200
    assert pipe.lines() == changes
    content = notebook("alpha = 0.5\nbeta = 2")
    body = {"type": "notebook", "format": "json", "content": content}
    assert client.request("PUT", "/api/contents/analysis/sweep.ipynb", body=body).status == 200
    assert pipe.lines() == [{"saved": "analysis/sweep.ipynb", "names": ["alpha", "beta"]}]
    # A folder renamed, a notebook deleted.
    assert client.request("PATCH", "/api/contents/analysis", body={"path": "work"}).status == 200
    assert pipe.lines() == [{"renamed": "analysis", "to": "work"}]
    assert client.request("DELETE", "/api/contents/work/sweep.ipynb").status == 204
    assert pipe.lines() == [{"deleted": "work/sweep.ipynb"}]
    for change in ({"renamed": "analysis", "to": "work"}, {"deleted": "work/sweep.ipynb"}):
        parse_parameters_change(change)


def test_a_notebook_papermill_cannot_read_is_reported_as_gone(servers):
    server, pipe = servers["data_scientist"]
    client = server.client("token")
    made = client.request("POST", "/api/contents/", body={"type": "notebook"}).json()["path"]
    assert pipe.lines() == [{"saved": made, "names": []}]
    content = notebook("alpha = 1")
    del content["metadata"]["kernelspec"]  # papermill needs the kernel to read the parameters cell
    body = {"type": "notebook", "format": "json", "content": content}
    assert client.request("PUT", f"/api/contents/{made}", body=body).status == 200
    assert pipe.lines() == [{"deleted": made}]


def test_an_observers_server_writes_nothing_to_the_index(servers):
    server, pipe = servers["observer"]
    client = server.client("token")
    assert client.request("POST", "/api/contents/", body={"type": "notebook"}).status == 403
    existing = Path(server.root) / "mine.ipynb"
    existing.write_text(json.dumps(notebook("alpha = 1")))
    body = {"type": "notebook", "format": "json", "content": notebook("evil = 1")}
    assert client.request("PUT", "/api/contents/mine.ipynb", body=body).status == 403
    assert client.request("DELETE", "/api/contents/mine.ipynb").status == 403
    assert pipe.lines(wait=1.0) == []
