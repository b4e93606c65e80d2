"""Benchmark: latency (p50/p95/p99) and throughput of the real BentoML server against the same rows in-process.

For 1-row /score and 100-candidate /rank at concurrency 1, 8 and 32 (closed loop: each client sends its next
request when the last one returns), the script measures
  * server:     `bentoml serve` started by coldcast.serving.server.start_server (prediction logging on), called
                over HTTP with aiohttp from this process;
  * in-process: the same JSON bodies through coldcast.serving.scorer.Scorer in this process (validation,
                batching, scoring, logging, response JSON: everything but HTTP and BentoML), the limit;
  * floor:      with --floor, benchmarks/floor_service.py: the same endpoints, request models and service
                settings answering a canned response of the same size without a model (HTTP + BentoML alone);
  * model:      one bare SavedModel call on the request's rows.
Overhead = server p50 / in-process p50 (latency) and in-process / server throughput. Every variant is up for the
whole run and the cells interleave (per endpoint and concurrency: each variant in turn, the order rotating by
one each sweep), over `--repeats` sweeps whose medians are printed, so background load on a shared machine hits
all variants alike.
Only one variant is driven at a time; the HTTP client shares the machine with the server (its CPU share is
printed). Server variants: workers x serving.model_threads (x serving.batching.max_wait_ms). Both this process
and each server worker freeze their heaps after loading (freeze_heap), so garbage collection of TensorFlow's
objects does not stall them. Uses the default-size model architecture: `--model DIR` or a model trained here on
a small synthetic world (about two minutes). `--endpoints` limits the sweep to one endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pydantic_core

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

WORLD = [
    "world.users=5000",
    "world.shows=600",
    "world.campaigns=120",
    "world.publishers=200",
    "world.impressions=100000",
    "world.days=28",
    "split.validation_days=4",
    "split.test_days=4",
]


def train_model(workdir: Path) -> Path:
    """A default-architecture model (256-128 encoder, 64 towers, 16-dim embeddings) trained briefly."""
    coldcast = [sys.executable, "-m", "coldcast.cli"]
    sets = [a for o in WORLD for a in ("--set", o)]
    print("training a default-size model on a small world (about two minutes) ...", flush=True)
    subprocess.run([*coldcast, "generate", "--out", str(workdir / "world"), *sets], check=True, capture_output=True)
    model = workdir / "model"
    subprocess.run(
        [*coldcast, "train", str(workdir / "world"), "--out", str(model), "--epochs", "1", "--steps-per-epoch", "60"],
        check=True,
        capture_output=True,
    )
    return model


def request_bodies(model_dir: Path, n_candidates: int) -> tuple[list[bytes], list[bytes]]:
    """JSON bodies for 1-row /score and n-candidate /rank, from impressions the spec's world would produce."""
    import pyarrow as pa

    from coldcast.core.spec import load_spec
    from coldcast.core.world import generate

    spec = load_spec(base=model_dir / "spec.yaml", overrides=[*WORLD, "world.impressions=5000", "world.seed=99"])
    with tempfile.TemporaryDirectory() as tmp:
        generate(spec, Path(tmp) / "w")
        import pyarrow.parquet as pq

        files = sorted((Path(tmp) / "w" / "impressions").glob("*.parquet"))
        rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    names = spec.feature_names
    score = [json.dumps({"rows": [{k: r[k] for k in names}]}).encode() for r in rows[:500]]
    groups = spec.serving.request_groups
    rank = []
    for i in range(40):
        first = rows[i]
        body: dict = {g: {f.name: first[f.name] for f in spec.group_features(g)} for g in groups}
        cands = [rows[(500 + i * n_candidates + j) % len(rows)] for j in range(n_candidates)]
        body["candidates"] = [
            {f.name: r[f.name] for f in spec.feature_list if f.group not in groups}
            | {"candidate_id": r["impression_id"], "cost": max(float(r["cost"]), 0.001)}
            for r in cands
        ]
        body["objective"] = "ad_stream"
        rank.append(json.dumps(body).encode())
    return score, rank


