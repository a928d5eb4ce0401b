"""The portal's test site: a real hub of the local cluster with the project portal as its managed service,
its own projects database, stores, audit log and OpenBao prefix, and people with API tokens by role.

Identities come from JupyterHub's dummy authenticator with a token per person (``c.JupyterHub.api_tokens``):
the OpenID login is tested elsewhere; here what matters is who the hub says a token belongs to. ``ada`` holds
the portal's admin role; the Unix test user's name is the data scientist of ``alpha``. Servers come from a
stand-in spawner (tests/portal_spawner.py) that keeps a Slurm spawner's state and runs nothing. Principals
are named with a prefix of the site's own; the portal records them without making Unix accounts
(``ProjectAccounts.provisioner`` "none": these tests start no session) unless a module's hub settings ask for
"local" (tests/portal/test_portal_accounts.py), whose accounts are removed afterwards.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from sites import account_prefix, make_source, remove_accounts

from jupyter_securehpc.audit import AuditLog
from jupyter_securehpc.devcluster import hub, openbao, portal
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.portal import hubconfig
from jupyter_securehpc.principals import RecordOnly
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.util.files import atomic_write

ADMIN, OWNER, OBSERVER, OUTSIDER, OTHER_OWNER = "ada", "olivia", "oscar", "nina", "bella"


class _AnyPage(BaseHTTPRequestHandler):
    """Answers the hub's "is the server up" check in place of the Jupyter server."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def site(local_cluster, unix_user, slurm_env, hub_settings: dict | None = None, *, start_timeout: float = 60):
    """A module fixture's body: yields the site's facts, stops the hub, jobs and files after.

    ``hub_settings``: the hub's settings that a test module changes (``{"JupyterHub.spawner_class": ...}``);
    ``start_timeout``: seconds the hub may take to answer (a benchmark's hub records 10,000 users first)."""
    layout = local_cluster.layout
    root = Path(tempfile.mkdtemp(prefix="securehpc-portal-"))
    root.chmod(0o755)
    prefix = f"p{secrets.token_hex(4)}"
    db_url = f"sqlite:///{root / 'securehpc.sqlite'}"
    audit = root / "audit.jsonl"
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout), prefix=prefix,
                                   policy_prefix=f"{prefix}-p-"))  # fmt: skip
    (root / "stores").mkdir(mode=0o755)
    accounts = account_prefix(prefix)
    seed = ProjectService(open_database(db_url), keys, AuditLog(audit), root / "stores", Actor(admin="test-admin"),
                          RecordOnly(accounts))  # fmt: skip
    scientist = unix_user.name
    seed.create_project("alpha", owner=OWNER)
    seed.add_member("alpha", scientist, "data_scientist")
    seed.add_member("alpha", OBSERVER, "observer")
    seed.set_policy("alpha", ["max_cpus=1", "max_memory_gb=1", "max_wall_time=30", "exclusive=false", "max_gpus=1"])
    seed.create_project("beta", owner=OTHER_OWNER)
    make_source(root / "src", "CANARY-PORTAL")
    seed.import_dataset("alpha", "scans", root / "src")
    make_source(root / "src2", "CANARY-PORTAL-2")
    seed.import_dataset("beta", "ecg", root / "src2")

    people = [ADMIN, OWNER, scientist, OBSERVER, OUTSIDER, OTHER_OWNER]
    tokens = {name: secrets.token_hex(32) for name in people}
    settings = {
        "SecureHPC.db_url": db_url,
        "SecureHPC.audit_log": str(audit),
        "SecureHPC.store_root": str(root / "stores"),
        "KeyStoreConfig.prefix": prefix,
        "KeyStoreConfig.policy_prefix": f"{prefix}-p-",
        "ProjectAccounts.prefix": accounts,
        "ProjectAccounts.provisioner": "none",
        # A stand-in that keeps a Slurm spawner's state (tests/portal_spawner.py): sessions without jobs.
        "JupyterHub.spawner_class": "portal_spawner.RecordedSlurmSpawner",
        "JupyterHub.allow_named_servers": True,
        "JupyterHub.cleanup_servers": True,
        "JupyterHub.authenticator_class": "dummy",
        "Authenticator.allowed_users": set(people),
        **(hub_settings or {}),
    }
    admin_role = next(r for r in hubconfig.roles() if r["name"] == hubconfig.ADMIN_ROLE)
    extra = [
        "",
        "# The test's people (tests/portal_site.py): a token each, and ada as the portal's admin.",
        f"with open({str(root / 'tokens.json')!r}) as f:",
        "    c.JupyterHub.api_tokens = {token: name for name, token in json.load(f).items()}",
        f"c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r['name'] != {hubconfig.ADMIN_ROLE!r}]",
        f"c.JupyterHub.load_roles.append({ {**admin_role, 'groups': [], 'users': [ADMIN]}!r})",
        "",
    ]
    atomic_write(root / "tokens.json", json.dumps(tokens), mode=0o600)
    page = ThreadingHTTPServer(("127.0.0.1", 0), _AnyPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    env = {"PYTHONPATH": str(Path(__file__).parent), "PORTAL_TEST_PAGE_PORT": str(page.server_address[1])}
    hub.down(layout)
    portal.make_token(layout, settings)
    private = layout.hub_dir / "private"
    private.mkdir(parents=True, exist_ok=True)
    if not hub.api_token_file(layout).exists():
        atomic_write(hub.api_token_file(layout), secrets.token_hex(32) + "\n", mode=0o600)
    (layout.hub_dir / "jupyterhub.sqlite").unlink(missing_ok=True)
    atomic_write(hub.config_file(layout), hub.render_config(layout, settings) + "\n".join(extra), mode=0o600)
    daemon = hub.daemon(layout, env)
    daemon.start()
    facts = {"layout": layout, "root": root, "audit": audit, "db": root / "securehpc.sqlite", "tokens": tokens,
             "scientist": scientist, "hub_api": f"http://127.0.0.1:{layout.hub_api_port}/hub/api",
             "base": f"{layout.hub_url}/services/securehpc/api/v1", "page_port": page.server_address[1],
             "slurm_env": slurm_env, "keys": keys, "prefix": prefix, "account_prefix": accounts}  # fmt: skip
    try:
        daemon.wait_ready(lambda: hub.health(layout), timeout=start_timeout, what=f"answer on {layout.hub_url}")
        wait_for_portal(facts)
        yield facts
    finally:
        page.shutdown()
        hub.down(layout)
        try:
            if settings["ProjectAccounts.provisioner"] == "local":
                remove_accounts(seed.list_accounts())  # every principal and group the portal made
        finally:
            shutil.rmtree(root, ignore_errors=True)


def wait_for_portal(site, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{site['base']}/openapi.json", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    log = (site["layout"].log_dir / "jupyterhub.log").read_text(errors="replace")[-5000:]
    raise AssertionError(f"the portal did not answer through the proxy\n{log}")


def api(
    site, method: str, path: str, who: str | None = None, *, token: str | None = None, **kwargs
) -> requests.Response:
    """A request to the portal's API as ``who`` (their token), or with ``token``, or with nothing."""
    headers = dict(kwargs.pop("headers", {}))
    secret = token or (site["tokens"][who] if who else None)
    if secret:
        headers["Authorization"] = f"token {secret}"
    return requests.request(method, site["base"] + path, headers=headers, timeout=60, **kwargs)


def state(site) -> dict:
    """Every row of the projects database and the audit log's lines: compared before and after requests."""
    database = sqlite3.connect(site["db"])
    try:
        tables = [row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {table: sorted(map(repr, database.execute(f"SELECT * FROM {table}"))) for table in tables}  # noqa: S608
    finally:
        database.close()
    return {"db": rows, "audit": site["audit"].read_text().splitlines()}


def events(site) -> list[dict]:
    return [json.loads(line) for line in site["audit"].read_text().splitlines()]
