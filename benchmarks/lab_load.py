"""JupyterLab load time with and without the securehpc JupyterLab extension, same browser, alternating.

    .venv/bin/python benchmarks/lab_load.py [--rounds 10] [--user nobody]

Two real ``jupyter server`` subprocesses with the secure server extension (a data scientist under the default
policy, run as ``--user`` so that JupyterLab's files lie in folders the server cannot write, as in a session)
serve the same project; they differ only in JupyterLab's page configuration, which disables the
``jupyter-securehpc-labextension`` plugin on one of them. Debian's chromium (through Playwright) opens ``/lab``
in a fresh browser context each time, alternating the two servers; a load ends when the file browser lists
the project (JupyterLab restored its layout and the contents API answered). Prints the median and spread of
each side and the ratio with/without (goal: within 5%). No timing is asserted anywhere; this only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverext_helpers import TEST_TOKEN, Server, launch, make_projects

EXTENSION = "jupyter-securehpc-labextension"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start(base: Path, user: str, *, with_extension: bool) -> Server:
    account = pwd.getpwnam(user)
    side = base / ("with" if with_extension else "without")
    root = make_projects(side / "data")
    home, config = side / "home", side / "config"
    home.mkdir()
    (config / "labconfig").mkdir(parents=True)
    disabled = {} if with_extension else {EXTENSION: True}
    (config / "labconfig" / "page_config.json").write_text(json.dumps({"disabledExtensions": disabled}))
    for path in [side / "data", home, *(side / "data").rglob("*"), *home.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)
    session = {"project": "cardio", "user": "alice", "role": "data_scientist", "policy": {}}
    return launch(side / "server", root, session=session, audit=side / "audit.log", user=user,
                  config_path=config, extra_env={"HOME": str(home)})  # fmt: skip


def load_seconds(browser: object, server: Server) -> float:
    context = browser.new_context()
    page = context.new_page()
    began = time.perf_counter()
    page.goto(f"http://127.0.0.1:{server.port}/lab?token={TEST_TOKEN}")
    page.wait_for_selector(".jp-DirListing-item[title*='data.csv']", timeout=120_000)
    seconds = time.perf_counter() - began
    context.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--user", default="nobody", help="unprivileged account the servers run as")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="securehpc-labbench-"))
    base.chmod(0o755)
    servers: dict[bool, Server] = {}
    try:
        for side in (True, False):
            servers[side] = start(base, args.user, with_extension=side)
        times: dict[bool, list[float]] = {True: [], False: []}
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for side in (True, False):  # one warm-up load each: the server's first page builds caches
                load_seconds(browser, servers[side])
            for index in range(args.rounds):
                order = (True, False) if index % 2 == 0 else (False, True)
                for side in order:
                    times[side].append(load_seconds(browser, servers[side]))
            browser.close()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    with_ext, without = statistics.median(times[True]), statistics.median(times[False])
    print("| JupyterLab load to the file listing | without extension | with extension | with/without |")
    print("|---|---:|---:|---:|")
    print(
        f"| median of {args.rounds} (min-max) | {without:.2f} s ({min(times[False]):.2f}-{max(times[False]):.2f}) "
        f"| {with_ext:.2f} s ({min(times[True]):.2f}-{max(times[True]):.2f}) | {with_ext / without:.2f} |"
    )


if __name__ == "__main__":
    main()
