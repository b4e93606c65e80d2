"""Real-data experiments on KuaiRand: the joint model vs single-task, source-only and direct-apply baselines.

    .venv/bin/python experiments/kuairand.py --src /work/shared/data/kuairand-pure --work runs/kuairand

Imports the logs (coldcast.core.kuairand), validates them in production mode, trains every model on the
training days of the temporal split (the dataset's spec: the last UTC day is test, the one before validation),
scores the test day and prints Markdown tables: average precision with bootstrap 95% intervals per task, on all
test rows, on warm and cold items (cold: first impression after the training days) and on the low popularity
tiers, plus paired-bootstrap lifts of the joint model over the baselines. Everything lands under --work
(results.json, results.md, one evaluation report per model). Nothing is tuned for any model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from coldcast.core.data import SPEC_FILE, Dataset, task_labels, write_json
from coldcast.core.kuairand import import_kuairand
from coldcast.core.spec import Spec, load_spec, spec_from_dict
from coldcast.core.validation import validate_dataset
from coldcast.evaluation.evaluate import training_reference_for
from coldcast.evaluation.metrics import MetricSet, MetricValue, compute_metrics, paired_lift
from coldcast.evaluation.report import evaluate_predictions

JOINT = "joint"
TASKS = ("promo_stream", "ad_stream", "click", "like", "follow")


@dataclass(frozen=True)
class Variant:
    """One model of the comparison: how its spec differs from the dataset's, and heads scored by direct apply."""

    name: str
    description: str
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)


def _single(task: str) -> Variant:
    others = [t for t in TASKS if t != task]
    return Variant(
        name=f"single_{task}",
        description=f"{task} alone, on the sources its mask trains (both), balanced like the joint model",
        overrides={
            "tasks": dict.fromkeys(others),
            "training": {"selection_tasks": [task]},
            "gate": {"floors": dict.fromkeys(others)},
        },
    )


VARIANTS: tuple[Variant, ...] = (
    Variant(JOINT, "the paper's model: five heads, both sources, source-balanced batches, directional mask"),
    Variant(
        "joint_natural",
        "ablation: the joint model with natural sampling (batches in the data's own source mix)",
        overrides={"training": {"sampling": "natural"}},
    ),
    Variant(
        "promotions_only",
        "source-only baseline: four heads on promotion rows; ad_stream by direct apply of promo_stream",
        preset="promotions_only",
        heads={"ad_stream": "promo_stream"},
    ),
    Variant(
        "promo_stream_only",
        "promo_stream alone on promotion rows; ad_stream by direct apply of it",
        preset="promo_stream_only",
        heads={"ad_stream": "promo_stream"},
    ),
    Variant("ads_stream_only", "ad_stream alone on ad rows only (the silo)", preset="ads_stream_only"),
    Variant("ads_multitask", "ad_stream, click, like, follow on ad rows only", preset="ads_multitask"),
    _single("ad_stream"),
    _single("click"),
    _single("like"),
    _single("follow"),
)


# --------------------------------------------------------------------------------------------------- helpers
def load_model(model_dir: Path) -> Any:
    """A model directory as a ScoringModel, refusing one whose spec is not exactly the one stored beside it."""
    from coldcast.model.scoring import ScoringModel

    model = ScoringModel.load(model_dir)
    stored = spec_from_dict(yaml.safe_load((model_dir / SPEC_FILE).read_text()))
    if model.spec.feature_names != stored.feature_names:  # a merge over the podcast default would add features
        raise RuntimeError(f"{model_dir}: the loaded spec's features differ from the stored spec's")
    return model


def variant_spec(variant: Variant, data: Dataset, seed: int, extra: list[str]) -> Spec:
    base = data.root / SPEC_FILE
    raw_overrides = [*extra, f"training.seed={seed}"]
    spec = load_spec(overrides=raw_overrides, preset=variant.preset, base=base)
    if variant.overrides:
        from coldcast.core.spec import apply_overrides

        spec = spec_from_dict(apply_overrides(spec.model_dump(mode="json"), variant.overrides))
    return spec


MIN_POSITIVES = 5  # below this a figure is noise: the tables say so instead of printing it