def summary(latencies: list[float], seconds: float, rows_per_request: int, errors: int) -> dict:
    ms = np.array(latencies) * 1e3
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "p50": float(np.percentile(ms, 50)) if n else float("nan"),
        "p95": float(np.percentile(ms, 95)) if n else float("nan"),
        "p99": float(np.percentile(ms, 99)) if n else float("nan"),
        "rps": n / seconds,
        "rows_per_s": n * rows_per_request / seconds,
    }


async def closed_loop(call, bodies: list[bytes], concurrency: int, duration: float, warmup: float) -> tuple:
    """`concurrency` clients calling back-to-back; latencies of requests that started after the warm-up."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop = measure_from + duration

    async def client(k: int) -> None:
        nonlocal errors
        i = k
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            ok = await call(bodies[i % len(bodies)])
            t1 = time.perf_counter()
            i += concurrency
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                errors += 0 if ok else 1

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return latencies, errors, time.perf_counter() - measure_from


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_pids(pid: int) -> list[int]:
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class InProcess:
    """The limit: the scorer in this process, on the same JSON bodies, with everything but HTTP and BentoML."""

    name = "in-process"

    def __init__(self, model_dir: Path, log_dir: Path) -> None:
        from coldcast.serving.scorer import Scorer

        self.scorer = Scorer.load(model_dir, model_version="bench", log_dir=log_dir)

    def cell(self, endpoint: str, bodies: list[bytes], rows: int, c: int, args) -> dict:
        schemas = self.scorer.schemas
        model = schemas.ScoreRequest if endpoint == "score" else schemas.RankRequest
        method = self.scorer.score if endpoint == "score" else self.scorer.rank

        async def call(body: bytes) -> bool:
            request = model.model_validate_json(body)
            pydantic_core.to_json(await method(request, request_id="bench", body=body))
            return True

        me = psutil.Process()
        before = sum(me.cpu_times()[:2])
        lat, err, secs = asyncio.run(closed_loop(call, bodies, c, args.duration, args.warmup))
        r = summary(lat, secs, rows, err)
        r["server_cpu"] = (sum(me.cpu_times()[:2]) - before) / (secs + args.warmup)  # this process does it all
        r["client_cpu"] = 0.0
        return r

    def floor_ms(self, endpoint: str, body: bytes) -> float:
        """One bare SavedModel call on a request's rows (median of 200)."""
        schemas = self.scorer.schemas
        if endpoint == "score":
            arrays = schemas.score_arrays(schemas.ScoreRequest.model_validate_json(body).rows)
        else:
            arrays = schemas.rank_arrays(schemas.RankRequest.model_validate_json(body))
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            self.scorer.model.predict_arrays(arrays)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3

    def batching(self) -> dict:
        return {os.getpid(): self.scorer.batcher.stats.as_dict()}

    def close(self) -> None:
        self.scorer.close()


