"""Submit and follow headless runs through the hub's REST API, with the person's JupyterHub API token.

Used by ``securehpc run ...`` (``cli.py``) and ``jupyter_securehpc.runs.submit`` (Python). The hub is
``$JUPYTERHUB_URL`` (or given), the token ``$JUPYTERHUB_API_TOKEN`` (or given, or read from a file): never an
argument on a command line, never in a URL. Parameters are checked here with the run contract's own rules, so a
value that is not JSON is refused before anything is sent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from ..session.spec import MAX_UPLOAD_BYTES, RunRequestError, validate_parameters, validate_upload_name

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
    """A local notebook as the submission's ``upload`` (``{"name", "content"}``); RunRefused for a file that
    cannot be sent (nothing is sent). The hub checks it again, and that it is a notebook."""
    path = Path(path)
    try:
        validate_upload_name(path.name)
    except RunRequestError as error:
        raise RunRefused(str(error)) from None
    try:
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise RunRefused(
                f"{path} has {size} bytes: an uploaded notebook may have at most {MAX_UPLOAD_BYTES} (clear its "
                "outputs, keep data in the project's files)"
            )
        content = path.read_bytes().decode()
    except OSError as error:
        raise RunRefused(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise RunRefused(f"{path} is not a notebook (not UTF-8 text)") from None
    return {"name": path.name, "content": content}


def request(project: str, notebook: str | None = None, parameters: dict | None = None, *,
            kernel_name: str | None = None, gpus: int | None = None, cpus: int | None = None,
            memory_gb: int | None = None, time: str | int | None = None,
            upload: str | Path | None = None) -> dict:  # fmt: skip
    """The JSON body of a submission; RunRefused for parameters that are not JSON data or an upload that cannot
    be sent (nothing is sent). Exactly one of ``notebook`` (a path in the workspace) and ``upload`` (a local file)."""
    if (notebook is None) == (upload is None):
        raise RunRefused("give either a notebook of the project's workspace or a local notebook to upload, not both")
    try:
        checked = validate_parameters(parameters or {})
    except RunRequestError as error:
        raise RunRefused(str(error)) from None
    body = {"project": project, "notebook": notebook, "parameters": checked, "kernel": kernel_name, "gpus": gpus,
            "cpus": cpus, "memory_gb": memory_gb, "time": time}  # fmt: skip
    if upload is not None:
        body["upload"] = read_upload(upload)
    return {key: value for key, value in body.items() if value is not None}


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


def parameter_value(name: str, text: str) -> object:
    """``-p NAME VALUE``: VALUE is JSON (numbers, true/false, null, "quoted text", [lists], {objects})."""

    def refuse(constant: str) -> object:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        raise RunRefused(
            f"parameter {name}: {text[:40]!r} is not JSON; quote text as JSON ('\"{text[:20]}\"') or give it "
            f"with -r {name} TEXT"
        ) from None