def _fmt(v: MetricValue, digits: int = 3) -> str:
    if v.value is None:
        return "n/a"
    if v.low is None or v.high is None:
        return f"{v.value:.{digits}f}"
    return f"{v.value:.{digits}f} [{v.low:.{digits}f}, {v.high:.{digits}f}]"


def _pct(v: MetricValue) -> str:
    if v.value is None:
        return "n/a"
    if v.low is None or v.high is None:
        return f"{v.value:+.1%}"
    return f"{v.value:+.1%} [{v.low:+.1%}, {v.high:+.1%}]"


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- the run
def prepare(src: Path, work: Path, source_by: str, overwrite: bool) -> Dataset:
    """Import (once) and validate in production mode; the validated copy is what every model trains on."""
    imported, validated = work / "imported", work / "validated"
    if overwrite or not imported.exists():
        spec = load_spec(preset="kuairand", overrides=[f"kuairand.source_by={source_by}"])
        started = time.perf_counter()
        summary = import_kuairand(src, imported, spec, overwrite=True)
        print(
            f"imported {summary.rows_written:,} of {summary.rows_read:,} rows in {time.perf_counter() - started:.1f} s "
            f"({summary.exact_duplicates:,} exact and {summary.bucket_duplicates:,} hour-bucket duplicates dropped, "
            f"{summary.rows_quarantined:,} quarantined: {summary.reasons})"
        )
    if overwrite or not validated.exists():
        data = Dataset.open(imported)
        report = validate_dataset(imported, data.spec(), validated, production=True, policy="fail", overwrite=True)
        print(
            f"validation (production, policy fail): {report.rows_valid:,} of {report.rows_in:,} rows valid, "
            f"{report.rows_quarantined} quarantined, {report.expectations} expectations, clean={report.clean}"
        )
    return Dataset.open(validated)


def train_variants(data: Dataset, work: Path, seeds: list[int], extra: list[str], only: set[str] | None) -> None:
    from coldcast.model.train import train

    for seed in seeds:
        for variant in VARIANTS:
            if only and variant.name not in only:
                continue
            out = work / "models" / f"{variant.name}-s{seed}"
            if out.exists():
                continue
            spec = variant_spec(variant, data, seed, extra)
            started = time.perf_counter()
            train(spec, data.root, out, verbose=0, log=lambda _: None)
            print(f"trained {variant.name} (seed {seed}) in {time.perf_counter() - started:.0f} s")


@dataclass
class Segments:
    """Masks over the test rows: all, warm and cold items, low and high popularity tiers."""

    masks: dict[str, np.ndarray]

    @classmethod
    def of(cls, test: pd.DataFrame, spec: Spec, cutoff: str) -> Segments:
        cold = pd.to_datetime(test["show_launch_date"]) > pd.Timestamp(cutoff)
        tier = test["popularity_tier"].to_numpy()
        return cls(
            {
                "all": np.ones(len(test), dtype=bool),
                "warm items": ~cold.to_numpy(),
                "cold items": cold.to_numpy(),
                f"low tiers {spec.popularity.low_tiers}": np.isin(tier, spec.popularity.low_tiers),
                f"high tiers {spec.popularity.high_tiers}": np.isin(tier, spec.popularity.high_tiers),
            }
        )


