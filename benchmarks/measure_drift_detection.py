"""Drift detection of coldcast.monitoring: false alerts on no-drift windows, detection per injected drift kind.

For each world seed and drift kind (none, new_show_surge, video_shift, taste_shift) a world at the default
density (about 17,900 impressions a day) is generated with the drift starting on the first monitored day. A model
is trained on the days before it (14 training + 7 validation days), the reference is the spec's (20,000 rows of
the validation days, scored by the model), and every monitored day is one window checked by `check_window`
exactly as `coldcast monitor check` does (labels joined, so the label-based checks run too).

Thresholds are set from the calibration seeds' no-drift windows only (`--calibration-seeds`); the evaluation
seeds (`--seeds`) are fresh worlds, never looked at while choosing them. Window results are cached under
--out/windows, so re-running with other thresholds (`--set drift.threshold=...`) re-judges them without
recomputing. The script writes no HTML, so Evidently's per-column plots are skipped (the scores are computed
before them and do not change); `--jobs 2` checks two worlds at a time.

    python benchmarks/measure_drift_detection.py --out runs/drift-bench
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DO_NOT_TRACK", "1")


import numpy as np
import yaml
from scipy.stats import chi2

from coldcast.core.data import Dataset
from coldcast.core.spec import CategoricalFeature, DriftThresholds, Spec, load_spec

KINDS = ("none", "new_show_surge", "video_shift", "taste_shift")
MARGINS = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
PER_DAY = 1_000_000 / 56  # the default world's density
TRAIN_DAYS, VALIDATION_DAYS = 14, 7


def world_spec(seed: int, kind: str, monitored: int, overrides: list[str]) -> Spec:
    start = TRAIN_DAYS + VALIDATION_DAYS
    days = start + monitored
    return load_spec(
        overrides=[
            f"world.seed={seed}",
            f"world.days={days}",
            f"world.impressions={round(PER_DAY * days)}",
            f"world.drift.kind={kind}",
            f"world.drift.start_day={start}",
            f"split.validation_days={VALIDATION_DAYS}",
            f"split.test_days={monitored}",
            "training.epochs=1",
            *overrides,
        ]
    )


def prepare(out: Path, seed: int, kind: str, monitored: int, overrides: list[str]) -> tuple[Path, Path, Spec]:
    """The world and the model trained on its pre-drift days (cached)."""
    from coldcast.core.world import generate
    from coldcast.model.train import train

    spec = world_spec(seed, kind, monitored, overrides)
    world, model = out / "worlds" / f"{kind}-{seed}", out / "models" / f"{kind}-{seed}"
    if not world.exists():
        t = time.perf_counter()
        generate(spec, world)
        print(f"  generated {world.name} in {time.perf_counter() - t:.0f} s", flush=True)
    if not model.exists():
        t = time.perf_counter()
        train(spec, world, model, verbose=0, log=lambda _: None)
        print(f"  trained {model.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return world, model, spec


def skip_plots() -> None:
    """Evidently renders a plotly figure for every ValueDrift while computing it (about half of a check's time);
    nothing here writes HTML, so the figures are dropped. The drift score is computed before the figure."""
    from evidently.metrics.column_statistics import ValueDriftCalculation

    ValueDriftCalculation._render = lambda self, *args, **kwargs: []  # type: ignore[method-assign]


def run_windows(out: Path, seed: int, kind: str, monitored: int, overrides: list[str]) -> list[Path]:
    """Check every monitored day of one world; one cached result file per window.

    A day's labelled traffic for the label-based checks is the last `drift.label_window_days` monitored days up
    to it (fewer on the first days: serving has not run longer), as `coldcast monitor check --labels` reads it.
    """
    import pandas as pd

    from coldcast.core.predlog import prediction_column
    from coldcast.model.scoring import ScoringModel
    from coldcast.monitoring import build_reference, check_window

    skip_plots()
    world, model_dir, spec = prepare(out, seed, kind, monitored, overrides)
    ds = Dataset.open(world)
    days = ds.split(spec)["test"]
    cache = out / "windows" / f"{kind}-{seed}"
    cache.mkdir(parents=True, exist_ok=True)
    if any(not (cache / f"{d}.json").exists() for d in days):
        model = ScoringModel.load(model_dir)
        reference = build_reference(ds, model_dir, spec)
        scored: list[pd.DataFrame] = []
        for i, day in enumerate(days):
            current = ds.read([day])
            scores = model.predict(current)
            for task in model.tasks:
                current[prediction_column(task)] = scores[task].to_numpy()
            scored.append(current)
            if (cache / f"{day}.json").exists():
                continue
            t = time.perf_counter()
            labelled = pd.concat(scored[max(0, i + 1 - spec.drift.label_window_days) :], ignore_index=True)
            result = check_window(
                reference, current, spec, labelled=labelled, window=day, model_version=f"{kind}-{seed}"
            )
            (cache / f"{day}.json").write_text(json.dumps(result.to_dict()))
            print(f"  {kind}-{seed} {day}: {result.status.value} ({time.perf_counter() - t:.0f} s)", flush=True)
    return [cache / f"{d}.json" for d in days]


def load_results(files: list[Path]) -> list:
    from coldcast.monitoring import DriftResult

    return [DriftResult.model_validate(json.loads(f.read_text())) for f in files]


# --------------------------------------------------------------------------------------------------- calibration
def calibration_table(results: list) -> dict[str, float]:
    """The largest value of every check on no-drift windows: per segment/column, and per task (any segment)."""
    worst: dict[str, float] = defaultdict(float)

    def seen(key: str, value: float | None) -> None:
        if value is not None:
            worst[key] = max(worst[key], value)

    for r in results:
        for seg in r.segments:
            for c in seg.columns:
                seen(f"column {seg.segment}/{c.column}", c.score)
            for c in seg.within:
                seen(f"within {c.column}", c.score)
            for p in seg.predictions:
                seen(f"prediction {p.task}", p.score)
        for task, q in r.quality.items():
            # the spec's z gate applies to calibration: only shifts that pass it can warn or alert
            if q.calibration_z is not None and abs(q.calibration_z) >= MIN_Z:
                seen(f"calibration {task}", abs(q.calibration_shift))
            for part in q.segments if q.note is None else []:
                if part.shift is not None and abs(part.shift[1]) >= MIN_Z:
                    seen(f"calibration {task}", abs(part.shift[0]))
            seen(f"quality {task}", q.auc_drop)
    return dict(worst)


def _limit(value: float) -> float:
    """Rounded up to two significant digits (0.2847 -> 0.29)."""
    if value <= 0:
        return 0.01
    scale = 10 ** (np.floor(np.log10(value)) - 1)
    return round(float(np.ceil(value / scale - 1e-9) * scale), 6)


FAMILIES = ("columns", "within", "predictions", "calibration", "quality")
MIN_Z = load_spec().drift.calibration_min_z  # the spec's significance gate, not tuned here


def suggest(table: dict[str, float], margins: dict[str, float]) -> dict:
    """Thresholds from no-drift maxima: a column drifts at margin x the largest score it had; a model check WARNs
    at the largest value any task had and ALERTs at margin x it. Each family of checks has its own margin.

    Columns whose no-drift maximum stays under PSI's conventional 0.1 ("no significant change") share one
    default (margin x the largest of them); a column that churns more by design gets its own limit, per segment
    where the segments differ. Model checks are pooled over tasks: per task levels set on one world's model did
    not hold on another's (leave-one-seed-out), since how much a model's scores swing is the model's own.
    """
    columns = {k.removeprefix("column "): v for k, v in table.items() if k.startswith("column ")}
    stable = [v for v in columns.values() if v < 0.1]
    m = margins["columns"]
    default = _limit(m * max(stable))
    thresholds: dict[str, float] = {}
    for key, value in sorted(columns.items()):
        segment, column = key.split("/", 1)
        limit = _limit(m * value)
        if limit > default:
            thresholds[key if segment != "all" else column] = limit
    # a column-wide limit also covers the segments that stay under it
    for key in [k for k in thresholds if "/" in k]:
        if thresholds.get(key.split("/", 1)[1], 0) >= thresholds[key]:
            del thresholds[key]
    # A column tested within a key's values has no churn by design, only sampling noise, so it gets its own limit
    # (margin x its largest no-drift score, in any segment) rather than the churning columns' default, but never
    # under sampling noise: PSI of k values between n and m rows is ~ chi2(k-1) x (1/n + 1/m), and the resampled
    # reference counts twice, so the floor is the 99.9% point of chi2(k-1) x 3 / drift.min_segment_rows.
    spec = load_spec()
    for key, value in sorted(table.items()):
        if key.startswith("within "):
            name = key.removeprefix("within ")
            definition = spec.feature(name.partition("|")[0].partition(".")[0]).definition
            k = len(definition.values) if isinstance(definition, CategoricalFeature) else 10  # PSI's bins
            floor = float(chi2.ppf(0.999, max(k - 1, 1))) * 3 / spec.drift.min_segment_rows
            thresholds[name] = _limit(max(margins["within"] * value, floor))
    # Model checks never go under the spec class's conventional levels (PSI 0.1 / 0.25, a 22% calibration change,
    # an AUC 0.05 lower): a fold whose no-drift windows show none of a check's values must not set it at ~0.
    floors = DriftThresholds()
    levels: dict[str, float] = {}
    for check, family in (("prediction", "predictions"), ("calibration", "calibration"), ("quality", "quality")):
        seen = [v for k, v in table.items() if k.startswith(check + " ")]
        largest = max([*seen, getattr(floors, f"{check}_warn")])
        levels[f"{check}_warn"] = _limit(largest)
        levels[f"{check}_alert"] = _limit(max(margins[family] * largest, getattr(floors, f"{check}_alert")))
    if levels["quality_alert"] >= 1:  # an AUC cannot drop by 1: the family is off in this trial
        levels["quality_warn"], levels["quality_alert"] = 0.98, 0.99
    return {"threshold": default, "thresholds": thresholds, **levels}


RULES = {
    "columns": {"column", "group_share"},
    "within": {"within"},
    "predictions": {"prediction"},
    "calibration": {"calibration"},
    "quality": {"quality"},
}
OFF = 1e6  # a margin that no value reaches: the family cannot alert


def cross_validated_alerts(by_seed: dict[int, list], family: str, margin: float) -> int:
    """ALERTs raised by one family of checks on each calibration seed's windows, under thresholds set (at
    `margin`) from the other seeds' windows."""
    alerts = 0
    for seed, results in by_seed.items():
        others = [r for s, rs in by_seed.items() if s != seed for r in rs]
        margins = {f: (margin if f == family else OFF) for f in FAMILIES}
        spec = load_spec(overrides={"drift": suggest(calibration_table(others), margins)})
        for r in judge(results, spec):
            alerts += any(c.status.value == "ALERT" and c.rule in RULES[family] for c in r.checks)
    return alerts


