"""The promotion gate ("blessing"): floors and largest regressions vs the promoted model, per task and slice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from coldcast.core.data import write_json
from coldcast.core.records import Record
from coldcast.core.spec import Spec
from coldcast.evaluation.metrics import HIGHER_IS_BETTER, MetricSet, MetricValue
from coldcast.evaluation.report import EvaluationReport, Figure, TaskReport

HEADLINE = "headline"


class GateCheck(Record):
    """One comparison the gate made, and whether it passed (None: skipped, with the reason)."""

    task: str
    slice: str  # "headline" or "name=value", within the task's headline population
    metric: str
    kind: Literal["floor", "regression"]
    value: float | None
    threshold: float | None  # the floor, or the worst value the promoted model's figure allows
    promoted: float | None = None
    passed: bool | None
    reason: str


class GateVerdict(Record):
    """Whether a candidate model may be promoted, with every check and a reason for each failure."""

    blessed: bool
    first_model: bool
    reasons: list[str]
    notes: list[str]
    checks: list[GateCheck]

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.passed is False]

    def write(self, path: str | Path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def read(cls, path: str | Path) -> GateVerdict:
        return cls.model_validate(json.loads(Path(path).read_text()))


def bless(
    candidate: EvaluationReport,
    spec: Spec,
    promoted: EvaluationReport | None = None,
    *,
    min_positives: int | None = None,
) -> GateVerdict:
    """Judge `candidate` against the spec's gate: floors always, regressions vs `promoted` when there is one.

    Checks run on each task's headline figure and on every slice of its headline population. For log loss and
    ECE (lower is better) a floor is an upper bound and a regression is a relative increase. A slice with fewer
    than `min_positives` (default: the spec's gate.min_positives) positives, or where the metric is undefined,
    is skipped; so is a floor that even the ground truth does not reach on that slice (synthetic data only),
    since no model could pass it. With `gate.slice_regressions: significant` a slice fails only when the whole
    95% interval of the candidate's figure is on the wrong side of the bound (the miss is not noise); headline
    figures are always judged on their point value.
    """
    gate = spec.gate
    min_positives = gate.min_positives if min_positives is None else min_positives
    significant = gate.slice_regressions == "significant"
    checks: list[GateCheck] = []
    notes: list[str] = []
    for task in gate.floors:
        if task not in candidate.tasks:
            checks.append(
                GateCheck(
                    task=task,
                    slice=HEADLINE,
                    metric=next(iter(gate.floors[task]), "-"),
                    kind="floor",
                    value=None,
                    threshold=None,
                    passed=False,
                    reason=f"{task}: the candidate was not evaluated on this task, which has floors",
                )
            )
    for task_name, task in candidate.tasks.items():
        for slice_name, figure in _figures(task):
            for metric, floor in gate.floors.get(task_name, {}).items():
                checks.append(_floor(task_name, slice_name, metric, floor, figure, min_positives, significant))
            if promoted is None or task_name not in promoted.tasks:
                continue
            reference = dict(_figures(promoted.tasks[task_name])).get(slice_name)
            if reference is None:
                continue
            for metric, drop in gate.max_regression.items():
                checks.append(
                    _regression(
                        task_name, slice_name, metric, drop, figure.model, reference.model, min_positives, significant
                    )
                )
    if promoted is not None:
        if promoted.data_fingerprint != candidate.data_fingerprint:
            notes.append(
                "the promoted model's report was computed on other rows: regressions compare different data "
                "(re-evaluate the promoted model on the candidate's evaluation set for a fair comparison)"
            )
        missing = sorted(set(promoted.tasks) - set(candidate.tasks))
        if missing:
            notes.append(f"tasks in the promoted report but not in the candidate's: {missing}")
    reasons = [c.reason for c in checks if c.passed is False]
    return GateVerdict(
        blessed=not reasons,
        first_model=promoted is None,
        reasons=reasons,
        notes=notes,
        checks=checks,
    )


def _figures(task: TaskReport) -> Iterator[tuple[str, Figure]]:
    yield HEADLINE, task.headline
    for name, groups in task.population().slices.items():
        for value, figure in groups.items():
            yield f"{name}={value}", figure


def _floor(
    task: str, where: str, metric: str, floor: float, figure: Figure, min_positives: int, significant: bool
) -> GateCheck:
    higher = HIGHER_IS_BETTER[metric]
    value = figure.model.metric(metric).value
    base = dict(task=task, slice=where, metric=metric, kind="floor", value=value, threshold=floor)
    label = f"{task} [{where}] {metric}"
    bound = "at least" if higher else "at most"
    skip = _skip(figure.model, metric, min_positives, headline=where == HEADLINE)
    if skip:
        return GateCheck(**base, passed=_skipped(where), reason=f"{label}: {_verb(where)} ({skip})")
    assert value is not None
    if figure.ceiling is not None and where != HEADLINE:
        truth = figure.ceiling.metric(metric).value
        if truth is not None and not _ok(truth, floor, higher):
            reason = f"{label}: skipped (even the ground truth scores {truth:.4f}, short of the floor {floor:g})"
            return GateCheck(**base, passed=None, reason=reason)
    if _ok(value, floor, higher):
        return GateCheck(**base, passed=True, reason=f"{label} = {value:.4f}, {bound} the floor {floor:g}")
    if significant and where != HEADLINE and _within_noise(figure.model.metric(metric), floor, higher):
        return GateCheck(
            **base,
            passed=True,
            reason=f"{label} = {value:.4f}, short of the floor {floor:g} only within its 95% interval",
        )
    return GateCheck(**base, passed=False, reason=f"{label} = {value:.4f}, must be {bound} {floor:g}")


def _regression(
    task: str,
    where: str,
    metric: str,
    max_drop: float,
    model: MetricSet,
    reference: MetricSet,
    min_positives: int,
    significant: bool,
) -> GateCheck:
    higher = HIGHER_IS_BETTER[metric]
    value, before = model.metric(metric).value, reference.metric(metric).value
    label = f"{task} [{where}] {metric}"
    # Higher-is-better may fall by max_drop of the promoted value; lower-is-better may rise by as much.
    limit = None if before is None else (before * (1 - max_drop) if higher else before * (1 + max_drop))
    base = dict(task=task, slice=where, metric=metric, kind="regression", value=value, threshold=limit, promoted=before)
    skip = _skip(model, metric, min_positives, headline=where == HEADLINE)
    if skip:
        return GateCheck(**base, passed=_skipped(where), reason=f"{label}: {_verb(where)} ({skip})")
    if before is None:
        # Nothing to regress from: the floors alone judge this figure.
        return GateCheck(**base, passed=None, reason=f"{label}: skipped (undefined for the promoted model)")
    assert value is not None and before is not None and limit is not None
    change = (value - before) / abs(before) if before else 0.0
    described = f"{label} = {value:.4f} vs promoted {before:.4f} ({change:+.1%})"
    worst = f"{'drop' if higher else 'rise'} allowed {max_drop:.0%}"
    if _ok(value, limit, higher):
        return GateCheck(**base, passed=True, reason=f"{described}, within the {worst}")
    if significant and where != HEADLINE and _within_noise(model.metric(metric), limit, higher):
        return GateCheck(**base, passed=True, reason=f"{described}: past the {worst} only within its 95% interval")
    return GateCheck(**base, passed=False, reason=f"{described}: worse than the largest {worst}")


def _within_noise(value: MetricValue, bound: float, higher: bool) -> bool:
    """Whether the figure's 95% interval still reaches the bound (without an interval: it does not)."""
    if value.low is None or value.high is None:
        return False
    return value.high >= bound if higher else value.low <= bound


def _skip(model: MetricSet, metric: str, min_positives: int, *, headline: bool) -> str | None:
    value = model.metric(metric)
    if value.value is None:
        return f"undefined: {value.reason}"
    if not headline and model.positives < min_positives:
        return f"{model.positives} positives, fewer than {min_positives}"
    return None


def _skipped(where: str) -> bool | None:
    # A slice that cannot be judged is skipped; a headline that cannot be judged blocks the model.
    return False if where == HEADLINE else None


def _verb(where: str) -> str:
    return "cannot be judged" if where == HEADLINE else "skipped"


def _ok(value: float, bound: float, higher: bool) -> bool:
    return value >= bound if higher else value <= bound
