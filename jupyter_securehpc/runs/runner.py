"""A headless run inside the sandbox: papermill executes the workspace's notebook with the signed parameters.

``securehpc-node run`` (node/run.py) starts this as the sandbox's program: the real user, no capability, no
network, the workspace at ``/project`` read-write and the datasets read-only. It reads its ``RunSpec`` from the
read-only run file (``$SECUREHPC_RUN_SPEC``, what the hub signed) and tells the launcher outside, on the pipe
``$SECUREHPC_RUN_PROGRESS_FD``, only what the run reports may carry (``session.reports``): cells done of the
total, and how it ended (the failing cell's index and the exception's class name, never an output or a message).

- The notebook must be inside the workspace (also after following symbolic links). An uploaded notebook (its text
  in the signed spec) is first written to ``runs/RUN_ID/input/NAME.ipynb``, its executed copy goes beside it.
- Every parameter name must be defined in the notebook's ``parameters`` cell (papermill's own inspection), or the
  run is refused before a kernel starts, naming the unknown ones and the known ones.
- Parameters reach the notebook through papermill's injected-parameters cell (values translated by papermill's
  own translator: data, never code).
- The executed notebook and the log go to ``runs/RUN_ID/`` in the workspace (encrypted at rest); the folder is
  created exclusively, so that a run never executes twice into the same place. Standard output and error, the
  kernel's included, go to the log: nothing of the notebook reaches the job's output file.
- The process is not dumpable, and the pipe is not inherited: code in the kernel cannot write reports.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from ..serverext.process import not_dumpable
from ..session.env import RUN_PROGRESS_FD_ENV, RUN_SPEC_ENV
from ..session.reports import (
    KIND_RUN_END,
    KIND_RUN_PROGRESS,
    RunEnd,
    run_end_report,
    run_progress_report,
)
from ..session.spec import RUNS_FOLDER, RunSpec, SpecError

WORKSPACE = Path("/project")
ENGINE = "securehpc"
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3
_EXCEPTION = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,127}")
log = logging.getLogger("securehpc.run")


class Reports:
    """The pipe to the launcher: one line per report, ``KIND JSON``, in the run reports' own shapes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _send(self, kind: str, payload: dict) -> None:
        try:
            self._stream.write(f"{kind} {json.dumps(payload)}\n")
            self._stream.flush()
        except OSError:
            pass  # the launcher is gone: the run goes on, its end is Slurm's to tell

    def cells(self, done: int, total: int) -> None:
        self._send(KIND_RUN_PROGRESS, run_progress_report(done, total))

    def end(self, end: RunEnd) -> int:
        self._send(KIND_RUN_END, run_end_report(end))
        return {"succeeded": EXIT_SUCCEEDED, "refused": EXIT_REFUSED}.get(end.outcome, EXIT_FAILED)


def _progress_engine(reports: Reports) -> type:
    """A papermill engine (papermill's registry, ``papermill_engines``) that is papermill's own nbclient engine
    and tells ``reports`` each finished cell."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, **kwargs: Any) -> Any:
            total, done = len(nb_man.nb.cells), 0
            complete = nb_man.cell_complete

            def cell_complete(cell: Any, cell_index: int | None = None, **more: Any) -> None:
                nonlocal done
                complete(cell, cell_index=cell_index, **more)
                done = min(done + 1, total)
                reports.cells(done, total)

            nb_man.cell_complete = cell_complete
            reports.cells(0, total)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


def _exception_name(name: object) -> str:
    return name if isinstance(name, str) and _EXCEPTION.fullmatch(name) else "Exception"


def _to_log(path: Path) -> None:
    """Standard output and error (this process's, and so the kernel's) into the run's log in the workspace."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", force=True)


def _output_dir(spec: RunSpec) -> RunEnd | None:
    """``runs/RUN_ID/`` made exclusively (a run is never executed twice into one folder); the end otherwise."""
    runs = WORKSPACE / RUNS_FOLDER
    runs.mkdir(mode=0o700, exist_ok=True)
    if runs.is_symlink() or not runs.resolve().is_relative_to(WORKSPACE):
        return RunEnd("failed", problem="outside_workspace")
    try:
        (WORKSPACE / spec.output_dir).mkdir(mode=0o700)
    except FileExistsError:
        return RunEnd("failed", problem="output_exists")
    return None


