"""The guard is an allow-list keyed by handler class: every route of a real server has a rule or is refused.

A real server (subprocess) lists its routes; every handler class must either be in ``routes.ROUTES`` or be
refused by ``Rules.decide``, and every class of the stock packages (jupyter_server, JupyterHub's single-user
extension, terminals, and JupyterLab / Notebook 7 where installed) must have a rule. A server extension
installed later gets no rule: its routes answer 403 and leave an audit event. Static files (kernel-spec
resources, the UI's files) are served only from folders the server cannot write: a kernel spec written by
the kernel into a writable folder is refused, the read-only built-in ``python3`` logo is served.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pwd
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverext_helpers import CANARY, chown_tree, launch, list_routes, make_projects, tail

from jupyter_securehpc.serverext.facts import RequestFacts
from jupyter_securehpc.serverext.routes import ROUTES
from jupyter_securehpc.serverext.rules import Rules
from jupyter_securehpc.serverext.session import session_from_dict

STOCK_PACKAGES = (
    "jupyter_server",
    "jupyterhub",
    "jupyter_server_terminals",
    "jupyterlab",
    "jupyterlab_server",
    "notebook",
)
UI_EXTENSIONS = {"jupyterlab": True, "notebook": True}
LAB_INSTALLED = all(importlib.util.find_spec(name) is not None for name in UI_EXTENSIONS)
# What jupyterhub-singleuser's identity provider needs to build its handlers (no hub is asked while listing).
HUB_ENV = {
    "JUPYTERHUB_API_TOKEN": "listing-only",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",
    "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice-cardio",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/cardio/",
    "JUPYTERHUB_USER": "alice",
}
HUB_ARGS = ("--ServerApp.identity_provider_class=jupyterhub.singleuser.extension.JupyterHubIdentityProvider",)


def session(role: str = "data_owner", **policy: object) -> dict:
    return {"project": "cardio", "user": "alice", "role": role, "policy": policy}


def load_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    while module_name:
        try:
            value: object = importlib.import_module(module_name)
        except ImportError:
            module_name, _, head = module_name.rpartition(".")
            name = f"{head}.{name}"
            continue
        for part in name.split("."):
            value = getattr(value, part)
        assert isinstance(value, type), path
        return value
    raise ImportError(path)


@pytest.mark.parametrize(
    "ui", [False, pytest.param(True, marks=pytest.mark.skipif(not LAB_INSTALLED, reason="no lab"))]
)
def test_every_handler_class_has_a_rule_or_is_refused(tmp_path: Path, ui: bool) -> None:
    root = make_projects(tmp_path / "data")
    extensions = {"jupyter_server_terminals": True, **(UI_EXTENSIONS if ui else {})}
    listed = list_routes(tmp_path, root, session(terminals=True), tmp_path / "audit.log", extensions, HUB_ENV, HUB_ARGS)
    handlers = {row["handler"] for row in listed["rows"]}
    # The listing really saw the hub's, the terminals' (and the UI's) routes.
    assert "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler" in handlers
    assert "jupyter_server_terminals.handlers.TermSocket" in handlers
    if ui:
        assert "jupyterlab_server.handlers.LabHandler" in handlers and "notebook.app.TreeHandler" in handlers
    rules = Rules(session_from_dict(session(terminals=True)), str(root))
    without_rule = []
    for name in sorted(handlers):
        if name in ROUTES:
            continue
        if name.split(".")[0] in STOCK_PACKAGES:
            without_rule.append(name)
        verdict = rules.decide(RequestFacts("GET", "/somewhere", load_class(name)))
        assert not verdict.allowed and verdict.action == "route.refused", (name, verdict)
    assert not without_rule, "stock handlers without a rule (decide, then add to routes.ROUTES):\n" + "\n".join(
        without_rule
    )


def test_rule_table_names_real_classes() -> None:
    """Every key of an installed package resolves to a class (a typo would leave a stock route refused)."""
    for path, (rule, why) in ROUTES.items():
        assert hasattr(Rules, f"_rule_{rule}"), (path, rule)
        assert why and "\n" not in why
        if importlib.util.find_spec(path.split(".")[0]) is None:
            continue
        load_class(path)


def test_unlisted_and_borrowed_classes_are_refused(tmp_path: Path) -> None:
    from jupyter_server.base.handlers import FileFindHandler, JupyterHandler

    rules = Rules(session_from_dict(session()), str(tmp_path))

    class Subclass(FileFindHandler):  # subclasses never inherit a rule
        pass

    impostor = type("MainHandler", (JupyterHandler,), {"__module__": "jupyter_server.base.handlers"})
    for cls in (Subclass, impostor, JupyterHandler):
        verdict = rules.decide(RequestFacts("GET", "/", cls))
        assert not verdict.allowed and verdict.status == 403 and verdict.action == "route.refused"


# --- a server extension installed later -----------------------------------------------------------------------

EXTENSION_MODULE = '''
"""A server extension nobody reviewed: every route of it must be refused by the guard."""
import os
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

def _leak():
    return "LEAK " + open(os.path.join(os.environ["LEAK_ROOT"], "data.csv")).read()

class Leak(APIHandler):
    @web.authenticated
    def get(self):
        self.finish(_leak())

    @web.authenticated
    def post(self):
        self.finish(_leak())

class OpenLeak(JupyterHandler):
    @allow_unauthenticated
    def get(self):
        self.finish(_leak())

class RawLeak(web.RequestHandler):
    def get(self):
        self.finish(_leak())

# Borrows the name of a listed class: must get no rule.
Impostor = type("APIStatusHandler", (APIHandler,), {"__module__": "jupyter_server.services.api.handlers",
                                                   "get": web.authenticated(lambda self: self.finish(_leak()))})

def _jupyter_server_extension_points():
    return [{"module": "leakyext"}]

def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "/leaky/api"), Leak),
        (url_path_join(base, "/leaky/open"), OpenLeak),
        (url_path_join(base, "/leaky/raw"), RawLeak),
        (url_path_join(base, "/api/status-too"), Impostor),
    ])
'''


def test_route_of_a_new_server_extension_is_refused_and_audited(tmp_path: Path) -> None:
    root = make_projects(tmp_path / "data")
    modules = tmp_path / "site"
    modules.mkdir()
    (modules / "leakyext.py").write_text(textwrap.dedent(EXTENSION_MODULE))
    audit = tmp_path / "audit.log"
    server = launch(
        tmp_path / "server",
        root,
        session=session(download_roles=["data_owner"]),  # even a role that may download
        audit=audit,
        extra_args=("--ServerApp.jpserver_extensions={'jupyter_securehpc.serverext': True, 'leakyext': True}",),
        extra_env={"PYTHONPATH": os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")]),
                   "LEAK_ROOT": str(root)},
    )  # fmt: skip
    try:
        assert "leakyext | extension was successfully loaded" in server.log.read_text(), tail(server.log)
        for auth in ("token", "cookie", "none"):
            client = server.client(auth)
            for method, path in [("GET", "/leaky/api"), ("POST", "/leaky/api"), ("GET", "/leaky/open"),
                                 ("GET", "/leaky/raw"), ("GET", "/api/status-too")]:  # fmt: skip
                before = len(server.audit_lines())
                response = client.request(method, path, body={} if method == "POST" else None)
                context = f"{auth} {method} {path}: {response.status} {response.body[:200]!r}"
                assert b"LEAK" not in response.body and CANARY.encode() not in response.body, context
                if auth == "none" and path in ("/leaky/api", "/api/status-too"):
                    continue  # refused by login already (nothing to audit: no handler method ran)
                assert response.status == 403, context
                events = server.audit_lines()[before:]
                assert events and events[-1]["action"] == "route.refused", context
                assert events[-1]["object"] == path and events[-1]["outcome"] == "denied"
                assert "no rule allows" in events[-1]["reason"]
    finally:
        server.stop()


# --- static files only from folders the server cannot write --------------------------------------------------

UNPRIVILEGED = "nobody"


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """A folder the unprivileged user owns (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as another user")
    user = pwd.getpwnam(UNPRIVILEGED)
    base = Path(tempfile.mkdtemp(prefix="securehpc-static-", dir="/tmp"))
    os.chown(base, user.pw_uid, user.pw_gid)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_kernel_written_kernel_spec_is_not_served(unprivileged_dir: Path) -> None:
    """A kernel spec a kernel wrote (writable folder on JUPYTER_PATH) is refused; the built-in logo is served."""
    base = unprivileged_dir
    root = make_projects(base / "data")
    evil = base / "jupyter-path" / "kernels" / "evil"
    evil.mkdir(parents=True)
    (evil / "kernel.json").write_text(json.dumps({"argv": ["python3", "-c", "pass"], "display_name": "evil"}))
    (evil / "data.csv").write_text(f"id,value\n1,{CANARY}\n")
    (evil / "logo-64x64.png").write_bytes(b"\x89PNG" + CANARY.encode())
    policy = base / "session.json"
    policy.write_text(json.dumps(session("data_owner", download_roles=["data_owner"])))
    policy.chmod(0o444)
    chown_tree(base, UNPRIVILEGED)
    audit = base / "audit.log"
    server = launch(
        base / "server", root, policy_path=policy, audit=audit, user=UNPRIVILEGED,
        extra_env={"JUPYTER_PATH": str(base / "jupyter-path"), "HOME": str(base)},
    )  # fmt: skip
    try:
        client = server.client("token")
        specs = client.request("GET", "/api/kernelspecs").json()["kernelspecs"]
        assert "evil" in specs and "python3" in specs
        for path in ("/kernelspecs/evil/data.csv", "/kernelspecs/evil/logo-64x64.png"):
            before = len(server.audit_lines())
            response = client.request("GET", path)
            assert response.status == 403 and CANARY.encode() not in response.body, (path, response.status)
            events = server.audit_lines()[before:]
            assert events and events[-1]["object"] == path and events[-1]["action"] == "route.refused"
        logo = client.request("GET", "/kernelspecs/python3/logo-64x64.png")
        assert logo.status == 200 and logo.body.startswith(b"\x89PNG"), logo.status
        # The server's own static files come from the read-only installation.
        assert client.request("GET", "/static/favicon.ico").status == 200
    finally:
        server.stop()


def test_root_serves_no_static_file(tmp_path: Path) -> None:
    """Root can write every folder but read-only mounts: a server run as root serves no static file at all."""
    if os.geteuid() != 0:
        pytest.skip("runs as root only")
    root = make_projects(tmp_path / "data")
    server = launch(tmp_path / "server", root, session=session(), audit=tmp_path / "audit.log")
    try:
        response = server.client("token").request("GET", "/kernelspecs/python3/logo-64x64.png")
        assert response.status == 403
        assert server.audit_lines()[-1]["reason"].startswith("static files are served only from read-only")
    finally:
        server.stop()
