"""Benchmark: how keep-alive connections spread over BentoML's workers, with and without connection recycling.

Each run starts a fresh `bentoml serve` (coldcast.serving.server.start_server, prediction logging on) with one
`serving.max_requests_per_connection` value, drives 100-candidate /rank from `--concurrency` closed-loop aiohttp
clients that open their connections together, as a client's pool does when it starts, and asks every worker
how many requests it served. Runs alternate between the values (`--values`, default 100, the spec's default,
and 0, never close), `--pairs` times, so drifting background load hits both alike; per-run figures, medians
and the ratio of the medians are printed. bench_serving.py keeps its servers up for the whole run, so its
cells do not start from the idle, freshly started workers this measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

# run as a script, benchmarks/ is on sys.path: the serving benchmark's client and helpers are shared
from bench_serving import Server, request_bodies, train_model


def run_once(model_dir: Path, work: Path, value: int, bodies: list[bytes], args: argparse.Namespace) -> dict:
    """One fresh server with this recycling setting, driven once; its figures and requests per worker."""
    server = Server(model_dir, work / f"log-{value}", f"{args.workers}:0+serving.max_requests_per_connection={value}")
    try:
        r = server.cell("rank", bodies, args.candidates, args.concurrency, args)
        r["per_worker"] = sorted((b["requests"] for b in server.batching().values()), reverse=True)
        return r
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A model directory (default: train a default-size one here).")
    parser.add_argument("--values", type=int, nargs="+", default=[100, 0], help="max_requests_per_connection")
    parser.add_argument("--pairs", type=int, default=5, help="Runs per value, alternating.")
    parser.add_argument("--workers", type=int, default=2, help="serving.workers (the spec's default: 2).")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--duration", type=float, default=8.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured seconds before each.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-connections-") as tmp:
        work = Path(tmp)
        os.environ["BENTOML_HOME"] = str(work / "bentoml")
        model_dir = args.model or train_model(work)
        _, bodies = request_bodies(model_dir, args.candidates)
        load = os.getloadavg()[0]
        runs: dict[int, list[dict]] = {v: [] for v in args.values}
        print(f"/rank, {args.candidates} candidates, concurrency {args.concurrency}, {args.duration:g} s per run")
        columns = f"{'value':>5} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} {'srv cpu':>7} {'errors':>6}"
        print(columns + "  requests per worker")
        for _ in range(args.pairs):
            for value in args.values:
                r = run_once(model_dir, work, value, bodies, args)
                runs[value].append(r)
                split = " / ".join(f"{n:,}" for n in r["per_worker"])
                print(
                    f"{value:>5} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['rps']:>6.0f} {r['server_cpu']:>7.2f} "
                    f"{r['errors']:>6}  {split}",
                    flush=True,
                )
    print(f"\nload average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    medians = {}
    for value, rs in runs.items():
        idle = sum(1 for r in rs if min(r["per_worker"]) == 0)
        m = {k: statistics.median(r[k] for r in rs) for k in ("p50", "p99", "rps", "server_cpu")}
        medians[value] = m
        print(
            f"max_requests_per_connection={value}: median p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, "
            f"{m['rps']:.0f} req/s, {m['server_cpu']:.2f} cores; runs with an idle worker {idle} of {len(rs)}"
        )
    if len(args.values) == 2:
        a, b = (medians[v] for v in args.values)
        print(
            f"ratio {args.values[0]} / {args.values[1]}: p99 x{a['p99'] / b['p99']:.2f}, "
            f"throughput x{a['rps'] / b['rps']:.2f}"
        )


if __name__ == "__main__":
    main()
