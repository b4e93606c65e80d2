"""Evidently metrics that Evidently lacks: average precision, drift share of a feature group, status, check values.

Snapshots store a metric's parameters and values, not its class, so the Evidently UI shows and plots these
without importing coldcast (their type ids are `evidently:metric_v2:<class name>`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from evidently.core.datasets import Dataset
from evidently.core.metric_types import (
    CountCalculation,
    CountMetric,
    CountValue,
    SingleValue,
    SingleValueCalculation,
    SingleValueMetric,
)
from evidently.core.report import Context
from evidently.legacy.renderers.html_widgets import CounterData, counter, table_data, text_widget
from evidently.metrics import ValueDrift
from sklearn.metrics import average_precision_score

from coldcast.monitoring.columns import has_values


class AveragePrecision(SingleValueMetric):
    """Average precision (area under the precision-recall curve) of one binary classification of the definition."""

    classification_name: str = "default"


class AveragePrecisionCalculation(SingleValueCalculation[AveragePrecision]):
    def calculate(
        self, context: Context, current_data: Dataset, reference_data: Dataset | None
    ) -> tuple[SingleValue, SingleValue | None]:
        current = self.result(self._value(current_data))
        reference = None if reference_data is None else self.result(self._value(reference_data))
        shown = [CounterData("current", f"{current.value:.4f}")]
        if reference is not None:
            shown.append(CounterData("reference", f"{reference.value:.4f}"))
        current.widget = [counter(counters=shown, title=self.display_name())]
        return current, reference

    def _value(self, data: Dataset) -> float:
        task = data.data_definition.get_classification(self.metric.classification_name)
        if task is None or task.prediction_probas is None:
            raise ValueError(f"no binary classification {self.metric.classification_name!r} with probabilities")
        frame = data.as_dataframe()[[task.target, task.prediction_probas]].dropna()
        y = frame[task.target].to_numpy()
        if len(y) == 0 or y.min() == y.max():
            return float("nan")  # undefined without both classes
        return float(average_precision_score(y == task.pos_label, frame[task.prediction_probas].to_numpy()))

    def display_name(self) -> str:
        return f"Average precision ({self.metric.classification_name})"


class FeatureGroupDrift(CountMetric):
    """How many columns of a feature group drifted (score at or above its threshold), and their share.

    The per-column scores are the report's own ValueDrift results (same method and thresholds), so nothing is
    computed twice; a column without values in either window counts as drifted (a feature that stopped arriving).
    """

    group: str
    columns: list[str]
    method: str
    thresholds: dict[str, float]
    # The segment is a parameter, not only snapshot metadata: Evidently's dashboards tell series of one metric
    # apart by its parameters (a series filtered by metadata alone loses its points to the first such series).
    segment: str = "all"


class FeatureGroupDriftCalculation(CountCalculation[FeatureGroupDrift]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None) -> CountValue:
        if reference_data is None:
            raise ValueError("feature group drift needs reference data")
        current, reference = current_data.as_dataframe(), reference_data.as_dataframe()
        rows = []
        for column in self.metric.columns:
            threshold = self.metric.thresholds[column]
            if not has_values(current[column]) or not has_values(reference[column]):
                rows.append([column, "no values", f"{threshold:g}", "yes"])
                continue
            drift = ValueDrift(column=column, method=self.metric.method, threshold=threshold)
            score = float(context.calculate_metric(drift.to_calculation()).value)
            rows.append([column, f"{score:.4f}", f"{threshold:g}", "yes" if score >= threshold else "no"])
        drifted = sum(r[-1] == "yes" for r in rows)
        result = self.result(drifted, drifted / len(rows) if rows else 0.0)
        result.widget = [
            table_data(
                title=f"Drift of the {self.metric.group} features: {drifted} of {len(rows)} columns",
                column_names=["column", f"score ({self.metric.method})", "threshold", "drifted"],
                data=rows,
            )
        ]
        return result

    def display_name(self) -> str:
        return f"Drifted columns of feature group {self.metric.group!r}"


class MonitoringStatus(SingleValueMetric):
    """The window's status level (0 OK, 1 WARN, 2 ALERT), read from a one-row dataset with its reasons.

    The level comes from the data, not from a parameter: Evidently's dashboards draw one series per set of a
    metric's parameters, so every window's status must share them.
    """

    column: str = "level"


class MonitoringStatusCalculation(SingleValueCalculation[MonitoringStatus]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        row = current_data.as_dataframe().iloc[0]
        result = self.result(int(row[self.metric.column]))
        text = str(row.get("reasons", "")) or "No check reached its WARN level."
        result.widget = [
            counter(counters=[CounterData("status", str(row.get("status", "")))], title="Monitoring status"),
            text_widget(text=text, title="Reasons"),
        ]
        return result

    def display_name(self) -> str:
        return "Monitoring status level (0 OK, 1 WARN, 2 ALERT)"


class CheckValue(SingleValueMetric):
    """One value coldcast computed for a window's check (a `within` drift score, a segment's calibration shift),
    read from the row of a small dataset whose `check`, `task` and `name` match the parameters.

    The values are computed outside Evidently (within drift resamples the reference per key; calibration counts
    positives per segment), so this metric only carries them into a snapshot for the dashboard to plot. The
    parameters name the series: one per check, task and name, shared by every window.
    """

    check: str
    task: str = ""
    name: str


class CheckValueCalculation(SingleValueCalculation[CheckValue]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Dataset | None) -> SingleValue:
        frame = current_data.as_dataframe()
        m = self.metric
        rows = frame[(frame["check"] == m.check) & (frame["task"] == m.task) & (frame["name"] == m.name)]
        if len(rows) != 1:
            raise ValueError(f"{len(rows)} rows hold the value of check {m.check!r}, task {m.task!r}, {m.name!r}")
        row = rows.iloc[0]
        result = self.result(float(row["value"]))
        shown = [CounterData(m.name, f"{result.value:+.4f}")]
        result.widget = [counter(counters=shown, title=self.display_name()), text_widget(text=str(row["note"]))]
        return result

    def display_name(self) -> str:
        m = self.metric
        return f"{m.check} check{f' of {m.task}' if m.task else ''}: {m.name}"


def finite(value: Any) -> float | None:
    """A metric value as a float, or None when it is missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
