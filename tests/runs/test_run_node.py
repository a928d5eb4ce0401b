"""``securehpc-node run`` as a real unprivileged user, without a hub: papermill in the sandbox on a real site.

The site (project sleep with dataset mri/scans shared into it, real OpenBao, gocryptfs stores) is built through
the admin command line; notebooks are written into the encrypted workspace with ``securehpc-node exec``; each run
gets a spec signed with the site's key and a fresh wrapped token, as the hub would give it. Without a report URL
the launcher prints its reports, which the tests read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sites import Site, UnixAccount, files_containing, make_site, make_source

from jupyter_securehpc import jobspec

pytestmark = [pytest.mark.openbao, pytest.mark.sandbox]
NODE = str(Path(sys.executable).with_name("securehpc-node"))

# The notebook of these tests: parameters (alpha, patient, suffix), a dataset read, network attempts, a canary
# that exists only once the notebook runs (upper-cased from a parameter: not in the spec, not in the source).
PROBE = r"""
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
report = {
    "alpha": alpha, "patient": patient, "patient_type": type(patient).__name__,
    "readme": hashlib.sha256(open("/datasets/mri/scans/README.txt", "rb").read()).hexdigest(),
    "openbao": attempt(lambda: tcp(OPENBAO_PORT)),
    "external": attempt(lambda: socket.create_connection(("192.0.2.1", 443), timeout=2)),
    "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
}
print(json.dumps(report))
print(("canary-run-" + suffix).upper())
"""


def notebook(*cells: str, parameters: str = 'alpha = 0.1\npatient = "nobody"\nsuffix = "x"') -> str:
    document = nbformat.v4.new_notebook()
    document.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    document.cells = [first, *(nbformat.v4.new_code_cell(cell) for cell in cells)]
    return nbformat.writes(document)


@dataclass
class RunSite:
    site: Site
    root: Path
    person: object  # the test user, a member of sleep
    user: UnixAccount  # the account the project's jobs of that person run as (the person's principal)
    key: Ed25519PrivateKey
    hashes: dict[str, str]

    def spec(self, name: str, run: dict | None = None) -> Path:
        data = {
            "project": "sleep",
            "user": self.person.name,
            "principal": self.user.name,
            "role": "data_scientist",
            "store_root": str(self.site.store_root),
            "vault_addr": self.site.env["VAULT_ADDR"],
            "datasets": ["mri/scans"],
            "key_store": {"prefix": self.site.prefix, "policy_prefix": f"{self.site.prefix}-project-"},
        }
        if run is not None:
            data["run"] = run
        path = self.root / f"{name}.json"
        path.write_text(jobspec.sign(data, self.key))
        path.chmod(0o644)
        return path

    def env(self) -> dict[str, str]:
        token = self.site.json("key", "wrap", "sleep", "--user", self.person.name, "--ttl", "120")["token"]
        return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "SECUREHPC_WRAPPED_TOKEN": token,
                "SECUREHPC_HUB_PUBLIC_KEY": str(self.root / "hub-signing.pub")}  # fmt: skip

    def exec(self, code: str, stdin: str = "") -> str:
        """Python in the sandbox (the workspace at /project); its standard output."""
        result = subprocess.run(
            [NODE, "exec", "--spec", str(self.spec("exec")), "--", "python3", "-c", code],
            input=stdin, env=self.env(), capture_output=True, text=True, timeout=120, check=False,
            **self.user.run_as(),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def put(self, path: str, text: str) -> None:
        self.exec(
            f"import os,sys; os.makedirs(os.path.dirname('/project/{path}') or '/project', exist_ok=True); "
            f"open('/project/{path}', 'w').write(sys.stdin.read())",
            stdin=text,
        )

    def read(self, path: str) -> str:
        return self.exec(f"print(open('/project/{path}').read(), end='')")

    def run(self, run_id: str, notebook: str, parameters: dict | None = None,
            upload: str | None = None) -> tuple[int, str, dict | None]:  # fmt: skip
        """``securehpc-node run``: exit status, the launcher's output, and the end it reported."""
        run = {"run_id": run_id, "notebook": notebook, "parameters": parameters or {}}
        if upload is not None:
            run["upload"] = upload
        spec = self.spec(f"run-{run_id}", run)
        result = subprocess.run(
            [NODE, "run", "--spec", str(spec)], env=self.env(), capture_output=True, text=True, timeout=300,
            check=False, **self.user.run_as(),
        )  # fmt: skip
        output = result.stdout + result.stderr
        ends = [line.split("run ended: ", 1)[1] for line in output.splitlines() if "run ended: " in line]
        return result.returncode, output, json.loads(ends[-1]) if ends else None


