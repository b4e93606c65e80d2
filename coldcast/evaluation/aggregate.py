"""Experiment cells into typed results: Table 1, the ablations, per-tier lifts, the learning curve, the
similarity sweep, the simulated A/B test and full evaluation reports of the deployed pair of models."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coldcast.core.data import Dataset, write_json
from coldcast.core.records import Record
from coldcast.evaluation.abtest import ABResult
from coldcast.evaluation.experiments import BASELINE, JOINT, TABLE_VARIANTS, Cell, Plan, load_results, predictions
from coldcast.evaluation.metrics import MetricValue, compute_metrics, paired_lift, stable_seed

LogFn = Callable[[str], None]
RESULTS = "results.json"
PAPER_TABLE1: dict[str, tuple[str, str]] = {
    "promotions_only": ("0 (reference)", "0 (reference)"),
    "promo_stream_only": ("-7.9%", "-8.8%"),
    "ads_stream_only": ("-65.2%", "+27.0%"),
    "ads_multitask": ("-64.8%", "+46.5%"),
    "joint": ("+4.5%", "+50.2%"),
}
LABELS: dict[str, str] = {
    "promotions_only": "promotions-only multi-task (baseline; ads by direct apply)",
    "promo_stream_only": "promo-stream head only",
    "ads_stream_only": "ads-stream head only (ads data)",
    "ads_multitask": "ads-stream + click/like/follow heads (ads data)",
    "joint": "promo + ads 5-task joint model",
    "mask_off": "directional mask off (ads train the promo tower too)",
    "mask_symmetric": "symmetric mask (promotions do not train the ad tower either)",
    "natural": "natural sampling (no 50/50 balance)",
    "mmoe": "MMoE encoder",
    "ple": "PLE encoder",
    "no_user": "without the user features",
    "no_content": "without the content features",
    "no_context": "without the context features",
    "no_creative": "without the creative features",
}
# Paper, Table 2 (online, joint vs the promotions model applied to ads): segment -> (i2s, eCPS, CTR, streams).
PAPER_TABLE2: dict[str, tuple[str, str, str, str]] = {
    "all": ("+18%", "-20%", "+9%", "+18%"),
    "less_streamed": ("+24%", "-22%", "+10%", "+27%"),
    "tier_0": ("~+7%", "-4..-17%", "", ""),
    "tier_2": ("~+20%", "-4..-17%", "", ""),
    "tier_3": ("~+27%", "-20%", "", ""),
    "tier_4": ("~+33%", "-24%", "", ""),
    "tier_5": ("up to +60%", "-38%", "", ""),
}


class Stat(Record):
    """A figure over training seeds: mean, sample standard deviation and the values."""

    mean: float | None
    sd: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        ok = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not ok:
            return cls(mean=None, sd=None, n=0, values=[])
        sd = float(np.std(ok, ddof=1)) if len(ok) > 1 else None
        return cls(mean=float(np.mean(ok)), sd=sd, n=len(ok), values=ok)


class CellScore(Record):
    """One trained model on its test rows: stream AP and friends on promotions and on ads."""

    id: str
    experiment: str
    variant: str
    seed: int
    world: str
    promo_head: str
    ad_head: str
    promotions: dict[str, float | None]
    ads: dict[str, float | None]
    ads_by_tier: dict[str, float | None]
    ads_by_less_streamed: dict[str, float | None]
    best_epoch: int
    epochs_run: int
    seconds: float
    examples_per_second: float


class Row(Record):
    """A variant against a reference: AP on promotions and on ads, and their relative change, over seeds."""

    variant: str
    label: str
    promotions_ap: Stat
    ads_ap: Stat
    promotions_lift: Stat
    ads_lift: Stat
    # Paired bootstrap interval of the lift on the test rows, for the first seed (what the test set resolves).
    promotions_lift_ci: MetricValue | None = None
    ads_lift_ci: MetricValue | None = None
    paper_promotions: str | None = None
    paper_ads: str | None = None
    best_epoch: Stat | None = None


class CurvePoint(Record):
    arm: str
    fraction: float
    ads_ap: Stat
    promotions_ap: Stat
    ad_rows: int | None = None  # ad impressions on the training days at this fraction


class SweepPoint(Record):
    similarity: float
    ceiling_ads_ap: float | None
    ceiling_promotions_ap: float | None
    promotions_only_promotions_ap: Stat
    joint_promotions_ap: Stat
    direct_apply_ads_ap: Stat
    ads_multitask_ads_ap: Stat
    joint_ads_ap: Stat
    joint_vs_promotions_only: Stat  # promotions AP lift
    joint_vs_ads_multitask: Stat  # ads AP lift
    joint_vs_direct_apply: Stat  # ads AP lift


class TierLift(Record):
    tier: str
    ad_rows: int
    positives: int
    direct_apply_ap: Stat
    joint_ap: Stat
    ads_multitask_ap: Stat
    joint_vs_direct_apply: Stat
    joint_vs_ads_multitask: Stat


class ABRun(Record):
    seed: int
    budget_ratio: float | None
    treatment: str = "joint"  # or "oracle": the true probabilities, the headroom any model could reach
    path: str
    result: ABResult


class ExperimentResults(Record):
    """Everything the experiment reports show, with what is missing when the run is partial."""

    protocol: dict[str, Any]
    complete: bool
    missing: list[str]
    cells: dict[str, CellScore]
    ceiling: dict[str, dict[str, float | None]]
    table: list[Row]
    direct_apply_check: dict[str, Any] | None
    ablations: list[Row]
    tiers: list[TierLift]
    curve: list[CurvePoint]
    curve_references: dict[str, Stat]
    sweep: list[SweepPoint]
    abtest: list[ABRun]
    reports: dict[str, str]
    gate: dict[str, Any] | None
    timing: dict[str, Any]

    def write(self, path: str | Path) -> Path:
        return write_json(self.model_dump(mode="json"), path)


# --------------------------------------------------------------------------------------------------- test rows
class _TestRows:
    """The test days of one world: labels, truth and slices, aligned with every cell's predictions."""

    def __init__(self, dataset: Dataset) -> None:
        spec = dataset.spec()
        columns = ["impression_id", "source", "stream", "true_stream", "popularity_tier", "less_streamed"]
        df = dataset.read_split(spec, "test", columns=columns)
        self.ids = df["impression_id"].astype(str).to_numpy()
        self.source = df["source"].astype(str).to_numpy()
        self.y = df["stream"].to_numpy(dtype=np.float64)
        self.truth = df["true_stream"].to_numpy(dtype=np.float64)
        self.tier = df["popularity_tier"].astype(int).to_numpy()
        self.less = df["less_streamed"].astype(bool).to_numpy()
        self.promo = (self.source == "promotion") & ~np.isnan(self.y)
        self.ad = (self.source == "ad") & ~np.isnan(self.y)

    def aligned(self, frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame) != len(self.ids) or not np.array_equal(frame["impression_id"].to_numpy(dtype=str), self.ids):
            raise ValueError("a cell's predictions are not aligned with its world's test rows")
        return frame


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    m = compute_metrics(y, p, bins=10, strategy="quantile")
    return {
        "average_precision": m.average_precision.value,
        "auc": m.auc.value,
        "log_loss": m.log_loss.value,
        "ece": m.ece.value,
        "predicted_observed": m.predicted_observed.value,
        "rows": float(m.rows),
        "positives": float(m.positives),
    }