def evaluate(data: Dataset, work: Path, seeds: list[int], bootstrap: int) -> dict[str, Any]:
    """Score the test day with every model; figures per task, headline population and segment; paired lifts."""
    spec = data.spec()
    split = data.split(spec)
    test = data.read(split["test"])
    labels = task_labels(test, spec)
    sources = test["source"].to_numpy()
    results: dict[str, Any] = {"split": split, "seeds": seeds, "bootstrap": bootstrap, "models": {}, "lifts": {}}
    reference = None
    scores: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    (work / "reports").mkdir(exist_ok=True)
    for seed in seeds:
        for variant in VARIANTS:
            model_dir = work / "models" / f"{variant.name}-s{seed}"
            if not model_dir.exists():
                continue
            model = load_model(model_dir)
            if reference is None:
                reference = training_reference_for(model.metadata, data, spec)
                assert reference is not None
            tasks = [*model.tasks, *variant.heads]
            frame = model.predict(test, heads=variant.heads)
            preds = {t: frame[t].to_numpy(dtype=np.float64) for t in tasks}
            scores[variant.name, seed] = preds
            report = evaluate_predictions(
                test,
                preds,
                spec,
                train_cutoff=reference.cutoff,
                train_users=reference.users,
                seed=0,  # the full per-slice report keeps the spec's bootstrap count; the tables use --bootstrap
            )
            report.write(work / "reports" / f"{variant.name}-s{seed}.json")
            results["models"].setdefault(variant.name, {"description": variant.description, "heads": variant.heads})
            results["models"][variant.name].setdefault("validation", {})[seed] = model.metadata.get("validation")
    assert reference is not None
    segments = Segments.of(test, spec, reference.cutoff)
    figures: dict[str, Any] = {}
    for task in TASKS:
        home = spec.tasks[task].home_source
        population = (sources == home) if home else np.ones(len(test), dtype=bool)
        y_all = labels[task].to_numpy()
        population &= ~np.isnan(y_all)
        for segment, mask in segments.masks.items():
            rows = population & mask
            y = y_all[rows]
            for (name, seed), preds in scores.items():
                if task not in preds:
                    continue
                # the same seed for every model: identical resamples, so intervals compare like with like
                m = compute_metrics(y, preds[task][rows], bootstrap=bootstrap, seed=[0, TASKS.index(task)])
                figures.setdefault(task, {}).setdefault(segment, {})[f"{name}-s{seed}"] = m
                if name != JOINT and (JOINT, seed) in scores:
                    lift = paired_lift(
                        y, scores[JOINT, seed][task][rows], preds[task][rows], bootstrap=bootstrap, seed=[1, seed]
                    )
                    results["lifts"].setdefault(task, {}).setdefault(segment, {})[f"{name}-s{seed}"] = lift
    results["figures"] = figures
    results["population"] = {t: spec.tasks[t].home_source or "all sources" for t in TASKS}
    results["test_rows"] = {
        "rows": len(test),
        "by_source": test["source"].value_counts().to_dict(),
        "cold_share": float(segments.masks["cold items"].mean()),
        "cutoff": reference.cutoff,
    }
    return results


# --------------------------------------------------------------------------------------------------- tables
def markdown(results: dict[str, Any]) -> str:
    seeds = results["seeds"]
    figures: dict[str, dict[str, dict[str, MetricSet]]] = results["figures"]
    first = seeds[0]
    names = [v.name for v in VARIANTS if v.name in results["models"]]
    out = []
    t = results["test_rows"]
    out.append(
        f"Test day {results['split']['test']}: {t['rows']:,} impressions ({t['by_source']}); training up to "
        f"{t['cutoff']}; cold items (first impression after training) are {t['cold_share']:.1%} of test rows. "
        f"AP with bootstrap 95% intervals ({results['bootstrap']} resamples), seed {first}."
    )
    header = ["task (population)", "segment", "rows", "positives", *names]
    rows = []
    for task, by_segment in figures.items():
        for segment, by_model in by_segment.items():
            any_m = next(iter(by_model.values()))
            cells = []
            for name in names:
                m = by_model.get(f"{name}-s{first}")
                direct = " (direct)" if task in results["models"][name]["heads"] else ""
                if m is None:
                    cells.append("")
                elif m.positives < MIN_POSITIVES:
                    cells.append("too few positives")
                else:
                    cells.append(_fmt(m.average_precision) + direct)
            pop = results["population"][task]
            rows.append([f"{task} ({pop})", segment, f"{any_m.rows:,}", f"{any_m.positives:,}", *cells])
    out.append("### Average precision on the test day\n\n" + _table(header, rows))
    lifts = results["lifts"]
    header = ["task", "segment", *[n for n in names if n != JOINT]]
    rows = []
    for task, by_segment in lifts.items():
        for segment, by_model in by_segment.items():
            if figures[task][segment][f"{JOINT}-s{first}"].positives < MIN_POSITIVES:
                continue
            cells = [_pct(by_model[f"{n}-s{first}"]) if f"{n}-s{first}" in by_model else "" for n in names[1:]]
            rows.append([task, segment, *cells])
    out.append(
        "### Joint model's AP relative to each baseline (paired bootstrap 95% interval)\n\n" + _table(header, rows)
    )
    if len(seeds) > 1:
        out.append(_seed_tables(results, names))
    return "\n\n".join(out) + "\n"


