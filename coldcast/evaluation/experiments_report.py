"""The experiments' summary.md, report.html and plots: the reproduced tables beside the paper's numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coldcast.evaluation.aggregate import PAPER_TABLE2, ABRun, ExperimentResults, Row, Stat
from coldcast.evaluation.document import Document
from coldcast.evaluation.metrics import MetricValue
from coldcast.evaluation.plots import Point, grouped_bars, lines

LogFn = Callable[[str], None]


def pct(stat: Stat | None) -> str:
    """'+4.5% ± 1.2' (mean ± sd over seeds, percent), '+4.5%' for one seed, '–' for none."""
    if stat is None or stat.mean is None:
        return "–"
    text = f"{stat.mean * 100:+.1f}%"
    return text + (f" ± {stat.sd * 100:.1f}" if stat.sd is not None else "")


def num(stat: Stat | None, digits: int = 4) -> str:
    if stat is None or stat.mean is None:
        return "–"
    return f"{stat.mean:.{digits}f}" + (f" ± {stat.sd:.{digits}f}" if stat.sd is not None else "")


def ci(value: MetricValue | None) -> str:
    if value is None or value.value is None or value.low is None or value.high is None:
        return "–"
    return f"[{value.low * 100:+.1f}%, {value.high * 100:+.1f}%]"


def _lift_point(v: MetricValue) -> Point:
    return Point(v.value, v.low, v.high)


def _stat_point(s: Stat) -> Point:
    if s.mean is None:
        return Point(None)
    sd = s.sd or 0.0
    return Point(s.mean, s.mean - sd, s.mean + sd)


def experiment_document(results: ExperimentResults) -> Document:
    """Every table and plot of the experiments, in the order the README discusses them."""
    p = results.protocol
    doc = Document("coldcast experiments: the paper's tables on the synthetic world")
    status = "complete" if results.complete else f"PARTIAL: {len(results.missing)} cell(s) not run yet"
    doc.text(
        f"Protocol `{p['name']}`: seeds {p['seeds']}; every model gets at most {p['epochs']} x "
        f"{p['steps_per_epoch']} batches, the checkpoint with the best validation AP of its selection tasks, "
        f"early stopping after {p['patience']} epoch(s) without improvement; all variants share one world and are "
        f"scored on the same test days. Figures are mean ± sd over seeds; lifts are relative to the reference of "
        f"the same seed; CI columns are paired bootstrap 95% intervals on the test rows for the first seed. "
        f"Status: {status}."
    )
    if results.missing:
        doc.note("Missing cells: " + ", ".join(results.missing))
    _table1(doc, results)
    _ablations(doc, results.ablations)
    _tiers(doc, results)
    _curve(doc, results)
    _sweep(doc, results)
    _abtest(doc, results.abtest)
    _reports(doc, results)
    t = results.timing
    doc.heading("Timing")
    doc.text(
        f"{t['cells']} cells took {t['cell_seconds'] / 3600:.2f} h of wall time in total (median "
        f"{(t['median_cell_seconds'] or 0):.0f} s per cell, median {(t['median_examples_per_second'] or 0):,.0f} "
        f"training examples/s); aggregation {t['aggregate_seconds']:.0f} s."
    )
    doc.table(["experiment", "hours"], [[k, f"{v / 3600:.2f}"] for k, v in sorted(t["by_experiment_seconds"].items())])
    return doc


def _table1(doc: Document, r: ExperimentResults) -> None:
    doc.heading("Table 1: offline AP relative to the promotions-only multi-task model")
    c = r.ceiling.get("base", {})
    doc.text(
        "Promotions AP: the stream head on promotion impressions (the ad-stream head for models without a "
        "promotion head). Ads AP: the ad-stream head on ad impressions (the promo-stream head for models without "
        "one: direct apply). Test rows: the world's last days; the ground-truth ceiling scores them with the "
        f"true probabilities (promotions AP {c.get('promotions_ap') or 0:.4f}, ads AP {c.get('ads_ap') or 0:.4f})."
    )
    rows = [
        [
            row.label,
            num(row.promotions_ap),
            pct(row.promotions_lift) if row.variant != "promotions_only" else "0",
            ci(row.promotions_lift_ci),
            row.paper_promotions or "",
            num(row.ads_ap),
            pct(row.ads_lift) if row.variant != "promotions_only" else "0",
            ci(row.ads_lift_ci),
            row.paper_ads or "",
        ]
        for row in r.table
    ]
    doc.table(
        [
            "setup",
            "Promotions AP",
            "vs baseline",
            "95% CI (seed 1)",
            "paper",
            "Ads AP",
            "vs baseline",
            "95% CI (seed 1)",
            "paper",
        ],
        rows,
    )
    if r.direct_apply_check:
        chk = r.direct_apply_check
        doc.note(
            f"Direct apply through coldcast.model.transfer.direct_apply (seed {chk['seed']}): ads AP "
            f"{chk['ads_ap_direct_apply_model']:.6f} from the written model folder via evaluate_model, "
            f"{chk['ads_ap_baseline_promo_head']:.6f} from the baseline's promo_stream head: "
            + ("identical." if chk["equal"] else "DIFFERENT (a bug).")
        )
    if r.table:
        doc.image(
            "table1",
            grouped_bars(
                [row.variant for row in r.table],
                {},
                panels={
                    "Promotions AP vs baseline": {"coldcast": [_stat_point(row.promotions_lift) for row in r.table]},
                    "Ads AP vs baseline": {"coldcast": [_stat_point(row.ads_lift) for row in r.table]},
                },
                title="Table 1 (mean ± sd over seeds)",
                ylabel="AP lift",
                percent=True,
            ),
            "Table 1 lifts",
        )


def _ablations(doc: Document, rows: list[Row]) -> None:
    if not rows:
        return
    doc.heading("Ablations the paper does not show (relative to the joint model)")
    doc.text(
        "Each variant changes one thing of the joint model (directional mask on, 50/50 source sampling, all "
        "four feature groups, shared-bottom encoder) and is compared with the joint model of the same seed."
    )
    doc.table(
        ["variant", "Promotions AP", "vs joint", "95% CI", "Ads AP", "vs joint", "95% CI", "best epoch"],
        [
            [
                row.label,
                num(row.promotions_ap),
                pct(row.promotions_lift),
                ci(row.promotions_lift_ci),
                num(row.ads_ap),
                pct(row.ads_lift),
                ci(row.ads_lift_ci),
                num(row.best_epoch, 1),
            ]
            for row in rows
        ],
    )
    doc.image(
        "ablations",
        grouped_bars(
            [row.variant for row in rows],
            {},
            panels={
                "Promotions AP vs joint": {"ablation": [_stat_point(row.promotions_lift) for row in rows]},
                "Ads AP vs joint": {"ablation": [_stat_point(row.ads_lift) for row in rows]},
            },
            title="Ablations (mean ± sd over seeds)",
            ylabel="AP change",
            percent=True,
        ),
        "ablations",
    )


def _tiers(doc: Document, r: ExperimentResults) -> None:
    if not r.tiers:
        return
    doc.heading("Offline lift by popularity tier (ads)")
    doc.text(
        "Ads AP of the joint model against direct apply (the A/B control) and against the ads-only multi-task "
        "model, per popularity tier of the advertised show (0 = most streamed)."
    )
    doc.table(
        [
            "tier",
            "ad rows",
            "positives",
            "direct apply AP",
            "joint AP",
            "ads-only AP",
            "joint vs direct",
            "joint vs ads-only",
        ],
        [
            [
                t.tier,
                f"{t.ad_rows:,}",
                t.positives,
                num(t.direct_apply_ap),
                num(t.joint_ap),
                num(t.ads_multitask_ap),
                pct(t.joint_vs_direct_apply),
                pct(t.joint_vs_ads_multitask),
            ]
            for t in r.tiers
        ],
    )
    doc.image(
        "tier_lift",
        grouped_bars(
            [t.tier for t in r.tiers],
            {
                "joint vs direct apply": [_stat_point(t.joint_vs_direct_apply) for t in r.tiers],
                "joint vs ads-only": [_stat_point(t.joint_vs_ads_multitask) for t in r.tiers],
            },
            title="Ads AP lift of the joint model by popularity tier (mean ± sd over seeds)",
            ylabel="AP lift",
            percent=True,
        ),
        "tier lift",
    )


def _curve(doc: Document, r: ExperimentResults) -> None:
    if not r.curve:
        return
    doc.heading("A new low-data ad objective: learning curve")
    doc.text(
        "The ad channel as a newly launched objective: only a fraction of the ad impressions of the training and "
        "validation days remain (promotions complete), the test days are complete. Direct apply uses no ad label. "
        "finetune_head: the promotions model's features and encoder frozen, a new ad-stream tower trained on the "
        "ad rows; finetune_full: the same with everything trainable; joint: the 5-task model from scratch on "
        "promotions plus the remaining ads."
    )
    fractions = sorted({pt.fraction for pt in r.curve})
    arms = list(dict.fromkeys(pt.arm for pt in r.curve))
    by = {(pt.arm, pt.fraction): pt for pt in r.curve}
    rows = []
    for f in fractions:
        first = next((by[(a, f)] for a in arms if by[(a, f)].ad_rows is not None), None)
        rows.append(
            [f"{f:.0%}", f"{first.ad_rows:,}" if first and first.ad_rows else "–"]
            + [num(by[(a, f)].ads_ap) for a in arms]
        )
    doc.table(["ad labels", "ad training rows", *[f"{a} Ads AP" for a in arms]], rows)
    refs = r.curve_references
    doc.text("References: " + "; ".join(f"{k}: {num(v)}" for k, v in refs.items()) + ".")
    series = {a: [_stat_point(by[(a, f)].ads_ap) for f in fractions] for a in arms}
    for name, stat in refs.items():
        series[name] = [_stat_point(stat) for _ in fractions]
    doc.image(
        "learning_curve",
        lines(
            fractions,
            series,
            title="Ads AP against the share of ad labels (mean ± sd over seeds)",
            xlabel="share of ad labels",
            ylabel="Ads AP",
            log_x=True,
            xticks=[f"{f:.0%}" for f in fractions],
        ),
        "learning curve",
    )


def _sweep(doc: Document, r: ExperimentResults) -> None:
    if not r.sweep:
        return
    doc.heading("Channel similarity sweep: where joint training stops helping")
    doc.text(
        "world.channel_similarity sets how alike listeners respond to a show as a promotion and as an ad (0: "
        "unrelated affinities, channel-specific quality and context effects). One world per value, same seed and "
        "size; the same three variants on each."
    )
    doc.table(
        [
            "similarity",
            "ceiling ads AP",
            "direct apply ads AP",
            "ads-only ads AP",
            "joint ads AP",
            "joint vs ads-only",
            "joint vs direct",
            "promotions-only promo AP",
            "joint promo AP",
            "joint vs promotions-only",
        ],
        [
            [
                f"{pt.similarity:.2f}",
                f"{pt.ceiling_ads_ap or 0:.4f}",
                num(pt.direct_apply_ads_ap),
                num(pt.ads_multitask_ads_ap),
                num(pt.joint_ads_ap),
                pct(pt.joint_vs_ads_multitask),
                pct(pt.joint_vs_direct_apply),
                num(pt.promotions_only_promotions_ap),
                num(pt.joint_promotions_ap),
                pct(pt.joint_vs_promotions_only),
            ]
            for pt in r.sweep
        ],
    )
    doc.image(
        "similarity",
        lines(
            [pt.similarity for pt in r.sweep],
            {
                "ads: joint vs ads-only": [_stat_point(pt.joint_vs_ads_multitask) for pt in r.sweep],
                "ads: joint vs direct apply": [_stat_point(pt.joint_vs_direct_apply) for pt in r.sweep],
                "promotions: joint vs promotions-only": [_stat_point(pt.joint_vs_promotions_only) for pt in r.sweep],
            },
            title="AP lift of the joint model against channel similarity",
            xlabel="world.channel_similarity",
            ylabel="AP lift",
        ),
        "similarity sweep",
    )


def _ab_rows(run: ABRun) -> list[list[str]]:
    out = []
    for seg in run.result.segments:
        lift = seg.lift
        paper = PAPER_TABLE2.get(seg.name, ("", "", "", ""))
        out.append(
            [
                seg.name,
                f"{seg.control.impressions:,} / {seg.treatment.impressions:,}",
                f"{seg.control.streams:,} / {seg.treatment.streams:,}",
                _rel(lift.i2s),
                paper[0],
                _rel(lift.ecps),
                paper[1],
                _rel(lift.ctr),
                paper[2],
                _rel(lift.streams),
                paper[3],
                _rel(lift.expected_i2s),
            ]
        )
    return out


def _rel(v: MetricValue) -> str:
    if v.value is None:
        return "–"
    text = f"{v.value * 100:+.1f}%"
    if v.low is not None and v.high is not None:
        text += f" [{v.low * 100:+.0f}, {v.high * 100:+.0f}]"
    return text


def _abtest(doc: Document, runs: list[ABRun]) -> None:
    if not runs:
        return
    doc.heading("Table 2 shape: simulated budget-split A/B test (joint vs direct apply)")
    oracle = [r for r in runs if r.treatment == "oracle"]
    runs = [r for r in runs if r.treatment != "oracle"]
    if not runs:
        return
    main = [r for r in runs if r.budget_ratio == runs[0].budget_ratio]
    first = main[0].result
    budget = (
        "the world budgets"
        if first.budget_ratio is None
        else f"{first.budget_ratio:g}x the cost of filling every opportunity at the mean CPM"
    )
    doc.text(
        f"Control: the promotions model's promo_stream head scoring ads (direct apply); treatment: the joint model's "
        f"ad_stream head. {first.opportunities:,} ad opportunities over the test days, "
        f"{first.campaigns_per_opportunity} campaigns sampled per opportunity, each arm's budget "
        f"{budget}; outcomes drawn from the truth with shared random numbers; fill rate "
        f"{first.fill_rate['control']:.0%} / {first.fill_rate['treatment']:.0%}. Segments are the shows each arm "
        "chose. Lifts with paired bootstrap 95% intervals over opportunities; 'expected i2s' uses the true "
        "probabilities of the ads shown instead of the drawn streams (no outcome noise)."
    )
    headers = [
        "segment",
        "impressions (C / T)",
        "streams (C / T)",
        "i2s",
        "paper",
        "eCPS",
        "paper",
        "CTR",
        "paper",
        "streams",
        "paper",
        "expected i2s",
    ]
    for run in main:
        doc.heading(f"Seed {run.seed}", level=3)
        doc.table(headers, _ab_rows(run))
    names = [s.name for s in first.segments if s.name.startswith("tier_")]

    def mean_lift(metric: str) -> list[Point]:
        pts = []
        for name in names:
            values = [getattr(r.result.segment(name).lift, metric).value for r in main]
            pts.append(_stat_point(Stat.of(values)))
        return pts

    doc.image(
        "abtest_tiers",
        grouped_bars(
            [n.removeprefix("tier_") for n in names],
            {},
            panels={
                "i2s lift": {"simulated": mean_lift("i2s"), "expected": mean_lift("expected_i2s")},
                "eCPS change (lower is better)": {"simulated": mean_lift("ecps")},
            },
            title="Simulated A/B by popularity tier (mean ± sd over seeds)",
            ylabel="relative change",
            percent=True,
        ),
        "A/B by tier",
    )
    for run in oracle:
        doc.heading(f"Headroom: the oracle (true p(stream)) against the same control, seed {run.seed}", level=3)
        doc.text(
            "The same simulation with the true probabilities as the treatment's scores: the most any model could "
            "gain over direct apply in this market."
        )
        doc.table(headers, _ab_rows(run))
    others = [r for r in runs if r.budget_ratio != runs[0].budget_ratio]
    if others:
        doc.heading("Budget sensitivity (first seed)", level=3)
        doc.text(
            "The same simulation under other budgets: 0.5 = each arm can pay for about half the opportunities at the "
            "mean CPM; 'world budgets' = the world's campaign budgets scaled to the sampled traffic, which rarely "
            "bind. When budgets bind, both arms spend every campaign's budget in full and the greedy first-come "
            "allocation leaves a scorer little to choose: the lift shrinks."
        )
        sens = [r for r in runs if r.seed == runs[0].seed]
        doc.table(
            ["budget", "segment", "fill (C / T)", "spend", "i2s", "eCPS", "CTR", "streams", "expected i2s"],
            [
                [
                    "world budgets" if r.budget_ratio is None else f"{r.budget_ratio:g}x",
                    seg.name,
                    f"{r.result.fill_rate['control']:.0%} / {r.result.fill_rate['treatment']:.0%}",
                    _rel(seg.lift.spend),
                    _rel(seg.lift.i2s),
                    _rel(seg.lift.ecps),
                    _rel(seg.lift.ctr),
                    _rel(seg.lift.streams),
                    _rel(seg.lift.expected_i2s),
                ]
                for r in sens
                for seg in r.result.segments[:3]
            ],
        )


def _reports(doc: Document, r: ExperimentResults) -> None:
    if not r.reports and not r.gate:
        return
    doc.heading("Full evaluation reports and the gate")
    for name, folder in r.reports.items():
        doc.text(f"{name}: `{folder}/report.html` (per task, source and slice, with the ground-truth ceiling).")
    if r.gate:
        g = r.gate
        verdict = "blessed" if g["blessed"] else "blocked"
        doc.text(
            f"Gate, joint model as candidate, direct apply as the promoted model: {verdict} "
            f"({g['checks']['passed']} checks passed, {g['checks']['failed']} failed, {g['checks']['skipped']} "
            f"skipped; `{g['path']}`)."
        )
        for reason in g["reasons"][:12]:
            doc.note(reason)


def write_experiment_reports(results: ExperimentResults, root: str | Path, *, log: LogFn = print) -> list[Path]:
    """summary.md, report.html and plots/ of the experiments, next to results.json."""
    written = experiment_document(results).write_into(Path(root))
    log(f"wrote {Path(root) / 'summary.md'} and {Path(root) / 'report.html'}")
    return written
