"""Request rates with the securehpc server extension against stock jupyter-server, same files, one run.

    .venv/bin/python benchmarks/serverext_requests.py [--requests 2000] [--listing-requests 200] [--rounds 3]

Two real ``jupyter server`` subprocesses on loopback ports serve the same root folder: one stock (the
extension switched off on the command line), one with the extension as a data scientist under the default
policy. Workloads, each at concurrency 8 with aiohttp and token auth in the Authorization header:

- small file: ``GET /api/contents/small.txt?type=file&format=text`` (1 KiB of text);
- listing: ``GET /api/contents/listing?type=directory`` of a folder with 200 notebooks;
- notebook save: ``PUT /api/contents/saveN.ipynb`` of a small notebook (one file per worker).

Rounds alternate stock and extension so that drift of the machine hits both. Prints a Markdown table:
requests per second (all rounds pooled), p50 and p99 latency, and the ratio extension/stock (>= 0.95 is
the goal). No timing is asserted anywhere; this only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

    def add(self, other: Sample) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def make_files(root: Path, listing: int) -> None:
    root.mkdir(parents=True)
    (root / "small.txt").write_text(("0123456789abcde\n" * 64)[:1024])
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
                request = session.get(f"{base}/api/contents/small.txt?type=file&format=text", headers=headers)
            elif workload == "listing (200)":
                request = session.get(f"{base}/api/contents/listing?type=directory", headers=headers)
            else:
                request = session.put(f"{base}/api/contents/save{worker}.ipynb", data=body, headers=headers)
            async with request as response:
                await response.read()
                if response.status != 200:
                    sample.errors += 1
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
        for server in servers.values():  # warm-up: caches, first imports, connection setup
            await run(server, workload, max(CONCURRENCY, count // 20))
        for round_index in range(rounds):
            order = list(servers.items()) if round_index % 2 == 0 else list(reversed(servers.items()))
            for name, server in order:
                results[workload][name].add(await run(server, workload, count))
    return results


def table(results: dict) -> str:
    lines = [
        "| workload (concurrency 8) | stock req/s | extension req/s | ratio "
        "| stock p50 / p99 ms | extension p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for workload, by_server in results.items():
        stock, ext = by_server["stock"], by_server["extension"]
        ratio = ext.rate / stock.rate if stock.rate else float("nan")
        lines.append(
            f"| {workload} | {stock.rate:.0f} | {ext.rate:.0f} | {ratio:.2f} | "
            f"{stock.percentile(0.5):.1f} / {stock.percentile(0.99):.1f} | "
            f"{ext.percentile(0.5):.1f} / {ext.percentile(0.99):.1f} |"
        )
    errors = {f"{w}/{s}": v.errors for w, b in results.items() for s, v in b.items() if v.errors}
    if errors:
        lines.append(f"\nnon-200 answers: {errors}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round for small file and save")
    parser.add_argument("--listing-requests", type=int, default=200, help="requests per round for the listing")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and workload")
    args = parser.parse_args()
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
        finally:
            for server in servers.values():
                server.stop()
    print(table(results))


if __name__ == "__main__":
    main()
