"""The server extension against a real jupyter-server: no file leaves a project, no path leaves its root.

Each (role, policy variant) gets its own server (a subprocess on a free loopback port, stopped by pid) over
its own copy of the projects: ``projA`` (the root) and its sibling ``projAB``, a symlink out of the root
made before the server starts and one made while it runs (as a kernel would). Every file holds ``CANARY``:
a refused response must not contain it, must carry the status the table says, and must have appended a
denied event to the audit log. Every route runs with token auth, with cookie auth (login through /login,
then the cookie and ``_xsrf``), and without auth.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote, unquote

import pytest
from serverext_helpers import CANARY, Client, Server, launch, list_routes, make_projects, notebook_json, tail

from jupyter_securehpc.audit import verify
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.serverext.guard import Guard, content_security_policy
from jupyter_securehpc.serverext.paths import PathRefused, check_text, resolve_inside
from jupyter_securehpc.serverext.session import SessionPolicyError, session_from_dict
from jupyter_securehpc.serverext.session_api import PAGE_CONFIG_KEY, SETTINGS_KEY, add_to_page_config

ROLES = [role.value for role in Role]
VARIANTS = {
    # The default policy: nobody downloads, data owners upload and read data files as text, no terminals.
    "default": {"policy": {}},
    # Data owners may download; terminals on (for owners and scientists, never observers).
    "owner_downloads": {"policy": {"download_roles": ["data_owner"], "terminals": True}},
    # Only data scientists may read data files as text (data owners neither download nor read text here).
    "scientist_text": {"policy": {"text_content_roles": ["data_scientist"]}},
}
EXPORTERS = [
    "asciidoc", "custom", "html", "latex", "markdown", "notebook", "pdf", "python", "qtpdf", "qtpng", "rst",
    "script", "slides", "webpdf",
]  # fmt: skip


def session_for(role: str, variant: str) -> dict:
    return {"project": "cardio", "user": "alice", "role": role, **VARIANTS[variant]}


# --- what each role may do under each variant (the expectations, written from the policy) ------------------


def may_download(role: str, variant: str) -> bool:
    return variant == "owner_downloads" and role == "data_owner"


def may_write(role: str, variant: str) -> bool:
    return role != "observer"


def may_upload(role: str, variant: str) -> bool:
    return role == "data_owner"  # Policy() default upload_roles, in every variant


def may_open_terminal(role: str, variant: str) -> bool:
    return variant == "owner_downloads" and role != "observer"


def may_read_text(role: str, variant: str) -> bool:
    """Data files as text: the policy's text_content_roles (default: data owners), or download rights."""
    text_roles = VARIANTS[variant]["policy"].get("text_content_roles", ["data_owner"])
    return may_download(role, variant) or role in text_roles


SKIP = "skip"  # the request would start a process (kernel, terminal) or a slow exporter: not sent


def refused(status: int) -> Callable[[str, str], object]:
    return lambda role, variant: status


def allowed_if(right: Callable[[str, str], bool], ok: object = "pass", status: int = 403) -> Callable:
    """``ok`` (a status, or "pass": not refused by the guard) when the role has ``right``, else ``status``."""
    return lambda role, variant: ok if right(role, variant) else status


def write_then(status_if_writer: object) -> Callable:
    """Observers are refused writing (403) before anything else is looked at."""
    return lambda role, variant: status_if_writer if may_write(role, variant) else 403


def upload_rule(ok: int) -> Callable:
    return lambda role, variant: 403 if not may_write(role, variant) else (ok if may_upload(role, variant) else 403)


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str  # {uid} is replaced by a fresh id per request (uploads must create new files)
    expect: Callable[[str, str], object]
    body: object = None
    headers: dict = field(default_factory=dict)


