"""Headless runs: the same notebook run by plain papermill under ``sbatch`` and as a secure run, side by side.

Run as root from the checkout, with the venv that ``scripts/local.sh`` makes (the job user runs its Python):

    .venv/bin/python benchmarks/run_overhead.py [--repeat 10] [--long 60] [--short 5] [--burst 20]

It starts its own local cluster (munge, Slurm, OpenBao, the OpenID provider; free loopback ports), a real
JupyterHub with the secure spawner and the runs API, a benchmark user with a home folder (logged in through the
provider, with an API token), and a site: project ``bench`` (the user a data scientist, the user's principal a
real account), dataset ``mri/scans`` shared into it. The notebook reads the dataset once (sha256 of every file),
then does a fixed amount of arithmetic, calibrated on this machine to last about ``--long`` or ``--short``
seconds, and prints a digest.

- plain: ``sbatch --uid=USER`` of ``papermill in.ipynb out.ipynb -p ...`` (the notebook, its output and a plain
  copy of the dataset in the user's home), the same partition, CPUs, memory and time limit as the secure runs;
- secure: ``POST /hub/api/securehpc/runs`` (the run recorded, the key wrapped, the spec signed, ``sbatch`` as the
  principal), ``securehpc-node run``: the key unwrapped, two gocryptfs mounts, two bubblewrap layers,
  papermill in the sandbox, the outputs into the encrypted workspace, the end reported.

Each measurement is from the submission (sbatch for plain, the API request for secure) to Slurm's job state
COMPLETED, both polled every 0.2 s with ``scontrol``; the kinds alternate (ABBA), one job at a time. Then
``--burst`` short runs are submitted at once, each kind, and the time until the last ends is taken. Prints
Markdown tables and writes ``benchmarks/results/run_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import requests

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

import hubclient  # noqa: E402
from sites import account_prefix, make_site, make_source  # noqa: E402

from jupyter_securehpc import jobspec  # noqa: E402
from jupyter_securehpc.devcluster import ClusterLayout, LocalCluster, hub, openbao  # noqa: E402

BIN = Path(sys.executable).parent
USER = "securehpc-runbench"
PROJECT = "bench"
POLL = 0.2
RESOURCES = ["--partition=gpu", "--cpus-per-task=1", "--mem=2G", "--time=30", "--no-requeue"]

WORK = r"""
import hashlib, os
digest = hashlib.sha256()
for folder, _, files in sorted(os.walk(data)):
    for name in sorted(files):
        with open(os.path.join(folder, name), "rb") as handle:
            digest.update(handle.read())
total = 0
for step in range(iterations):
    total = (total + sum(i * i for i in range(1000))) % 1000003
print(digest.hexdigest()[:16], total)
"""


def notebook() -> str:
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("data = '.'\niterations = 1")
    parameters.metadata["tags"] = ["parameters"]
    document.cells = [parameters, nbformat.v4.new_code_cell(WORK)]
    return nbformat.writes(document)


def calibrate(seconds: float) -> int:
    """Iterations of the notebook's loop that take about ``seconds`` here (measured in this process)."""
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < 2.0:
        sum(i * i for i in range(1000))
        steps += 1
    return max(1, int(steps / (time.perf_counter() - started) * seconds))


def ensure_user() -> tuple[pwd.struct_passwd, bool]:
    try:
        return pwd.getpwnam(USER), False
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", USER], check=True)
        return pwd.getpwnam(USER), True


