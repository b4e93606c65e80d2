"""Benchmark: bootstrap intervals of compute_metrics (one sort, Poisson weights) against the textbook loop
(resample rows, call scikit-learn per replicate), and a whole `evaluate_model` on the default world's test days.

The two bootstrap implementations run interleaved on the same scores, so their ratio is taken under the same
machine load; `evaluate_model` needs a trained model folder (e.g. one the experiments kept).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from coldcast.evaluation.metrics import compute_metrics


def naive(y: np.ndarray, p: np.ndarray, replicates: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        idx = rng.integers(0, len(y), len(y))
        average_precision_score(y[idx], p[idx])
        roc_auc_score(y[idx], p[idx])
        log_loss(y[idx], p[idx], labels=[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[37_000, 125_000])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, help="model folder for the evaluate_model timing")
    parser.add_argument("--data", type=Path, default=Path("runs/default-world"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.rows:
        p = rng.beta(1, 40, n)
        y = (rng.random(n) < p).astype(float)
        fast, slow = [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            compute_metrics(y, p, bootstrap=args.replicates, seed=r, strategy="quantile")
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive(y, p, args.replicates, r)
            slow.append(time.perf_counter() - t)
        f, s = statistics.median(fast), statistics.median(slow)
        print(
            f"{n:,} rows x {args.replicates} replicates: compute_metrics {f:.2f} s (AP, AUC, log loss, ECE, "
            f"pred/obs) vs resample + scikit-learn {s:.2f} s (AP, AUC, log loss): {s / f:.1f}x faster"
        )
    if args.model is not None:
        from coldcast.evaluation import evaluate_model, write_reports

        for bootstrap in (0, 200):
            t = time.perf_counter()
            report = evaluate_model(args.model, args.data, bootstrap=bootstrap)
            scored = time.perf_counter() - t
            t = time.perf_counter()
            write_reports(report, Path("/tmp") / f"bench-eval-{bootstrap}", overwrite=True)
            written = time.perf_counter() - t
            figures = sum(
                1 + sum(len(g) for g in pop.slices.values())
                for task in report.tasks.values()
                for pop in task.populations.values()
            )
            print(
                f"evaluate_model, bootstrap {bootstrap}: {report.rows:,} rows, {figures} figures (each with its "
                f"ceiling) in {scored:.0f} s; write_reports {written:.0f} s"
            )


if __name__ == "__main__":
    main()
