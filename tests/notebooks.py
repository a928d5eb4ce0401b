"""Notebooks for the tests of headless runs and the parameter index, and the contents API calls that write them
into a session's workspace as JupyterLab does."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import nbformat
import requests

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebook(*cells: str, parameters: str) -> dict:
    """A Python notebook (JSON model) whose first cell, tagged ``parameters``, is ``parameters``; then ``cells``."""
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = dict(KERNELSPEC)
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    document.cells = [first, *(nbformat.v4.new_code_cell(cell) for cell in cells)]
    return json.loads(nbformat.writes(document))


def contents(base: str, token: str, method: str, path: str, **kwargs) -> requests.Response:
    """A request to a server's contents API at ``base`` (``.../user/NAME/SERVER``)."""
    return requests.request(method, f"{base}/api/contents/{quote(path)}", headers={"Authorization": f"token {token}"},
                            timeout=60, **kwargs)  # fmt: skip


def write_notebook(base: str, token: str, path: str, document: dict) -> requests.Response:
    """As JupyterLab does it: a new untitled notebook in the folder, renamed, then saved with its content (each
    step must succeed); the save's answer."""
    folder = os.path.dirname(path)
    if folder:
        made = contents(base, token, "PUT", folder, json={"type": "directory"})
        assert made.status_code in (200, 201), made.text
    untitled = contents(base, token, "POST", folder, json={"type": "notebook"})
    assert untitled.status_code == 201, untitled.text
    renamed = contents(base, token, "PATCH", untitled.json()["path"], json={"path": path})
    assert renamed.status_code == 200, renamed.text
    saved = contents(base, token, "PUT", path, json={"type": "notebook", "format": "json", "content": document})
    assert saved.status_code == 200, saved.text
    return saved


def read_notebook(base: str, token: str, path: str) -> nbformat.NotebookNode:
    answer = contents(base, token, "GET", path, params={"type": "notebook", "content": "1"})
    assert answer.status_code == 200, answer.text
    return nbformat.from_dict(answer.json()["content"])
