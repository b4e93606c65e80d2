"""Benchmark: synthetic world generation rows/s and peak memory at 1M and 5M impressions (flat memory check)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in a fresh interpreter per measurement so each peak RSS is that run's own.
CHILD = """
import json, resource, sys, time
from coldcast.core.spec import load_spec
from coldcast.core.world import generate
spec = load_spec(overrides=[f"world.impressions={int(sys.argv[1])}"])
t = time.perf_counter()
summary = generate(spec, sys.argv[2])
elapsed = time.perf_counter() - t
print(json.dumps({"rows": summary.rows, "seconds": elapsed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(rows: int, workdir: Path, run: int) -> dict:
    out = workdir / f"world-{rows}-{run}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[int, list[dict]] = {n: [] for n in args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        # interleave sizes so machine noise hits both alike
        for run in range(args.repeats):
            for n in args.rows:
                r = measure(n, Path(tmp), run)
                results[n].append(r)
                print(
                    f"run {run + 1}: {n:>9,} rows  {r['seconds']:6.1f} s  {r['rows'] / r['seconds']:>9,.0f} rows/s"
                    f"  peak {r['peak_rss_mb']:6.0f} MB",
                    flush=True,
                )
    print("\nmedians (default spec: 50k users, 5k shows, 56 days)")
    print(f"{'impressions':>12} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}")
    base = None
    for n in args.rows:
        secs = statistics.median(r["seconds"] for r in results[n])
        peak = statistics.median(r["peak_rss_mb"] for r in results[n])
        base = base or (n, secs, peak)
        print(f"{n:>12,} {secs:>8.1f} {n / secs:>10,.0f} {peak:>12.0f}")
    for n in args.rows[1:]:
        peak = statistics.median(r["peak_rss_mb"] for r in results[n])
        secs = statistics.median(r["seconds"] for r in results[n])
        print(
            f"ratio {n:,} / {base[0]:,}: rows x{n / base[0]:.1f}, time x{secs / base[1]:.2f}, "
            f"peak memory x{peak / base[2]:.2f}"
        )


if __name__ == "__main__":
    main()
