"""Evidently reports of one window: feature and prediction drift per segment, quality per task, as typed results."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Report
from evidently import Dataset as EvidentlyDataset
from evidently.core.metric_types import Metric
from evidently.core.report import ReferenceMetricNotFound, Snapshot
from evidently.metrics import MeanValue, RocAuc, RowCount, ValueDrift
from pydantic import Field
from sklearn.exceptions import UndefinedMetricWarning

from coldcast.core.predlog import SOURCE, prediction_column
from coldcast.core.records import Record
from coldcast.core.spec import DriftThresholds
from coldcast.monitoring.columns import ALL, MISSING, ColumnPlan, has_values, label_column
from coldcast.monitoring.metrics import AveragePrecision, CheckValue, FeatureGroupDrift, MonitoringStatus, finite

# Snapshot metadata keys: dashboards select snapshots by them.
KIND, SEGMENT, TASK, WINDOW, MODEL = "kind", "segment", "task", "window", "model_version"


class ColumnDrift(Record):
    """One monitored column in one segment: its drift score against the reference and whether it drifted."""

    column: str
    feature: str
    group: str
    kind: str
    encoding: str
    method: str
    threshold: float
    score: float | None  # None when the window or the reference has no values for it
    drifted: bool
    note: str | None = None


class GroupDrift(Record):
    """A feature group in one segment: how many of its monitored columns drifted."""

    group: str
    columns: int
    drifted: int
    share: float
    drifted_columns: list[str]


class PredictionDrift(Record):
    """One task's predicted probabilities in one segment: drift score and mean score, now and in the reference."""

    task: str
    method: str
    score: float | None
    mean: float | None
    reference_mean: float | None


class SegmentReport(Record):
    """Drift of the whole window (segment "all") or of the rows of one segment value ("source=ad")."""

    segment: str
    rows: int
    reference_rows: int
    share: float  # drifted columns / monitored columns
    columns: list[ColumnDrift]
    groups: list[GroupDrift]
    predictions: list[PredictionDrift]
    # `column|key`: drift within the key's values (drift.within); not in the shares
    within: list[ColumnDrift] = Field(default_factory=list)

    def column(self, name: str) -> ColumnDrift:
        for c in [*self.columns, *self.within]:
            if c.column == name:
                return c
        raise KeyError(f"segment {self.segment!r} has no column {name!r}")

    def group(self, name: str) -> GroupDrift:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(f"segment {self.segment!r} has no feature group {name!r}")

    def prediction(self, task: str) -> PredictionDrift:
        for p in self.predictions:
            if p.task == task:
                return p
        raise KeyError(f"segment {self.segment!r} has no task {task!r}")


def log_shift(
    positives: float, predicted: float, reference_positives: float, reference_predicted: float
) -> tuple[float, float] | None:
    """(log of observed / predicted now over the same in the reference, its z score), or None if undefined.

    The standard error is that of the two log positive counts (Poisson): the summed predictions are nearly exact.
    """
    parts = (positives, predicted, reference_positives, reference_predicted)
    if any(p is None or p <= 0 for p in parts):
        return None
    shift = math.log((positives / predicted) / (reference_positives / reference_predicted))
    return shift, shift / math.sqrt(1 / positives + 1 / reference_positives)


class SegmentCalibration(Record):
    """One task on the labelled rows of one value of a label segment (`genre=comedy`): positives vs predicted."""

    segment: str
    rows: int
    positives: int
    predicted: float  # the sum of the predicted probabilities
    reference_rows: int
    reference_positives: int
    reference_predicted: float

    @property
    def shift(self) -> tuple[float, float] | None:
        """(log shift of observed / predicted vs the reference, its z score)."""
        return log_shift(self.positives, self.predicted, self.reference_positives, self.reference_predicted)


