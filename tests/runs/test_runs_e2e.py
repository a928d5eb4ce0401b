"""Headless runs end to end: a real hub with the secure spawner and its runs API, the local Slurm, OpenBao,
gocryptfs and bubblewrap, the test user logged in through the OpenID provider with an API token.

Notebooks are written into project sleep's encrypted workspace as JupyterLab does it, in a session started
through the hub; runs are submitted with the ``securehpc run`` command line and from Python; their executed
copies are read back in a later session. The site (tests/e2e_hub.py): the user is a data scientist in sleep
(dataset mri/scans shared into it, policy max 1 CPU, 2 GB, 30 minutes) and in other; not a member of mri.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from e2e_hub import diagnostics, hub_env, start, stop, wait_ready
from notebooks import contents, notebook, read_notebook, write_notebook

from jupyter_securehpc import runs
from jupyter_securehpc.audit import AuditLog, verify
from jupyter_securehpc.devcluster import hub, openbao, slurm
from jupyter_securehpc.keys import KeyStore, KeyStoreConfig
from jupyter_securehpc.projects.db import open_database
from jupyter_securehpc.projects.service import Actor, ProjectService
from jupyter_securehpc.runs.client import RunRefused

pytestmark = [pytest.mark.slurm, pytest.mark.openbao, pytest.mark.sandbox]
CLI = str(Path(sys.executable).with_name("securehpc"))
INJECTION = "1); import os; os.system('touch /project/pwned')  #\n\"\"\"'''\\"

# The sweep: parameters, the shared dataset, the network, and a canary that exists only once it runs (upper-cased
# from a parameter: in no spec, script or source).
SWEEP = r"""
import hashlib, json, socket
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as error:
        return type(error).__name__
def tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
print(json.dumps({
    "alpha": alpha, "patient": patient, "patient_type": type(patient).__name__,
    "readme": hashlib.sha256(open("/datasets/mri/scans/README.txt", "rb").read()).hexdigest(),
    "hub": attempt(lambda: tcp(HUB_PORT)), "openbao": attempt(lambda: tcp(OPENBAO_PORT)),
    "external": attempt(lambda: socket.create_connection(("192.0.2.1", 443), timeout=2)),
    "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
}))
print(("canary-e2e-run-" + suffix).upper())
"""


def session(e2e, token: str) -> str:
    response = start(e2e, token, "sleep", {"gpus": "0"})
    assert response.status_code in (201, 202), response.text
    wait_ready(e2e, token, "sleep")
    return f"{e2e['layout'].hub_url}/user/{e2e['user'].name}/sleep"


def cli(e2e, token: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "JUPYTERHUB_URL": e2e["layout"].hub_url, "JUPYTERHUB_API_TOKEN": token}
    return subprocess.run([CLI, "run", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def api(e2e, token: str, method: str, path: str = "", **kwargs) -> requests.Response:
    return requests.request(method, f"{e2e['layout'].hub_url}/hub/api/securehpc/runs{path}",
                            headers={"Authorization": f"token {token}"}, timeout=120, **kwargs)  # fmt: skip


def events(e2e) -> list[dict]:
    return [json.loads(line) for line in (e2e["root"] / "audit.jsonl").read_text().splitlines()]


def all_jobs(e2e) -> str:
    return subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i %k"], env=e2e["slurm_env"],
                          capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip


def job_output(e2e, job_id: str) -> Path:
    """The job's output file, as Slurm names it (job ids start again on each test cluster: not by glob)."""
    info = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], env=e2e["slurm_env"],
                          capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    return Path(info.split("StdOut=", 1)[1].split()[0])


def wait_state(e2e, token: str, run_id: str, states: tuple[str, ...], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = api(e2e, token, "GET", f"/{run_id}")
        if answer.status_code != 200:
            log = (e2e["layout"].log_dir / "jupyterhub.log").read_text(errors="replace")
            raise AssertionError(f"{answer.status_code} {answer.text}\n{log[log.rfind('Traceback') - 200 :][:3000]}")
        run = answer.json()
        if run["state"] in states:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} is {run['state']}, not {states}: {run}\n{diagnostics(e2e)}")


