"""Reading a dataset inside the sandbox (gocryptfs over FUSE, bubblewrap) against the same plaintext outside.

Run as root from the checkout (it drops the page cache and mounts FUSE inside bubblewrap):

    .venv/bin/python benchmarks/sandbox_read.py [--large-mib 2048] [--small-files 10000] [--repeat 3]

Workloads (``read_workload.py``, the same code inside and outside): one large file read sequentially, 4 KiB
files read one by one, and an "analysis" pass (read every file of the dataset and compute digests over
it). Each runs cold (page cache dropped) and warm (run again right after). Inside, the mount options are
varied to show what each buys: gocryptfs defaults, ``-kernel_cache``, ``-kernel_cache`` with the background
prefetch into the page cache (what the launcher does for datasets beyond the staging budget), and staging
into memory (within the budget). Also measured: the sandbox's start cost (``true`` in the sandbox:
bubblewrap twice, gocryptfs mounts, staging), and each cold run as a whole, from starting the sandbox to
the program's end, against the plain program's whole run (for staging, the honest figure for a job that
reads its data once). The key handling is the launcher's own code, with keys made
here instead of unwrapped from OpenBao (that round trip is timed by the tests' real runs, not here).
Prints Markdown tables with ratios (plain time / sandbox time: 1.0 means as fast as plain) and writes
``benchmarks/results/sandbox_read.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import drop_caches, make_data

from jupyter_securehpc.node.launcher import PreparedSession, sandbox_command
from jupyter_securehpc.node.sandbox import DATASET_OPTIONS, mounts_for, tree_size
from jupyter_securehpc.projects.roles import Role
from jupyter_securehpc.session.spec import SessionSpec
from jupyter_securehpc.stores.gocryptfs import init_store
from jupyter_securehpc.stores.importer import import_folder
from jupyter_securehpc.vocabulary import DatasetRef

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "read_workload.py"
RESULTS = HERE / "results"
DATASET = "/datasets/bench/data"
# name -> (gocryptfs options, staged into memory at start, prefetched into the page cache at start)
VARIANTS = {
    "gocryptfs defaults": ((), False, False),
    "-kernel_cache": (DATASET_OPTIONS, False, False),
    "-kernel_cache + prefetch (launcher default)": (DATASET_OPTIONS, False, True),
    "staged in memory (launcher, within budget)": (DATASET_OPTIONS, True, False),
}


def run_plain(mode: str, source: Path) -> float:
    out = subprocess.run([sys.executable, str(WORKLOAD), mode, str(source)], capture_output=True, check=True)
    return json.loads(out.stdout)["seconds"]


BENCH_USER = "securehpc-bench"


def bench_user() -> pwd.struct_passwd:
    """The unprivileged account the sandbox runs as (the launcher refuses root), created if missing."""
    try:
        return pwd.getpwnam(BENCH_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", BENCH_USER],
                       check=True)  # fmt: skip
        return pwd.getpwnam(BENCH_USER)


class Sandbox:
    """Runs programs in the launcher's sandbox over the benchmark's stores, as the benchmark user."""

    def __init__(self, store_root: Path, keys: dict[str, bytes], user: pwd.struct_passwd) -> None:
        self.user = user
        self.spec = SessionSpec(
            project="bench",
            user=user.pw_name,
            role=Role.DATA_SCIENTIST,
            store_root=store_root,
            vault_addr="http://127.0.0.1:1",  # not contacted: keys are given
            datasets=(DatasetRef("bench", "data"),),
        )
        self.keys = keys

    def run(self, program: list[str], variant: tuple[tuple[str, ...], bool, bool]) -> bytes:
        options, staged, prefetch = variant
        workspace, dataset = mounts_for(self.spec)
        stage_bytes = tree_size(dataset.host_cipher) if staged else 0
        mounts = [
            workspace,
            dataclasses.replace(dataset, options=options, stage_bytes=stage_bytes, prefetch=prefetch),
        ]
        session = PreparedSession(self.spec, mounts, dict(self.keys))
        argv, fds = sandbox_command(session, program, uid=self.user.pw_uid)
        try:
            process = subprocess.Popen(
                argv, pass_fds=fds, stdout=subprocess.PIPE, user=self.user.pw_uid, group=self.user.pw_gid,
                extra_groups=[],
            )  # fmt: skip
        finally:
            for fd in fds:
                os.close(fd)
        out, _ = process.communicate(timeout=3600)
        if process.returncode != 0:
            raise RuntimeError(f"sandbox run failed ({process.returncode})")
        return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=2048)
    parser.add_argument("--small-files", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="a disk-backed folder for the data")
    parser.add_argument("--only", action="append", help="run the variants whose name contains this (repeatable)")
    args = parser.parse_args()
    if args.only:
        for name in [name for name in VARIANTS if not any(part in name for part in args.only)]:
            del VARIANTS[name]

    work = Path(tempfile.mkdtemp(prefix="securehpc-bench-", dir=args.dir))
    results: dict = {"large_mib": args.large_mib, "small_files": args.small_files}
    results.update(runs={}, wall={}, reading={})
    try:
        source = work / "source"
        make_data(source, args.large_mib, args.small_files)
        store_root = work / "stores"
        keys = {"/project": secrets.token_bytes(32), DATASET: secrets.token_bytes(32)}
        (store_root / "projects" / "bench" / "datasets").mkdir(parents=True)
        init_store(store_root / "projects" / "bench" / "workspace", keys["/project"])
        import_folder(source, store_root / "projects" / "bench" / "datasets" / "data", keys[DATASET])
        user = bench_user()
        work.chmod(0o755)
        for path in [store_root, *store_root.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        sandbox = Sandbox(store_root, keys, user)

        for variant_name, variant in VARIANTS.items():
            starts = []
            for _ in range(args.repeat):
                drop_caches()
                begin = time.perf_counter()
                sandbox.run(["true"], variant)
                starts.append(time.perf_counter() - begin)
            results.setdefault("start_seconds", {})[variant_name] = median(starts)

        for mode in ("large", "small", "analysis"):
            for cache in ("cold", "warm"):
                plain, plain_wall = [], []
                for _ in range(args.repeat):
                    if cache == "cold":
                        drop_caches()
                    else:
                        run_plain(mode, source)
                    begin = time.perf_counter()
                    plain.append(run_plain(mode, source))
                    plain_wall.append(time.perf_counter() - begin)
                results["runs"][f"{mode}/{cache}/plain"] = median(plain)
                results["wall"][f"{mode}/{cache}/plain"] = median(plain_wall)
                for variant, options in VARIANTS.items():  # options: (gocryptfs options, staged, prefetch)
                    inside, wall, reading = [], [], []
                    program = ["python3", str(WORKLOAD), mode, DATASET]
                    for _ in range(args.repeat):
                        if cache == "cold":
                            drop_caches()
                            begin = time.perf_counter()
                            report = json.loads(sandbox.run(program, options))
                            wall.append(time.perf_counter() - begin)
                            inside.append(report["seconds"])
                            reading.append(report.get("reading_seconds", 0.0))
                        else:
                            # Warm: read twice in one sandbox, time the second (the first fills the cache).
                            twice = ["sh", "-c", f"{' '.join(program)} >/dev/null && {' '.join(program)}"]
                            inside.append(json.loads(sandbox.run(twice, options))["seconds"])
                    results["runs"][f"{mode}/{cache}/{variant}"] = median(inside)
                    if wall:
                        results["wall"][f"{mode}/{cache}/{variant}"] = median(wall)
                        results["reading"][f"{mode}/{cache}/{variant}"] = median(reading)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sandbox_read.json").write_text(json.dumps(results, indent=2) + "\n")
    runs = results["runs"]
    labels = {
        "large": f"one {args.large_mib} MiB file",
        "small": f"{args.small_files} files of 4 KiB",
        "analysis": "analysis (read all + digests)",
    }
    print(f"| workload | cache | plain (s) | {' | '.join(VARIANTS)} |")
    print(f"|---|---|---|{'---|' * len(VARIANTS)}")
    for mode in ("large", "small", "analysis"):
        for cache in ("cold", "warm"):
            plain = runs[f"{mode}/{cache}/plain"]
            cells = [
                f"{runs[f'{mode}/{cache}/{v}']:.2f} s ({plain / runs[f'{mode}/{cache}/{v}']:.2f}x)" for v in VARIANTS
            ]
            print(f"| {labels[mode]} | {cache} | {plain:.2f} | {' | '.join(cells)} |")
    wall = results["wall"]
    print(
        f"\n| whole run, cold cache (start the sandbox, mount, stage, then read) | plain (s) | {' | '.join(VARIANTS)} |"
    )
    print(f"|---|---|{'---|' * len(VARIANTS)}")
    for mode in ("large", "small", "analysis"):
        plain = wall[f"{mode}/cold/plain"]
        cells = [f"{wall[f'{mode}/cold/{v}']:.2f} s ({plain / wall[f'{mode}/cold/{v}']:.2f}x)" for v in VARIANTS]
        print(f"| {labels[mode]} | {plain:.2f} | {' | '.join(cells)} |")
    print("\n| sandbox start, cold cache (bubblewrap x2, gocryptfs mounts, staging; `true`) | seconds |\n|---|---|")
    for name, seconds in results["start_seconds"].items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