# 200 for a role that may download, else 403.
DOWNLOAD_OK = allowed_if(may_download, 200)
NB = notebook_json("saved by the test")
NB_MODEL = {"type": "notebook", "format": "json", "content": NB}
TEXT_FILE = {"type": "file", "format": "text", "content": "hi"}
BASE64_FILE = {"type": "file", "format": "base64", "content": "aGk="}
FILE_BYTES_OUT = [
    Case("files GET", "GET", "/files/data.csv", DOWNLOAD_OK),
    Case("files HEAD", "HEAD", "/files/data.csv", DOWNLOAD_OK),
    Case("files Range", "GET", "/files/data.csv", allowed_if(may_download, 206), headers={"Range": "bytes=0-12"}),
    Case("files download=1", "GET", "/files/data.csv?download=1", DOWNLOAD_OK),
    Case("files notebook", "GET", "/files/notebook.ipynb", DOWNLOAD_OK),
    Case("files binary", "GET", "/files/image.bin", DOWNLOAD_OK),
    Case("files in folder", "GET", "/files/sub/inner.txt", DOWNLOAD_OK),
    Case("view", "GET", "/view/data.csv", DOWNLOAD_OK),
    *[
        Case(
            f"nbconvert GET {name}",
            "GET",
            f"/nbconvert/{name}/notebook.ipynb?download=true",
            allowed_if(may_download, 200 if name == "html" else SKIP),
        )
        for name in EXPORTERS
    ],
    Case("nbconvert POST html", "POST", "/nbconvert/html", DOWNLOAD_OK, body={"content": NB}),
    Case("nbconvert POST script", "POST", "/nbconvert/script", DOWNLOAD_OK, body={"content": NB}),
    Case("contents base64", "GET", "/api/contents/image.bin?type=file&format=base64", DOWNLOAD_OK),
    Case("contents nb base64", "GET", "/api/contents/notebook.ipynb?format=base64", DOWNLOAD_OK),
    Case("contents base64 repeated", "GET", "/api/contents/image.bin?format=text&format=base64", DOWNLOAD_OK),
    Case("contents base64 spaces", "GET", "/api/contents/image.bin?format=%20base64%20", DOWNLOAD_OK),
    Case("contents hash repeated", "GET", "/api/contents/data.csv?content=0&hash=0&hash=1", DOWNLOAD_OK),
    Case("contents no format", "GET", "/api/contents/image.bin?type=file", DOWNLOAD_OK),
    Case("contents no type", "GET", "/api/contents/data.csv", DOWNLOAD_OK),
    Case("contents hash", "GET", "/api/contents/data.csv?content=0&hash=1", DOWNLOAD_OK),
    Case("contents nb base64 hash", "GET", "/api/contents/notebook.ipynb?format=base64&hash=1", DOWNLOAD_OK),
    Case("contents text", "GET", "/api/contents/data.csv?type=file&format=text", allowed_if(may_read_text, 200)),
]  # fmt: skip

PATH_TRICKS = [
    Case("dotdot %2e", "GET", "/api/contents/%2e%2e/projAB/secret.txt", refused(404)),
    Case("dotdot %2E", "GET", "/api/contents/%2E%2E/projAB/secret.txt", refused(404)),
    Case("dotdot double", "GET", "/api/contents/%252e%252e/projAB/secret.txt", refused(404)),
    Case("dotdot slash %2f", "GET", "/api/contents/..%2fprojAB%2fsecret.txt", refused(404)),
    Case("dotdot slash double", "GET", "/api/contents/..%252fprojAB%252fsecret.txt", refused(404)),
    Case("dotdot in folder", "GET", "/api/contents/sub%2f..%2f..%2fprojAB%2fsecret.txt", refused(404)),
    Case("backslash", "GET", "/api/contents/..%5cprojAB%5csecret.txt", refused(404)),
    Case("NUL", "GET", "/api/contents/data.csv%00.txt", refused(404)),
    Case("absolute", "GET", "/api/contents/%2Fetc%2Fhostname", refused(404)),
    Case("symlink file", "GET", "/api/contents/escape.txt?type=file&format=text", refused(404)),
    Case("symlink folder", "GET", "/api/contents/escape_dir/secret.txt?type=file&format=text", refused(404)),
    Case("symlink folder listing", "GET", "/api/contents/escape_dir", refused(404)),
    Case("symlink by kernel", "GET", "/api/contents/kernel_link.txt?type=file&format=text", refused(404)),
    Case("hidden", "GET", "/api/contents/.hidden.txt?type=file&format=text", refused(404)),
    Case("files hidden", "GET", "/files/.hidden.txt", refused(404)),
    Case("files dotdot raw", "GET", "/files/../projAB/secret.txt", refused(404)),
    Case("files dotdot %2e", "GET", "/files/%2e%2e/projAB/secret.txt", refused(404)),
    Case("files dotdot double", "GET", "/files/%252e%252e/projAB/secret.txt", refused(404)),
    Case("files absolute", "GET", "/files/%2Fetc%2Fhostname", refused(404)),
    Case("files symlink", "GET", "/files/escape.txt", refused(404)),
    Case("files kernel symlink", "GET", "/files/kernel_link.txt", refused(404)),
    Case("view symlink", "GET", "/view/escape.txt", refused(404)),
    Case("nbconvert dotdot", "GET", "/nbconvert/html/%2e%2e/projAB/secret.txt", refused(404)),
    Case("checkpoints dotdot", "GET", "/api/contents/%2e%2e/projAB/secret.txt/checkpoints", refused(404)),
    Case("delete dotdot", "DELETE", "/api/contents/%2e%2e/projAB/secret.txt", refused(404)),
    Case("copy_from dotdot", "POST", "/api/contents/sub", write_then(404), body={"copy_from": "../projAB/secret.txt"}),
    Case("copy_from absolute", "POST", "/api/contents/sub", write_then(404), body={"copy_from": "/etc/hostname"}),
    Case("copy_from symlink", "POST", "/api/contents/sub", write_then(404), body={"copy_from": "escape.txt"}),
    Case("copy_from hidden", "POST", "/api/contents/sub", write_then(404), body={"copy_from": ".hidden.txt"}),
    Case("rename out", "PATCH", "/api/contents/data.csv", write_then(404), body={"path": "../projAB/stolen.csv"}),
    Case("rename absolute", "PATCH", "/api/contents/data.csv", write_then(404), body={"path": "/tmp/stolen.csv"}),
    Case("rename to hidden", "PATCH", "/api/contents/data.csv", write_then(404), body={"path": ".stolen.csv"}),
]  # fmt: skip

