"""Submit and follow headless runs through the hub's REST API, with the person's JupyterHub API token.

Used by ``securehpc run ...`` (``cli.py``) and ``jupyter_securehpc.runs.submit`` (Python). The hub is
``$JUPYTERHUB_URL`` (or given), the token ``$JUPYTERHUB_API_TOKEN`` (or given, or read from a file): never an
argument on a command line, never in a URL.

The hub is the one place that decides, so that every refusal is an audit event: parameters go as given (names
unchecked; a value that is NaN or an infinity as its text in ``parameters_json``, which the hub refuses naming
it), notebook paths as typed, and an upload that cannot be sent (over ``MAX_UPLOAD_BYTES``, not UTF-8) as its
name, size and why, never its content. What stays here is only what the hub never sees, not audited: no hub
address or token, a local file that cannot be read, a value Python's json cannot encode at all (a date, a set:
``RunRefused``), a hub that cannot be reached.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from ..session.spec import MAX_UPLOAD_BYTES

URL_ENV = "JUPYTERHUB_URL"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - the variable's name
ENDED = ("succeeded", "failed", "cancelled", "timed out")


class RunError(RuntimeError):
    """The hub could not be asked, or answered with an error; one line that says what to do."""


class RunRefused(RunError):
    """The hub refused the request (bad input, not allowed, no such run or project); its one-line reason."""


def hub_url(explicit: str | None = None) -> str:
    url = (explicit or os.environ.get(URL_ENV) or "").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise RunError(f"where is the hub? give --hub-url https://hub.example.org or set ${URL_ENV}")
    return url.removesuffix("/hub")


def api_token(explicit: str | None = None, token_file: Path | None = None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text().strip().splitlines()[0] if token_file.read_text().strip() else ""
        except OSError as error:
            raise RunError(f"cannot read the token file {token_file}: {error.strerror}") from None
    else:
        token = explicit or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise RunError(
            f"no JupyterHub API token: set ${TOKEN_ENV} or give --token-file (make one on the hub's Token page)"
        )
    return token


class RunsClient:
    """The hub's runs endpoints for one person (their token)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, token_file: Path | None = None,
                 timeout: float = 60.0) -> None:  # fmt: skip
        self.base = f"{hub_url(url)}/hub/api/securehpc/runs"
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"token {api_token(token, token_file)}"
        self.timeout = timeout

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        try:
            response = self._session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise RunError(f"cannot reach the hub at {self.base.split('/hub/')[0]}: {type(error).__name__}") from None
        if response.ok:
            return response.json()
        try:
            message = response.json().get("message") or response.reason
        except ValueError:
            message = response.reason
        message = " ".join(str(message).split())[:500]
        if response.status_code in (400, 403, 404):
            raise RunRefused(message)
        if response.status_code == 401:
            raise RunRefused(f"the hub does not accept this token ({message}): make a new one on the Token page")
        raise RunError(f"the hub answered {response.status_code}: {message}")

    def submit(self, request: dict) -> dict:
        return self._call("POST", json=request)

    def list(self, project: str) -> list[dict]:
        return self._call("GET", params={"project": project})["runs"]

    def show(self, run_id: str) -> dict:
        return self._call("GET", f"/{requests.utils.quote(run_id, safe='')}")

    def cancel(self, run_id: str) -> dict:
        return self._call("POST", f"/{requests.utils.quote(run_id, safe='')}/cancel")

    def logs(self, run_id: str) -> list[str]:
        return self._call("GET", f"/{requests.utils.quote(run_id, safe='')}/logs")["messages"]

    def wait(self, run_id: str, *, poll: float = 2.0, on_change: Callable[[dict], None] | None = None) -> dict:
        """The run once it has ended; ``on_change`` sees each new state or progress on the way."""
        seen = None
        while True:
            run = self.show(run_id)
            now = (run["state"], run.get("cells_done"), run.get("cells_total"))
            if now != seen and on_change is not None:
                on_change(run)
            seen = now
            if run["state"] in ENDED:
                return run
            time.sleep(poll)


