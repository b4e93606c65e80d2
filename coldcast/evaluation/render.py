"""Evaluation reports on disk: the JSON report, a Markdown summary with PNG plots and one self-contained HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coldcast.core.data import atomic_dir
from coldcast.evaluation.document import HTML, MARKDOWN, PLOTS, Document
from coldcast.evaluation.metrics import MetricSet, MetricValue
from coldcast.evaluation.plots import Point, calibration, grouped_bars, slice_panels
from coldcast.evaluation.report import EvaluationReport, Figure

REPORT_JSON = "evaluation.json"
TIER_SLICE = "popularity_tier"


@dataclass(frozen=True)
class ReportFiles:
    """Where write_reports put each output."""

    folder: Path
    json: Path
    markdown: Path
    html: Path
    plots: list[Path]


def write_reports(
    report: EvaluationReport,
    out_dir: str | Path,
    *,
    reference: EvaluationReport | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> ReportFiles:
    """Write evaluation.json, summary.md, report.html and plots/ into `out_dir`, all or nothing.

    With `reference` (e.g. the promoted model's report on the same rows) the tier plot shows the AP lift over
    it; otherwise each tier's AP as a share of the ground-truth ceiling. An existing empty folder is replaced;
    a non-empty one only with `overwrite`.
    """
    out = Path(out_dir)
    if out.is_dir() and not any(out.iterdir()):
        overwrite = True
    doc = report_document(report, reference=reference, title=title)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        report.write(tmp / REPORT_JSON)
        doc.write_into(tmp)
    plots = sorted((out / PLOTS).glob("*.png")) if (out / PLOTS).exists() else []
    return ReportFiles(folder=out, json=out / REPORT_JSON, markdown=out / MARKDOWN, html=out / HTML, plots=plots)


def read_report(path: str | Path) -> EvaluationReport:
    """An EvaluationReport from its JSON file or from a folder written by write_reports."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    if not path.exists():
        raise FileNotFoundError(f"no evaluation report at {path}")
    return EvaluationReport.read(path)


def fmt(value: MetricValue | None, digits: int = 4) -> str:
    """A metric with its interval, e.g. '0.0412 [0.0371, 0.0455]'; '–' when undefined."""
    if value is None or value.value is None:
        return "–"
    text = f"{value.value:.{digits}f}"
    if value.low is not None and value.high is not None:
        text += f" [{value.low:.{digits}f}, {value.high:.{digits}f}]"
    return text


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _point(value: MetricValue) -> Point:
    return Point(value.value, value.low, value.high)


def _row(label: list[str], figure: Figure) -> list[str]:
    m, c = figure.model, figure.ceiling
    return [
        *label,
        f"{m.rows:,}",
        f"{m.positives:,}",
        fmt(m.average_precision),
        fmt(c.average_precision) if c else "–",
        fmt(m.auc, 3),
        fmt(c.auc, 3) if c else "–",
        _num(m.log_loss.value),
        _num(m.ece.value),
        _num(m.predicted_observed.value, 3),
    ]


_COLUMNS = ["rows", "positives", "AP [95% CI]", "ceiling AP", "ROC-AUC", "ceiling AUC", "log loss", "ECE", "pred/obs"]


def report_document(
    report: EvaluationReport, *, reference: EvaluationReport | None = None, title: str | None = None
) -> Document:
    """The summary of a report as a Document (tables and plots), for Markdown and HTML."""
    doc = Document(title or f"Evaluation of {report.model or 'predictions'}")
    where = f"split `{report.split}` of `{report.data}`" if report.data else "the given rows"
    dates = f" ({report.dates[0]} to {report.dates[-1]})" if report.dates else ""
    doc.text(
        f"{report.rows:,} impressions from {where}{dates}. Training cut-off: {report.train_cutoff or 'unknown'}. "
        f"Intervals: percentile bootstrap, {report.bootstrap} resamples (seed {report.seed}). Calibration: "
        f"{report.calibration_bins} {report.calibration_strategy} bins."
        + (
            " The ceiling columns score the same rows with the world's true probabilities: the best any model could do."
            if report.has_ceiling
            else ""
        )
    )
    for note in report.notes:
        doc.note(note)

    doc.heading("Headline per task")
    doc.text("Each task on its home source's rows (where it has one), else on every row that labels it.")
    doc.table(
        ["task", "population", *_COLUMNS],
        [_row([t, r.headline_population], r.headline) for t, r in report.tasks.items()],
    )
    doc.heading("Every population")
    doc.text(
        "A task is also scored on the other source's labelled rows: the promotion stream head on ads is the "
        "paper's direct-apply control; the ad stream head on promotions shows how much an ads model transfers."
    )
    doc.table(
        ["task", "population", *_COLUMNS],
        [[*_row([t, name], pop.overall)] for t, r in report.tasks.items() for name, pop in r.populations.items()],
    )

    curves = {
        t: {
            series: [(b.mean_predicted or 0.0, b.observed_rate or 0.0, b.count) for b in ms.calibration]
            for series, ms in _series(r.headline).items()
        }
        for t, r in report.tasks.items()
    }
    doc.heading("Calibration")
    doc.text(
        "Observed rate against mean prediction per bin on each task's headline rows (log axes). eCPS depends on "
        "p(stream) being right, not only on its ranking."
    )
    doc.image("calibration", calibration(curves, title="Calibration (headline rows)"), "calibration curves")

    tier_plot = _tier_plot(report, reference)
    if tier_plot is not None:
        doc.heading("By popularity tier")
        doc.text(
            "AP lift over the reference report per tier (tiers 0-2 are the most streamed shows)."
            if reference is not None
            else "AP per tier as a share of the ground-truth ceiling's AP on the same rows (1 = as good as the truth)."
        )
        doc.image("tiers", tier_plot, "AP by popularity tier")

    doc.heading("Slices")
    for task, r in report.tasks.items():
        pop = r.population()
        doc.heading(f"{task} ({r.headline_population})", level=3)
        panels = {
            name: {
                series: {value: _point(ms.average_precision) for value, ms in _slice_series(groups, series).items()}
                for series in _series(r.headline)
            }
            for name, groups in pop.slices.items()
        }
        if panels:
            doc.image(
                f"ap_slices_{task}",
                slice_panels(panels, title=f"{task}: AP by slice ({r.headline_population} rows)", xlabel="AP"),
                f"AP by slice for {task}",
            )
        rows = [_row([name, value], fig) for name, groups in pop.slices.items() for value, fig in groups.items()]
        doc.table(["slice", "value", *_COLUMNS], rows)
    return doc


def _series(figure: Figure) -> dict[str, MetricSet]:
    out = {"model": figure.model}
    if figure.ceiling is not None:
        out["ceiling (truth)"] = figure.ceiling
    return out


def _slice_series(groups: dict[str, Figure], series: str) -> dict[str, MetricSet]:
    """Per slice value, the model's or the ceiling's metrics."""
    return {value: ms for value, fig in groups.items() if (ms := _series(fig).get(series)) is not None}


def _tier_plot(report: EvaluationReport, reference: EvaluationReport | None) -> bytes | None:
    tasks = [t for t, r in report.tasks.items() if TIER_SLICE in r.population().slices]
    if not tasks:
        return None
    tiers = sorted({v for t in tasks for v in report.tasks[t].population().slices[TIER_SLICE]}, key=int)
    series: dict[str, list[Point]] = {}
    for t in tasks:
        groups = report.tasks[t].population().slices[TIER_SLICE]
        points = []
        for tier in tiers:
            fig = groups.get(tier)
            ap = fig.model.average_precision.value if fig else None
            if reference is not None:
                ref_task = reference.tasks.get(t)
                ref_groups = ref_task.population().slices.get(TIER_SLICE, {}) if ref_task else {}
                ref = ref_groups.get(tier)
                base = ref.model.average_precision.value if ref else None
            else:
                base = fig.ceiling.average_precision.value if fig and fig.ceiling else None
            if ap is None or not base:
                points.append(Point(None))
            else:
                points.append(Point(ap / base - 1.0) if reference is not None else Point(ap / base))
        series[t] = points
    if all(p.value is None for pts in series.values() for p in pts):
        return None
    if reference is not None:
        return grouped_bars(tiers, series, title="AP lift over the reference by tier", ylabel="AP lift", percent=True)
    return grouped_bars(tiers, series, title="AP as a share of the ceiling by tier", ylabel="AP / ceiling AP")