def admin_service(e2e) -> ProjectService:
    settings, layout = e2e["settings"], e2e["layout"]
    keys = KeyStore(KeyStoreConfig(url=layout.openbao_addr, token=openbao.root_token(layout),
                                   prefix=settings["KeyStoreConfig.prefix"],
                                   policy_prefix=settings["KeyStoreConfig.policy_prefix"]))  # fmt: skip
    return ProjectService(open_database(settings["SecureHPC.db_url"]), keys, AuditLog(e2e["root"] / "audit.jsonl"),
                          e2e["root"] / "stores", Actor(admin="test-admin"))  # fmt: skip


@pytest.fixture(scope="module")
def notebooks(e2e, token):
    """The notebooks in sleep's workspace, written in a JupyterLab session that is then stopped."""
    layout = e2e["layout"]
    base = session(e2e, token)
    sweep = SWEEP.replace("HUB_PORT", str(layout.hub_port)).replace("OPENBAO_PORT", str(layout.openbao_port))
    write_notebook(base, token, "analysis/sweep.ipynb",
                   notebook(sweep, parameters='alpha = 0.1\npatient = "nobody"\nsuffix = "x"'))  # fmt: skip
    write_notebook(base, token, "slow.ipynb", notebook("import time\ntime.sleep(seconds)\nprint('woke', tag)",
                                                      parameters="seconds = 1\ntag = 'x'"))  # fmt: skip
    write_notebook(base, token, "fails.ipynb", notebook("x = 1", "raise KeyError('patient 0815 ' + word)",
                                                        parameters="word = 'x'"))  # fmt: skip
    paths = {"sweep": "analysis/sweep.ipynb", "slow": "slow.ipynb", "fails": "fails.ipynb"}
    # The session tells the hub each saved notebook's parameter names (the hub checks a run's names against
    # them): the session stays until the hub knows all three.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(admin_service(e2e).notebook_parameters("sleep", path) is None
                                              for path in paths.values()):  # fmt: skip
        time.sleep(0.5)
    stop(e2e, token, "sleep")
    return paths