def read_upload(path: str | Path) -> dict:
    """A local notebook as the submission's ``upload``: ``{"name", "content"}``; for a file the hub must refuse
    without its content, ``{"name", "size", "withheld": "too large" | "not UTF-8"}`` (never more than
    ``MAX_UPLOAD_BYTES`` is read or sent). The hub checks the name, the size and that it is a notebook. RunError
    (local, nothing sent) for a file that cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = file.read(MAX_UPLOAD_BYTES + 1) if size <= MAX_UPLOAD_BYTES else b""
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror}; nothing was sent to the hub") from None
    if size > MAX_UPLOAD_BYTES or len(data) > MAX_UPLOAD_BYTES:
        return {"name": path.name, "size": max(size, len(data)), "withheld": "too large"}
    try:
        return {"name": path.name, "content": data.decode()}
    except UnicodeDecodeError:
        return {"name": path.name, "size": len(data), "withheld": "not UTF-8"}


def _not_encodable(where: str, value: object) -> RunRefused:
    return RunRefused(
        f"{where} is a {type(value).__name__}, which JSON cannot carry: give text (a date as its .isoformat()), a "
        "number, true/false, None, a list or a dict; nothing was sent to the hub"
    )


def split_parameters(parameters: object) -> tuple[object, dict[str, str]]:
    """Parameters as given, as the request's ``parameters`` (JSON values) and ``parameters_json`` (NaN and
    infinities, as JSON text the hub refuses naming the parameter). RunRefused (local) for a value that json
    cannot encode at all, such as a date or a set."""
    if not isinstance(parameters, dict):
        return parameters, {}
    values: dict = {}
    texts: dict[str, str] = {}
    for name, value in parameters.items():
        if not isinstance(name, (str, int, float, bool, type(None))):
            raise _not_encodable(f"parameter name {str(name)[:40]!r}", name)
        try:
            json.dumps(value, allow_nan=False)
        except TypeError:
            raise _not_encodable(f"parameter {str(name)[:40]!r}", value) from None
        except ValueError:  # NaN or an infinity (or a value that contains itself)
            try:
                texts[str(name)] = json.dumps(value)
            except ValueError:
                raise RunRefused(f"parameter {str(name)[:40]!r} contains itself: give data") from None
        else:
            values[name] = value
    return values, texts


def request(project: str, notebook: str | None = None, parameters: dict | None = None, *,
            kernel_name: str | None = None, gpus: int | None = None, cpus: int | None = None,
            memory_gb: int | None = None, time: str | int | None = None,
            upload: str | Path | None = None, parameters_json: dict[str, str] | None = None) -> dict:  # fmt: skip
    """The JSON body of a submission, with what was given: the hub checks all of it (``notebook``, a path in the
    workspace, or ``upload``, a local file: one of them; names and values of ``parameters``; ``parameters_json``,
    NAME: the value's JSON text as typed). RunError for a local file that cannot be read, RunRefused for a value
    json cannot encode at all (nothing is sent)."""
    values, texts = split_parameters(parameters)
    if parameters_json:
        texts = {**texts, **parameters_json}
    body = {"project": project, "notebook": notebook, "parameters": values, "parameters_json": texts or None,
            "kernel": kernel_name, "gpus": gpus, "cpus": cpus, "memory_gb": memory_gb, "time": time}  # fmt: skip
    if upload is not None:
        body["upload"] = read_upload(upload)
    body = {key: value for key, value in body.items() if value is not None}
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as error:  # in parameters that are not a dict, or in the resources
        raise RunRefused(f"the request cannot be sent as JSON ({error}): give data; nothing was sent") from None
    return body


def submit(project: str, notebook: str | None = None, parameters: dict | None = None, *,
           kernel_name: str | None = None, gpus: int | None = None, cpus: int | None = None,
           memory_gb: int | None = None, time: str | int | None = None, upload: str | Path | None = None,
           wait: bool = False, hub_url: str | None = None, token: str | None = None) -> dict:  # fmt: skip
    """``jupyter_securehpc.runs.submit``: see there."""
    body = request(project, notebook, parameters, kernel_name=kernel_name, gpus=gpus, cpus=cpus,
                   memory_gb=memory_gb, time=time, upload=upload)  # fmt: skip
    client = RunsClient(hub_url, token)
    run = client.submit(body)
    return client.wait(run["run_id"]) if wait else run
