"""Dataset import (encrypt + verify through gocryptfs in a sandbox) against a plain ``cp -r``.

Run as root (the import mounts FUSE inside bubblewrap), from the checkout:

    .venv/bin/python benchmarks/import_throughput.py [--large-mib 512] [--small-files 2000] [--repeat 3]

Both sides copy the same generated data from the same source folder into a fresh target on the same
file system, with the page cache dropped before each run (cold reads of the source, as for a real
import). The import does more than ``cp``: it hashes while copying, encrypts, fsyncs every file, then
reads everything back through a second mount to verify the manifest. Prints a Markdown table of medians
and the ratio import/cp (throughput: higher is better), and writes the raw figures to
``benchmarks/results/import_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import drop_caches, make_data

from jupyter_securehpc.stores.importer import import_folder

RESULTS = Path(__file__).parent / "results"


def timed(action) -> float:
    drop_caches()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where to put the data")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="securehpc-bench-", dir=args.dir))
    try:
        source = work / "source"
        total = make_data(source, args.large_mib, args.small_files)
        cp_times, import_times = [], []
        for run in range(args.repeat):
            cp_target = work / f"cp{run}"
            cp_argv = ["cp", "-r", str(source), str(cp_target)]
            cp_times.append(timed(lambda: subprocess.run(cp_argv, check=True)))  # noqa: B023
            shutil.rmtree(cp_target)
            key = secrets.token_bytes(32)
            store = work / f"store{run}"
            import_times.append(timed(lambda: import_folder(source, store, key)))  # noqa: B023
            shutil.rmtree(store)
        cp_median, import_median = statistics.median(cp_times), statistics.median(import_times)
        mib = total / (1 << 20)
        result = {
            "data_mib": round(mib, 1),
            "files": args.small_files + 1,
            "cp_seconds": cp_times,
            "import_seconds": import_times,
            "cp_mib_s": round(mib / cp_median, 1),
            "import_mib_s": round(mib / import_median, 1),
            "ratio_import_over_cp": round(cp_median / import_median, 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| data | cp -r | dataset import | ratio (import/cp throughput) |\n|---|---|---|---|")
    print(
        f"| {result['data_mib']} MiB in {result['files']} files | {result['cp_mib_s']} MiB/s "
        f"| {result['import_mib_s']} MiB/s | {result['ratio_import_over_cp']}x |"
    )


if __name__ == "__main__":
    main()