# JupyterLab's and Notebook 7's own routes, for every role: pages and reads pass, the stored state is read-only
# in sessions (writes would persist outside the project), licences are shown but not downloaded.
PASS = "pass"
LAB_ROUTES = [
    Case("lab page", "GET", "/lab", lambda role, variant: 200),
    Case("lab tree page", "GET", "/lab/tree/data.csv", lambda role, variant: 200),
    Case("notebook 7 tree", "GET", "/tree", lambda role, variant: 200),
    Case("lab settings read", "GET", "/lab/api/settings", lambda role, variant: 200),
    Case("lab settings write", "PUT", "/lab/api/settings/@jupyterlab/apputils-extension:themes", refused(403),
         body={"raw": "{}"}),
    Case("lab workspaces read", "GET", "/lab/api/workspaces", lambda role, variant: 200),
    Case("lab workspace write", "PUT", "/lab/api/workspaces/default", refused(403),
         body={"data": {}, "metadata": {"id": "default"}}),
    Case("lab workspace delete", "DELETE", "/lab/api/workspaces/default", refused(403)),
    Case("lab translations", "GET", "/lab/api/translations", lambda role, variant: 200),
    Case("lab licenses", "GET", "/lab/api/licenses/", lambda role, variant: PASS),
    Case("lab licenses download", "GET", "/lab/api/licenses/?download=1&format=json", refused(403)),
    Case("lab build write", "POST", "/lab/api/build", refused(403), body={}),
    Case("session info", "GET", "/securehpc/session", lambda role, variant: 200),
    Case("session info write", "POST", "/securehpc/session", refused(403), body={}),
]  # fmt: skip

ROUTES_OFF = [
    Case("resolvePath", "GET", "/api/resolvePath?path=data.csv", refused(403)),
    # Every member may follow the server's events (JupyterLab subscribes at every load); writing them is off.
    Case("events subscribe", "GET", "/api/events/subscribe", lambda role, variant: "pass"),
    Case("events post", "POST", "/api/events", refused(403), body={"schema_id": "x", "version": "1", "data": {}}),
    Case("collaboration room", "GET", "/api/collaboration/room/json:notebook:abc", refused(403)),
    Case("collaboration session", "PUT", "/api/collaboration/session/notebook.ipynb", refused(403), body={}),
    Case("yjs room", "GET", "/api/yjs/json:notebook:abc", refused(403)),
    Case("fileid", "GET", "/api/fileid/id?path=data.csv", refused(403)),
    Case("server proxy", "GET", "/proxy/8080/", refused(403)),
    Case("extension manager list", "GET", "/lab/api/extensions", refused(403)),
    Case("extension manager install", "POST", "/lab/api/extensions", refused(403), body={"cmd": "install"}),
    Case("plugin manager write", "PUT", "/lab/api/plugins", refused(403), body={"cmd": "disable"}),
    Case("unknown under /files", "GET", "/files", refused(403)),
    Case("unknown under contents", "GET", "/api/contents//data.csv", refused(403)),
    Case("unknown under nbconvert", "GET", "/nbconvert", refused(403)),
    Case("contents OPTIONS", "OPTIONS", "/api/contents/data.csv", refused(403)),
    Case("terminal list", "GET", "/api/terminals", allowed_if(may_open_terminal, 200)),
    Case("terminal new", "POST", "/api/terminals", allowed_if(may_open_terminal, SKIP)),
    Case("terminal websocket", "GET", "/terminals/websocket/1", allowed_if(may_open_terminal)),
    Case("kernel start", "POST", "/api/kernels", allowed_if(may_write, SKIP), body={"name": "python3"}),
    Case("session start", "POST", "/api/sessions", allowed_if(may_write, SKIP), body={"path": "notebook.ipynb"}),
    Case("kernel channels", "GET", "/api/kernels/00000000-0000-0000-0000-000000000000/channels", allowed_if(may_write)),
]  # fmt: skip

