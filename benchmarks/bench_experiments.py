"""Benchmark: experiment cells on the default world, one worker with all threads vs two workers with one each.

Both layouts run the same pair of cells (the promotions-only baseline and the joint model, a short fixed step
budget) back to back in one invocation, so the ratio is taken on the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from coldcast.evaluation.experiments import Protocol, plan, run_cells


def run(world: Path, workers: int, threads: int | None, epochs: int, steps: int) -> tuple[float, list[float]]:
    protocol = Protocol(
        experiments=["abtest"], seeds=[1], epochs=epochs, steps_per_epoch=steps, workers=workers, threads=threads
    )
    with tempfile.TemporaryDirectory(prefix="coldcast-bench-") as tmp:
        p = plan(protocol, Path(tmp), world, 0.7)
        started = time.perf_counter()
        results = run_cells(p, log=lambda _: None)
        wall = time.perf_counter() - started
    rates = [r["examples_per_second"] for r in results.values()]
    return wall, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("world", type=Path, help="dataset folder, e.g. runs/default-world")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    layouts = {"1 worker x all threads": (1, None), "2 workers x 1 thread": (2, 1)}
    walls: dict[str, list[float]] = {k: [] for k in layouts}
    for _ in range(args.repeats):
        for name, (workers, threads) in layouts.items():
            wall, rates = run(args.world, workers, threads, args.epochs, args.steps)
            walls[name].append(wall)
            print(f"{name}: 2 cells in {wall:.0f} s; training examples/s per cell {[round(r) for r in rates]}")
    base = statistics.median(walls["1 worker x all threads"])
    for name, values in walls.items():
        print(f"{name}: median {statistics.median(values):.0f} s, {base / statistics.median(values):.2f}x throughput")


if __name__ == "__main__":
    main()
