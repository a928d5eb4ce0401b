"""Spawn time, POST to ready, of ``SecureSlurmSpawner`` against stock batchspawner ``SlurmSpawner``.

Run as root from the checkout, with a Python that the job user can execute (the venv that
``scripts/local.sh`` makes from /usr/bin/python3):

    .venv/bin/python benchmarks/spawn_time.py [--repeat 10]

It starts its own local cluster (munge, Slurm, OpenBao, the OpenID provider; free loopback ports), one
real JupyterHub with configurable-http-proxy, and a benchmark user with a home folder, then alternates, one
spawn at a time with the hub restarted between kinds:

- stock: ``batchspawner.SlurmSpawner`` with its default batch script (``srun batchspawner-singleuser
  jupyterhub-singleuser``), commands through ``sudo -E -u USER`` (its default; installed if missing) and
  the changes a local cluster needs: the node's address for the job's host name
  (``state_exechost_exp``), ``SLURM_CONF`` in the spawner's environment, full paths to the two commands
  (sudo resets PATH), the same partition, CPUs and memory as the secure jobs. The hub keeps batchspawner's
  own callback route (the secure hub removes it);
- secure: ``SecureSlurmSpawner`` starting the named server of project ``bench`` (a dataset shared into
  it) as the benchmark user's principal in it, with key delivery, signed job spec, two gocryptfs mounts
  (gocryptfs without capabilities on a FUSE descriptor), two bubblewrap layers, relays and the server
  extension.

Each spawn is one ``POST /hub/api/users/USER/servers/NAME`` with the hub's ``slow_spawn_timeout`` raised,
so that the answer (201) comes when the server is ready and routed: its duration is the spawn time. Both
use batchspawner's default ``startup_poll_interval`` (0.5 s). The breakdown comes from the hub's log: the
secure spawner logs its start's timeline (submitted, running, key, mounting, starting, port), batchspawner
logs its submission and the port; after the port, the hub checks the server over HTTP (with backoff) and
adds the route. Every spawn starts ``--settle`` seconds after the previous job ended. Prints a Markdown
table and writes ``benchmarks/results/spawn_time.json``. No GPU: jobs request none (GRES is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

import hubclient  # noqa: E402
from sites import make_site, make_source  # noqa: E402

from jupyter_securehpc import jobspec  # noqa: E402
from jupyter_securehpc.devcluster import ClusterLayout, LocalCluster, hub, openbao  # noqa: E402

BIN = Path(sys.executable).parent
USER = "securehpc-spawn"
PROJECT = "bench"
# "[I 2026-11-23 21:57:43.408 JupyterHub spawner:344] message"
HUB_LINE = re.compile(r"^\[[A-Z] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) JupyterHub [^\]]*\] (.*)$")
TIMELINE = re.compile(r"answers on port \d+: (.*)$")


def ensure_user() -> tuple[pwd.struct_passwd, bool]:
    try:
        return pwd.getpwnam(USER), False
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", USER], check=True)
        return pwd.getpwnam(USER), True


def ensure_sudo() -> None:
    """Stock batchspawner runs every Slurm command through sudo."""
    if shutil.which("sudo"):
        return
    print("installing sudo (stock batchspawner's default exec_prefix)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "sudo"], env=env, check=True)


def hub_lines(log: Path, offset: int) -> list[tuple[float, str]]:
    """(wall-clock time, message) of the hub's own log lines after ``offset``."""
    with open(log, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    lines = []
    for line in text.splitlines():
        match = HUB_LINE.match(line)
        if match:
            lines.append((datetime.fromisoformat(match.group(1)).timestamp(), match.group(2)))
    return lines


class Bench:
    def __init__(self, root: Path, cluster: LocalCluster, user: pwd.struct_passwd, settle: float) -> None:
        self.root, self.cluster, self.user, self.settle = root, cluster, user, settle
        self.layout = cluster.layout
        self.slurm_env = {**os.environ, **self.layout.client_env()}
        # Real principals: the secure jobs run as the benchmark user's principal in the project.
        self.site = make_site(root / "site", self.layout, accounts="local")
        self._build_site()
        self.account = hubclient.add_account(self.layout, user.pw_name)
        self.token = ""
        self.kind = ""

    def _build_site(self) -> None:
        site, name = self.site, self.user.pw_name
        site.ok("project", "create", PROJECT, "--owner", "alice")
        site.ok("member", "add", PROJECT, name, "--role", "data_scientist")
        site.ok("policy", "set", PROJECT, "max_cpus=1", "max_memory_gb=2", "max_wall_time=30", "exclusive=false")
        site.ok("project", "create", "mri", "--owner", "carol")
        make_source(self.root / "src", "bench-canary")
        site.ok("dataset", "import", "mri", "scans", str(self.root / "src"), as_user="carol")
        site.ok("dataset", "share", "mri/scans", "--with", PROJECT, as_user="carol")
        site.ok("dataset", "accept", PROJECT, "mri/scans", as_user="alice")
        self.principal = site.principal(PROJECT, name).name
        jobspec.generate_key(self.root / "hub-signing.pem")

    def settings(self, kind: str) -> dict:
        common = {
            # The site (the authenticator maps logins onto its projects for both kinds).
            "SecureHPC.db_url": self.site.env["SECUREHPC_DB"],
            "SecureHPC.audit_log": self.site.env["SECUREHPC_AUDIT_LOG"],
            "SecureHPC.store_root": self.site.env["SECUREHPC_STORE_ROOT"],
            "JupyterHub.allow_named_servers": True,
            "JupyterHub.tornado_settings": {"slow_spawn_timeout": 300},
            "JupyterHub.redirect_to_server": False,
        }
        if kind == "stock":
            return {
                **common,
                "JupyterHub.spawner_class": "batchspawner.SlurmSpawner",
                "SlurmSpawner.batchspawner_singleuser_cmd": str(BIN / "batchspawner-singleuser"),
                "SlurmSpawner.cmd": [str(BIN / "jupyterhub-singleuser")],
                "SlurmSpawner.state_exechost_exp": "127.0.0.1",  # the node's NodeAddr
                # batchspawner runs sbatch with the spawner's environment only; the local cluster's
                # configuration is not in /etc/slurm.
                "SlurmSpawner.environment": {"SLURM_CONF": self.layout.client_env()["SLURM_CONF"]},
                "SlurmSpawner.req_partition": "gpu",
                "SlurmSpawner.req_nprocs": "1",
                "SlurmSpawner.req_memory": "2G",
                "SlurmSpawner.req_runtime": "30",
                "SlurmSpawner.start_timeout": 120,
            }
        return {
            **common,
            "JupyterHub.spawner_class": "securehpc",
            "KeyStoreConfig.prefix": self.site.prefix,
            "KeyStoreConfig.policy_prefix": f"{self.site.prefix}-project-",
            "SecureSlurmSpawner.signing_key_file": str(self.root / "hub-signing.pem"),
            "SecureSlurmSpawner.node_command": str(BIN / "securehpc-node"),
            "SecureSlurmSpawner.start_timeout": 120,
        }

    def use(self, kind: str) -> None:
        """The hub with this kind's spawner (restarted when the kind changes; not timed)."""
        if kind == self.kind:
            return
        env = {
            "VAULT_TOKEN": openbao.root_token(self.layout),
            "SLURM_CONF": self.layout.client_env()["SLURM_CONF"],
            "SECUREHPC_HUB_PUBLIC_KEY": str(self.root / "hub-signing.pub"),
        }
        hub.up(self.layout, self.settings(kind), env=env, stock_batchspawner=kind == "stock")
        self.kind = kind
        if not self.token:
            browser = hubclient.login(self.layout, self.account)
            self.token = hubclient.api_token(self.layout, browser, self.user.pw_name, note="spawn benchmark")

    def _url(self, kind: str) -> str:
        server = PROJECT if kind == "secure" else ""
        return f"{self.layout.hub_url}/hub/api/users/{self.user.pw_name}/servers/{server}"

    def spawn(self, kind: str) -> dict:
        self.use(kind)
        time.sleep(self.settle)
        log = self.layout.log_dir / "jupyterhub.log"
        offset = log.stat().st_size
        headers = {"Authorization": f"token {self.token}"}
        body = {"gpus": "0", "cpus": "1", "memory_gb": "2"} if kind == "secure" else {}
        started = time.time()
        response = requests.post(self._url(kind), headers=headers, json=body, timeout=300)
        ended = time.time()
        if response.status_code != 201:
            raise RuntimeError(f"{kind} spawn answered {response.status_code}: {response.text}\n{self._tail(log)}")
        status = requests.get(
            f"{self.layout.hub_url}/user/{self.user.pw_name}/{PROJECT + '/' if kind == 'secure' else ''}api/status",
            headers=headers,
            timeout=30,
        )
        if status.status_code != 200:
            raise RuntimeError(f"{kind} server does not answer through the proxy: {status.status_code}")
        marks = self._marks(kind, hub_lines(log, offset), started)
        self.stop(kind)
        return {"total": ended - started, **marks}

    @staticmethod
    def _marks(kind: str, lines: list[tuple[float, str]], started: float) -> dict[str, float]:
        """Seconds after the POST at which each step was logged by the hub."""
        marks: dict[str, float] = {}
        for when, message in lines:
            if kind == "secure" and (match := TIMELINE.search(message)):
                # The spawner's own timeline is relative to its start(); shift it onto the POST's clock.
                base = when - started - float(match.group(1).rsplit("+", 1)[1].rstrip("s"))
                for item in match.group(1).split(", "):
                    name, _, offset = item.partition(" +")
                    marks[name] = base + float(offset.rstrip("s"))
            elif kind == "stock" and message.startswith("Job submitted"):
                marks["submitted"] = when - started
            elif kind == "stock" and message.startswith("Notebook server job"):
                marks["port"] = when - started
        return marks

    def stop(self, kind: str) -> None:
        headers = {"Authorization": f"token {self.token}"}
        requests.delete(self._url(kind), headers=headers, timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "--noheader"], env=self.slurm_env, capture_output=True, text=True)
            if queue.returncode == 0 and not queue.stdout.strip():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the {kind} job did not end")

    def _tail(self, log: Path) -> str:
        """The hub's last lines and the jobs' output, for an error message."""
        outputs = [
            *Path(self.user.pw_dir).glob("jupyterhub_slurmspawner_*.log"),
            *Path("/tmp").glob(f"securehpc-{self.principal}-*.log"),
        ]
        jobs = [f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in outputs]
        lines = log.read_text(errors="replace").splitlines()
        requests_seen = [line for line in lines if " POST /hub/api/" in line]  # the jobs' callbacks
        return "\n".join([*requests_seen[-10:], *lines[-30:], *jobs])