def _seed_tables(results: dict[str, Any], names: list[str]) -> str:
    """Mean AP over seeds, and the joint model's per-seed paired lifts over each baseline."""
    seeds = results["seeds"]
    figures: dict[str, dict[str, dict[str, MetricSet]]] = results["figures"]
    segments = [s for s in next(iter(figures.values())) if s.startswith(("all", "cold", "low"))]
    header = ["task", "segment", "positives", *names]
    rows = []
    for task, by_segment in figures.items():
        for segment in segments:
            by_model = by_segment[segment]
            positives = by_model[f"{JOINT}-s{seeds[0]}"].positives
            if positives < MIN_POSITIVES:
                continue
            cells = []
            for name in names:
                values = [by_model[f"{name}-s{s}"].average_precision.value for s in seeds if f"{name}-s{s}" in by_model]
                values = [v for v in values if v is not None]
                cells.append(f"{np.mean(values):.3f} ({min(values):.3f}..{max(values):.3f})" if values else "")
            rows.append([task, segment, f"{positives:,}", *cells])
    text = f"### Mean AP over seeds {seeds} (min..max)\n\n" + _table(header, rows)
    header = ["task", "segment", *[n for n in names if n != JOINT]]
    rows = []
    for task, by_segment in results["lifts"].items():
        for segment in segments:
            if figures[task][segment][f"{JOINT}-s{seeds[0]}"].positives < MIN_POSITIVES:
                continue
            by_model = by_segment[segment]
            cells = []
            for name in names[1:]:
                lifts = [by_model.get(f"{name}-s{s}") for s in seeds]
                lifts = [v for v in lifts if v is not None and v.value is not None]
                if not lifts:
                    cells.append("")
                    continue
                up = sum(1 for v in lifts if v.low is not None and v.low > 0)
                down = sum(1 for v in lifts if v.high is not None and v.high < 0)
                values = [v.value for v in lifts if v.value is not None]
                cells.append(f"{np.mean(values):+.1%} ({min(values):+.1%}..{max(values):+.1%}; {up} up, {down} down)")
            rows.append([task, segment, *cells])
    text += (
        "\n\n### Joint model's AP relative to each baseline, per seed: mean (min..max; seeds whose paired 95% "
        "interval is above / below zero)\n\n" + _table(header, rows)
    )
    return text


# The README's table: per head, the joint model against its single-task model, the source-only baseline
# (promotion rows only; ad_stream by direct apply of promo_stream) and the model trained on ad rows only.
SUMMARY_BASELINES: dict[str, tuple[str, str, str]] = {
    "promo_stream": ("promo_stream_only", "promotions_only", ""),
    "ad_stream": ("single_ad_stream", "promotions_only", "ads_stream_only"),
    "click": ("single_click", "promotions_only", "ads_multitask"),
    "like": ("single_like", "promotions_only", "ads_multitask"),
    "follow": ("single_follow", "promotions_only", "ads_multitask"),
}
SUMMARY_SEGMENTS = ("all", "warm", "cold", "low")


