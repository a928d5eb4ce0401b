"""Time from ``sbatch`` to a Jupyter server that answers: stock job against the secure launcher, real Slurm.

Run as root from the checkout, with a Python that the job user can execute (the launcher runs from the same
environment as this script):

    /work/venv-sys/bin/python benchmarks/session_start.py [--repeat 10]

It starts its own local cluster (munge, Slurm, OpenBao; free loopback ports), builds a site through the
``securehpc`` CLI (project ``bench`` with the benchmark user as data scientist, dataset ``mri/scans``
shared into it), and submits, as that unprivileged user, in rotating order:

- stock: a job that runs ``jupyter server --ip 127.0.0.1 --port P`` (token in ``$JUPYTER_TOKEN``); timed
  from submission to the first HTTP answer of ``/api`` on P, polled from here;
- secure: a job that runs ``securehpc-node serve --spec ... -- jupyter server --ServerApp.sock=...`` with
  a fresh wrapped token in the job's environment; timed from submission to the port report, which the
  launcher POSTs to a small HTTP endpoint here (it also stands for the hub API), and to the first HTTP
  answer through the relay port;
- secure + serverext: the same with our server extension enabled, as the launcher's default program does.

Stock and secure run the same ``jupyter server`` of the same environment, so their difference is the
launcher and its sandbox. Every job is submitted the same time after the node went idle (Slurm's queue time
depends on it), and Slurm's queue time is also shown pooled over all jobs, since it does not depend on the
kind of job. The breakdown needs no change to product code: process start times from
``/proc`` (10 ms ticks; the job script, the launcher, both bubblewrap layers, gocryptfs and the server stay
alive while the session serves), Jupyter's own log timestamps in the job output, and Slurm's Submit/Start
times (1 s resolution). The launcher logs no timestamps of its own, so its phases between its start and the
first bubblewrap (spec check, node check, token lookup and unwrap at OpenBao) are one interval here.
One discarded warm-up job of each kind comes first. Prints Markdown tables and writes
``benchmarks/results/session_start.json``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))

from sites import make_site, make_source  # noqa: E402

from jupyter_securehpc import jobspec  # noqa: E402
from jupyter_securehpc.devcluster import ClusterLayout, LocalCluster  # noqa: E402

BIN = Path(sys.executable).parent
NODE = str(BIN / "securehpc-node")
BENCH_USER = "securehpc-sbench"
PREFIX = f"/user/{BENCH_USER}/bench/"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Jupyter's log line: "[I 2026-11-23 20:11:02.345 ServerApp] ..."
LOG_LINE = re.compile(r"^\[[A-Z] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
# The program the launcher runs inside: the socket path and prefix come from the sandbox's environment.
SECURE_PROGRAM = (
    "exec jupyter server --no-browser"
    " --ServerApp.sock=/securehpc/jupyter.sock"
    ' --ServerApp.base_url="$JUPYTERHUB_SERVICE_PREFIX"'
    " --ServerApp.root_dir=/project"
)
# The same, with our server extension enabled as the launcher's default program enables it (serve.py): the
# policy enforcement the product adds on top of the sandbox.
SECURE_PROGRAM_EXT = SECURE_PROGRAM + " --ServerApp.jpserver_extensions jupyter_securehpc.serverext=True"


# --- clocks ------------------------------------------------------------------------------------------
def boot_offset() -> float:
    """wall clock minus CLOCK_BOOTTIME (what /proc's process start times count from)."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def processes() -> list[dict]:
    """Every process: pid, ppid, uid, comm, argv, start (wall clock, 10 ms ticks)."""
    offset = boot_offset()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            uid = entry.stat().st_uid
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append(
            {
                "pid": int(entry.name),
                "ppid": int(fields[1]),
                "uid": uid,
                "comm": stat[stat.index("(") + 1 : stat.rindex(")")],
                "argv": [a.decode(errors="replace") for a in argv if a],
                "start": int(fields[19]) / CLK_TCK + offset,
            }
        )
    return found


def log_times(output: Path) -> dict[str, float]:
    """Wall-clock times of Jupyter's first log line and of its "is running at" line."""
    times: dict[str, float] = {}
    for line in output.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        times.setdefault("server_first_log", stamp)
        if "is running at" in line:
            times.setdefault("server_running", stamp)
    return times


def problems(output: Path) -> list[str]:
    """The job's warnings and errors (Jupyter's W/E/C lines, the launcher's messages), tokens redacted."""
    lines = output.read_text(errors="replace").splitlines()
    found = [line for line in lines if re.match(r"^\[[WEC] ", line) or line.startswith("securehpc-node:")]
    return [re.sub(r"token=\S+", "token=REDACTED", line) for line in found]


def extensions(output: Path) -> list[str]:
    """The server extensions the server reports as loaded."""
    found = re.findall(r"\] (\S+) \| extension was successfully loaded", output.read_text(errors="replace"))
    return sorted(set(found))


def slurm_times(job_id: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    times = {}
    for name in ("SubmitTime", "StartTime"):
        match = re.search(rf"\b{name}=(\S+)", out)
        if match and match.group(1) != "Unknown":
            times[name] = datetime.fromisoformat(match.group(1)).timestamp()
    return times


# --- the stand-in hub ----------------------------------------------------------------------------------
class Hub(http.server.BaseHTTPRequestHandler):
    """Records the launcher's port reports (time, path, authorization, body) and the arrival of its start
    stages (``stage:NAME`` -> time); answers the hub API with {}."""

    reports: ClassVar[list] = []
    stages: ClassVar[dict] = {}
    changed = threading.Condition()

    def log_message(self, *args):
        pass

    def reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply(b"{}")

    def do_POST(self):
        arrived = time.time()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Hub.changed:
            if self.path.endswith("/stage"):
                Hub.stages[f"stage:{body['stage']}"] = arrived
            elif self.path.endswith("/port"):
                Hub.reports.append((arrived, self.path, self.headers.get("Authorization"), body))
            Hub.changed.notify_all()
        self.reply(b"{}")


def wait_for_report(count: int, timeout: float) -> tuple | None:
    with Hub.changed:
        Hub.changed.wait_for(lambda: len(Hub.reports) > count, timeout)
        return Hub.reports[count] if len(Hub.reports) > count else None


# --- helpers -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback, our own URL
            response.read()
            return response.status == 200
    except OSError:
        return False


def user_processes(uid: int) -> list[dict]:
    return [p for p in processes() if p["uid"] == uid]


def ensure_user() -> tuple[pwd.struct_passwd, bool]:
    try:
        return pwd.getpwnam(BENCH_USER), False
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", BENCH_USER],
            check=True,
            timeout=30,
        )
        return pwd.getpwnam(BENCH_USER), True


def run_record(job_id: str, submitted: float, marks: dict[str, float], output: Path) -> dict:
    """One measured job: its marks (with Jupyter's own log times) and what its output says."""
    return {
        "job": job_id,
        "submitted": submitted,
        "marks": {**marks, **log_times(output)},
        "problems": problems(output),
        "extensions": extensions(output),
    }


class Bench:
    def __init__(
        self, root: Path, cluster: LocalCluster, user: pwd.struct_passwd, hub_port: int, settle: float
    ) -> None:
        self.root = root
        self.settle = settle
        self.idle_at = time.monotonic()
        self.user = user
        self.hub_port = hub_port
        self.slurm_env = {
            "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            **cluster.layout.client_env(),
        }
        # Real principals: every job (stock and secure alike) runs as the benchmark user's principal in the project.
        self.site = make_site(root / "site", cluster.layout, accounts="local")
        self._build_site()
        self.out = root / "out"  # job outputs and the stock server's home, the principal's
        self.out.mkdir()
        os.chown(self.out, self.user.pw_uid, self.user.pw_gid)

    def _build_site(self) -> None:
        site, name = self.site, self.user.pw_name
        site.ok("project", "create", "bench", "--owner", "alice")
        site.ok("member", "add", "bench", name, "--role", "data_scientist")
        site.ok("project", "create", "mri", "--owner", "carol")
        make_source(self.root / "src", "bench-canary")
        site.ok("dataset", "import", "mri", "scans", str(self.root / "src"), as_user="carol")
        site.ok("dataset", "share", "mri/scans", "--with", "bench", as_user="carol")
        site.ok("dataset", "accept", "bench", "mri/scans", as_user="alice")
        self.user = pwd.getpwnam(site.principal("bench", name).name)
        signing_key = jobspec.generate_key(self.root / "hub-signing.pem")
        self.public_key = self.root / "hub-signing.pub"
        spec = {
            "project": "bench",
            "user": name,
            "role": "data_scientist",
            "store_root": str(site.store_root),
            "vault_addr": site.env["VAULT_ADDR"],
            "datasets": ["mri/scans"],
            "key_store": {"prefix": site.prefix, "policy_prefix": f"{site.prefix}-project-"},
            "principal": self.user.pw_name,
        }
        self.spec = self.root / "spec.json"
        self.spec.write_text(jobspec.sign(spec, signing_key))
        self.spec.chmod(0o644)

    def sbatch(self, script: str, env: dict[str, str], output: Path) -> tuple[str, float, float]:
        """Submit as the user (secrets only in the environment); returns job id, submit and return times.

        Every job is submitted ``settle`` seconds after the node went idle: how long Slurm takes to start a
        job depends on when it arrives after the previous one ended (minting the wrapped token first made
        secure jobs wait 0.4 s longer in the queue than stock ones submitted at once).
        """
        time.sleep(max(0.0, self.idle_at + self.settle - time.monotonic()))
        argv = [
            "sbatch", "--parsable", f"--uid={self.user.pw_name}", f"--gid={self.user.pw_gid}",
            f"--chdir={self.out}", f"--output={output}", "--time=5", "--job-name=bench-start",
        ]  # fmt: skip
        submitted = time.time()
        result = subprocess.run(
            argv, input=script, env={**self.slurm_env, **env}, capture_output=True, text=True, timeout=60
        )
        returned = time.time()
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr}")
        return result.stdout.strip().split(";")[0], submitted, returned

    def stop(self, job_id: str) -> None:
        """scancel, then wait until the job and every process of the user are gone and the node is idle."""
        subprocess.run(["scancel", job_id], env=self.slurm_env, timeout=30, check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            queue = subprocess.run(
                ["squeue", "--noheader", "--jobs", job_id], env=self.slurm_env, capture_output=True, text=True
            ).stdout
            node = subprocess.run(
                ["sinfo", "--noheader", "--Node", "--format=%T"], env=self.slurm_env, capture_output=True, text=True
            ).stdout.split()
            if not queue.strip() and not user_processes(self.user.pw_uid) and set(node) == {"idle"}:
                self.idle_at = time.monotonic()
                return
            time.sleep(0.1)
        raise RuntimeError(f"job {job_id} left processes behind: {user_processes(self.user.pw_uid)}")

    def stock(self, index: int, timeout: float) -> dict:
        port = free_port()
        home = self.out / f"home-{index}"
        home.mkdir()
        os.chown(home, self.user.pw_uid, self.user.pw_gid)
        output = self.out / f"stock-{index}.log"
        script = (
            "#!/bin/sh\n"
            f"exec jupyter server --no-browser --ip 127.0.0.1 --port {port} --ServerApp.port_retries=0"
            f" --ServerApp.base_url={PREFIX} --ServerApp.root_dir={home}\n"
        )
        env = {
            "JUPYTER_TOKEN": secrets.token_hex(24),  # never in argv
            "HOME": str(home),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        }
        job_id, submitted, returned = self.sbatch(script, env, output)
        try:
            url = f"http://127.0.0.1:{port}{PREFIX}api"
            deadline = time.time() + timeout
            while not answers(url):
                if time.time() > deadline:
                    raise RuntimeError(f"stock server did not answer; {output.read_text(errors='replace')}")
                time.sleep(0.02)
            answered = time.time()
            marks = {"sbatch_returned": returned, "http_answer": answered}
            marks.update(self._slurm_marks(job_id))
            for proc in user_processes(self.user.pw_uid):
                if "jupyter-server" in " ".join(proc["argv"][:2]) or proc["argv"][1:2] == ["server"]:
                    marks.setdefault("job_script", proc["start"])  # the script execs the server
                    marks.setdefault("server_process", proc["start"])
            return run_record(job_id, submitted, marks, output)
        finally:
            self.stop(job_id)

    def secure(self, index: int, timeout: float, program: str = SECURE_PROGRAM) -> dict:
        output = self.out / f"secure-{index}-{secrets.token_hex(2)}.log"
        token = self.site.json("key", "wrap", "bench", "--user", self.user.pw_name, "--ttl", "120")["token"]
        api_token = secrets.token_hex(24)
        script = f"#!/bin/sh\nexec {NODE} serve --spec {self.spec} -- sh -c '{program}'\n"
        env = {
            "SECUREHPC_HUB_PUBLIC_KEY": str(self.public_key),
            "SECUREHPC_WRAPPED_TOKEN": token,  # never in argv
            "JUPYTERHUB_API_TOKEN": api_token,
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.hub_port}/hub/api",
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "SECUREHPC_REPORT_URL": f"http://127.0.0.1:{self.hub_port}/hub/api/securehpc/servers/{BENCH_USER}/bench",
            "SECUREHPC_REPORT_TOKEN": api_token,  # a secret of its own, like the hub's report secret
        }
        seen = len(Hub.reports)
        Hub.stages.clear()
        job_id, submitted, returned = self.sbatch(script, env, output)
        try:
            report = wait_for_report(seen, timeout)
            if report is None:
                raise RuntimeError(f"no port report; job output: {output.read_text(errors='replace')}")
            reported, path, authorization, body = report
            if authorization != f"securehpc-report {api_token}" or set(body) != {"port"}:
                raise RuntimeError(f"unexpected port report {path} {body}")
            url = f"http://127.0.0.1:{body['port']}{PREFIX}api"
            deadline = time.time() + timeout
            while not answers(url):
                if time.time() > deadline:
                    raise RuntimeError("no answer through the relay port")
                time.sleep(0.02)
            answered = time.time()
            marks = {"sbatch_returned": returned, "port_report": reported, "http_answer": answered}
            marks.update(Hub.stages)
            marks.update(self._slurm_marks(job_id))
            marks.update(self._sandbox_marks())
            return run_record(job_id, submitted, marks, output)
        finally:
            self.stop(job_id)

    def _slurm_marks(self, job_id: str) -> dict[str, float]:
        marks = {}
        times = slurm_times(job_id, self.slurm_env)
        if "StartTime" in times and "SubmitTime" in times:
            marks["slurm_start_minus_submit_1s"] = times["StartTime"] - times["SubmitTime"]
        steps = [p["start"] for p in processes() if p["comm"] == "slurmstepd" and f"[{job_id}." in " ".join(p["argv"])]
        if steps:
            marks["slurmstepd"] = min(steps)
        return marks

    def _sandbox_marks(self) -> dict[str, float]:
        """Start times of the session's processes, alive while it serves (10 ms ticks).

        The mount helper replaces itself with the inner bubblewrap (same pid, so its start time is the
        helper's); that bubblewrap's children start once the mounts are ready. Each gocryptfs leaves a daemon
        forked from the process the helper started.
        """
        marks: dict[str, float] = {}
        procs = user_processes(self.user.pw_uid)
        inner = {p["pid"]: p for p in procs if p["argv"][:1] == ["bwrap"] and "--cap-drop" in p["argv"]}

        def first(name: str, start: float) -> None:
            marks[name] = min(marks.get(name, start), start)

        for proc in procs:
            argv, start = proc["argv"], proc["start"]
            joined = " ".join(argv)
            if "securehpc-node" in joined and "serve" in argv:
                first("job_script", start)  # the script execs the launcher
            elif argv[:1] == ["bwrap"] and "--cap-add" in argv:
                first("outer_bwrap", start)
            elif proc["pid"] in inner:
                first("inner_bwrap" if proc["ppid"] in inner else "inside_helper", start)
            elif proc["comm"] == "gocryptfs":
                first("gocryptfs_first", start)
                marks["gocryptfs_last"] = max(marks.get("gocryptfs_last", start), start)
            elif "jupyter-server" in " ".join(argv[:2]) or argv[1:2] == ["server"]:
                first("server_process", start)
        return marks