class TaskQuality(Record):
    """One task on its labelled rows (its home source's, if it has one), in the window and in the reference."""

    task: str
    population: str
    rows: int
    positives: int
    reference_rows: int
    reference_positives: int
    average_precision: float | None = None
    reference_average_precision: float | None = None
    auc: float | None = None
    reference_auc: float | None = None
    observed_rate: float | None = None
    mean_prediction: float | None = None
    reference_observed_rate: float | None = None
    reference_mean_prediction: float | None = None
    note: str | None = None  # why the label-based checks are skipped, if they are
    # per value of drift.label_segments with enough positives
    segments: list[SegmentCalibration] = Field(default_factory=list)

    @property
    def calibration_shift(self) -> float | None:
        """log of (observed / predicted now) over (observed / predicted in the reference); 0 when unchanged."""
        parts = (self.observed_rate, self.mean_prediction, self.reference_observed_rate, self.reference_mean_prediction)
        if self.note is not None or any(p is None or p <= 0 for p in parts):
            return None
        o, p, ro, rp = parts  # type: ignore[misc]
        return math.log((o / p) / (ro / rp))

    @property
    def calibration_z(self) -> float | None:
        """The calibration shift in standard errors of the positive counts (now and in the reference)."""
        shift = self.calibration_shift
        if shift is None or not self.positives or not self.reference_positives:
            return None
        return shift / math.sqrt(1 / self.positives + 1 / self.reference_positives)

    @property
    def auc_drop(self) -> float | None:
        """How much ROC-AUC fell below the reference's (negative: it rose). AUC ignores the base rate, which
        swings with the weekday; average precision moves with it, so it is reported but not judged."""
        if self.note is not None or self.auc is None or self.reference_auc is None:
            return None
        return self.reference_auc - self.auc

    @property
    def ap_change(self) -> float | None:
        """Relative change of average precision vs the reference (-0.2: 20% lower)."""
        if self.note is not None or not self.average_precision or not self.reference_average_precision:
            return None
        return self.average_precision / self.reference_average_precision - 1


# --------------------------------------------------------------------------------------------------- drift
def segments(
    plan: ColumnPlan, reference: pd.DataFrame, current: pd.DataFrame
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, reference rows, current rows) of "all" and of every segment value large enough in both windows."""
    cfg = plan.spec.drift
    out = [(ALL, np.ones(len(reference), bool), np.ones(len(current), bool))]
    for column in cfg.segments:
        values = sorted(set(current[column]) & set(reference[column]), key=str)
        for value in values:
            ref_rows = (reference[column] == value).to_numpy()
            cur_rows = (current[column] == value).to_numpy()
            if min(ref_rows.sum(), cur_rows.sum()) >= cfg.min_segment_rows:
                out.append((f"{column}={value}", ref_rows, cur_rows))
    return out


def threshold_of(cfg: DriftThresholds, segment: str, column: str) -> float:
    """A column's drift threshold in a segment: `segment/column`, else `column`, else the default."""
    return cfg.thresholds.get(f"{segment}/{column}", cfg.thresholds.get(column, cfg.threshold))


