"""Benchmark: `validate_dataset` rows/s on a generated world, GX given its trimmed batch vs the whole frame.

Variants, interleaved run by run so machine noise hits both alike:
  * current:     the code as it is: Great Expectations validates `ExpectationRunner.batch(df)`, the columns the
                 suite reads with each list column as 0.0 / NaN;
  * whole frame: the same, but GX gets the shard's whole frame (lists, `true_*` columns), as before that change.
Both write the validated dataset (valid rows, quarantine, Data Docs) to a temporary folder, as `coldcast validate`
does. The world has the default density (about 18,000 impressions per daily shard) over fewer days.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from coldcast.core.spec import load_spec
from coldcast.core.validation import ExpectationRunner, validate_dataset
from coldcast.core.world import generate


def run(variant: str, world: Path, out: Path) -> float:
    """Seconds for one validate_dataset of `world` under `variant`."""
    spec = load_spec(base=world / "spec.yaml")
    trimmed = ExpectationRunner.batch
    if variant == "whole frame":

        def whole(self: ExpectationRunner, df: pd.DataFrame) -> pd.DataFrame:
            return df

        ExpectationRunner.batch = whole  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        report = validate_dataset(world, spec, out)
        seconds = time.perf_counter() - t
    finally:
        ExpectationRunner.batch = trimmed  # type: ignore[method-assign]
    assert report.rows_valid == report.rows_in, "the generated world should be clean"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=16)
    parser.add_argument("--impressions", type=int, default=290_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = ["current", "whole frame"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        sets = [f"world.days={args.days}", f"world.impressions={args.impressions}"]
        spec = load_spec(overrides=[*sets, "split.validation_days=4", "split.test_days=4"])
        rows = generate(spec, world).rows
        print(f"world: {rows:,} impressions over {args.days} daily shards", flush=True)
        for i in range(args.repeats):
            for v in variants if i % 2 == 0 else variants[::-1]:  # alternate which variant goes first
                seconds = run(v, world, Path(tmp) / f"out-{v.replace(' ', '-')}-{i}")
                times[v].append(seconds)
                print(f"run {i + 1}: {v:<12} {seconds:7.1f} s  {rows / seconds:>8,.0f} rows/s", flush=True)
    print(f"\nmedians of {args.repeats} runs")
    print(f"{'variant':<12} {'seconds':>8} {'rows/s':>9} {'vs current':>11}")
    base = statistics.median(times["current"])
    for v in variants:
        m = statistics.median(times[v])
        print(f"{v:<12} {m:>8.1f} {rows / m:>9,.0f} {m / base:>10.2f}x")


if __name__ == "__main__":
    main()