def _ap(y: np.ndarray, p: np.ndarray) -> float | None:
    return compute_metrics(y, p).average_precision.value if len(y) and y.sum() > 0 else None


def _heads(frame: pd.DataFrame) -> tuple[str, str]:
    """The stream head that scores promotions and the one that scores ads (the other one where a model has only
    one: the promotions model's promo_stream head on ads is direct apply)."""
    promo = "promo_stream" if "promo_stream" in frame else "ad_stream"
    ad = "ad_stream" if "ad_stream" in frame else "promo_stream"
    if promo not in frame or ad not in frame:
        raise ValueError(f"a cell's predictions have no stream head: {list(frame.columns)}")
    return promo, ad


# --------------------------------------------------------------------------------------------------- aggregate
def aggregate(plan_: Plan, *, log: LogFn = print) -> ExperimentResults:
    """Score every finished cell, build the tables, run the A/B simulations and full reports that are missing."""
    started = time.perf_counter()
    protocol = plan_.protocol
    records = load_results(plan_)
    missing = [c.id for c in plan_.cells if c.id not in records]
    rows: dict[str, _TestRows] = {}

    def test_rows(world: str) -> _TestRows:
        if world not in rows:
            rows[world] = _TestRows(Dataset.open(plan_.worlds[world]))
        return rows[world]

    frames: dict[str, pd.DataFrame] = {}
    scores: dict[str, CellScore] = {}
    for cell in plan_.cells:
        if cell.id not in records:
            continue
        t = test_rows(cell.test_world or cell.world)
        frame = t.aligned(predictions(plan_, cell.id))
        frames[cell.id] = frame
        scores[cell.id] = _score(cell, records[cell.id], frame, t)
    ceiling = {
        key: {
            "promotions_ap": _ap(t.y[t.promo], t.truth[t.promo]),
            "ads_ap": _ap(t.y[t.ad], t.truth[t.ad]),
        }
        for key, t in ((k, test_rows(k)) for k in plan_.worlds if k == "base" or k.startswith("similarity"))
    }
    base = test_rows("base")
    seeds = protocol.seeds
    table = [
        _row(v, f"table/{v}", f"table/{BASELINE}", seeds, scores, frames, base, protocol.bootstrap)
        for v in TABLE_VARIANTS
        if any(f"table/{v}/s{s}" in scores for s in seeds)
    ]
    ablations = [
        _row(
            c.variant, f"{c.experiment}/{c.variant}", f"table/{JOINT}", seeds, scores, frames, base, protocol.bootstrap
        )
        for c in _unique_variants(plan_.cells, {"mask", "sampler", "encoders", "groups"})
        if any(f"{c.experiment}/{c.variant}/s{s}" in scores for s in seeds)
    ]
    tiers = _tiers(seeds, frames, base)
    curve, references = _curve(plan_, scores, records)
    sweep = _sweep(plan_, scores, ceiling)
    ab_runs: list[ABRun] = []
    reports: dict[str, str] = {}
    gate: dict[str, Any] | None = None
    check: dict[str, Any] | None = None
    if "abtest" in protocol.experiments:
        ab_runs = _abtests(plan_, log)
    if any(f"table/{v}/s{seeds[0]}" in scores for v in (BASELINE, JOINT)):
        reports, gate, check = _reports(plan_, scores, log)
    timing = _timing(records, time.perf_counter() - started)
    results = ExperimentResults(
        protocol=protocol.model_dump(mode="json"),
        complete=not missing,
        missing=missing,
        cells=scores,
        ceiling=ceiling,
        table=table,
        direct_apply_check=check,
        ablations=ablations,
        tiers=tiers,
        curve=curve,
        curve_references=references,
        sweep=sweep,
        abtest=ab_runs,
        reports=reports,
        gate=gate,
        timing=timing,
    )
    results.write(plan_.root / RESULTS)
    log(f"aggregated {len(scores)} of {len(plan_.cells)} cells into {plan_.root / RESULTS}")
    return results