STEPS = {
    "stock": [("submitted", "submit (sudo sbatch)"), ("port", "queue, job start, port posted by the job")],
    "secure": [
        ("submitted", "key wrapped, spec signed, submit (sbatch)"),
        # squeue (polled every 0.5 s) often sees the job running only after the key arrived: no step of its own.
        ("key", "queue, job start, node checks, key unwrapped"),
        ("mounting", "sandbox started"),
        ("starting", "stores mounted"),
        ("port", "JupyterLab and server extension answer; port reported"),
    ],
}


def median_of(runs: list[dict], name: str) -> float | None:
    values = [run[name] for run in runs if name in run]
    return statistics.median(values) if values else None


def report(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for kind, kind_runs in runs.items():
        steps, before = [], 0.0
        for name, label in STEPS[kind]:
            at = median_of(kind_runs, name)
            if at is not None:
                steps.append((label, at - before))
                before = at
        total = median_of(kind_runs, "total")
        steps.append(("hub: HTTP check of the server (with backoff), proxy route", total - before))
        summary[kind] = {
            "median_total": total,
            "min_total": min(r["total"] for r in kind_runs),
            "max_total": max(r["total"] for r in kind_runs),
            "steps": steps,
            "runs": len(kind_runs),
        }
    stock, secure = summary["stock"]["median_total"], summary["secure"]["median_total"]
    print("| spawner | spawns | median POST to ready (s) | min-max (s) |\n|---|---:|---:|---:|")
    for kind, data in summary.items():
        print(f"| {kind} | {data['runs']} | {data['median_total']:.2f} | "
              f"{data['min_total']:.2f}-{data['max_total']:.2f} |")  # fmt: skip
    print(f"\nratio secure/stock: {secure / stock:.2f} (<= 1.0: the secure spawn is no slower)\n")
    for kind, data in summary.items():
        print(f"{kind} breakdown (medians of each step's end, differences):")
        for label, seconds in data["steps"]:
            print(f"- {label}: {seconds:.2f} s")
        print()
    return {"summary": summary, "ratio_secure_over_stock": secure / stock, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="measured spawns of each kind (default 10)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds from the last job's end to a spawn")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it starts Slurm and JupyterHub and creates the benchmark user")
    ensure_sudo()
    root = Path(tempfile.mkdtemp(prefix="securehpc-bench-spawn-"))
    root.chmod(0o755)
    (root / "site").mkdir(mode=0o755)
    cluster = LocalCluster(ClusterLayout.load_or_create(root / "cluster", random_ports=True))
    user, created = ensure_user()
    runs: dict[str, list[dict]] = {"stock": [], "secure": []}
    bench = None
    try:
        cluster.up(install=False)
        bench = Bench(root, cluster, user, args.settle)
        for kind in runs:  # warm-up, not counted: page cache, Slurm's first job, the hub's first spawn
            bench.spawn(kind)
        order = list(runs)
        for index in range(1, args.repeat + 1):
            for kind in order if index % 2 else order[::-1]:  # ABBA: each kind follows a restart equally often
                runs[kind].append(bench.spawn(kind))
            print(f"round {index}: " + ", ".join(f"{k} {runs[k][-1]['total']:.2f} s" for k in runs), file=sys.stderr)
    finally:
        hub.down(cluster.layout)
        cluster.down()
        if bench is not None:
            bench.site.remove_accounts()
        shutil.rmtree(root, ignore_errors=True)
        if created:
            subprocess.run(["userdel", "--remove", USER], check=False, timeout=30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spawn_time.json").write_text(json.dumps(report(runs), indent=1) + "\n")


if __name__ == "__main__":
    main()