# Rows of the breakdown: (label, from mark, to mark); "submitted" is the sbatch call. For stock jobs the job
# script is the server process (it execs it), so only the rows between marks they have are filled.
STOCK_LAST_STEP = ("'is running at' -> first HTTP answer (polled every 20 ms)", "server_running", "http_answer")
SECURE_STEPS = [
    ("sbatch call returns", "submitted", "sbatch_returned"),
    ("submission -> slurmstepd starts (queue, scheduling)", "submitted", "slurmstepd"),
    ("slurmstepd -> job script starts", "slurmstepd", "job_script"),
    ("launcher: start, spec + node checks, token lookup/unwrap -> outer bwrap", "job_script", "outer_bwrap"),
    ("outer bwrap -> mount helper (Python) starts", "outer_bwrap", "inside_helper"),
    ("mount helper -> first gocryptfs daemon (workspace)", "inside_helper", "gocryptfs_first"),
    ("first -> last gocryptfs daemon (dataset)", "gocryptfs_first", "gocryptfs_last"),
    ("last gocryptfs daemon -> inner bwrap forks (mounts ready)", "gocryptfs_last", "inner_bwrap"),
    ("inner bwrap forks -> server process", "inner_bwrap", "server_process"),
    ("server process start -> first log line (imports, config)", "server_process", "server_first_log"),
    ("first log line -> 'is running at'", "server_first_log", "server_running"),
    ("'is running at' -> port reported (launcher polls every 100 ms)", "server_running", "port_report"),
    ("port reported -> first HTTP answer through the relay", "port_report", "http_answer"),
]