class Bench:
    def __init__(self, root: Path, cluster: LocalCluster, user: pwd.struct_passwd) -> None:
        self.root, self.layout, self.user = root, cluster.layout, user
        self.slurm_env = {**os.environ, **self.layout.client_env()}
        self.site = make_site(root / "site", self.layout, accounts="local")
        site = self.site
        site.ok("project", "create", PROJECT, "--owner", "alice")
        site.ok("member", "add", PROJECT, user.pw_name, "--role", "data_scientist")
        site.ok("policy", "set", PROJECT, "max_cpus=1", "max_memory_gb=2", "max_wall_time=30", "exclusive=false",
                "max_concurrent_runs=50")  # fmt: skip
        site.ok("project", "create", "mri", "--owner", "carol")
        make_source(root / "src", "run-bench")
        site.ok("dataset", "import", "mri", "scans", str(root / "src"), as_user="carol")
        site.ok("dataset", "share", "mri/scans", "--with", PROJECT, as_user="carol")
        site.ok("dataset", "accept", PROJECT, "mri/scans", as_user="alice")
        self.principal = site.principal(PROJECT, user.pw_name)
        self.key = jobspec.generate_key(root / "hub-signing.pem")
        # The plain side's copy of everything, in the user's home.
        self.plain = Path(user.pw_dir) / "run-bench"
        shutil.rmtree(self.plain, ignore_errors=True)
        shutil.copytree(root / "src", self.plain / "data")
        (self.plain / "bench.ipynb").write_text(notebook())
        for path in [self.plain, *self.plain.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        self._put_notebook()
        self._index_notebook()
        account = hubclient.add_account(self.layout, user.pw_name)
        hub.up(self.layout, self.settings(), env=self.hub_env())
        browser = hubclient.login(self.layout, account)
        self.token = hubclient.api_token(self.layout, browser, user.pw_name, note="run benchmark")

    def hub_env(self) -> dict[str, str]:
        return {"VAULT_TOKEN": openbao.root_token(self.layout), "SLURM_CONF": self.layout.client_env()["SLURM_CONF"],
                "SECUREHPC_HUB_PUBLIC_KEY": str(self.root / "hub-signing.pub")}  # fmt: skip

    def settings(self) -> dict:
        return {
            "SecureHPC.db_url": self.site.env["SECUREHPC_DB"],
            "SecureHPC.audit_log": self.site.env["SECUREHPC_AUDIT_LOG"],
            "SecureHPC.store_root": self.site.env["SECUREHPC_STORE_ROOT"],
            "KeyStoreConfig.prefix": self.site.prefix,
            "KeyStoreConfig.policy_prefix": f"{self.site.prefix}-project-",
            "ProjectAccounts.prefix": account_prefix(self.site.prefix),
            "JupyterHub.spawner_class": "securehpc",
            "JupyterHub.allow_named_servers": True,
            "SecureSlurmSpawner.signing_key_file": str(self.root / "hub-signing.pem"),
            "SecureSlurmSpawner.node_command": str(BIN / "securehpc-node"),
            "JupyterHub.log_level": "WARN",
        }

    def _put_notebook(self) -> None:
        """The notebook into the encrypted workspace, with ``securehpc-node exec`` as the principal."""
        spec = {
            "project": PROJECT, "user": self.user.pw_name, "principal": self.principal.name, "role": "data_scientist",
            "store_root": str(self.site.store_root), "vault_addr": self.site.env["VAULT_ADDR"],
            "datasets": ["mri/scans"],
            "key_store": {"prefix": self.site.prefix, "policy_prefix": f"{self.site.prefix}-project-"},
        }  # fmt: skip
        path = self.root / "exec-spec.json"
        path.write_text(jobspec.sign(spec, self.key))
        path.chmod(0o644)
        token = self.site.json("key", "wrap", PROJECT, "--user", self.user.pw_name, "--ttl", "120")["token"]
        env = {"PATH": os.environ["PATH"], "SECUREHPC_WRAPPED_TOKEN": token,
               "SECUREHPC_HUB_PUBLIC_KEY": str(self.root / "hub-signing.pub")}  # fmt: skip
        code = "import sys; open('/project/bench.ipynb', 'w').write(sys.stdin.read())"
        subprocess.run([str(BIN / "securehpc-node"), "exec", "--spec", str(path), "--", "python3", "-c", code],
                       input=notebook(), text=True, env=env, check=True, timeout=120, user=self.principal.uid,
                       group=self.principal.gid, extra_groups=[])  # fmt: skip

    def _index_notebook(self) -> None:
        """The notebook's parameter names in the hub's index, as a session reports them when JupyterLab saves it
        (the hub refuses parameters of a notebook it does not know)."""
        from jupyter_securehpc.audit import AuditLog
        from jupyter_securehpc.projects.db import open_database
        from jupyter_securehpc.projects.service import Actor, ProjectService
        from jupyter_securehpc.session.parameters import ParametersChange

        database, audit = open_database(self.site.env["SECUREHPC_DB"]), AuditLog(self.site.audit_log)
        service = ProjectService(database, self.site.keystore(), audit, self.site.store_root, Actor(admin="benchmark"))
        change = ParametersChange("bench.ipynb", names=("data", "iterations"))
        service.record_notebook_parameters(PROJECT, self.user.pw_name, change)

    # --- one run of each kind ----------------------------------------------------------------------------
    def submit_plain(self, iterations: int) -> str:
        out = self.plain / f"out-{time.monotonic_ns()}.ipynb"
        script = (
            f"#!/bin/bash\nexec {BIN / 'papermill'} --no-progress-bar --kernel python3 {self.plain / 'bench.ipynb'} "
            f"{out} -p data {self.plain / 'data'} -p iterations {iterations}\n"
        )
        env = {**self.slurm_env, "HOME": self.user.pw_dir, "PATH": f"{BIN}:/usr/bin:/bin"}
        argv = ["sbatch", "--parsable", f"--uid={self.user.pw_uid}", f"--gid={self.user.pw_gid}",
                f"--chdir={self.plain}", "--output=/dev/null", *RESOURCES]  # fmt: skip
        result = subprocess.run(argv, input=script, env=env, capture_output=True, text=True, timeout=60, check=True)
        return result.stdout.strip().split(";")[0]

    def submit_secure(self, iterations: int) -> str:
        response = requests.post(
            f"{self.layout.hub_url}/hub/api/securehpc/runs",
            headers={"Authorization": f"token {self.token}"},
            json={"project": PROJECT, "notebook": "bench.ipynb", "cpus": 1, "memory_gb": 2, "time": 30,
                  "parameters": {"data": "/datasets/mri/scans", "iterations": iterations}},
            timeout=120,
        )  # fmt: skip
        if response.status_code != 201:
            raise RuntimeError(f"secure submission answered {response.status_code}: {response.text}")
        return response.json()["job_id"]

    def job_state(self, job_id: str) -> str:
        info = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], env=self.slurm_env,
                              capture_output=True, text=True, timeout=30, check=False).stdout  # fmt: skip
        return next((item.split("=", 1)[1] for item in info.split() if item.startswith("JobState=")), "gone")

    def wait(self, job_ids: list[str]) -> None:
        pending = set(job_ids)
        while pending:
            for job_id in list(pending):
                state = self.job_state(job_id)
                if state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
                    continue
                if state != "COMPLETED":
                    raise RuntimeError(f"job {job_id} ended {state}")
                pending.discard(job_id)
            time.sleep(POLL)

    def measure(self, kind: str, iterations: int) -> float:
        started = time.perf_counter()
        job_id = (self.submit_plain if kind == "plain" else self.submit_secure)(iterations)
        self.wait([job_id])
        return time.perf_counter() - started

    def burst(self, kind: str, count: int, iterations: int) -> float:
        started = time.perf_counter()
        submit = self.submit_plain if kind == "plain" else self.submit_secure
        job_ids: list[str] = []
        threads = [threading.Thread(target=lambda: job_ids.append(submit(iterations))) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(job_ids) != count:
            raise RuntimeError(f"only {len(job_ids)} of {count} {kind} submissions succeeded")
        self.wait(job_ids)
        return time.perf_counter() - started


def alternate(bench: Bench, repeat: int, iterations: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"plain": [], "secure": []}
    for kind in times:  # warm-up, not counted (page cache, the kernel's first start, Slurm's first job)
        bench.measure(kind, iterations)
    for index in range(repeat):
        for kind in ("plain", "secure") if index % 2 == 0 else ("secure", "plain"):
            times[kind].append(bench.measure(kind, iterations))
        print(f"  {index + 1}: plain {times['plain'][-1]:.2f} s, secure {times['secure'][-1]:.2f} s", file=sys.stderr)
    return times


def summary(name: str, times: dict[str, list[float]]) -> dict:
    plain, secure = statistics.median(times["plain"]), statistics.median(times["secure"])
    return {
        "notebook": name,
        "plain_median": plain,
        "secure_median": secure,
        "plain_range": [min(times["plain"]), max(times["plain"])],
        "secure_range": [min(times["secure"]), max(times["secure"])],
        "overhead_seconds": secure - plain,
        "overhead_percent": 100 * (secure - plain) / plain,
        "runs": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="measured runs of each kind per notebook (default 10)")
    parser.add_argument("--long", type=float, default=60.0, help="seconds the long notebook computes (default 60)")
    parser.add_argument("--short", type=float, default=5.0, help="seconds the short notebook computes (default 5)")
    parser.add_argument("--burst", type=int, default=20, help="short runs submitted at once, each kind (default 20)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it starts Slurm and JupyterHub and creates the benchmark user")
    root = Path(tempfile.mkdtemp(prefix="securehpc-bench-runs-"))
    root.chmod(0o755)
    (root / "site").mkdir(mode=0o755)
    cluster = LocalCluster(ClusterLayout.load_or_create(root / "cluster", random_ports=True))
    user, created = ensure_user()
    results: dict = {}
    bench = None
    try:
        cluster.up(install=False)
        bench = Bench(root, cluster, user)
        long_iterations, short_iterations = calibrate(args.long), calibrate(args.short)
        for name, iterations in (("short", short_iterations), ("long", long_iterations)):
            print(f"{name} notebook ({iterations} iterations):", file=sys.stderr)
            results[name] = summary(name, alternate(bench, args.repeat, iterations))
        results["burst"] = {kind: bench.burst(kind, args.burst, short_iterations) for kind in ("plain", "secure")}
        results["burst"]["count"] = args.burst
    finally:
        hub.down(cluster.layout)
        if bench is not None:
            bench.site.remove_accounts()
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
        if created:
            subprocess.run(["userdel", "--remove", USER], check=False, timeout=30)
    print("| notebook | plain papermill under sbatch | secure run | overhead |\n|---|---:|---:|---:|")
    for name in ("short", "long"):
        r = results[name]
        print(f"| {name} | {r['plain_median']:.2f} s ({r['plain_range'][0]:.2f}-{r['plain_range'][1]:.2f}) | "
              f"{r['secure_median']:.2f} s ({r['secure_range'][0]:.2f}-{r['secure_range'][1]:.2f}) | "
              f"+{r['overhead_seconds']:.2f} s ({r['overhead_percent']:.1f}%), ratio "
              f"{r['secure_median'] / r['plain_median']:.2f} |")  # fmt: skip
    burst = results["burst"]
    count, plain, secure = burst["count"], burst["plain"], burst["secure"]
    print(f"\n{count} short runs at once: plain {plain:.1f} s ({60 * count / plain:.1f} runs/min), secure "
          f"{secure:.1f} s ({60 * count / secure:.1f} runs/min), ratio {secure / plain:.2f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "run_overhead.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
