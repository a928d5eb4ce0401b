"""JupyterLab load time with and without the securehpc JupyterLab extension, same browser, alternating.

    .venv/bin/python benchmarks/lab_load.py [--rounds 20] [--user nobody]

Two real ``jupyter server`` subprocesses with the secure server extension (a data scientist under the default
policy, run as ``--user`` so that JupyterLab's files lie in folders the server cannot write, as in a session)
serve the same project; they differ only in JupyterLab's page configuration, which disables the
``jupyter-securehpc-labextension`` plugin on one of them. Debian's chromium (through Playwright) opens ``/lab``
in a fresh browser context each time, alternating the two servers; a load ends when the file browser lists
the project (JupyterLab restored its layout and the contents API answered). Two clocks: the wall clock from
the new context to the listing (what the README's first run reported), and the page's own clock from its
navigation to the listing (``performance.now()`` when the listing appears: without the browser's context
set-up). Prints the median and spread of each side and the ratio with/without (goal: within 5%), the load
average before and after (the machine may be shared), and writes ``benchmarks/results/lab_load.json``. No
timing is asserted anywhere; this only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
LISTING = ".jp-DirListing-item[title*='data.csv']"
RESULTS = Path(__file__).parent / "results"
# The page's clock when the listing first appears (before the page's own scripts run).
WATCH_LISTING = (
    "new MutationObserver((_, observer) => { if (document.querySelector("
    + json.dumps(LISTING)
    + ")) { window.__listedAt = performance.now(); observer.disconnect(); } })"
    ".observe(document, {subtree: true, childList: true});"
)


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


def load_seconds(browser: object, server: Server) -> tuple[float, float]:
    """Seconds from a new context to the listing (wall clock), and from the page's navigation to it."""
    context = browser.new_context()
    context.add_init_script(WATCH_LISTING)
    page = context.new_page()
    began = time.perf_counter()
    page.goto(f"http://127.0.0.1:{server.port}/lab?token={TEST_TOKEN}")
    page.wait_for_selector(LISTING, timeout=120_000)
    seconds = time.perf_counter() - began
    in_page = page.wait_for_function("window.__listedAt").json_value() / 1000
    context.close()
    return seconds, in_page


def row(label: str, rounds: int, with_ext: list[float], without: list[float]) -> str:
    a, b = statistics.median(with_ext), statistics.median(without)
    return (
        f"| {label}, median of {rounds} (min-max) | {b:.2f} s ({min(without):.2f}-{max(without):.2f}) "
        f"| {a:.2f} s ({min(with_ext):.2f}-{max(with_ext):.2f}) | {a / b:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--user", default="nobody", help="unprivileged account the servers run as")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="securehpc-labbench-"))
    base.chmod(0o755)
    servers: dict[bool, Server] = {}
    load_before = os.getloadavg()
    try:
        for side in (True, False):
            servers[side] = start(base, args.user, with_extension=side)
        wall: dict[bool, list[float]] = {True: [], False: []}
        page: dict[bool, list[float]] = {True: [], False: []}
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for side in (True, False):  # one warm-up load each: the server's first page builds caches
                load_seconds(browser, servers[side])
            for index in range(args.rounds):
                order = (True, False) if index % 2 == 0 else (False, True)
                for side in order:
                    seconds, in_page = load_seconds(browser, servers[side])
                    wall[side].append(seconds)
                    page[side].append(in_page)
            browser.close()
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()
    print("| JupyterLab load to the file listing | without extension | with extension | with/without |")
    print("|---|---:|---:|---:|")
    print(row("wall clock from a new context", args.rounds, wall[True], wall[False]))
    print(row("in the page, from its navigation", args.rounds, page[True], page[False]))
    loads = ", ".join(f"{when} {' / '.join(f'{value:.2f}' for value in load)}" for when, load in
                      (("before", load_before), ("after", load_after)))  # fmt: skip
    print(f"load average (1 / 5 / 15 min): {loads}; {os.cpu_count()} cores")
    RESULTS.mkdir(exist_ok=True)
    results = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "rounds": args.rounds,
        "load_average": {"before": load_before, "after": load_after},
        "seconds": {
            "wall_clock": {"with_extension": wall[True], "without_extension": wall[False]},
            "in_page": {"with_extension": page[True], "without_extension": page[False]},
        },
        "ratio_of_medians": {
            "wall_clock": statistics.median(wall[True]) / statistics.median(wall[False]),
            "in_page": statistics.median(page[True]) / statistics.median(page[False]),
        },
    }
    (RESULTS / "lab_load.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