def _unique_variants(cells: list[Cell], experiments: set[str]) -> list[Cell]:
    seen, out = set(), []
    for c in cells:
        if c.experiment in experiments and (c.experiment, c.variant) not in seen:
            seen.add((c.experiment, c.variant))
            out.append(c)
    return out


def _score(cell: Cell, record: dict[str, Any], frame: pd.DataFrame, t: _TestRows) -> CellScore:
    promo_head, ad_head = _heads(frame)
    p_promo, p_ad = frame[promo_head].to_numpy(np.float64), frame[ad_head].to_numpy(np.float64)
    by_tier = {
        str(tier): _ap(t.y[t.ad & (t.tier == tier)], p_ad[t.ad & (t.tier == tier)]) for tier in np.unique(t.tier[t.ad])
    }
    by_less = {
        str(flag).lower(): _ap(t.y[t.ad & (t.less == flag)], p_ad[t.ad & (t.less == flag)]) for flag in (True, False)
    }
    return CellScore(
        id=cell.id,
        experiment=cell.experiment,
        variant=cell.variant,
        seed=cell.seed,
        world=cell.test_world or cell.world,
        promo_head=promo_head,
        ad_head=ad_head,
        promotions=_metrics(t.y[t.promo], p_promo[t.promo]),
        ads=_metrics(t.y[t.ad], p_ad[t.ad]),
        ads_by_tier=by_tier,
        ads_by_less_streamed=by_less,
        best_epoch=int(record["best_epoch"]),
        epochs_run=int(record["epochs_run"]),
        seconds=float(record["seconds"]),
        examples_per_second=float(record["examples_per_second"]),
    )


