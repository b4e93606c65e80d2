"""Plain-Python summaries the components attach to their artifacts: kfp metrics and Markdown for the run's UI."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only attributes are read: a task imports no more than its own step needs
    from coldcast.core.logcheck import LogReport
    from coldcast.core.validation import ValidationReport
    from coldcast.evaluation.gate import GateVerdict
    from coldcast.evaluation.report import EvaluationReport
    from coldcast.monitoring import DriftResult

HEADLINE_METRICS = ("average_precision", "auc", "log_loss", "ece")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def headline_metrics(report: EvaluationReport) -> dict[str, float]:
    """`task.metric` -> value on each task's headline population (undefined metrics are left out)."""
    out = {}
    for name, task in report.tasks.items():
        for metric in HEADLINE_METRICS:
            value = task.headline.model.metric(metric).value
            if value is not None and not math.isnan(value):
                out[f"{name}.{metric}"] = float(value)
    return out


def validation_metrics(report: ValidationReport) -> dict[str, float]:
    """Row counts of a validation run, as kfp metrics."""
    return {
        "rows_in": float(report.rows_in),
        "rows_valid": float(report.rows_valid),
        "rows_quarantined": float(report.rows_quarantined),
        "expectations": float(report.expectations),
    }


def training_metrics(validation: Mapping[str, Mapping[str, float]], best_epoch: int) -> dict[str, float]:
    """Validation AP and AUC of the selected epoch per task, as kfp metrics."""
    out = {"best_epoch": float(best_epoch)}
    for task, m in validation.items():
        for metric in ("average_precision", "auc"):
            value = m.get(metric)
            if value is not None and not math.isnan(value):
                out[f"{task}.validation_{metric}"] = float(value)
    return out


def _counts_table(rows_in: int, valid: int, quarantined: int) -> list[str]:
    return [
        "| rows in | valid | quarantined |",
        "| ---: | ---: | ---: |",
        f"| {rows_in:,} | {valid:,} | {quarantined:,} |",
        "",
    ]


def _reasons_table(reasons: dict[str, int]) -> list[str]:
    """Quarantine reasons, most rows first."""
    rows = [f"| `{reason}` | {n:,} |" for reason, n in sorted(reasons.items(), key=lambda x: -x[1])]
    return ["| reason | rows |", "| --- | ---: |", *rows]


def validation_markdown(report: ValidationReport) -> str:
    """Rows in, valid and quarantined, the reasons, and positive rates per outcome and source."""
    lines = [
        "# Data validation",
        "",
        f"Policy `{report.policy}`, {report.expectations} expectations"
        + (", production data (no truth columns allowed)" if report.production else "")
        + ".",
        "",
        *_counts_table(report.rows_in, report.rows_valid, report.rows_quarantined),
    ]
    if report.reasons:
        lines += ["## Quarantined rows by reason", "", *_reasons_table(report.reasons)]
        lines.append("")
    if report.positive_rates:
        sources = sorted({s for rates in report.positive_rates.values() for s in rates})
        lines += ["## Positive rate per outcome and source", "", "| outcome | " + " | ".join(sources) + " |"]
        lines.append("| --- |" + " ---: |" * len(sources))
        for outcome, rates in report.positive_rates.items():
            cells = [f"{rates[s]:.4f}" if s in rates else "-" for s in sources]
            lines.append(f"| {outcome} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def verdict_markdown(verdict: GateVerdict, report: EvaluationReport, promoted: str | None) -> str:
    """The gate's decision with its reasons, and each task's headline figures."""
    decision = "**blessed**" if verdict.blessed else "**not blessed**"
    against = f"against promoted version `{promoted}`" if promoted else "(first model: floors only)"
    lines = [f"# Promotion gate: {decision}", "", f"Judged on {report.rows:,} test impressions {against}.", ""]
    if verdict.reasons:
        lines += ["## Why not", ""] + [f"- {r}" for r in verdict.reasons] + [""]
    if verdict.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in verdict.notes] + [""]
    lines += ["## Headline figures", "", "| task | population | rows | positives | AP | AUC | log loss | ECE |"]
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, task in report.tasks.items():
        m = task.headline.model
        lines.append(
            f"| {name} | {task.headline_population} | {m.rows:,} | {m.positives:,} | "
            + " | ".join(_fmt(m.metric(x).value) for x in HEADLINE_METRICS)
            + " |"
        )
    checked = [c for c in verdict.checks if c.passed is not None]
    skipped = len(verdict.checks) - len(checked)
    lines += ["", f"{len(checked)} checks judged, {len(verdict.failed)} failed, {skipped} skipped (few positives)."]
    return "\n".join(lines) + "\n"


def promotion_reasons(verdict: GateVerdict) -> list[str]:
    """Why a blessed model was promoted, for the registry's history: the count of checks and the gate's notes."""
    judged = [c for c in verdict.checks if c.passed is not None]
    first = "first model: floors only" if verdict.first_model else "floors and regressions vs the promoted model"
    skipped = len(verdict.checks) - len(judged)
    return [f"blessed by the gate ({first}): {len(judged)} checks passed, {skipped} skipped", *verdict.notes]


def log_validation_markdown(report: LogReport) -> str:
    """Rows of a serving window in, valid and quarantined, with the reasons."""
    lines = [
        "# Serving logs validation",
        "",
        f"Heads checked: {', '.join(report.tasks)}.",
        "",
        *_counts_table(report.rows_in, report.rows_valid, report.rows_quarantined),
    ]
    if report.reasons:
        lines += _reasons_table(report.reasons)
    return "\n".join(lines) + "\n"


def drift_metrics(result: DriftResult) -> dict[str, float]:
    """A monitoring check as kfp metrics: rows, the status level (0 OK, 1 WARN, 2 ALERT), checks per status."""
    out = {
        "rows": float(result.rows),
        "reference_rows": float(result.reference_rows),
        "labelled_rows": float(result.labelled_rows),
        "status_level": float(result.status.level),
    }
    for status in ("WARN", "ALERT"):
        out[f"checks_{status.lower()}"] = float(sum(c.status.value == status for c in result.checks))
    return out


def alert_markdown(result: DriftResult, name: str, version: str) -> str:
    """The status of a window for model `name` `version`, with the reasons and the checks that fired."""
    lines = [f"# {result.status.value}: {name} {version} on {result.window}", ""]
    lines += [f"- {r}" for r in result.reasons] or ["No threshold reached."]
    fired = [c for c in result.checks if c.status.value != "OK"]
    if fired:
        lines += [
            "",
            "| rule | segment | subject | value | warn | alert | status |",
            "| --- | --- | --- | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {c.rule} | {c.segment} | {c.subject} | {c.value:.4f} | {c.warn:g} | {c.alert:g} | {c.status.value} |"
            for c in fired
        ]
    return "\n".join(lines) + "\n"