def drift_report(
    plan: ColumnPlan,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    segment: str = ALL,
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[SegmentReport, Snapshot]:
    """Feature drift (per column and feature group) and prediction drift of one segment, in one Evidently run."""
    cfg = plan.spec.drift
    usable, empty = [], {}
    for c in plan.columns:
        if not has_values(current[c.name]):
            empty[c.name] = "no values in the window"
        elif not has_values(reference[c.name]):
            empty[c.name] = "no values in the reference"
        else:
            usable.append(c)
    thresholds = {c.name: threshold_of(cfg, segment, c.name) for c in plan.columns}
    column_metrics = {
        c.name: ValueDrift(column=c.name, method=cfg.method, threshold=thresholds[c.name]) for c in usable
    }
    tasks = [t for t in plan.tasks if current[prediction_column(t)].notna().any()]
    prediction_metrics = {
        t: (
            ValueDrift(column=prediction_column(t), method=cfg.method, threshold=cfg.levels(t, "prediction")[0]),
            MeanValue(column=prediction_column(t)),
        )
        for t in tasks
    }
    # Drifted-column counts per feature group are what dashboards plot (same scores, same thresholds).
    counts = [
        FeatureGroupDrift(
            group=group,
            columns=names,
            method=cfg.method,
            thresholds={n: thresholds[n] for n in names},
            segment=segment,
        )
        for group, names in [(ALL, plan.names), *((g, plan.group_columns(g)) for g in plan.groups)]
    ]
    metrics: list[Metric] = [RowCount(), *column_metrics.values(), *counts]
    for drift, mean in prediction_metrics.values():
        metrics += [drift, mean]
    snapshot = Report(metrics).run(
        _dataset(plan, current),
        _dataset(plan, reference),
        timestamp=timestamp,
        metadata={**(metadata or {}), KIND: "drift", SEGMENT: segment},
        tags=["drift", segment],
    )
    ctx = snapshot.context

    columns = []
    for c in plan.columns:
        if c.name in column_metrics:
            score = finite(ctx.get_metric_result(column_metrics[c.name]).value)
            drifted = score is not None and score >= thresholds[c.name]
            note = None
        else:
            score, drifted, note = None, True, empty[c.name]  # a feature that stopped arriving is a failure
        columns.append(
            ColumnDrift(
                column=c.name,
                feature=c.feature,
                group=c.group,
                kind=c.kind,
                encoding=c.encoding,
                method=cfg.method,
                threshold=thresholds[c.name],
                score=score,
                drifted=drifted,
                note=note,
            )
        )
    groups = _groups(columns)
    predictions = []
    for t, (drift, mean) in prediction_metrics.items():
        predictions.append(
            PredictionDrift(
                task=t,
                method=cfg.method,
                score=finite(ctx.get_metric_result(drift).value),
                mean=finite(ctx.get_metric_result(mean).value),
                reference_mean=_reference_value(snapshot, mean),
            )
        )
    within = [
        within_drift(plan, reference, current, column, key, threshold_of(cfg, segment, within_name(column, key)))
        for column, key in cfg.within.items()
        if column in plan.names
    ]
    report = SegmentReport(
        segment=segment,
        rows=len(current),
        reference_rows=len(reference),
        share=sum(c.drifted for c in columns) / len(columns),
        columns=columns,
        groups=groups,
        predictions=predictions,
        within=within,
    )
    return report, snapshot


def within_name(column: str, key: str) -> str:
    """The reported name of a column tested within a key's values: `format|campaign_id`."""
    return f"{column}|{key}"


def within_drift(
    plan: ColumnPlan, reference: pd.DataFrame, current: pd.DataFrame, column: str, key: str, threshold: float
) -> ColumnDrift:
    """Drift of `column` within the values of `key`: the window's rows of keys the reference also has, against the
    reference's rows of those keys resampled (seeded) to the window's mix of keys, in Evidently's ValueDrift.

    A change of which keys are served (campaigns start and end) then scores ~0; a change of the column's
    distribution inside the keys (the same campaigns serving another format) scores as plain drift would.
    """
    cfg = plan.spec.drift
    c = plan.column(column)
    base = {"column": within_name(column, key), "feature": c.feature, "group": c.group, "kind": c.kind}
    base |= {"encoding": f"within {key}", "method": cfg.method, "threshold": threshold}
    if key not in current or key not in reference:
        return ColumnDrift(**base, score=None, drifted=False, note=f"no {key} column")
    shared = (set(current[key]) & set(reference[key])) - {MISSING}
    cur = current[current[key].isin(shared)]
    ref = reference[reference[key].isin(shared)]
    if min(len(cur), len(ref)) < cfg.min_segment_rows or not has_values(cur[column]) or not has_values(ref[column]):
        note = f"fewer than {cfg.min_segment_rows} rows of {key} values in both windows"
        return ColumnDrift(**base, score=None, drifted=False, note=note)
    weight = ref[key].map(cur[key].value_counts(normalize=True) / ref[key].value_counts(normalize=True))
    weight = weight.to_numpy(dtype=float)
    picked = np.random.default_rng(cfg.seed).choice(len(ref), size=len(ref), p=weight / weight.sum())
    ref = ref.iloc[np.sort(picked)]
    kinds = {"numerical_columns": [column]} if c.kind == "numerical" else {"categorical_columns": [column]}
    definition = DataDefinition(**kinds)
    metric = ValueDrift(column=column, method=cfg.method, threshold=threshold)
    snapshot = Report([metric]).run(
        EvidentlyDataset.from_pandas(cur[[column]].reset_index(drop=True), data_definition=definition),
        EvidentlyDataset.from_pandas(ref[[column]].reset_index(drop=True), data_definition=definition),
    )
    score = finite(snapshot.context.get_metric_result(metric).value)
    return ColumnDrift(**base, score=score, drifted=score is not None and score >= threshold)


def _groups(columns: Sequence[ColumnDrift]) -> list[GroupDrift]:
    out = []
    for group in dict.fromkeys(c.group for c in columns):
        members = [c for c in columns if c.group == group]
        hit = [c.column for c in members if c.drifted]
        share = len(hit) / len(members)
        out.append(GroupDrift(group=group, columns=len(members), drifted=len(hit), share=share, drifted_columns=hit))
    return out


def rethreshold(report: SegmentReport, cfg: DriftThresholds) -> SegmentReport:
    """The segment's drifted columns and group shares under other thresholds (the scores stay as measured)."""

    def judged(c: ColumnDrift) -> ColumnDrift:
        threshold = threshold_of(cfg, report.segment, c.column)
        drifted = c.drifted if c.score is None else c.score >= threshold
        return c.model_copy(update={"threshold": threshold, "drifted": drifted})

    columns = [judged(c) for c in report.columns]
    share = sum(c.drifted for c in columns) / len(columns)
    within = [judged(c) for c in report.within]
    return report.model_copy(update={"columns": columns, "groups": _groups(columns), "share": share, "within": within})


def _reference_value(snapshot: Snapshot, metric: Metric) -> float | None:
    """A single-value metric's result on the reference, if Evidently computed one."""
    try:
        result = snapshot.context.get_reference_metric_result(metric.metric_id)
    except ReferenceMetricNotFound:  # a BaseException in Evidently, so it must be named
        return None
    return finite(getattr(result, "value", None))


def _dataset(plan: ColumnPlan, frame: pd.DataFrame) -> EvidentlyDataset:
    columns = plan.names + plan.prediction_columns + [s for s in plan.spec.drift.segments if s not in plan.names]
    return EvidentlyDataset.from_pandas(frame[columns], data_definition=plan.data_definition())


# --------------------------------------------------------------------------------------------------- quality
def task_rows(plan: ColumnPlan, frame: pd.DataFrame, task: str) -> np.ndarray:
    """The rows a task is judged on: labelled, and on its home source when it has one (as in training)."""
    if label_column(task) not in frame:
        return np.zeros(len(frame), bool)
    rows = frame[label_column(task)].notna().to_numpy() & frame[prediction_column(task)].notna().to_numpy()
    home = plan.spec.tasks[task].home_source
    if home is not None and SOURCE in frame:
        rows &= (frame[SOURCE] == home).to_numpy()
    return rows


def quality_report(
    plan: ColumnPlan,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    task: str,
    *,
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[TaskQuality, Snapshot | None]:
    """AP, ROC-AUC, observed rate and mean score of one task on its labelled rows, now and in the reference."""
    home = plan.spec.tasks[task].home_source
    cur = _labelled(current, plan, task)
    ref = _labelled(reference, plan, task)
    base: dict[str, Any] = {
        "task": task,
        "population": home or "all",
        "rows": len(cur),
        "positives": int(cur[label_column(task)].sum()),
        "reference_rows": len(ref),
        "reference_positives": int(ref[label_column(task)].sum()),
    }
    need = plan.spec.drift.min_positives
    short = [
        name
        for name, frame in (("window", cur), ("reference", ref))
        if frame[label_column(task)].sum() < need or (frame[label_column(task)] == 0).sum() < need
    ]
    if short:
        note = f"fewer than {need} positives or negatives with labels in the {' and the '.join(short)}"
        return TaskQuality(**base, note=note), None
    ap, auc = AveragePrecision(classification_name=task), RocAuc(classification_name=task)
    predicted, observed = MeanValue(column=prediction_column(task)), MeanValue(column=label_column(task))
    pair = [prediction_column(task), label_column(task)]
    with warnings.catch_warnings():
        # Evidently's ROC-AUC also computes precision at a 0.5 cut-off, which rare outcomes never reach
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report([RowCount(), ap, auc, predicted, observed]).run(
            EvidentlyDataset.from_pandas(cur[pair], data_definition=plan.quality_definition(task)),
            EvidentlyDataset.from_pandas(ref[pair], data_definition=plan.quality_definition(task)),
            timestamp=timestamp,
            metadata={**(metadata or {}), KIND: "quality", TASK: task},
            tags=["quality", task],
        )
    ctx = snapshot.context

    def both(metric: Metric) -> tuple[float | None, float | None]:
        return finite(ctx.get_metric_result(metric).value), _reference_value(snapshot, metric)

    ap_now, ap_ref = both(ap)
    auc_now, auc_ref = both(auc)
    pred_now, pred_ref = both(predicted)
    obs_now, obs_ref = both(observed)
    quality = TaskQuality(
        **base,
        average_precision=ap_now,
        reference_average_precision=ap_ref,
        auc=auc_now,
        reference_auc=auc_ref,
        observed_rate=obs_now,
        mean_prediction=pred_now,
        reference_observed_rate=obs_ref,
        reference_mean_prediction=pred_ref,
        segments=segment_calibration(plan, ref, cur, task),
    )
    return quality, snapshot


def segment_calibration(
    plan: ColumnPlan, reference: pd.DataFrame, current: pd.DataFrame, task: str
) -> list[SegmentCalibration]:
    """Positives and summed predictions of a task's labelled rows per value of every label segment, now and in
    the reference (values with drift.min_segment_positives positives in both)."""
    cfg = plan.spec.drift
    out = []
    for column in cfg.label_segments:
        if column not in current or column not in reference:
            continue
        sums = {}
        for name, frame in (("now", current), ("ref", reference)):
            grouped = frame.groupby(column)
            sums[name] = pd.DataFrame(
                {
                    "rows": grouped.size(),
                    "positives": grouped[label_column(task)].sum(),
                    "predicted": grouped[prediction_column(task)].sum(),
                }
            )
        both = sums["now"].join(sums["ref"], rsuffix="_ref", how="inner")
        need = cfg.min_segment_positives
        both = both[(both["positives"] >= need) & (both["positives_ref"] >= need)]
        for value, row in both.sort_index().iterrows():
            out.append(
                SegmentCalibration(
                    segment=f"{column}={value}",
                    rows=int(row["rows"]),
                    positives=int(row["positives"]),
                    predicted=float(row["predicted"]),
                    reference_rows=int(row["rows_ref"]),
                    reference_positives=int(row["positives_ref"]),
                    reference_predicted=float(row["predicted_ref"]),
                )
            )
    return out


def _labelled(frame: pd.DataFrame, plan: ColumnPlan, task: str) -> pd.DataFrame:
    segments = [c for c in plan.spec.drift.label_segments if c in frame]
    rows = task_rows(plan, frame, task)
    if not rows.any():
        empty = {prediction_column(task): pd.Series(dtype=float), label_column(task): pd.Series(dtype=int)}
        return pd.DataFrame(empty | {c: pd.Series(dtype=object) for c in segments})
    out = frame.loc[rows, [prediction_column(task), label_column(task), *segments]].reset_index(drop=True)
    out[label_column(task)] = out[label_column(task)].astype(int)
    return out


# --------------------------------------------------------------------------------------------------- checks
def check_values(segments: Sequence[SegmentReport], quality: Mapping[str, TaskQuality]) -> pd.DataFrame:
    """The values of the checks Evidently does not compute, one row each (check, task, name, value, note):

    `within` drift scores of the whole window (name `format|campaign_id`) and each task's calibration shift, on
    its whole population (name "all") and per label segment (`genre=comedy`), wherever they were measured.
    """
    rows: list[tuple[str, str, str, float, str]] = []
    for c in next((seg.within for seg in segments if seg.segment == ALL), []):
        if c.score is not None:
            rows.append(("within", "", c.column, c.score, f"{c.method} {c.score:.4f}, drifts at {c.threshold:g}"))
    for task, q in quality.items():
        shift, z = q.calibration_shift, q.calibration_z
        if shift is not None and z is not None:
            predicted = q.rows * (q.mean_prediction or 0.0)
            note = f"{q.positives} positives for {predicted:.0f} predicted, z {z:+.1f}"
            rows.append(("calibration", task, ALL, shift, note))
        for s in q.segments if q.note is None else []:
            if s.shift is not None:
                note = f"{s.positives} positives for {s.predicted:.0f} predicted, z {s.shift[1]:+.1f}"
                rows.append(("calibration", task, s.segment, s.shift[0], note))
    return pd.DataFrame(rows, columns=["check", "task", "name", "value", "note"])


def checks_snapshot(
    values: pd.DataFrame, *, timestamp: datetime | None = None, metadata: Mapping[str, str] | None = None
) -> Snapshot | None:
    """A snapshot of `check_values` (one CheckValue metric per row) for the dashboard, or None without values."""
    if values.empty:
        return None
    metrics: list[Metric] = [
        CheckValue(check=r.check, task=r.task, name=r.name) for r in values.itertuples(index=False)
    ]
    definition = DataDefinition(numerical_columns=["value"], categorical_columns=["check", "task", "name", "note"])
    return Report(metrics).run(
        EvidentlyDataset.from_pandas(values.reset_index(drop=True), data_definition=definition),
        None,
        timestamp=timestamp,
        metadata={**(metadata or {}), KIND: "checks"},
        tags=["checks"],
    )


# --------------------------------------------------------------------------------------------------- status
def status_snapshot(
    level: int,
    status: str,
    reasons: Sequence[str],
    rows: int,
    *,
    timestamp: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Snapshot:
    """A one-metric snapshot carrying the window's status level and reasons, for the dashboard's status panel."""
    text = "\n".join(f"- {r}" for r in reasons)
    frame = pd.DataFrame({"level": [level], "status": [status], "reasons": [text], "rows": [rows]})
    definition = DataDefinition(numerical_columns=["level", "rows"], text_columns=["status", "reasons"])
    return Report([MonitoringStatus()]).run(
        EvidentlyDataset.from_pandas(frame, data_definition=definition),
        None,
        timestamp=timestamp,
        metadata={**(metadata or {}), KIND: "status"},
        tags=["status", status],
    )