def _lift(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b - 1.0


def _row(
    variant: str,
    prefix: str,
    reference: str,
    seeds: list[int],
    scores: dict[str, CellScore],
    frames: dict[str, pd.DataFrame],
    t: _TestRows,
    bootstrap: int,
) -> Row:
    """A variant against the reference cells of the same seeds (paired by seed)."""
    mine = [scores.get(f"{prefix}/s{s}") for s in seeds]
    refs = [scores.get(f"{reference}/s{s}") for s in seeds]
    pairs = [(m, r) for m, r in zip(mine, refs, strict=True) if m is not None and r is not None]
    ci_promo = ci_ads = None
    first = next(((s, m, r) for s, m, r in zip(seeds, mine, refs, strict=True) if m and r), None)
    if first is not None and bootstrap > 0 and prefix != reference:
        s, m, r = first
        fm, fr = frames[m.id], frames[r.id]
        key = stable_seed("lift", prefix, reference, s)
        ci_promo = paired_lift(
            t.y[t.promo], fm[m.promo_head].to_numpy()[t.promo], fr[r.promo_head].to_numpy()[t.promo],
            bootstrap=bootstrap, seed=key,
        )  # fmt: skip
        ci_ads = paired_lift(
            t.y[t.ad], fm[m.ad_head].to_numpy()[t.ad], fr[r.ad_head].to_numpy()[t.ad], bootstrap=bootstrap, seed=key
        )
    paper = PAPER_TABLE1.get(variant) if reference.endswith(BASELINE) else None
    return Row(
        variant=variant,
        label=LABELS.get(variant, variant),
        promotions_ap=Stat.of([m.promotions["average_precision"] for m in mine if m]),
        ads_ap=Stat.of([m.ads["average_precision"] for m in mine if m]),
        promotions_lift=Stat.of(
            [_lift(m.promotions["average_precision"], r.promotions["average_precision"]) for m, r in pairs]
        ),
        ads_lift=Stat.of([_lift(m.ads["average_precision"], r.ads["average_precision"]) for m, r in pairs]),
        promotions_lift_ci=ci_promo,
        ads_lift_ci=ci_ads,
        paper_promotions=paper[0] if paper else None,
        paper_ads=paper[1] if paper else None,
        best_epoch=Stat.of([m.best_epoch for m in mine if m]),
    )


def _tiers(seeds: list[int], frames: dict[str, pd.DataFrame], t: _TestRows) -> list[TierLift]:
    """Ads AP by popularity tier: the joint model against direct apply and against the ads-only model."""
    out = []
    for tier in sorted(np.unique(t.tier[t.ad]).tolist()):
        rows = t.ad & (t.tier == tier)
        aps: dict[str, list[float | None]] = {"direct": [], "joint": [], "ads": []}
        for s in seeds:
            for key, (variant, head) in {
                "direct": (BASELINE, "promo_stream"),
                "joint": (JOINT, "ad_stream"),
                "ads": ("ads_multitask", "ad_stream"),
            }.items():
                frame = frames.get(f"table/{variant}/s{s}")
                aps[key].append(_ap(t.y[rows], frame[head].to_numpy(np.float64)[rows]) if frame is not None else None)
        out.append(
            TierLift(
                tier=str(tier),
                ad_rows=int(rows.sum()),
                positives=int(t.y[rows].sum()),
                direct_apply_ap=Stat.of(aps["direct"]),
                joint_ap=Stat.of(aps["joint"]),
                ads_multitask_ap=Stat.of(aps["ads"]),
                joint_vs_direct_apply=Stat.of([_lift(j, d) for j, d in zip(aps["joint"], aps["direct"], strict=True)]),
                joint_vs_ads_multitask=Stat.of([_lift(j, a) for j, a in zip(aps["joint"], aps["ads"], strict=True)]),
            )
        )
    return out


def _curve(
    plan_: Plan, scores: dict[str, CellScore], records: dict[str, dict[str, Any]]
) -> tuple[list[CurvePoint], dict[str, Stat]]:
    p = plan_.protocol
    if "curve" not in p.experiments:
        return [], {}
    points = []
    for f in p.fractions:
        tag = f"{f * 100:g}pct"
        for arm in p.curve_arms:
            cells = [scores.get(f"curve/{arm}-{tag}/s{s}") for s in p.seeds]
            done = [c for c in cells if c]
            # ad impressions the arm trained on (the joint arm also trains its ad tower on promotions)
            rows = records[done[0].id].get("rows", {}).get("ad") if done else None
            points.append(
                CurvePoint(
                    arm=arm,
                    fraction=f,
                    ads_ap=Stat.of([c.ads["average_precision"] for c in done]),
                    promotions_ap=Stat.of([c.promotions["average_precision"] for c in done]),
                    ad_rows=rows,
                )
            )
    refs = {
        "direct apply (no ad labels)": Stat.of(
            [scores[i].ads["average_precision"] for i in _ids(scores, f"table/{BASELINE}", p.seeds)]
        ),
        "joint, 100% of ad labels": Stat.of(
            [scores[i].ads["average_precision"] for i in _ids(scores, f"table/{JOINT}", p.seeds)]
        ),
        "ads-stream head only, 100%": Stat.of(
            [scores[i].ads["average_precision"] for i in _ids(scores, "table/ads_stream_only", p.seeds)]
        ),
    }
    return points, refs


def _ids(scores: dict[str, CellScore], prefix: str, seeds: list[int]) -> list[str]:
    return [f"{prefix}/s{s}" for s in seeds if f"{prefix}/s{s}" in scores]


def _sweep(plan_: Plan, scores: dict[str, CellScore], ceiling: dict[str, dict[str, float | None]]) -> list[SweepPoint]:
    p = plan_.protocol
    if "similarity" not in p.experiments:
        return []
    base_value = Dataset.open(plan_.worlds["base"]).spec().world.channel_similarity
    points = []
    for value in sorted({*p.similarities}):
        at_base = abs(value - base_value) < 1e-9
        world = "base" if at_base else f"similarity-{value:.2f}"

        def cells(variant: str, value: float = value, at_base: bool = at_base) -> list[CellScore]:
            ids = [f"table/{variant}/s{s}" if at_base else f"similarity/{variant}-r{value:.2f}/s{s}" for s in p.seeds]
            return [scores[i] for i in ids if i in scores]

        promo, ads, joint = cells(BASELINE), cells("ads_multitask"), cells(JOINT)

        def lifts(a: list[CellScore], b: list[CellScore], source: str) -> Stat:
            by_seed = {c.seed: c for c in b}
            return Stat.of(
                [
                    _lift(
                        getattr(x, source)["average_precision"], getattr(by_seed[x.seed], source)["average_precision"]
                    )
                    for x in a
                    if x.seed in by_seed
                ]
            )

        points.append(
            SweepPoint(
                similarity=value,
                ceiling_ads_ap=ceiling.get(world, {}).get("ads_ap"),
                ceiling_promotions_ap=ceiling.get(world, {}).get("promotions_ap"),
                promotions_only_promotions_ap=Stat.of([c.promotions["average_precision"] for c in promo]),
                joint_promotions_ap=Stat.of([c.promotions["average_precision"] for c in joint]),
                direct_apply_ads_ap=Stat.of([c.ads["average_precision"] for c in promo]),
                ads_multitask_ads_ap=Stat.of([c.ads["average_precision"] for c in ads]),
                joint_ads_ap=Stat.of([c.ads["average_precision"] for c in joint]),
                joint_vs_promotions_only=lifts(joint, promo, "promotions"),
                joint_vs_ads_multitask=lifts(joint, ads, "ads"),
                joint_vs_direct_apply=lifts(joint, promo, "ads"),
            )
        )
    return points


# --------------------------------------------------------------------------------------------------- models
def direct_apply_model(plan_: Plan, seed: int) -> Path:
    """The promotions model of `seed` with its promo_stream head also scoring ad_stream (written once)."""
    from coldcast.model.transfer import direct_apply

    out = plan_.root / "models" / f"direct_apply__s{seed}"
    if not (out / "metadata.json").exists():
        direct_apply(plan_.model_dir(f"table/{BASELINE}/s{seed}"), out, {"ad_stream": "promo_stream"}, overwrite=True)
    return out


def _abtests(plan_: Plan, log: LogFn) -> list[ABRun]:
    """The simulated budget-split A/B test per seed: control = direct apply, treatment = the joint model; for the
    first seed also every budget ratio, and the oracle (true p(stream)) as treatment: the headroom."""
    from coldcast.evaluation.abtest import model_scorer, oracle_scorer, simulate_ab

    p = plan_.protocol
    runs = []
    world = Dataset.open(plan_.worlds["base"])
    ratios = list(dict.fromkeys(p.ab_budget_ratios))
    for i, seed in enumerate(p.seeds):
        needed = [plan_.model_dir(f"table/{v}/s{seed}") for v in (BASELINE, JOINT)]
        if not all((d / "metadata.json").exists() for d in needed):
            continue
        # every budget ratio for the first seed (sensitivity), the first ratio for the others
        arms = [(r, "joint") for r in (ratios if i == 0 else ratios[:1])]
        if i == 0:
            arms.append((ratios[0], "oracle"))
        for ratio, arm in arms:
            tag = "world" if ratio is None else f"{ratio:g}"
            path = plan_.root / "abtest" / f"s{seed}-budget-{tag}{'-oracle' if arm == 'oracle' else ''}.json"
            if path.exists():
                result = ABResult.read(path)
                runs.append(ABRun(seed=seed, budget_ratio=ratio, treatment=arm, path=str(path), result=result))
                continue
            started = time.perf_counter()
            control = model_scorer(direct_apply_model(plan_, seed), "ad_stream")
            treatment = oracle_scorer() if arm == "oracle" else model_scorer(needed[1], "ad_stream")
            result = simulate_ab(
                world,
                control,
                treatment,
                opportunities=p.ab_opportunities,
                campaigns_per_opportunity=p.ab_campaigns,
                budget_ratio=ratio,
                bootstrap=p.bootstrap,
                seed=seed,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            result.write(path)
            log(f"A/B simulation seed {seed}, budget {tag}, {arm}: {time.perf_counter() - started:.0f} s")
            runs.append(ABRun(seed=seed, budget_ratio=ratio, treatment=arm, path=str(path), result=result))
    return runs


def _reports(
    plan_: Plan, scores: dict[str, CellScore], log: LogFn
) -> tuple[dict[str, str], dict[str, Any] | None, dict[str, Any] | None]:
    """Full per-slice evaluation reports of the first seed's direct-apply control and joint model, the gate's
    verdict on promoting the joint model over the control, and a check that direct apply through
    coldcast.model.transfer scores ads exactly as the baseline cell's promo_stream head did."""
    from coldcast.evaluation.evaluate import evaluate_model
    from coldcast.evaluation.gate import bless
    from coldcast.evaluation.render import REPORT_JSON, read_report, write_reports

    seed = plan_.protocol.seeds[0]
    out: dict[str, str] = {}
    models = {"direct_apply": None, "joint": plan_.model_dir(f"table/{JOINT}/s{seed}")}
    if (plan_.model_dir(f"table/{BASELINE}/s{seed}") / "metadata.json").exists():
        models["direct_apply"] = direct_apply_model(plan_, seed)
    evaluated = {}
    for name, model_dir in models.items():
        if model_dir is None or not (Path(model_dir) / "metadata.json").exists():
            continue
        folder = plan_.root / "reports" / f"{name}-s{seed}"
        if not (folder / REPORT_JSON).exists():
            started = time.perf_counter()
            report = evaluate_model(model_dir, plan_.worlds["base"], bootstrap=plan_.protocol.bootstrap)
            reference = evaluated.get("direct_apply")
            write_reports(report, folder, reference=reference, title=f"{name} model (seed {seed})", overwrite=True)
            log(f"evaluation report {folder}: {time.perf_counter() - started:.0f} s")
        evaluated[name] = read_report(folder)
        out[name] = str(folder)
    gate = check = None
    if "direct_apply" in evaluated:
        report = evaluated["direct_apply"]
        via_transfer = report.tasks["ad_stream"].populations["ad"].overall.model.average_precision.value
        cell = scores.get(f"table/{BASELINE}/s{seed}")
        from_cell = cell.ads["average_precision"] if cell else None
        check = {
            "seed": seed,
            "ads_ap_direct_apply_model": via_transfer,
            "ads_ap_baseline_promo_head": from_cell,
            "equal": via_transfer is not None and from_cell is not None and abs(via_transfer - from_cell) < 1e-6,
        }
    if set(evaluated) == {"direct_apply", "joint"}:
        from coldcast.core.spec import load_spec

        spec = load_spec(base=Path(models["joint"]) / "spec.yaml")  # type: ignore[arg-type]
        verdict = bless(evaluated["joint"], spec, promoted=evaluated["direct_apply"])
        path = plan_.root / "reports" / "gate-joint-vs-direct_apply.json"
        verdict.write(path)
        gate = {"path": str(path), "blessed": verdict.blessed, "reasons": verdict.reasons, "notes": verdict.notes}
        gate["checks"] = {
            "passed": sum(c.passed is True for c in verdict.checks),
            "failed": sum(c.passed is False for c in verdict.checks),
            "skipped": sum(c.passed is None for c in verdict.checks),
        }
    return out, gate, check


def _timing(records: dict[str, dict[str, Any]], aggregate_seconds: float) -> dict[str, Any]:
    by_exp: dict[str, list[float]] = {}
    for cell_id, r in records.items():
        by_exp.setdefault(cell_id.split("/")[0], []).append(float(r["seconds"]))
    rates = [float(r["examples_per_second"]) for r in records.values() if r.get("examples_per_second")]
    return {
        "cells": len(records),
        "cell_seconds": sum(sum(v) for v in by_exp.values()),
        "by_experiment_seconds": {k: sum(v) for k, v in by_exp.items()},
        "median_cell_seconds": float(np.median([float(r["seconds"]) for r in records.values()])) if records else None,
        "median_examples_per_second": float(np.median(rates)) if rates else None,
        "aggregate_seconds": aggregate_seconds,
    }


def read_results(root: str | Path) -> ExperimentResults:
    return ExperimentResults.model_validate(json.loads((Path(root) / RESULTS).read_text()))