@pytest.fixture(scope="module")
def runsite(local_cluster, unix_user):
    root = Path(tempfile.mkdtemp(prefix="securehpc-runnode-"))
    root.chmod(0o755)
    site = make_site(root, local_cluster.layout, accounts="local")
    try:
        site.ok("project", "create", "sleep", "--owner", "alice")
        site.ok("member", "add", "sleep", unix_user.name, "--role", "data_scientist")
        site.ok("project", "create", "mri", "--owner", "carol")
        hashes = make_source(root / "src", "CANARY-runnode-source")
        site.ok("dataset", "import", "mri", "scans", str(root / "src"), as_user="carol")
        site.ok("dataset", "share", "mri/scans", "--with", "sleep", as_user="carol")
        site.ok("dataset", "accept", "sleep", "mri/scans", as_user="alice")
        key = jobspec.generate_key(root / "hub-signing.pem")
        yield RunSite(site, root, unix_user, site.principal("sleep", unix_user.name), key, hashes)
    finally:
        site.remove_accounts()
        shutil.rmtree(root, ignore_errors=True)


def probe(runsite: RunSite) -> str:
    port = runsite.site.env["VAULT_ADDR"].rsplit(":", 1)[1]
    return PROBE.replace("OPENBAO_PORT", port)


def test_a_run_executes_the_notebook_with_its_parameters_in_the_sandbox(runsite):
    runsite.put("analysis/sweep.ipynb", notebook(probe(runsite)))
    injection = "1); import os; os.system('touch /project/pwned')  #\n\"\"\"'''\\"
    status, output, end = runsite.run(
        "node0001", "analysis/sweep.ipynb", {"alpha": 0.5, "patient": injection, "suffix": "n0de"}
    )
    assert status == 0 and end == {"outcome": "succeeded", "exit_code": 0}, output
    executed = nbformat.reads(runsite.read("runs/node0001/sweep.ipynb"), as_version=4)
    injected = [cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and injected[0].source.count("\n") >= 3
    [report_output, canary_output] = executed.cells[-1].outputs[0]["text"].splitlines()
    report = json.loads(report_output)
    # The parameters arrived as data: the injection attempt is the very string, no code of it ran.
    assert report["alpha"] == 0.5 and report["patient"] == injection and report["patient_type"] == "str"
    assert "pwned" not in runsite.exec("import os; print(os.listdir('/project'))")
    assert report["readme"] == runsite.hashes["README.txt"]
    assert report["openbao"] != "ok" and report["external"] != "ok" and report["dns"] != "ok"
    assert canary_output == "CANARY-RUN-N0DE"
    # The log is in the workspace; the launcher's output holds only its own lines, never the notebook's.
    assert "run node0001" in runsite.read("runs/node0001/run.log")
    assert "CANARY-RUN-N0DE" not in output and "patient" not in output
    assert all(line.startswith("securehpc-node: ") for line in output.splitlines() if line.strip()), output
    # Encrypted at rest: the canary the notebook printed is nowhere in plaintext under the store root.
    assert files_containing(runsite.site.store_root, b"CANARY-RUN-N0DE") == []


def test_unknown_parameters_are_refused_before_any_cell_runs(runsite):
    runsite.put("refuse.ipynb", notebook("open('/project/refuse-ran', 'w').write('x')"))
    status, output, end = runsite.run("node0002", "refuse.ipynb", {"alpha": 1, "betaa": 2})
    assert status == 3, output
    assert end == {"outcome": "refused", "exit_code": 3, "unknown": ["betaa"], "known": ["alpha", "patient", "suffix"]}
    listing = runsite.exec("import os; print(sorted(os.listdir('/project')), os.listdir('/project/runs/node0002'))")
    assert "refuse-ran" not in listing and "refuse.ipynb'" not in listing.split("]")[1]


def test_a_failing_cell_is_named_by_index_and_exception_only(runsite):
    runsite.put("fails.ipynb", notebook("x = 1", "raise KeyError('patient 0815 secret')"))
    status, output, end = runsite.run("node0003", "fails.ipynb")
    assert status == 1, output
    assert end == {"outcome": "failed", "exit_code": 1, "cell": 2, "exception": "KeyError"}
    assert "0815" not in output
    # papermill kept the executed notebook with the error, in the workspace.
    assert "0815" in runsite.read("runs/node0003/fails.ipynb")


@pytest.mark.parametrize(
    ("run_id", "path", "problem"),
    [("node0004", "missing.ipynb", "notebook_missing"), ("node0001", "analysis/sweep.ipynb", "output_exists")],
)
def test_a_missing_notebook_or_a_used_run_folder_fails_cleanly(runsite, run_id, path, problem):
    if problem == "output_exists" and "node0001" not in runsite.exec("import os; print(os.listdir('/project/runs'))"):
        runsite.put("analysis/sweep.ipynb", notebook(probe(runsite)))
        runsite.run("node0001", "analysis/sweep.ipynb", {"suffix": "x"})
    status, output, end = runsite.run(run_id, path)
    assert status == 1 and end["problem"] == problem, output


def test_a_symlink_out_of_the_workspace_is_not_a_notebook_of_it(runsite):
    runsite.exec("import os; os.symlink('/datasets/mri/scans/README.txt', '/project/link.ipynb')")
    status, output, end = runsite.run("node0005", "link.ipynb")
    assert status == 1 and end["problem"] == "outside_workspace", output


def test_an_uploaded_notebook_is_written_into_the_run_folder_and_run_from_there(runsite):
    # The hub signs the notebook's text into the run spec; the runner writes it under runs/RUN_ID/input/ in the
    # encrypted workspace and papermill writes the executed copy beside it. Larger than a pipe holds (64 KiB).
    padding = "# " + "p" * 100_000
    uploaded = notebook(probe(runsite), padding)
    status, output, end = runsite.run(
        "node0006", "runs/node0006/input/local.ipynb", {"suffix": "upl0ad"}, upload=uploaded
    )
    assert status == 0 and end == {"outcome": "succeeded", "exit_code": 0}, output
    assert runsite.read("runs/node0006/input/local.ipynb") == uploaded
    executed = nbformat.reads(runsite.read("runs/node0006/local.ipynb"), as_version=4)
    assert executed.cells[-2].outputs[0]["text"].splitlines()[-1] == "CANARY-RUN-UPL0AD"
    listing = runsite.exec("import os; print(sorted(os.listdir('/project/runs/node0006')))")
    assert listing.strip() == "['input', 'local.ipynb', 'run.log']"
    assert files_containing(runsite.site.store_root, b"CANARY-RUN-UPL0AD") == []
    assert files_containing(runsite.site.store_root, padding[:64].encode()) == []
    # The run folder is made exclusively for an upload too: the same run id does not run again.
    status, output, end = runsite.run("node0006", "runs/node0006/input/local.ipynb", upload=uploaded)
    assert status == 1 and end["problem"] == "output_exists", output