class Server:
    """The real thing: `bentoml serve` via start_server, called over HTTP by aiohttp clients in this process."""

    def __init__(self, model_dir: Path, log_dir: Path, variant: str) -> None:
        from coldcast.serving.server import start_server

        shape, *sets = variant.split("+")
        if "nolog" in sets:  # the same server without prediction logging
            sets.remove("nolog")
            log_dir = None
        parts = shape.split(":")
        workers, threads = int(parts[0]), int(parts[1])
        wait_ms = float(parts[2]) if len(parts) > 2 else None
        self.name = f"w={workers},t={threads}" + (f",b={wait_ms:g}" if wait_ms is not None else "")
        self.name += "".join(f",{s.removeprefix('serving.')}" for s in sets) + (",no log" if log_dir is None else "")
        overrides = [f"serving.model_threads={threads}", *sets]
        if wait_ms is not None:
            overrides.append(f"serving.batching.max_wait_ms={wait_ms}")
        self.server = start_server(model_dir, log_dir=log_dir, workers=workers, timeout=600, overrides=overrides)
        self.pids = server_pids(self.server.pid)

    def cell(self, endpoint: str, bodies: list[bytes], rows: int, c: int, args) -> dict:
        import aiohttp

        url = f"{self.server.url}/{endpoint}"
        headers = {"content-type": "application/json"}
        me = psutil.Process()

        async def run() -> tuple:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

                async def call(body: bytes) -> bool:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        return resp.status == 200

                return await closed_loop(call, bodies, c, args.duration, args.warmup)

        server_cpu, client_cpu = cpu_seconds(self.pids), sum(me.cpu_times()[:2])
        lat, err, secs = asyncio.run(run())
        r = summary(lat, secs, rows, err)
        wall = secs + args.warmup
        r["server_cpu"] = (cpu_seconds(self.pids) - server_cpu) / wall
        r["client_cpu"] = (sum(me.cpu_times()[:2]) - client_cpu) / wall
        return r

    def batching(self) -> dict:
        """Each worker's batching counters, by PID: a new connection per try, until every worker has answered
        (the workers accept connections from one shared socket, so which one answers is up to the kernel)."""
        import urllib.request

        seen: dict = {}
        for _ in range(50):
            with urllib.request.urlopen(self.server.url + "/metadata") as resp:
                meta = json.loads(resp.read())
            seen[meta["processes"]["pid"]] = meta["batching"]
            if len(seen) == meta["processes"]["workers"]:
                break
        return seen

    def close(self) -> None:
        self.server.stop()