def _write_upload(spec: RunSpec) -> None:
    """The uploaded notebook into the run's own folder of the workspace (temp, fsync, rename): the input stays
    beside its executed copy, encrypted like it."""
    target = WORKSPACE / spec.notebook
    target.parent.mkdir(mode=0o700)
    temporary = target.with_name(f".{target.name}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(spec.upload.encode())
        stream.flush()
        os.fsync(stream.fileno())
    os.rename(temporary, target)


def execute(spec: RunSpec, reports: Reports) -> int:
    """The run, from the notebook's checks to papermill's end; the runner's exit status."""
    if spec.upload is not None:
        # An upload: its folder first (the notebook's place is in it), then the notebook, then the same checks.
        problem = _output_dir(spec)
        if problem is not None:
            return reports.end(problem)
        _write_upload(spec)
    notebook = (WORKSPACE / spec.notebook).resolve()
    if not notebook.is_relative_to(WORKSPACE):
        return reports.end(RunEnd("failed", problem="outside_workspace"))
    if not notebook.is_file():
        return reports.end(RunEnd("failed", problem="notebook_missing"))
    if spec.upload is None:
        problem = _output_dir(spec)
        if problem is not None:
            return reports.end(problem)
    _to_log(WORKSPACE / spec.log_file)

    import nbformat
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    log.info("run %s: %s with parameters %s", spec.run_id, spec.notebook, ", ".join(spec.parameters) or "(none)")
    try:
        document = nbformat.read(notebook, as_version=4)
        known = papermill.inspect_notebook(str(notebook))
    except Exception as error:
        log.error("%s is not a notebook papermill can read: %s", spec.notebook, error)
        return reports.end(RunEnd("failed", problem="not_a_notebook", exception=_exception_name(type(error).__name__)))
    unknown = sorted(set(spec.parameters) - set(known))
    if unknown:
        log.error("refused: unknown parameters %s; the parameters cell defines %s", unknown, list(known))
        # In the cell's order, as the hub's index lists them.
        shown = tuple(name for name in known if name.isidentifier() and len(name) <= 64)[:100]
        return reports.end(RunEnd("refused", unknown=tuple(unknown), known=shown))
    kernel = spec.kernel or document.metadata.get("kernelspec", {}).get("name") or "python3"
    papermill_engines.register(ENGINE, _progress_engine(reports))
    try:
        papermill.execute_notebook(
            str(notebook),
            str(WORKSPACE / spec.output_notebook),
            parameters=spec.parameters,
            engine_name=ENGINE,
            kernel_name=kernel,
            progress_bar=False,
            log_output=True,
            cwd=str(notebook.parent),
        )
    except PapermillExecutionError as error:
        log.error("cell %s raised %s", error.cell_index, error.ename)
        return reports.end(RunEnd("failed", cell=error.cell_index, exception=_exception_name(error.ename)))
    except NoSuchKernel:
        log.error("no kernel %r in this environment", kernel)
        return reports.end(RunEnd("failed", problem="kernel", exception="NoSuchKernel"))
    except Exception as error:
        log.exception("the run failed")
        return reports.end(RunEnd("failed", problem="kernel", exception=_exception_name(type(error).__name__)))
    log.info("run %s succeeded: %s", spec.run_id, spec.output_notebook)
    return reports.end(RunEnd("succeeded"))


def main() -> int:
    not_dumpable()
    fd = int(os.environ.pop(RUN_PROGRESS_FD_ENV))
    os.set_inheritable(fd, False)
    reports = Reports(os.fdopen(fd, "w", buffering=1))
    # Kernels keep their connection files in the sandbox's private /tmp; nothing from the user's site packages.
    os.environ["JUPYTER_RUNTIME_DIR"] = "/tmp/jupyter-runtime"  # noqa: S108
    os.environ["PYTHONNOUSERSITE"] = "1"
    try:
        spec = RunSpec.from_dict(json.loads(Path(os.environ.pop(RUN_SPEC_ENV)).read_text()))
    except (OSError, ValueError, SpecError):
        return reports.end(RunEnd("failed", problem="sandbox"))
    try:
        return execute(spec, reports)
    except Exception as error:
        log.exception("the runner failed")
        return reports.end(RunEnd("failed", problem="sandbox", exception=_exception_name(type(error).__name__)))


if __name__ == "__main__":
    sys.exit(main())