WRITES = [
    Case("save notebook", "PUT", "/api/contents/notebook.ipynb", write_then(200), body=NB_MODEL),
    Case("new folder", "PUT", "/api/contents/dir-{uid}", write_then(201), body={"type": "directory"}),
    Case("new untitled", "POST", "/api/contents/sub", write_then(201), body={"type": "notebook"}),
    Case("copy inside", "POST", "/api/contents/sub", write_then(201), body={"copy_from": "data.csv"}),
    Case("upload text", "PUT", "/api/contents/up-{uid}.txt", upload_rule(201), body=TEXT_FILE),
    Case("upload base64", "PUT", "/api/contents/up-{uid}.bin", upload_rule(201), body=BASE64_FILE),
    Case("upload chunk", "PUT", "/api/contents/up-{uid}.txt", upload_rule(201), body={**TEXT_FILE, "chunk": 1}),
    Case("upload notebook", "PUT", "/api/contents/up-{uid}.ipynb", upload_rule(201), body=NB_MODEL),
    Case("trust", "POST", "/api/contents/notebook.ipynb/trust", write_then(201)),
]  # fmt: skip

KEEP_WORKING = [
    Case("open notebook", "GET", "/api/contents/notebook.ipynb?type=notebook&content=1", refused(200)),
    Case("list root", "GET", "/api/contents", refused(200)),
    Case("list folder", "GET", "/api/contents/sub?type=directory", refused(200)),
    Case("metadata only", "GET", "/api/contents/data.csv?content=0", refused(200)),
    Case("trailing slash redirect", "GET", "/api/contents/sub/", refused(302)),
    Case("checkpoints list", "GET", "/api/contents/notebook.ipynb/checkpoints", refused(200)),
    Case("kernels list", "GET", "/api/kernels", refused(200)),
    Case("kernelspecs", "GET", "/api/kernelspecs", refused(200)),
    Case("status", "GET", "/api/status", refused(200)),
    Case("me", "GET", "/api/me", refused(200)),
    Case("nbconvert exporters", "GET", "/api/nbconvert", refused(200)),
]  # fmt: skip

CASES = FILE_BYTES_OUT + PATH_TRICKS + ROUTES_OFF + WRITES + KEEP_WORKING + LAB_ROUTES


# --- servers -------------------------------------------------------------------------------------------------