class Floor(Server):
    """The floor of HTTP + BentoML: benchmarks/floor_service.py, coldcast's endpoints answering without a model."""

    name = "floor (no model)"

    def __init__(self, model_dir: Path) -> None:
        from coldcast.serving.server import start_server

        # bentoml serve imports the service by module name: benchmarks/ is not a package
        here = str(Path(__file__).resolve().parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        self.server = start_server(model_dir, timeout=600, service="floor_service:Floor")
        self.pids = server_pids(self.server.pid)

    def batching(self) -> dict:
        return {}  # no model, no batches


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A model directory (default: train a default-size one here).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=6.0, help="Measured seconds per cell.")
    parser.add_argument("--warmup", type=float, default=1.5, help="Unmeasured seconds before each cell.")
    parser.add_argument("--repeats", type=int, default=2, help="Sweeps; figures are medians over them.")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--endpoints", nargs="+", choices=["score", "rank"], default=["score", "rank"])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["2:0", "1:0"],
        help="Server variants to compare, workers:threads[:wait][+serving.key=value...] (serving.workers; "
        "serving.model_threads, 0 = cores / workers; serving.batching.max_wait_ms, default: the spec's; then any "
        "serving.* overrides, e.g. 2:0+serving.access_log=true). The default spec is 2:0.",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="Also serve benchmarks/floor_service.py: the same endpoints, request models and service settings "
        "(default spec) answering a canned response without a model, the floor of HTTP + BentoML.",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        os.environ["BENTOML_HOME"] = str(work / "bentoml")
        model_dir = args.model or train_model(work)
        score, rank = request_bodies(model_dir, args.candidates)
        bodies = {"score": (score, 1), "rank": (rank, args.candidates)}
        bodies = {e: bodies[e] for e in args.endpoints}
        load = os.getloadavg()[0]
        print(f"model {model_dir}; {args.duration:g} s per cell after {args.warmup:g} s warm-up", flush=True)
        # every variant stays up for the whole run and the cells interleave, so background load hits all alike
        variants: list = []
        try:
            for variant in args.servers:
                variants.append(Server(model_dir, work / f"log-{len(variants)}", variant))
            if args.floor:
                variants.append(Floor(model_dir))
            variants.insert(0, InProcess(model_dir, work / "log-inproc"))
            # as each server worker does after loading (coldcast.serving.scorer.freeze_heap): this process holds
            # TensorFlow too, and a full collection over its objects would stall the in-process variant and the
            # HTTP client alike for hundreds of milliseconds
            from coldcast.core.spec import load_spec
            from coldcast.serving.scorer import freeze_heap

            freeze_heap(load_spec(base=model_dir / "spec.yaml").serving.gc_threshold)
            runs: dict = {}
            for rep in range(args.repeats):
                # each sweep starts the cells with a different variant: the one that runs right after another
                # may pay for what that one left behind (its log writer still flushing, cold caches)
                order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
                for endpoint, (items, rows) in bodies.items():
                    for c in args.concurrency:
                        for v in order:
                            runs.setdefault((v.name, endpoint, c), []).append(v.cell(endpoint, items, rows, c, args))
                print(f"sweep {rep + 1} of {args.repeats} done", flush=True)
            floors = {e: variants[0].floor_ms(e, items[0]) for e, (items, _) in bodies.items()}
            batching = {v.name: v.batching() for v in variants}
        finally:
            for v in variants:
                v.close()
    results = {k: median_of(v) for k, v in runs.items()}
    names = [v.name for v in variants]
    servers = names[1:]

    print(f"\nload average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"medians of {args.repeats} interleaved sweeps; srv cpu / cli cpu: cores used by the server (in-process:")
    print("this process) and by the HTTP client; rows/core-s = rows/s per server core used")
    width = max(12, *(len(n) for n in names))
    header = (
        f"{'endpoint':<8} {'conc':>4} {'variant':<{width}} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'rows/s':>9} {'errors':>6} {'srv cpu':>7} {'cli cpu':>7} {'rows/core-s':>11}"
    )
    print(header)
    print("-" * len(header))
    for endpoint in bodies:
        for c in args.concurrency:
            for name in names:
                r = results[(name, endpoint, c)]
                per_core = r["rows_per_s"] / r["server_cpu"] if r["server_cpu"] else float("nan")
                cpu = f"{r['server_cpu']:>7.2f} {r['client_cpu']:>7.2f} {per_core:>11,.0f}"
                print(
                    f"{endpoint:<8} {c:>4} {name:<{width}} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f} "
                    f"{r['rps']:>8.0f} {r['rows_per_s']:>9,.0f} {r['errors']:>6.0f} {cpu}"
                )
    print("\noverhead of HTTP + BentoML (server / in-process): p50 latency x, throughput /")
    for name in servers:
        for endpoint in bodies:
            for c in args.concurrency:
                a, b = results[("in-process", endpoint, c)], results[(name, endpoint, c)]
                print(
                    f"  {name} {endpoint:<5} c={c:<3} latency x{b['p50'] / a['p50']:.2f}  "
                    f"throughput /{a['rps'] / b['rps']:.2f}"
                )
    print(f"\nbare model call (median ms): {floors}")
    for name, workers in batching.items():
        for pid, stats in workers.items():
            print(f"{name} pid {pid} batching: {stats}")
        if len(workers) > 1:
            split = " / ".join(f"{s['requests']:,}" for s in workers.values())
            print(f"{name}: requests per worker over the whole run {split}")
    top = max(args.concurrency)
    for name in servers:
        errors = sum(sum(r["errors"] for r in v) for k, v in runs.items() if k[0] == name)
        p99 = results[(name, "rank", 8)]["p99"] if 8 in args.concurrency else float("nan")
        sat = results[(name, "rank", top)]["rows_per_s"]
        print(
            f"targets {name}: /rank c=8 p99 {p99:.1f} ms (< 25), /rank c={top} {sat:,.0f} candidates/s "
            f"(>= 20,000), errors {errors} (0)"
        )


if __name__ == "__main__":
    main()