def test_a_parametrised_notebook_runs_headless_and_its_copy_is_read_in_a_later_session(e2e, token, notebooks):
    jobs_before = all_jobs(e2e)
    result = cli(e2e, token, "submit", "sleep", notebooks["sweep"], "-p", "alpha", "0.5", "-r", "patient", INJECTION,
                 "-p", "suffix", '"e2e1"', "--wait", "--json")  # fmt: skip
    assert result.returncode == 0, f"{result.stderr}\n{diagnostics(e2e)}"
    run = json.loads(result.stdout)
    assert run["state"] == "succeeded" and run["cells_done"] == run["cells_total"] == 3, run
    assert run["executed_notebook"] == f"runs/{run['run_id']}/sweep.ipynb"
    assert run["parameters"] == {"alpha": 0.5, "patient": INJECTION, "suffix": "e2e1"}
    assert len(all_jobs(e2e).splitlines()) == len(jobs_before.splitlines()) + 1  # one job for one run
    tagged = [line for line in all_jobs(e2e).splitlines() if line.split()[1] == f"securehpc-run:{run['run_id']}"]
    assert [line.split()[0] for line in tagged] == [run["job_id"]]

    base = session(e2e, token)
    try:
        executed = read_notebook(base, token, run["executed_notebook"])
        listing = contents(base, token, "GET", "").json()["content"]
    finally:
        stop(e2e, token, "sleep")
    injected = [cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1
    report, canary = executed.cells[-1].outputs[0]["text"].splitlines()
    report = json.loads(report)
    # Parameters are data: the injection attempt arrived as the very string and ran nothing.
    assert report["alpha"] == 0.5 and report["patient"] == INJECTION and report["patient_type"] == "str"
    assert "pwned" not in [entry["name"] for entry in listing]
    assert report["readme"] == e2e["hashes"]["README.txt"]  # the shared dataset, read-only in the sandbox
    assert report["hub"] != "ok" and report["openbao"] != "ok" and report["external"] != "ok"
    assert report["dns"] != "ok"
    assert canary == "CANARY-E2E-RUN-E2E1"
    # Encrypted at rest and nowhere else: not under the store root, not in any log of the hub or the services.
    stores = e2e["root"] / "stores"
    assert [p for p in stores.rglob("*") if p.is_file() and b"CANARY-E2E-RUN-E2E1" in p.read_bytes()] == []
    logs = [p for p in e2e["layout"].log_dir.iterdir() if p.is_file()]
    assert [p for p in logs if "CANARY-E2E-RUN-E2E1" in p.read_text(errors="replace")] == []
    # The job's output was removed after the run succeeded (it held the launcher's messages only).
    assert not job_output(e2e, run["job_id"]).exists()

    mine = [e for e in events(e2e) if run["run_id"] in e["object"]]
    assert [e["action"] for e in mine if e["action"].startswith("run.")] == [
        "run.submit", "run.job", "run.start", "run.end"
    ]  # fmt: skip
    assert mine[0]["actor"] == e2e["user"].name and mine[0]["details"]["parameter_names"] == [
        "alpha", "patient", "suffix"
    ]  # fmt: skip
    assert all(INJECTION not in json.dumps(e) for e in mine)  # names in the log, never values
    assert any(e["action"] == "key.wrap" and e["details"].get("user") == e2e["user"].name for e in events(e2e))
    assert verify(e2e["root"] / "audit.jsonl").ok
    logs = cli(e2e, token, "logs", run["run_id"])
    assert logs.returncode == 0 and f"run {run['run_id']}: succeeded" in logs.stdout, logs.stdout


def test_a_failing_notebook_names_its_cell_and_the_job_output_holds_no_data(e2e, token, notebooks):
    result = cli(e2e, token, "submit", "sleep", notebooks["fails"], "-r", "word", "geheim", "--wait")
    assert result.returncode == 1, result.stderr
    # Cell 3 of the executed notebook: the parameters cell, papermill's injected cell, x = 1, the raise.
    assert "cell 3 of the executed notebook raised KeyError" in result.stdout, result.stdout
    assert "0815" not in result.stdout + result.stderr
    run = api(e2e, token, "GET", "?project=sleep").json()["runs"][0]
    assert (run["state"], run["failed_cell"], run["exception"]) == ("failed", 3, "KeyError")
    # A failed run keeps the job's output for diagnosis: the launcher's messages, nothing of the notebook.
    output = job_output(e2e, run["job_id"])
    text = output.read_text()
    assert "geheim" not in text and "0815" not in text and "KeyError" not in text
    assert all(line.startswith("securehpc-node: ") for line in text.splitlines() if line.strip()), text
    assert output.stat().st_mode & 0o077 == 0


def test_unknown_parameters_are_refused_naming_the_known_ones_before_anything_is_submitted(e2e, token, notebooks):
    # The hub knows the notebook's parameter names from the session that saved it (the runner checks them again
    # in the sandbox: test_run_node.py).
    before, audited = all_jobs(e2e), len(events(e2e))
    result = cli(e2e, token, "submit", "sleep", notebooks["sweep"], "-p", "alphaa", "1", "--wait")
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert "unknown parameter alphaa" in result.stderr and "defines alpha, patient, suffix" in result.stderr
    assert "nothing was submitted" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert all_jobs(e2e) == before
    assert [(e["action"], e["outcome"]) for e in events(e2e)[audited:]] == [("run.submit", "denied")]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-p", "alpha", "nope"], "parameter alpha: 'nope' is not JSON"),
        (["-p", "alpha", "NaN"], "is not JSON"),
        (["-p", "alpha beta", "1"], "not a Python identifier"),
        (["--cpus", "4"], "cpus must be from 1 to 1 under this project's policy; you asked for 4"),
        (["--gpus", "2"], "gpus must be from 0 to 1 under this project's policy; you asked for 2"),
        (["--time", "2h"], "time (minutes) must be from 1 to 30 under this project's policy; you asked for 120"),
        (["--memory-gb", "64"], "memory_gb must be from 1 to 2"),
        (["--kernel", "py 3"], "is not a kernel name"),
    ],
)
def test_refused_submissions_are_one_line_and_submit_nothing(e2e, token, notebooks, args, says):
    before, audited = all_jobs(e2e), len(events(e2e))
    result = cli(e2e, token, "submit", "sleep", notebooks["sweep"], *args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("securehpc: refused: ") and says in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert all_jobs(e2e) == before
    # The hub decides every one of them (the command line sends what was typed), so each is audited.
    refusal = events(e2e)[audited:]
    assert [e["action"] for e in refusal] == ["run.submit"] and refusal[0]["outcome"] == "denied"


@pytest.mark.parametrize(
    ("project", "path", "status", "says"),
    [
        ("sleep", "../other/x.ipynb", 400, "contains '..'"),
        ("sleep", "/etc/passwd.ipynb", 400, "outside the project's workspace"),
        ("sleep", "analysis/../../x.ipynb", 400, "contains '..'"),
        ("mri", "x.ipynb", 404, "project 'mri' does not exist or you are not a member of it"),
        ("nosuch", "x.ipynb", 404, "project 'nosuch' does not exist or you are not a member of it"),
    ],
)
def test_paths_outside_the_workspace_and_foreign_projects_are_refused(e2e, token, project, path, status, says):
    before, audited = all_jobs(e2e), len(events(e2e))
    answer = api(e2e, token, "POST", json={"project": project, "notebook": path})
    assert answer.status_code == status, answer.text
    # One line; a project that exists and one that does not are refused alike.
    assert says in answer.json()["message"] and "\n" not in answer.json()["message"]
    assert all_jobs(e2e) == before
    [refusal] = events(e2e)[audited:]
    assert refusal["action"] == "run.submit" and refusal["outcome"] in ("denied", "failed")


def test_the_rest_api_refuses_non_json_and_foreign_credentials(e2e, token, notebooks):
    body = '{"project": "sleep", "notebook": "analysis/sweep.ipynb", "parameters": {"alpha": NaN}}'
    answer = api(e2e, token, "POST", data=body)
    assert answer.status_code == 400 and "NaN is not JSON" in answer.json()["message"]
    assert api(e2e, "not-a-token", "GET", "?project=sleep").status_code == 403
    # The runs' report endpoints take no hub token.
    for kind in ("start", "progress", "end", "message"):
        reply = requests.post(f"{e2e['layout'].hub_url}/hub/api/securehpc/runs/0123456789ab/{kind}",
                              headers={"Authorization": f"token {token}"}, data="{}", timeout=30)  # fmt: skip
        assert reply.status_code == 403


def test_five_runs_at_once_all_finish_and_a_sixth_is_refused(e2e, token, notebooks):
    admin_service(e2e).set_policy("sleep", ["max_concurrent_runs=5"])
    url, results, errors = e2e["layout"].hub_url, {}, []

    def one(index: int) -> None:
        try:
            results[index] = runs.submit("sleep", notebooks["slow"], {"seconds": 2, "tag": f"t{index}"},
                                         hub_url=url, token=token)  # fmt: skip
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors and len(results) == 5, errors
    with pytest.raises(RunRefused, match="max_concurrent_runs=5"):
        runs.submit("sleep", notebooks["slow"], {"seconds": 1}, hub_url=url, token=token)
    ended = {index: wait_state(e2e, token, run["run_id"], ("succeeded", "failed", "timed out", "cancelled"))
             for index, run in results.items()}  # fmt: skip
    assert {run["state"] for run in ended.values()} == {"succeeded"}, ended
    base = session(e2e, token)
    try:
        for index, run in ended.items():
            output = read_notebook(base, token, run["executed_notebook"]).cells[-1].outputs[0]["text"]
            assert output.strip() == f"woke t{index}"
    finally:
        stop(e2e, token, "sleep")


def job_uid(e2e, job_id: str) -> int:
    info = subprocess.run(["scontrol", "show", "job", job_id], env=e2e["slurm_env"], capture_output=True, text=True,
                          timeout=30, check=True).stdout  # fmt: skip
    return int(info.split("UserId=", 1)[1].split("(", 1)[1].split(")", 1)[0])


def processes_of(uid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append((entry / "comm").read_text().strip())
        except OSError:
            continue
    return found


def test_cancel_of_a_running_run_leaves_no_job_mount_or_process(e2e, token, notebooks):
    submitted = cli(e2e, token, "submit", "sleep", notebooks["slow"], "-p", "seconds", "300", "--json")
    assert submitted.returncode == 0, submitted.stderr
    run = json.loads(submitted.stdout)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = api(e2e, token, "GET", f"/{run['run_id']}").json()
        if run["state"] == "running" and (run["cells_done"] or 0) >= 1:
            break
        time.sleep(0.5)
    assert run["state"] == "running", run
    uid = job_uid(e2e, run["job_id"])
    assert "gocryptfs" in processes_of(uid)
    cancelled = cli(e2e, token, "cancel", run["run_id"])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled.stderr

    def job_left() -> str:
        argv = ["squeue", "--noheader", f"--jobs={run['job_id']}", "--format=%T"]
        queue = subprocess.run(argv, env=e2e["slurm_env"], capture_output=True, text=True, timeout=30, check=False)
        return queue.stdout.strip() if queue.stdout.strip() not in ("", "CANCELLED") else ""

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (job_left() or processes_of(uid)):
        time.sleep(0.5)
    assert job_left() == ""
    assert processes_of(uid) == []
    assert not [line for line in Path("/proc/mounts").read_text().splitlines() if "gocryptfs" in line]
    shown = api(e2e, token, "GET", f"/{run['run_id']}").json()
    assert shown["state"] == "cancelled" and shown["ended_by"] == e2e["user"].name
    cancel_events = [e for e in events(e2e) if e["action"] == "run.cancel" and run["run_id"] in e["object"]]
    assert [e["outcome"] for e in cancel_events] == ["allowed"]
    again = cli(e2e, token, "cancel", run["run_id"])
    assert again.returncode == 1 and "has ended already (cancelled)" in again.stderr


def test_a_run_past_its_time_limit_ends_as_timed_out(e2e, token, notebooks):
    submitted = cli(e2e, token, "submit", "sleep", notebooks["slow"], "-p", "seconds", "600", "--time", "1",
                    "--json")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run = json.loads(submitted.stdout)
    ended = wait_state(e2e, token, run["run_id"], ("succeeded", "failed", "timed out", "cancelled"), timeout=300)
    assert ended["state"] == "timed out", ended
    assert "time limit" in ended["reason"]
    assert [e["outcome"] for e in events(e2e) if e["action"] == "run.end" and run["run_id"] in e["object"]] == [
        "failed"
    ]


def test_a_hub_restart_neither_loses_nor_duplicates_a_run(e2e, token, notebooks):
    layout = e2e["layout"]
    submitted = cli(e2e, token, "submit", "sleep", notebooks["slow"], "-p", "seconds", "20", "-p", "tag", '"r"',
                    "--json")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run = json.loads(submitted.stdout)
    hub.down(layout)
    hub.up(layout, env=hub_env(e2e), settings=e2e["settings"], timeout=120)
    ended = wait_state(e2e, token, run["run_id"], ("succeeded", "failed", "timed out", "cancelled"))
    assert ended["state"] == "succeeded", ended
    listed = [r for r in api(e2e, token, "GET", "?project=sleep").json()["runs"] if r["run_id"] == run["run_id"]]
    assert len(listed) == 1
    tagged = [line for line in all_jobs(e2e).splitlines() if line.split()[1] == f"securehpc-run:{run['run_id']}"]
    assert len(tagged) == 1
    assert [e["action"] for e in events(e2e) if run["run_id"] in e["object"] and e["action"] == "run.end"] == [
        "run.end"
    ]


def test_slurm_down_makes_a_run_unknown_never_failed(e2e, token, notebooks):
    submitted = cli(e2e, token, "submit", "sleep", notebooks["slow"], "-p", "seconds", "45", "--json")
    assert submitted.returncode == 0, submitted.stderr
    run = wait_state(e2e, token, json.loads(submitted.stdout)["run_id"], ("running",))
    controller, _ = slurm.daemons(e2e["layout"])
    controller.stop()
    try:
        # `run show` asks Slurm (at most every few seconds), which does not answer now.
        shown = wait_state(e2e, token, run["run_id"], ("unknown", "succeeded", "failed"), timeout=60)
        assert shown["state"] == "unknown" and "Slurm did not answer" in shown["reason"], shown
    finally:
        slurm.up(e2e["layout"])
    # The run went on meanwhile, on the node, and reports its own end.
    ended = wait_state(e2e, token, run["run_id"], ("succeeded", "failed", "timed out", "cancelled"))
    assert ended["state"] == "succeeded", ended


def test_a_run_asks_slurm_for_the_gpus_it_was_granted(e2e, token, notebooks):
    # No GPU on this machine: the local Slurm's GRES are placeholders; the job is scheduled with them.
    result = cli(e2e, token, "submit", "sleep", notebooks["slow"], "-p", "seconds", "0", "--gpus", "1", "--wait",
                 "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["resources"] == {"gpus": 1, "cpus": 1, "memory_gb": 2, "minutes": 30}
    info = subprocess.run(["scontrol", "--oneliner", "show", "job", run["job_id"]], env=e2e["slurm_env"],
                          capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert "TresPerNode=gres:gpu:1" in info and "Partition=gpu" in info, info


def test_runs_left_submitting_by_a_stopped_hub_are_adopted_or_ended_never_submitted_again(e2e, token, notebooks):
    """A hub that stopped between recording a run and sbatch returning: the run's job is found by its tag and
    adopted, or, when sbatch never took it, the run ends as not submitted (the person submits again)."""
    from sqlalchemy import update

    from jupyter_securehpc.projects.model import Run, utcnow
    from jupyter_securehpc.spawner.reports import new_report_secret

    actor = Actor.signed_in(e2e["user"].name, is_admin=False, via="test")
    person = ProjectService(admin_service(e2e).sessions, None, AuditLog(e2e["root"] / "audit.jsonl"),
                            e2e["root"] / "stores", actor)  # fmt: skip
    adopted, lost = (person.submit_run({"project": "sleep", "notebook": notebooks["slow"]},
                                       report_hash=new_report_secret()[1]) for _ in range(2))  # fmt: skip
    with admin_service(e2e).sessions() as session, session.begin():  # as if recorded three minutes ago
        session.execute(update(Run).where(Run.run_id.in_([adopted.run_id, lost.run_id]))
                        .values(created_at=utcnow() - dt.timedelta(minutes=3)))  # fmt: skip
    # sbatch had taken the first run's job (a stand-in job with its tag) before the hub stopped.
    job = subprocess.run(["sbatch", "--parsable", f"--comment=securehpc-run:{adopted.run_id}", "--output=/dev/null",
                          "--partition=gpu", "--mem=100M", "--wrap=sleep 3"], env=e2e["slurm_env"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.strip()  # fmt: skip
    first = wait_state(e2e, token, adopted.run_id, ("queued", "running", "succeeded"), timeout=60)
    assert first["job_id"] == job, first
    assert wait_state(e2e, token, adopted.run_id, ("succeeded", "failed"))["state"] == "succeeded"
    second = wait_state(e2e, token, lost.run_id, ("failed",), timeout=60)
    assert "the hub stopped while submitting it; submit it again" in second["reason"]
    assert f"securehpc-run:{lost.run_id}" not in all_jobs(e2e)


def test_an_uploaded_notebook_runs_for_a_role_in_upload_roles_only(e2e, token, notebooks, tmp_path):
    """(The data scientist is not in sleep's upload_roles until the admin puts the role there.)"""
    local = tmp_path / "local.ipynb"
    uploaded = notebook("print(('canary-e2e-upload-' + word).upper())", parameters="word = 'x'")
    local.write_text(json.dumps(uploaded))
    before, audited = all_jobs(e2e), len(events(e2e))
    refused = cli(e2e, token, "submit", "sleep", "--upload", str(local))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "may not upload a notebook into sleep" in refused.stderr and "upload_roles" in refused.stderr
    assert all_jobs(e2e) == before
    [refusal] = events(e2e)[audited:]
    assert (refusal["action"], refusal["outcome"]) == ("run.submit", "denied") and "upload" in refusal["reason"]
    admin_service(e2e).set_policy("sleep", ["upload_roles=data_owner,data_scientist"])
    try:
        result = cli(e2e, token, "submit", "sleep", "--upload", str(local), "-r", "word", "upl0ad", "--wait", "--json")
    finally:
        admin_service(e2e).set_policy("sleep", ["upload_roles=data_owner"])
    assert result.returncode == 0, result.stderr + result.stdout
    run = json.loads(result.stdout)
    run_id = run["run_id"]
    assert run["state"] == "succeeded" and run["notebook"] == f"runs/{run_id}/input/local.ipynb", run
    assert run["executed_notebook"] == f"runs/{run_id}/local.ipynb"
    # Both the input and its executed copy are in the workspace, read in a later session.
    base = session(e2e, token)
    try:
        sources = [cell.source for cell in read_notebook(base, token, run["notebook"]).cells]
        assert sources == ["word = 'x'", "print(('canary-e2e-upload-' + word).upper())"]
        executed = read_notebook(base, token, run["executed_notebook"])
        assert executed.cells[-1].outputs[0]["text"].strip() == "CANARY-E2E-UPLOAD-UPL0AD"
    finally:
        stop(e2e, token, "sleep")


# --- a run's spec and key are given at its job's start, never put into Slurm -----------------------------------


def squeue_state(e2e, job_id: str) -> str:
    argv = ["squeue", "--noheader", f"--jobs={job_id}", "--states=all", "--format=%T"]
    return subprocess.run(argv, env=e2e["slurm_env"], capture_output=True, text=True, timeout=30,
                          check=False).stdout.strip()  # fmt: skip


def fill_the_node(e2e) -> str:
    """A job of root's that takes the whole node: runs submitted meanwhile wait in the queue (PENDING)."""
    job = subprocess.run(["sbatch", "--parsable", "--exclusive", "--partition=gpu", "--mem=100M", "--output=/dev/null",
                          "--wrap=sleep 900"], env=e2e["slurm_env"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.strip().split(";")[0]  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and squeue_state(e2e, job) != "RUNNING":
        time.sleep(0.5)
    assert squeue_state(e2e, job) == "RUNNING"
    return job


def free_the_node(e2e, job: str) -> None:
    subprocess.run(["scancel", job], env=e2e["slurm_env"], capture_output=True, timeout=30, check=False)


def stored_job(e2e, job_id: str) -> dict[str, bytes]:
    """What slurmctld keeps of a job on its controller (StateSaveLocation): its script and its environment."""
    folders = list((e2e["layout"].slurm_dir / "ctld").glob(f"hash.*/job.{job_id}"))
    assert len(folders) == 1, folders
    return {path.name: path.read_bytes() for path in folders[0].iterdir() if path.is_file()}


def ask_start(e2e, run_id: str, secret: str) -> requests.Response:
    """The job's question at its start, as anyone holding the run's report secret can ask it."""
    return requests.post(f"{e2e['layout'].hub_url}/hub/api/securehpc/runs/{run_id}/start", data="{}",
                         headers={"Authorization": f"securehpc-report {secret}"}, timeout=60)  # fmt: skip


def test_a_run_queued_past_its_key_ttl_gets_its_key_at_start_and_slurm_keeps_nothing_of_it(e2e, token, tmp_path):
    """The batch script and the environment Slurm stores hold neither a parameter value nor the uploaded
    notebook nor a key; the key is wrapped when the job runs (key_ttl 30 s, queued longer), once."""
    admin = admin_service(e2e)
    local = tmp_path / "queued.ipynb"
    local.write_text(json.dumps(notebook("# UPLOADED-TEXT-5e1d\nprint(('canary-queued-' + word).upper())",
                                         parameters="word = 'x'")))  # fmt: skip
    admin.set_policy("sleep", ["key_ttl=30", "upload_roles=data_owner,data_scientist"])
    node = fill_the_node(e2e)
    try:
        submitted = cli(e2e, token, "submit", "sleep", "--upload", str(local), "-r", "word", "PARAM-CANARY-77b1",
                        "--json")  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        run = json.loads(submitted.stdout)
        queued_at = time.monotonic()
        assert run["state"] == "queued" and squeue_state(e2e, run["job_id"]) == "PENDING", run
        stored = stored_job(e2e, run["job_id"])
        assert f"run --from-hub {run['run_id']}".encode() in stored["script"]
        shown = subprocess.run(["scontrol", "show", "job", "-dd", run["job_id"]], env=e2e["slurm_env"],
                               capture_output=True, timeout=30, check=True).stdout  # fmt: skip
        stored["scontrol show job -dd"] = shown
        for canary in (b"PARAM-CANARY-77b1", b"UPLOADED-TEXT-5e1d", b"SECUREHPC_WRAPPED_TOKEN", b"signature"):
            assert [name for name, data in stored.items() if canary in data] == [], canary
        # The run's report secret is in the stored environment: whoever reads it there cannot start the run
        # before its job runs.
        secret = stored["environment"].split(b"SECUREHPC_REPORT_TOKEN=", 1)[1].split(b"\0", 1)[0].decode()
        audited = len(events(e2e))
        early = ask_start(e2e, run["run_id"], secret)
        assert early.status_code == 409, early.text
        assert (
            f"job {run['job_id']} of run {run['run_id']} is not running in Slurm (PENDING)" in early.json()["message"]
        )
        wrong = ask_start(e2e, run["run_id"], "x" * 43)
        assert wrong.status_code == 403 and "wrapped_token" not in early.text + wrong.text
        refusals = [(e["action"], e["outcome"]) for e in events(e2e)[audited:]]
        assert refusals == [("run.start", "denied"), ("run.report.start", "denied")], refusals
        # Longer in the queue than the policy's key_ttl: no key exists yet to expire.
        while time.monotonic() - queued_at < 40:
            time.sleep(1)
        assert squeue_state(e2e, run["job_id"]) == "PENDING"
        free_the_node(e2e, node)
        ended = wait_state(e2e, token, run["run_id"], ("succeeded", "failed", "timed out", "cancelled"))
        assert ended["state"] == "succeeded", (ended["reason"], ended["failed_cell"], ended["exception"])
        assert ended["started_at"] is not None
        mine = events(e2e)[audited:]
        started = [e for e in mine if e["action"] == "run.start" and e["outcome"] == "allowed"]
        assert len(started) == 1 and run["run_id"] in started[0]["object"]
        wraps = [e for e in mine if e["action"] == "key.wrap" and e["outcome"] == "allowed"]
        assert len(wraps) == 1 and wraps[0]["details"]["ttl"] == 30 and mine.index(wraps[0]) > mine.index(started[0])
        # Once: the same secret does not start the run again (nor hand out another key).
        again = ask_start(e2e, run["run_id"], secret)
        assert again.status_code == 409 and "was started already" in again.json()["message"], again.text
        last = events(e2e)[-1]
        assert (last["action"], last["outcome"]) == ("run.start", "denied") and "started already" in last["reason"]
        assert len([e for e in events(e2e)[audited:] if e["action"] == "key.wrap"]) == 1
    finally:
        free_the_node(e2e, node)
        admin.set_policy("sleep", ["key_ttl=300", "upload_roles=data_owner"])
    assert verify(e2e["root"] / "audit.jsonl").ok


def test_a_member_removed_while_the_run_waits_gets_no_key_and_the_run_fails_at_start(e2e, token):
    user, admin = e2e["user"].name, admin_service(e2e)
    node = fill_the_node(e2e)
    removed = False
    try:
        submitted = cli(e2e, token, "submit", "other", "plain.ipynb", "--json")
        assert submitted.returncode == 0, submitted.stderr
        run = json.loads(submitted.stdout)
        audited = len(events(e2e))
        admin.remove_member("other", user)
        removed = True
        free_the_node(e2e, node)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and admin.hub_run(run["run_id"]).active:
            time.sleep(1)
        ended = admin.hub_run(run["run_id"])
        assert ended.state == "failed", ended
        assert ended.reason.startswith(f"not started: no session key for {user} in other: "), ended.reason
        mine = [(e["action"], e["outcome"]) for e in events(e2e)[audited:] if e["action"] != "member.remove"]
        assert ("key.wrap", "denied") in mine and ("key.wrap", "allowed") not in mine, mine
        assert ("run.start", "allowed") in mine and ("run.end", "denied") in mine, mine
        # The job's output says why, in one line of the launcher's.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and squeue_state(e2e, run["job_id"]) not in ("FAILED", "COMPLETED"):
            time.sleep(0.5)
        text = job_output(e2e, run["job_id"]).read_text()
        said = [line for line in text.splitlines() if "the hub refused to start it" in line]
        assert len(said) == 1 and "(HTTP 403)" in said[0] and "no session key" in said[0], text
    finally:
        free_the_node(e2e, node)
        if removed:
            admin.add_member("other", user, "data_scientist")