class Servers:
    """One server per (role, variant), started on first use, all stopped by pid at the end of the module."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: dict[tuple[str, str], Server] = {}
        self.clients: dict[tuple[str, str, str], Client] = {}

    def get(self, role: str, variant: str) -> Server:
        key = (role, variant)
        if key not in self.started:
            workdir = self.base / f"{role}-{variant}"
            root = make_projects(workdir / "data")
            # Made before the server starts: a symlink to the sibling project, to a file and to the folder.
            (root / "escape.txt").symlink_to(workdir / "data" / "projAB" / "secret.txt")
            (root / "escape_dir").symlink_to(workdir / "data" / "projAB")
            server = launch(workdir / "server", root, session=session_for(role, variant), audit=workdir / "audit.log")
            self.started[key] = server
            # Made while the server runs, as a kernel in the project would.
            (root / "kernel_link.txt").symlink_to(workdir / "data" / "projAB" / "secret.txt")
        return self.started[key]

    def client(self, role: str, variant: str, auth: str) -> Client:
        key = (role, variant, auth)
        if key not in self.clients:
            self.clients[key] = self.get(role, variant).client(auth)
        return self.clients[key]

    def stop_all(self) -> None:
        for server in self.started.values():
            server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(tmp_path_factory.mktemp("serverext"))
    try:
        yield pool
    finally:
        pool.stop_all()


def send(client: Client, case: Case) -> tuple[str, object]:
    path = case.path.replace("{uid}", uuid.uuid4().hex[:8])
    return path, client.request(case.method, path, body=case.body, headers=case.headers)


def route_of(path: str) -> str:
    return unquote(path.split("?", 1)[0])


def assert_csp(response: object, role: str, variant: str) -> None:
    ours = content_security_policy(may_download(role, variant))
    assert ours in response.headers.get_all("Content-Security-Policy"), response.headers
    assert "frame-ancestors 'none'" in ours and ours.startswith("sandbox ")
    assert ("allow-downloads" in ours) == may_download(role, variant)


# --- the table ---------------------------------------------------------------------------------------------


# Every (route, role, policy, auth) combination, except allowed requests that would start a kernel, a
# terminal or a slow exporter: those are not sent (their refusals for the other roles are in the table).
TABLE = [
    pytest.param(case, role, variant, auth, id=f"{case.name}-{role}-{variant}-{auth}")
    for case in CASES
    for role in ROLES
    for variant in VARIANTS
    for auth in ("token", "cookie")
    if case.expect(role, variant) != SKIP
]


@pytest.mark.parametrize(("case", "role", "variant", "auth"), TABLE)
def test_route_table(servers: Servers, case: Case, role: str, variant: str, auth: str) -> None:
    expected = case.expect(role, variant)
    server = servers.get(role, variant)
    client = servers.client(role, variant, auth)
    before = len(server.audit_lines())
    path, response = send(client, case)
    events = server.audit_lines()[before:]
    assert_csp(response, role, variant)
    context = f"{case.method} {path} as {role}/{variant}/{auth}: {response.status} {response.body[:300]!r}"
    if expected in (403, 404):
        assert response.status == expected, context
        assert CANARY.encode() not in response.body, context
        assert events, f"no audit event for a refusal: {context}\n{tail(server.log)}"
        assert events[-1]["outcome"] == "denied" and events[-1]["object"] == route_of(path), events[-1]
        assert events[-1]["project"] == "cardio" and events[-1]["details"]["role"] == role
    else:
        assert not events, f"the guard refused what the policy allows: {context}: {events}"
        if expected != "pass":
            assert response.status == expected, context
        else:
            # Passed the guard (no audit event above); the handler may still answer 404 (no such kernel).
            assert response.status != 403, context


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_route_table_unauthenticated(servers: Servers, case: Case) -> None:
    """Without a token or cookie nothing answers with content: a login redirect or 403, never the file."""
    client = servers.client("data_owner", "owner_downloads", "none")
    path, response = send(client, case)
    context = f"{case.method} {path}: {response.status} {response.body[:300]!r}"
    assert response.status in (302, 403, 404, 405), context
    assert CANARY.encode() not in response.body, context


# --- what must keep working ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["token", "cookie"])
@pytest.mark.parametrize("role", ["data_owner", "data_scientist"])
def test_open_edit_save_notebook(servers: Servers, role: str, auth: str) -> None:
    client = servers.client(role, "default", auth)
    opened = client.request("GET", "/api/contents/notebook.ipynb?type=notebook&content=1")
    assert opened.status == 200, opened.body[:300]
    model = opened.json()
    assert model["type"] == "notebook" and model["content"]["cells"]
    notebook = model["content"]
    notebook["cells"][0]["source"] = f"print('edited by {role} with {auth}')"
    saved = client.request(
        "PUT", "/api/contents/notebook.ipynb", body={"type": "notebook", "format": "json", "content": notebook}
    )
    assert saved.status == 200, saved.body[:300]
    again = client.request("GET", "/api/contents/notebook.ipynb?type=notebook&content=1").json()
    assert again["content"]["cells"][0]["source"] == f"print('edited by {role} with {auth}')"


@pytest.mark.parametrize("auth", ["token", "cookie"])
@pytest.mark.parametrize("role", ROLES)
def test_list_directory(servers: Servers, role: str, auth: str) -> None:
    listing = servers.client(role, "default", auth).request("GET", "/api/contents/sub?type=directory").json()
    names = {entry["name"] for entry in listing["content"]}
    assert "inner.txt" in names


@pytest.mark.parametrize("auth", ["token", "cookie"])
def test_data_owner_downloads_where_policy_allows(servers: Servers, auth: str) -> None:
    server = servers.get("data_owner", "owner_downloads")
    client = servers.client("data_owner", "owner_downloads", auth)
    plain = client.request("GET", "/files/data.csv")
    assert plain.status == 200 and plain.body == (server.root / "data.csv").read_bytes()
    attachment = client.request("GET", "/files/data.csv?download=1")
    assert attachment.status == 200 and "attachment" in attachment.headers["Content-Disposition"]
    assert "allow-downloads" in " ".join(attachment.headers.get_all("Content-Security-Policy"))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("role", ROLES)
def test_ui_permissions_follow_policy(servers: Servers, role: str, variant: str) -> None:
    """``/api/me?permissions=`` (what JupyterLab reads to offer terminals or editing) matches the policy."""
    asked = json.dumps({"terminals": ["read", "execute"], "contents": ["read", "write"], "kernels": ["execute"]})
    reply = servers.client(role, variant, "token").request("GET", f"/api/me?permissions={quote(asked)}")
    permissions = reply.json()["permissions"]
    assert bool(permissions["terminals"]) == may_open_terminal(role, variant)
    assert ("write" in permissions["contents"]) == may_write(role, variant)
    assert bool(permissions["kernels"]) == may_write(role, variant)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("role", ROLES)
def test_session_endpoint_tells_the_ui_what_the_guard_enforces(servers: Servers, role: str, variant: str) -> None:
    """``/securehpc/session`` (the JupyterLab extension's one source): project, role and every right as the
    guard decides it, with the policy's reason where refused; nothing else (no paths, no secrets)."""
    reply = servers.client(role, variant, "token").request("GET", "/securehpc/session")
    assert reply.status == 200 and reply.headers.get("Cache-Control") == "no-store"
    info = reply.json()
    assert (info["project"], info["user"], info["role"]) == ("cardio", "alice", role)
    assert info["rights"] == {
        "write": may_write(role, variant),
        "download": may_download(role, variant),
        "upload": may_upload(role, variant),
        "read_data_as_text": may_read_text(role, variant),
        "terminals": may_open_terminal(role, variant),
    }
    assert set(info["refusal_reasons"]) == {name for name, right in info["rights"].items() if not right}
    assert info["limits"]["max_wall_time_minutes"] == 8 * 60 and info["limits"]["max_gpus"] == 1
    assert set(info) == {"project", "user", "role", "rights", "refusal_reasons", "limits", "server_started_at",
                         "classification", "support_contact", "now"}  # fmt: skip
    assert "serverext" not in reply.body.decode()  # no path of the test's folders


def test_session_endpoint_needs_a_login(servers: Servers) -> None:
    reply = servers.get("observer", "default").client("none").request("GET", "/securehpc/session")
    assert reply.status in (302, 403) and b"cardio" not in reply.body


def page_config(html: str) -> dict:
    start = html.index('<script id="jupyter-config-data" type="application/json">')
    text = html[html.index(">", start) + 1 : html.index("</script>", start)]
    return json.loads(text)


@pytest.mark.parametrize("page", ["/lab", "/tree"])
def test_jupyterlab_page_carries_the_session_the_endpoint_answers(servers: Servers, page: str) -> None:
    """JupyterLab's and Notebook 7's pages carry ``securehpcSession`` in their page configuration (the
    labextension reads it when it activates, without a request): what ``/securehpc/session`` answers."""
    client = servers.client("data_scientist", "default", "token")
    reply = client.request("GET", page)
    assert reply.status == 200, reply.status
    from_page = page_config(reply.body.decode())[PAGE_CONFIG_KEY]
    answer = client.request("GET", "/securehpc/session").json()
    assert isinstance(from_page.pop("now"), float) and isinstance(answer.pop("now"), float)
    assert from_page == answer
    assert from_page["rights"]["download"] is False and from_page["role"] == "data_scientist"


def test_page_config_hook_wraps_the_one_set_before_and_after() -> None:
    """jupyterhub-singleuser sets its own hook (the hub user and token) at initialize, after ours when the
    names sort so: ours runs the hook it found, and installing again once all are loaded wraps the newer one."""
    settings: dict = {SETTINGS_KEY: {"project": "cardio"}}
    calls: list[str] = []

    def earlier(handler: object, config: dict) -> dict:
        calls.append("earlier")
        return {**config, "hubUser": "alice"}

    settings["page_config_hook"] = earlier
    add_to_page_config(settings)
    ours = settings["page_config_hook"]
    add_to_page_config(settings)
    assert settings["page_config_hook"] is ours  # installed once
    shared = {"appName": "JupyterLab"}
    config = ours(None, shared)
    assert calls == ["earlier"] and config["hubUser"] == "alice" and config[PAGE_CONFIG_KEY]["project"] == "cardio"
    assert PAGE_CONFIG_KEY not in shared  # the web app's shared page_config_data is left alone

    def later(handler: object, config: dict) -> dict:  # replaces ours, as jupyterhub-singleuser does
        calls.append("later")
        config["hubUser"] = "bob"
        return config

    settings["page_config_hook"] = later
    add_to_page_config(settings)
    config = settings["page_config_hook"](None, {})
    assert calls[-1] == "later" and config["hubUser"] == "bob" and config[PAGE_CONFIG_KEY]["project"] == "cardio"


def test_audit_logs_verify(servers: Servers) -> None:
    """Refusals were appended to a hash chain that still verifies (run after the tables)."""
    assert servers.started, "no server ran"
    for server in servers.started.values():
        result = verify(server.audit)
        assert result.ok, (server.audit, result)


# --- every route is authenticated -----------------------------------------------------------------------------

# Handlers that answer without login on purpose: the login and logout pages, static files, the version number,
# redirects (whose targets authenticate), and Prometheus metrics (which check ``authenticate_prometheus``).
PUBLIC = {
    "jupyter_server.auth.login.LoginFormHandler",
    "jupyter_server.auth.logout.LogoutHandler",
    "jupyter_server.base.handlers.FileFindHandler",
    "jupyter_server.base.handlers.PublicStaticFileHandler",
    "jupyter_server.base.handlers.APIVersionHandler",
    "jupyter_server.base.handlers.TrailingSlashHandler",
    "jupyter_server.base.handlers.RedirectWithParams",
    "jupyter_server.base.handlers.MainHandler",
    "jupyter_server.base.handlers.PrometheusMetricsHandler",
    "jupyter_server.services.contents.handlers.NotebooksRedirectHandler",
    # JupyterLab's theme CSS and fonts, public like the other static files (the login page uses them); the
    # guard's "static" rule serves them only from read-only folders (tests/serverext/test_serverext_routes.py).
    "jupyterlab_server.themes_handler.ThemesHandler",
}


def test_every_route_is_authenticated(tmp_path: Path) -> None:
    root = make_projects(tmp_path / "data")
    routes = list_routes(tmp_path, root, session_for("data_scientist", "default"), tmp_path / "audit.log")
    assert routes["authorizer"] == "SecureHPCAuthorizer"
    assert routes["allow_unauthenticated_access"] is False
    open_routes = []
    for row in routes["rows"]:
        # OPTIONS answers CORS preflights with headers only (never credentials, never content).
        if row["handler"] in PUBLIC or (row["method"] == "OPTIONS" and row["allow_unauthenticated"]):
            continue
        # Decorated with @web.authenticated / @ws_authenticated, or a JupyterHandler that prepare() makes log
        # in because allow_unauthenticated_access is off and the method does not opt out.
        enforced = row["jupyter_handler"] and not row["allow_unauthenticated"]
        if not (row["authenticated"] or enforced):
            open_routes.append(f"{row['method']} {row['pattern']} ({row['handler']})")
    assert not open_routes, "routes that answer without login:\n" + "\n".join(open_routes)


# --- fail closed ----------------------------------------------------------------------------------------------


def _observer(**policy: object) -> str:
    return json.dumps({"project": "p", "user": "u", "role": "observer", "policy": policy})


BAD_SESSIONS = {
    "not JSON": "{not json",
    "no role": json.dumps({"project": "p", "user": "u", "policy": {}}),
    "unknown role": json.dumps({"project": "p", "user": "u", "role": "admin", "policy": {}}),
    "terminals as text": _observer(terminals="false"),
    "roles not a list": _observer(download_roles="all"),
    "unknown role in policy": _observer(download_roles=["everyone"]),
    "policy missing": json.dumps({"project": "p", "user": "u", "role": "observer"}),
}


def _refuses_to_start(tmp_path: Path, **kwargs: object) -> str:
    root = make_projects(tmp_path / "data")
    server = launch(tmp_path / "server", root, wait=False, **kwargs)
    try:
        code = server.proc.wait(timeout=60)
    finally:
        server.stop()
    log = server.log.read_text()
    assert code != 0, log[-2000:]
    assert "refusing to start" in log, log[-2000:]
    return log


@pytest.mark.parametrize("content", list(BAD_SESSIONS.values()), ids=list(BAD_SESSIONS))
def test_invalid_policy_file_refuses_to_start(tmp_path: Path, content: str) -> None:
    policy = tmp_path / "session.json"
    policy.write_text(content)
    _refuses_to_start(tmp_path, policy_path=policy, audit=tmp_path / "audit.log")


def test_missing_policy_file_refuses_to_start(tmp_path: Path) -> None:
    log = _refuses_to_start(tmp_path, policy_path=tmp_path / "absent.json", audit=tmp_path / "audit.log")
    assert "absent.json" in log


def test_no_audit_log_refuses_to_start(tmp_path: Path) -> None:
    log = _refuses_to_start(tmp_path, session=session_for("observer", "default"))
    assert "SECUREHPC_AUDIT_LOG" in log


def test_policy_file_inside_project_refuses_to_start(tmp_path: Path) -> None:
    policy = tmp_path / "data" / "projA" / "session.json"
    log = _refuses_to_start(
        tmp_path, session=session_for("data_owner", "owner_downloads"), policy_path=policy, audit=tmp_path / "a.log"
    )
    assert "inside the project" in log


def test_config_enables_the_extension(tmp_path: Path) -> None:
    """The launcher's command-line arguments turn the extension on by themselves (no configuration file of the
    package does: tests/distribution/test_packaging.py checks that a stock server of the same environment starts)."""
    from jupyter_securehpc.node.serve import SERVER_EXTENSION_ARGS, default_program

    assert default_program()[-len(SERVER_EXTENSION_ARGS) :] == list(SERVER_EXTENSION_ARGS)
    root = make_projects(tmp_path / "data")
    session, audit = session_for("observer", "default"), tmp_path / "audit.log"
    server = launch(
        tmp_path / "server", root, extension=None, extra_args=SERVER_EXTENSION_ARGS, session=session, audit=audit
    )
    try:
        response = server.client("token").request("GET", "/files/data.csv")
        assert response.status == 403 and CANARY.encode() not in response.body
        assert "securehpc: guarding project cardio" in server.log.read_text()
    finally:
        server.stop()


def test_stock_server_would_leak(tmp_path: Path) -> None:
    """Control: without the extension the same requests return the canary, so the table can see a leak."""
    root = make_projects(tmp_path / "data")
    server = launch(tmp_path / "server", root, extension=False)
    try:
        client = server.client("token")
        assert CANARY.encode() in client.request("GET", "/files/data.csv").body
        assert client.request("GET", "/api/contents/image.bin?type=file&format=base64").status == 200
    finally:
        server.stop()


# --- pure logic: paths, the session file, hub users -------------------------------------------------------------


@pytest.mark.parametrize(
    "api_path",
    ["/../x", "/a/../../x", "/%2e%2e/x", "/%252e%252e/x", "/a%2fb", "/a\\..\\b", "/a\x00b", "//etc/passwd",
     "/a//b", "/./a", "/.ssh/id", "/a/.git/config", "/a\nb"],
)  # fmt: skip
def test_check_text_refuses(api_path: str) -> None:
    with pytest.raises(PathRefused):
        check_text(api_path)


def test_check_text_body_paths_are_not_absolute() -> None:
    assert check_text("a/b.txt", url_separator=False) == ["a", "b.txt"]
    with pytest.raises(PathRefused, match="absolute"):
        check_text("/etc/passwd", url_separator=False)


def test_resolve_inside_sibling_prefix_and_symlinks(tmp_path: Path) -> None:
    root, sibling = tmp_path / "projA", tmp_path / "projAB"
    (root / "in").mkdir(parents=True)
    sibling.mkdir()
    (sibling / "s.txt").write_text("x")
    (root / "to_sibling").symlink_to(sibling)
    (root / "to_inside").symlink_to(root / "in")
    real = os.path.realpath(root)
    assert resolve_inside(real, "/in/new.txt") == os.path.join(real, "in", "new.txt")
    assert resolve_inside(real, "/to_inside") == os.path.join(real, "in")
    assert resolve_inside(real, "") == real
    for bad in ("/to_sibling/s.txt", "/to_sibling"):
        with pytest.raises(PathRefused, match="outside"):
            resolve_inside(real, bad)


def test_session_file_checks() -> None:
    session = session_from_dict(session_for("observer", "scientist_text"))
    assert session.role is Role.OBSERVER and not session.may_read_text
    assert session_from_dict(session_for("data_scientist", "scientist_text")).may_read_text
    assert not session_from_dict(session_for("data_scientist", "default")).may_read_text
    assert session_from_dict(session_for("data_owner", "default")).may_read_text
    with pytest.raises(SessionPolicyError, match="max_gpus"):
        session_from_dict({"project": "p", "user": "u", "role": "observer", "policy": {"max_gpus": True}})
    with pytest.raises(SessionPolicyError, match="text_content_roles"):
        session_from_dict({"project": "p", "user": "u", "role": "observer", "policy": {"text_content_roles": "all"}})


def test_old_top_level_text_key_only_narrows() -> None:
    """The key launchers wrote before the setting moved into the policy can take text rights away, never give."""
    wide = {"project": "p", "user": "u", "role": "data_scientist", "text_content_roles": ["data_scientist"]}
    assert not session_from_dict({**wide, "policy": {}}).may_read_text
    narrow = {"project": "p", "user": "u", "role": "data_owner", "text_content_roles": []}
    assert not session_from_dict({**narrow, "policy": {}}).may_read_text
    assert session_from_dict({**narrow, "text_content_roles": ["data_owner"], "policy": {}}).may_read_text


def _hub_model(**fields: object) -> dict:
    return {"kind": "user", "name": "alice", "token_id": "a17", "session_id": "s-9f", **fields}


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_hub_model(name="root-admin"), "belongs to alice"),
        (_hub_model(kind="service", name="alice"), "not a service"),
        ({k: v for k, v in _hub_model().items() if k != "kind"}, "not a service"),
        (_hub_model(token_id=None), "token"),
        (_hub_model(token_id=""), "token"),
        ({k: v for k, v in _hub_model().items() if k != "token_id"}, "token"),
        (None, "did not vouch"),
    ],
)
def test_hub_identities_other_than_the_session_user_are_refused(model: dict | None, problem: str) -> None:
    session = session_from_dict(session_for("data_owner", "owner_downloads"))
    guard = Guard(session, rules=None, audit=None, base_url="/", log=None, hub_identity=True)  # type: ignore[arg-type]
    user = SimpleNamespace(username="x") if model is None else SimpleNamespace(username="x", hub_user=model)
    verdict = guard.user_verdict(user)
    assert verdict is not None and verdict.status == 403 and problem in verdict.reason