def interval(run: dict, start: str, end: str) -> float | None:
    marks = {"submitted": run["submitted"], **run["marks"]}
    if start in marks and end in marks:
        return marks[end] - marks[start]
    return None


def med(runs: list[dict], start: str, end: str) -> float | None:
    values = [v for v in (interval(r, start, end) for r in runs) if v is not None]
    return statistics.median(values) if values else None


def spread(runs: list[dict], start: str, end: str) -> str:
    values = [v for v in (interval(r, start, end) for r in runs) if v is not None]
    return f"{min(values):.2f}-{max(values):.2f}" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="measured jobs of each kind (default 10)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one session may take to answer")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds from the node going idle to the next sbatch")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it starts Slurm, creates the benchmark user and submits jobs as that user")

    root = Path(tempfile.mkdtemp(prefix="securehpc-bench-start-"))
    root.chmod(0o755)
    state = root / "cluster"
    state.mkdir(mode=0o755)
    (root / "site").mkdir(mode=0o755)
    cluster = LocalCluster(ClusterLayout.load_or_create(state, random_ports=True))
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    hub_thread = threading.Thread(target=hub.serve_forever, daemon=True)
    hub_thread.start()
    user, created = ensure_user()
    kinds = {
        "stock": lambda bench, index: bench.stock(index, args.timeout),
        "secure": lambda bench, index: bench.secure(index, args.timeout),
        "secure + serverext": lambda bench, index: bench.secure(index, args.timeout, SECURE_PROGRAM_EXT),
    }
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    bench = None
    try:
        cluster.up(install=False)
        bench = Bench(root, cluster, user, hub.server_address[1], args.settle)
        for run in kinds.values():  # warm-up, not counted: page cache, Slurm's first job
            run(bench, 0)
        order = list(kinds)
        for index in range(1, args.repeat + 1):
            # Rotate the order, so that no kind always follows the same other kind.
            for kind in order[index % 3 :] + order[: index % 3]:
                runs[kind].append(kinds[kind](bench, index))
            totals = ", ".join(f"{k} {interval(runs[k][-1], 'submitted', 'http_answer'):.2f} s" for k in kinds)
            print(f"run {index}: {totals}", file=sys.stderr, flush=True)
        leftovers = sorted(str(p) for p in Path("/tmp").glob("securehpc-session-*") if p.owner() == bench.user.pw_name)
    finally:
        hub.shutdown()
        hub.server_close()
        cluster.down()
        if bench is not None:
            bench.site.remove_accounts()
        shutil.rmtree(root, ignore_errors=True)
        if created:
            subprocess.run(["userdel", BENCH_USER], check=False, timeout=30)

    # Slurm treats every kind alike (same options, node and timing): its queue time is one sample for all.
    every = [r for kind_runs in runs.values() for r in kind_runs]
    queue = med(every, "submitted", "job_script")
    summary = {}
    for kind, kind_runs in runs.items():
        summary[kind] = {
            "submit_to_http": med(kind_runs, "submitted", "http_answer"),
            "submit_to_port_report": med(kind_runs, "submitted", "port_report"),
            "job_start_to_http": med(kind_runs, "job_script", "http_answer"),
            "job_start_to_server_process": med(kind_runs, "job_script", "server_process"),
        }
    stock = summary["stock"]
    results = {"repeat": args.repeat, "runs": runs, "leftover_socket_dirs": leftovers, "queue_all_kinds": queue}
    results["median"] = summary
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "session_start.json").write_text(json.dumps(results, indent=2) + "\n")

    def cell(kind: str, start: str, end: str, key: str) -> str:
        value = summary[kind][key]
        if value is None:
            return "-"
        text = f"{value:.2f} ({spread(runs[kind], start, end)})"
        return text if kind == "stock" or stock[key] is None else f"{text} **{value / stock[key]:.2f}x**"

    print(f"Median of {args.repeat} jobs of each kind (min-max in brackets; xN = against stock), seconds.\n")
    print(f"| from | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}")
    rows = [
        ("submission (`sbatch`) -> server answers HTTP", "submitted", "http_answer", "submit_to_http"),
        ("submission -> port reported to the hub", "submitted", "port_report", "submit_to_port_report"),
        ("job script starts -> server answers HTTP", "job_script", "http_answer", "job_start_to_http"),
    ]
    for label, start, end, key in rows:
        print(f"| {label} | {' | '.join(cell(kind, start, end, key) for kind in kinds)} |")
    pooled = [queue + summary[kind]["job_start_to_http"] for kind in kinds]
    print(
        f"| Slurm queue pooled over all {len(every)} jobs ({queue:.2f} s, "
        f"{spread(every, 'submitted', 'job_script')}) + job script -> HTTP | "
        + " | ".join(f"{v:.2f}" + ("" if i == 0 else f" **{v / pooled[0]:.2f}x**") for i, v in enumerate(pooled))
        + " |"
    )
    print("\nSandbox start cost (job script start -> server process starts inside): ", end="")
    print(
        ", ".join(f"{kind} {summary[kind]['job_start_to_server_process']:.2f} s" for kind in kinds if kind != "stock")
    )
    print()
    print(f"| step (median s, min-max) | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}")
    for label, start, end in SECURE_STEPS:
        cells = []
        for kind in kinds:
            value = med(runs[kind], start, end)
            cells.append(f"{value:.2f} ({spread(runs[kind], start, end)})" if value is not None else "-")
        print(f"| {label} | {' | '.join(cells)} |")
    label, start, end = STOCK_LAST_STEP
    print(
        f"| stock only: {label} | {med(runs['stock'], start, end):.2f} ({spread(runs['stock'], start, end)}) | - | - |"
    )
    slurm_cells = []
    for kind in kinds:
        slurm = [
            r["marks"]["slurm_start_minus_submit_1s"] for r in runs[kind] if "slurm_start_minus_submit_1s" in r["marks"]
        ]
        slurm_cells.append(f"{statistics.median(slurm):.0f} ({min(slurm):.0f}-{max(slurm):.0f})" if slurm else "n/a")
    print(f"| (Slurm StartTime - SubmitTime, 1 s resolution) | {' | '.join(slurm_cells)} |")
    if leftovers:
        print(f"\nLeft behind: {leftovers}")


if __name__ == "__main__":
    main()