def summary(results: dict[str, Any]) -> str:
    """One compact table over seeds: mean AP with the mean per-seed 95% interval, and the joint model's lifts."""
    seeds = results["seeds"]
    figures: dict[str, dict[str, dict[str, MetricSet]]] = results["figures"]
    lifts: dict[str, dict[str, dict[str, MetricValue]]] = results["lifts"]

    def ap(by_model: dict[str, MetricSet], name: str) -> str:
        sets = [by_model[f"{name}-s{s}"] for s in seeds if f"{name}-s{s}" in by_model]
        values = [m.average_precision for m in sets if m.average_precision.value is not None]
        if not values:
            return ""
        mean = np.mean([v.value for v in values])
        if any(v.low is None or v.high is None for v in values):
            return f"{mean:.3f}"
        return f"{mean:.3f} [{np.mean([v.low for v in values]):.3f}, {np.mean([v.high for v in values]):.3f}]"

    def lift(by_model: dict[str, MetricValue], name: str) -> str:
        per_seed = [by_model.get(f"{name}-s{s}") for s in seeds]
        per_seed = [v for v in per_seed if v is not None and v.value is not None]
        if not per_seed:
            return ""
        up = sum(1 for v in per_seed if v.low is not None and v.low > 0)
        down = sum(1 for v in per_seed if v.high is not None and v.high < 0)
        return f"{np.mean([v.value for v in per_seed]):+.1%} ({up} up, {down} down)"

    header = [
        "task (population)",
        "segment",
        "positives",
        "joint",
        "single-task",
        "source-only",
        "ad rows only",
        "joint vs single-task",
        "joint vs source-only",
    ]
    rows = []
    for task, (single, source_only, ads_only) in SUMMARY_BASELINES.items():
        if task not in figures:
            continue
        for segment, by_model in figures[task].items():
            if not segment.startswith(SUMMARY_SEGMENTS):
                continue
            positives = by_model[f"{JOINT}-s{seeds[0]}"].positives
            head = [f"{task} ({results['population'][task]})", segment, f"{positives:,}"]
            if positives < MIN_POSITIVES:
                rows.append([*head, "too few positives", "", "", "", "", ""])
                continue
            direct = " (direct)" if task in results["models"].get(source_only, {}).get("heads", {}) else ""
            by_lift = lifts.get(task, {}).get(segment, {})
            rows.append(
                [
                    *head,
                    ap(by_model, JOINT),
                    f"{ap(by_model, single)} ({single})",
                    ap(by_model, source_only) + direct,
                    f"{ap(by_model, ads_only)} ({ads_only})" if ads_only else "",
                    lift(by_lift, single),
                    lift(by_lift, source_only),
                ]
            )
    t = results["test_rows"]
    by_source = ", ".join(f"{source} {n:,}" for source, n in sorted(t["by_source"].items()))
    caption = (
        f"Test day {', '.join(results['split']['test'])} ({t['rows']:,} impressions: {by_source}), training "
        f"days {results['split']['train'][0]}..{results['split']['train'][-1]}. AP: mean over seeds {seeds} "
        f"[mean of the per-seed bootstrap 95% intervals, {results['bootstrap']} resamples]. Lifts: the joint "
        "model's relative AP, mean over seeds (how many seeds' paired bootstrap 95% interval lies above / below 0)."
    )
    return caption + "\n\n" + _table(header, rows) + "\n"


def load_results(path: Path) -> dict[str, Any]:
    """results.json back into typed figures (in task and segment order), to render the tables without scoring."""
    results = json.loads(path.read_text())
    results["seeds"] = [int(s) for s in results["seeds"]]
    order = ("all", "warm", "cold", "low", "high")

    def typed(tree: dict[str, Any], kind: type[MetricSet] | type[MetricValue]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for task in [t for t in TASKS if t in tree]:
            segments = sorted(tree[task], key=lambda s: next(i for i, o in enumerate(order) if s.startswith(o)))
            out[task] = {seg: {k: kind.model_validate(v) for k, v in tree[task][seg].items()} for seg in segments}
        return out

    results["figures"] = typed(results["figures"], MetricSet)
    results["lifts"] = typed(results["lifts"], MetricValue)
    return results


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, MetricSet | MetricValue):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    return obj


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, help="KuaiRand folder in the upstream layout (not needed to render)")
    parser.add_argument("--work", type=Path, default=Path("runs/kuairand"), help="where data, models, results go")
    parser.add_argument("--source-by", default="video_type", choices=["video_type", "tab"], help="source mapping")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds (each trains every model)")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples per figure")
    parser.add_argument("--only", nargs="*", default=None, help="train only these variants")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="spec override for every model")
    parser.add_argument("--overwrite", action="store_true", help="re-import and re-validate")
    parser.add_argument("--render", action="store_true", help="only rebuild results.md from results.json")
    parser.add_argument("--summary", action="store_true", help="only print the README's table from results.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (in train / load_model)
    work = args.work.resolve()  # validate_dataset builds Data Docs, which need an absolute folder
    if args.summary:
        print(summary(load_results(work / "results.json")))
        return
    if args.render:
        text = markdown(load_results(work / "results.json"))
        (work / "results.md").write_text(text)
        print(text)
        return
    if args.src is None:
        parser.error("--src is required unless --render or --summary")
    work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.src, work, args.source_by, args.overwrite)
    train_variants(data, work, args.seeds, args.overrides, set(args.only) if args.only else None)
    results = evaluate(data, work, args.seeds, args.bootstrap)
    text = markdown(results)
    (work / "results.md").write_text(text)
    write_json(_jsonable(results), work / "results.json")
    print(text)


if __name__ == "__main__":
    main()