def test_hub_identity_of_the_session_user_passes() -> None:
    session = session_from_dict(session_for("data_owner", "owner_downloads"))
    guard = Guard(session, rules=None, audit=None, base_url="/", log=None, hub_identity=True)  # type: ignore[arg-type]
    assert guard.user_verdict(SimpleNamespace(username="alice", hub_user=_hub_model())) is None
    # An API token the user made on the hub has no login session: accepted unless the server requires one.
    api_token = SimpleNamespace(username="alice", hub_user=_hub_model(session_id=None))
    assert guard.user_verdict(api_token) is None
    guard.require_login_session = True
    assert "login session" in guard.user_verdict(api_token).reason
    assert guard.user_verdict(None) is None  # login, logout, the OAuth callback: left to the rules


def test_outside_the_hub_only_a_hub_model_is_checked() -> None:
    session = session_from_dict(session_for("data_owner", "owner_downloads"))
    guard = Guard(session, rules=None, audit=None, base_url="/", log=None)  # type: ignore[arg-type]
    admin = SimpleNamespace(username="root-admin", hub_user=_hub_model(name="root-admin"))
    assert guard.user_verdict(admin).status == 403
    assert guard.user_verdict(SimpleNamespace(username="alice", hub_user=_hub_model())) is None
    assert guard.user_verdict(SimpleNamespace(username="token-user")) is None
