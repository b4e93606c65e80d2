"""Benchmark the KuaiRand import: rows per second and peak memory for two chunk sizes, on a tiled real slice.

    .venv/bin/python benchmarks/bench_kuairand.py --src /work/shared/data/kuairand-pure --copies 5 --repeats 3

The six-day slice is tiled `copies` times (each copy shifted by six days, so it reads as a longer log) over two
log files in the upstream layout. Each import runs in its own process (clean peak RSS); variants alternate
within each repeat, and the medians are printed side by side with their ratio.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

CHILD = """
import json, resource, sys, time
from coldcast.core.spec import load_spec
from coldcast.core.kuairand import import_kuairand
spec = load_spec(preset="kuairand", overrides=[f"kuairand.chunk_rows={sys.argv[3]}"])
start = time.perf_counter()
summary = import_kuairand(sys.argv[1], sys.argv[2], spec, overwrite=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "rows": summary.rows_read, "written": summary.rows_written, "peak_mib": peak}))
"""


def tile(src: Path, dst: Path, copies: int) -> int:
    """Write `copies` shifted copies of the slice's log over two files, and the static files beside them."""
    dst.mkdir(parents=True)
    log = next(src.glob("log_standard_*.csv"))
    frame = pd.read_csv(log)
    day_ms = 86_400_000
    parts = []
    for k in range(copies):
        shifted = frame.copy()
        shifted["time_ms"] += 6 * k * day_ms
        dates = pd.to_datetime(shifted["date"].astype(str), format="%Y%m%d") + pd.Timedelta(days=6 * k)
        shifted["date"] = dates.dt.strftime("%Y%m%d").astype(int)
        parts.append(shifted)
    half = max(1, copies // 2)
    pd.concat(parts[:half]).to_csv(dst / "log_standard_a_pure.csv", index=False)
    if parts[half:]:
        pd.concat(parts[half:]).to_csv(dst / "log_standard_b_pure.csv", index=False)
    for static in ("user_features_*.csv", "video_features_basic_*.csv"):
        for f in src.glob(static):
            shutil.copy(f, dst / f.name)
    return len(frame) * copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="the KuaiRand slice (upstream layout)")
    parser.add_argument("--copies", type=int, default=5, help="times the slice is tiled")
    parser.add_argument("--repeats", type=int, default=3, help="imports per variant")
    parser.add_argument("--chunks", type=int, nargs="+", default=[50_000, 500_000], help="chunk_rows variants")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kuairand-") as tmp:
        root = Path(tmp)
        rows = tile(args.src, root / "src", args.copies)
        size = sum(f.stat().st_size for f in (root / "src").glob("log_*.csv")) / 2**20
        print(f"{rows:,} log rows in {size:.0f} MiB of CSV; {args.repeats} repeats per variant")
        runs: dict[int, list[dict]] = {c: [] for c in args.chunks}
        for _ in range(args.repeats):
            for chunk in args.chunks:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(root / "src"), str(root / "out"), str(chunk)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[chunk].append(json.loads(out.stdout.strip().splitlines()[-1]))
        base = args.chunks[-1]
        base_s = statistics.median(r["seconds"] for r in runs[base])
        base_m = statistics.median(r["peak_mib"] for r in runs[base])
        print(f"{'chunk_rows':>10} {'median s':>9} {'rows/s':>9} {'peak MiB':>9} {'time ratio':>10} {'mem ratio':>9}")
        for chunk in args.chunks:
            s = statistics.median(r["seconds"] for r in runs[chunk])
            m = statistics.median(r["peak_mib"] for r in runs[chunk])
            print(f"{chunk:>10,} {s:>9.1f} {rows / s:>9,.0f} {m:>9.0f} {s / base_s:>10.2f} {m / base_m:>9.2f}")


if __name__ == "__main__":
    main()
