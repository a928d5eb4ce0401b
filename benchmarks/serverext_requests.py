"""Request rates with the securehpc server extension against stock jupyter-server, same files, one run.

    .venv/bin/python benchmarks/serverext_requests.py [--requests 2000] [--listing-requests 200] [--rounds 3]

Two real ``jupyter server`` subprocesses on loopback ports serve the same root folder: one stock (the
extension switched off on the command line), one with the extension as a data scientist under the default
policy. Workloads, each at concurrency 8 with aiohttp and token auth in the Authorization header:

- small file: ``GET /api/contents/small.py?type=file&format=text`` (1 KiB of Python: a code file, which a data
  scientist opens as text under the default policy, unlike a data file such as ``.txt``);
- listing: ``GET /api/contents/listing?type=directory`` of a folder with 200 notebooks;
- notebook save: ``PUT /api/contents/saveN.ipynb`` of a small notebook (one file per worker).

Rounds alternate stock and extension so that drift of the machine hits both. Prints a Markdown table:
requests per second (all rounds pooled), p50 and p99 latency, the ratio extension/stock (>= 0.95 is the
goal), the median and range of the ratios of each round's pair of runs (on a shared machine, a burst of
other work hits one run of a pair, not both), and the load average before and after. Every answer must
be 200: otherwise the run measured refusals or errors, and the script exits with status 1 saying which
workload and server, without a table. No timing is asserted anywhere; this only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverext_helpers import Server, launch, notebook_json

CONCURRENCY = 8


@dataclass
class Sample:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: set[int] = field(default_factory=set)
    first_error: str = ""  # the first refused answer's body (the guard's reason), cut short
    round_rates: list[float] = field(default_factory=list)  # one per timed round

    def add(self, other: Sample) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        self.statuses |= other.statuses
        self.first_error = self.first_error or other.first_error
        if other.latencies:
            self.round_rates.append(other.rate)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def make_files(root: Path, listing: int) -> None:
    root.mkdir(parents=True)
    (root / "small.py").write_text(("x = '0123456789a'\n" * 64)[:1024])
    (root / "listing").mkdir()
    for index in range(listing):
        (root / "listing" / f"nb{index:03}.ipynb").write_text(json.dumps(notebook_json(f"entry {index}")))
    for worker in range(CONCURRENCY):
        (root / f"save{worker}.ipynb").write_text(json.dumps(notebook_json("start")))


async def run(server: Server, workload: str, count: int) -> Sample:
    headers = {"Authorization": f"token {server.token}"}
    base = f"http://127.0.0.1:{server.port}"
    body = json.dumps({"type": "notebook", "format": "json", "content": notebook_json("saved")})
    sample = Sample()
    remaining = count

    async def one(session: aiohttp.ClientSession, worker: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            if workload == "small file":
                request = session.get(f"{base}/api/contents/small.py?type=file&format=text", headers=headers)
            elif workload == "listing (200)":
                request = session.get(f"{base}/api/contents/listing?type=directory", headers=headers)
            else:
                request = session.put(f"{base}/api/contents/save{worker}.ipynb", data=body, headers=headers)
            async with request as response:
                answer = await response.read()
                if response.status != 200:
                    sample.errors += 1
                    sample.statuses.add(response.status)
                    sample.first_error = sample.first_error or answer[:300].decode("utf-8", "replace")
            sample.latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session, worker) for worker in range(CONCURRENCY)))
        sample.seconds = time.perf_counter() - started
    return sample


async def measure(servers: dict[str, Server], counts: dict[str, int], rounds: int) -> dict:
    results: dict[str, dict[str, Sample]] = {}
    for workload, count in counts.items():
        results[workload] = {name: Sample() for name in servers}
        for name, server in servers.items():  # warm-up: caches, first imports, connection setup
            warm_up = await run(server, workload, max(CONCURRENCY, count // 20))
            warm_up.seconds, warm_up.latencies = 0.0, []  # only its errors count
            results[workload][name].add(warm_up)
        stop_on_failures(results)  # a workload that is refused measures refusals: no point in timing it
        for round_index in range(rounds):
            order = list(servers.items()) if round_index % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                results[workload][name].add(await run(server, workload, count))
        stop_on_failures(results)
    return results


class BenchmarkFailed(Exception):
    """Some answer was not 200: the figures would not measure what the table says."""


def stop_on_failures(results: dict) -> None:
    problems = failures(results)
    if problems:
        raise BenchmarkFailed("\n".join(problems))


def table(results: dict) -> str:
    lines = [
        "| workload (concurrency 8) | stock req/s | extension req/s | ratio | ratio per round, median (min-max) "
        "| stock p50 / p99 ms | extension p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, by_server in results.items():
        stock, ext = by_server["stock"], by_server["extension"]
        ratio = ext.rate / stock.rate if stock.rate else float("nan")
        # Each round's two runs follow each other: their ratio is less exposed to the machine's drift.
        paired = sorted(e / s for e, s in zip(ext.round_rates, stock.round_rates, strict=True) if s)
        per_round = f"{statistics.median(paired):.2f} ({paired[0]:.2f}-{paired[-1]:.2f})" if paired else "-"
        lines.append(
            f"| {workload} | {stock.rate:.0f} | {ext.rate:.0f} | {ratio:.2f} | {per_round} | "
            f"{stock.percentile(0.5):.1f} / {stock.percentile(0.99):.1f} | "
            f"{ext.percentile(0.5):.1f} / {ext.percentile(0.99):.1f} |"
        )
    return "\n".join(lines)


def failures(results: dict) -> list[str]:
    """One line per workload and server that got an answer other than 200 (warm-up included)."""
    return [
        f"{workload} / {name}: {sample.errors} answers not 200 (status "
        f"{', '.join(map(str, sorted(sample.statuses)))}; first: {sample.first_error})"
        for workload, by_server in results.items()
        for name, sample in by_server.items()
        if sample.errors
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round for small file and save")
    parser.add_argument("--listing-requests", type=int, default=200, help="requests per round for the listing")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and workload")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="securehpc-bench-") as tmp:
        base = Path(tmp)
        root = base / "projA"
        make_files(root, 200)
        session = {"project": "bench", "user": "alice", "role": "data_scientist", "policy": {}}
        servers: dict[str, Server] = {}
        try:
            servers["stock"] = launch(base / "stock", root, extension=False)
            servers["extension"] = launch(base / "ext", root, session=session, audit=base / "audit.log")
            counts = {
                "small file": args.requests,
                "listing (200)": args.listing_requests,
                "notebook save": args.requests // 2,
            }
            results = asyncio.run(measure(servers, counts, args.rounds))
        except BenchmarkFailed as failed:
            print(f"benchmark failed: every answer must be 200, but\n{failed}", file=sys.stderr)
            sys.exit(1)
        finally:
            for server in servers.values():
                server.stop()
    load_after = os.getloadavg()
    print(table(results))
    print(f"\nload average (1, 5, 15 min): before {_load(load_before)}, after {_load(load_after)}")


def _load(values: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    main()
