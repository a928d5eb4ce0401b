"""``securehpc run submit|list|show|cancel|logs``: headless runs from a terminal, with a JupyterHub API token.

For project members at their terminal (a login node, a laptop), not only for admins on the hub host: every verb
goes through the hub's REST API (``$JUPYTERHUB_URL`` or ``--hub-url``; the token ``$JUPYTERHUB_API_TOKEN`` or
``--token-file``). Refusals are one line on stderr and exit status 1.

The hub decides what to refuse, and audits each refusal: ``submit`` sends names, ``-p`` values (as their text)
and paths as typed. Only what the hub never sees stays here, with ``securehpc: error:`` and no audit event: no hub
address or token, a local file (``-f``, ``--upload``, ``--token-file``) that cannot be read or a ``-f`` file that
is not YAML, a hub that cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .client import RunError, RunRefused, RunsClient, request

BAR = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--hub-url", metavar="URL", help="the hub (default: $JUPYTERHUB_URL)")
    connection.add_argument(
        "--token-file", type=Path, metavar="FILE", help="a file with your API token (default: $JUPYTERHUB_API_TOKEN)"
    )
    connection.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    runs = subparsers.add_parser(
        "run", help="headless notebook runs through the hub (papermill in the project's sandbox)"
    ).add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN001
        parser = runs.add_parser(name, help=help_text, parents=[connection])
        parser.set_defaults(handler=lambda args: _guarded(handler, args))
        return parser

    p = verb("submit", _submit, "run a notebook of the project's workspace (or an uploaded one) with parameters")
    p.add_argument("project")
    p.add_argument("notebook", nargs="?",
                   help="its path in the workspace, as JupyterLab shows it (e.g. analysis/sweep.ipynb); always a "
                   "workspace path, never a local file (for that: --upload); sent as typed, the hub refuses one "
                   "with '..', absolute or hidden")  # fmt: skip
    p.add_argument("--upload", type=Path, metavar="FILE",
                   help="instead of NOTEBOOK: a local notebook file, sent with the run (the project policy's "
                   "upload_roles decide; at most 1 MiB: a larger file or one not UTF-8 is refused by the hub from "
                   "its name and size, its content is not sent), written to runs/RUN_ID/input/ in the "
                   "workspace")  # fmt: skip
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter, its value as JSON (0.1, true, \"text\", [1, 2]); sent as typed, the hub "
                   "refuses a value that is not JSON (nan, Infinity, {bad)")  # fmt: skip
    p.add_argument("-r", "--raw-parameter", nargs=2, action="append", default=[], metavar=("NAME", "TEXT"),
                   help="a parameter whose value is the text as given")  # fmt: skip
    p.add_argument("-f", "--parameters-file", type=Path, metavar="FILE",
                   help="parameters from a YAML or JSON file of NAME: VALUE, read here (the hub never sees the "
                   "file: one that cannot be read or is not YAML is a local error); a value that is not JSON "
                   "(a date, .nan) goes as written and the hub refuses it; -p and -r override it")  # fmt: skip
    p.add_argument("--kernel", help="the kernel (default: the notebook's own)")
    p.add_argument("--gpus", help="GPUs (default 0)")
    p.add_argument("--cpus", help="CPUs (default 1)")
    p.add_argument("--memory-gb", help="memory in GB (default: the CPUs' share of the project's maximum)")
    p.add_argument("--time", help="wall time: minutes, or 90m, 2h, 1d (default: the project's maximum)")
    p.add_argument("--wait", action="store_true", help="follow the run to its end; exit 1 unless it succeeded")
    verb("list", _list, "the project's runs").add_argument("project")
    verb("show", _show, "one run: state, progress, how it ended").add_argument("run_id")
    verb("cancel", _cancel, "cancel a queued or running run").add_argument("run_id")
    verb("logs", _logs, "the node launcher's messages about a run (never the notebook's output)").add_argument("run_id")


def _guarded(handler, args: argparse.Namespace) -> int:  # noqa: ANN001
    try:
        return handler(args)
    except RunRefused as error:
        print(f"securehpc: refused: {error}", file=sys.stderr)
        return 1
    except RunError as error:
        print(f"securehpc: error: {error}", file=sys.stderr)
        return 1


def _client(args: argparse.Namespace) -> RunsClient:
    return RunsClient(args.hub_url, token_file=args.token_file)


def _file_parameters(path: Path) -> tuple[dict, dict[str, str]]:
    """``-f FILE``: its JSON values, and the YAML text as written of each value that is not JSON (a date,
    ``.nan``, a set) for the hub to refuse by name. A key that is not text goes as written too (the hub refuses
    the name). RunError (local: the hub never sees the file) for a file that cannot be read or is not YAML."""
    try:
        text = path.read_text()
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror}; nothing was sent to the hub") from None
    except UnicodeDecodeError:
        raise RunError(f"{path} is not YAML (not UTF-8 text); nothing was sent to the hub") from None

    def written(node: yaml.Node) -> str:
        return text[node.start_mark.index : node.end_mark.index]

    values: dict = {}
    texts: dict[str, str] = {}
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if not isinstance(root, yaml.MappingNode):
            raise RunError(f"{path} must hold NAME: VALUE pairs (a YAML mapping); nothing was sent to the hub")
        loader.flatten_mapping(root)  # YAML's merge keys (<<: *defaults), as safe_load does
        for key_node, value_node in root.value:
            key = loader.construct_object(key_node, deep=True)
            name = key if isinstance(key, str) else written(key_node)
            value = loader.construct_object(value_node, deep=True)
            values.pop(name, None)
            texts.pop(name, None)
            try:
                json.dumps(value, allow_nan=False)
                values[name] = value
            except (TypeError, ValueError):
                texts[name] = written(value_node)
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunError(f"{path} is not YAML: {first}; nothing was sent to the hub") from None
    finally:
        loader.dispose()
    return values, texts


def _parameters(args: argparse.Namespace) -> tuple[dict, dict[str, str]]:
    """The parameters as given: JSON values (-f's, -r's text), and -p's VALUE texts for the hub to parse (and
    refuse, audited, when not JSON). -p and -r override -f; -r overrides -p."""
    values, texts = ({}, {}) if args.parameters_file is None else _file_parameters(args.parameters_file)
    for name, text in args.parameter:
        values.pop(name, None)
        texts[name] = text
    for name, text in args.raw_parameter:
        texts.pop(name, None)
        values[name] = text
    return values, texts


def _bar(run: dict) -> str:
    done, total = run.get("cells_done"), run.get("cells_total")
    if not total:
        return run["state"]
    filled = BAR * done // total
    return f"{run['state']} [{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} cells"


def _describe(run: dict) -> str:
    lines = [
        f"run {run['run_id']} of {run['user']} in {run['project']}: {run['notebook']}",
        f"  state: {_bar(run)}" + (f" (Slurm job {run['job_id']})" if run.get("job_id") else ""),
    ]
    if run.get("reason"):
        lines.append(f"  {run['reason']}")
    if run["state"] in ("succeeded", "failed", "timed out", "cancelled") and run.get("executed_notebook"):
        lines.append(f"  outputs in the workspace: {run['executed_notebook']}, {run['log']}")
    return "\n".join(lines)


def _print(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


def _follow(client: RunsClient, run: dict, args: argparse.Namespace) -> dict:
    tty = sys.stderr.isatty() and not getattr(args, "json", False)

    def show(current: dict) -> None:
        if tty:
            print(f"\r{_bar(current):<70}", end="", file=sys.stderr, flush=True)
        elif not getattr(args, "json", False):
            print(f"{run['run_id']}: {_bar(current)}", file=sys.stderr, flush=True)

    ended = client.wait(run["run_id"], on_change=show)
    if tty:
        print(file=sys.stderr)
    return ended


def _submit(args: argparse.Namespace) -> int:
    values, texts = _parameters(args)
    body = request(
        args.project, args.notebook, values, kernel_name=args.kernel, gpus=args.gpus, cpus=args.cpus,
        memory_gb=args.memory_gb, time=args.time, upload=args.upload, parameters_json=texts,
    )  # fmt: skip
    client = _client(args)
    run = client.submit(body)
    if not args.wait:
        _print(args, run, f"run {run['run_id']} {run['state']} (Slurm job {run['job_id']}): "
                          f"`securehpc run show {run['run_id']}`")  # fmt: skip
        return 0
    ended = _follow(client, run, args)
    _print(args, ended, _describe(ended))
    return 0 if ended["state"] == "succeeded" else 1


def _list(args: argparse.Namespace) -> int:
    runs = _client(args).list(args.project)
    rows = [f"{r['run_id']}  {r['user']:<16} {_bar(r):<50} {r['notebook']}" for r in runs]
    _print(args, runs, "\n".join(rows) if rows else f"no runs in {args.project} yet")
    return 0


def _show(args: argparse.Namespace) -> int:
    run = _client(args).show(args.run_id)
    _print(args, run, _describe(run))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    run = _client(args).cancel(args.run_id)
    _print(args, run, f"run {run['run_id']} {run['state']}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    messages = _client(args).logs(args.run_id)
    _print(args, messages, "\n".join(messages) if messages else "no messages from the node yet")
    return 0