def choose_margins(by_seed: dict[int, list]) -> dict[str, float]:
    """Per family, the smallest margin under which it raises no ALERT in leave-one-seed-out on no-drift windows."""
    chosen = {}
    for family in FAMILIES:
        counts = {m: cross_validated_alerts(by_seed, family, m) for m in MARGINS}
        print(f"  {family}: leave-one-seed-out ALERTs by margin {counts}")
        chosen[family] = next((m for m in MARGINS if counts[m] == 0), MARGINS[-1])
    return chosen


# --------------------------------------------------------------------------------------------------- evaluation
def judge(results: list, spec: Spec) -> list:
    from coldcast.monitoring import apply_thresholds

    return [apply_thresholds(r, spec.drift) for r in results]


def summary(judged: dict[str, list]) -> dict[str, dict]:
    out = {}
    for kind, results in judged.items():
        statuses = Counter(r.status.value for r in results)
        rules, warns = Counter(), Counter()
        for r in results:
            for rule in {c.rule for c in r.checks if c.status.value == "ALERT"}:
                rules[rule] += 1
            if r.status.value == "WARN":
                for rule in {c.rule for c in r.checks if c.status.value == "WARN"}:
                    warns[rule] += 1
        n = len(results)
        out[kind] = {
            "windows": n,
            "alert": statuses["ALERT"],
            "warn": statuses["WARN"],
            "ok": statuses["OK"],
            "alert_rate": statuses["ALERT"] / n if n else float("nan"),
            "alert_or_warn_rate": (statuses["ALERT"] + statuses["WARN"]) / n if n else float("nan"),
            "alerts_by_rule": dict(rules),
            "warn_windows_by_rule": dict(warns),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/drift-bench"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="Evaluation world seeds.")
    parser.add_argument("--calibration-seeds", type=int, nargs="+", default=[101, 102])
    parser.add_argument("--monitored-days", type=int, default=12, help="Windows (days) per world.")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument(
        "--margin", type=float, default=None, help="ALERT at margin x the no-drift maximum (default: cross-validated)."
    )
    parser.add_argument(
        "--thresholds",
        choices=["spec", "suggested"],
        default="spec",
        help="Judge the evaluation windows by the spec's drift section, or by the thresholds suggested here.",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Spec override (repeatable).")
    parser.add_argument("--jobs", type=int, default=1, help="Worlds checked at a time (each its own process).")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    out: Path = args.out
    t0 = time.perf_counter()
    if args.jobs > 1:
        worlds = [(s, "none") for s in args.calibration_seeds] + [(s, k) for k in args.kinds for s in args.seeds]
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = [pool.submit(run_windows, out, s, k, args.monitored_days, args.overrides) for s, k in worlds]
            for job in jobs:
                job.result()

    print("calibration (no-drift worlds):", flush=True)
    by_seed = {
        s: load_results(run_windows(out, s, "none", args.monitored_days, args.overrides))
        for s in args.calibration_seeds
    }
    calibration = calibration_table([r for rs in by_seed.values() for r in rs])
    print("largest value per check on the calibration windows:")
    for key, value in sorted(calibration.items(), key=lambda kv: -kv[1])[:30]:
        print(f"  {key:<48} {value:8.3f}")
    margins = choose_margins(by_seed) if args.margin is None else dict.fromkeys(FAMILIES, args.margin)
    suggested = suggest(calibration, margins)
    print(f"thresholds (margins {margins}) for the spec's drift section:")
    print(yaml.safe_dump({"drift": suggested}, sort_keys=False))

    print("evaluation:", flush=True)
    files = {
        k: [f for s in args.seeds for f in run_windows(out, s, k, args.monitored_days, args.overrides)]
        for k in args.kinds
    }
    spec = load_spec(overrides=args.overrides)
    if args.thresholds == "suggested":
        spec = load_spec(overrides={"drift": suggested})
    judged = {k: judge(load_results(v), spec) for k, v in files.items()}
    calib_judged = judge([r for rs in by_seed.values() for r in rs], spec)
    table = summary(judged)
    table["none (calibration seeds)"] = summary({"c": calib_judged})["c"]

    print(f"\nthresholds: {spec.drift.model_dump(exclude={'exclude'})}")
    print(f"\n{'kind':<26} {'windows':>7} {'ALERT':>6} {'WARN':>5} {'OK':>4} {'alert rate':>10}  alerts by rule")
    for kind, row in table.items():
        print(
            f"{kind:<26} {row['windows']:>7} {row['alert']:>6} {row['warn']:>5} {row['ok']:>4} "
            f"{row['alert_rate']:>10.1%}  {row['alerts_by_rule']}  (WARN windows by rule {row['warn_windows_by_rule']})"
        )
    for kind, results in judged.items():
        days = " ".join(r.status.value[0] for r in results)
        print(f"  per window {kind:<16} {days}")
    (out / "summary.json").write_text(json.dumps({"thresholds": spec.drift.model_dump(), "rates": table}, indent=2))
    print(f"\nwrote {out / 'summary.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
