"""Validation of a window of prediction logs before monitoring reads it: a Great Expectations suite from the spec.

Serving accepts unknown categories and numbers outside a feature's nominal range (they score as unknown), so
those are drift for the monitoring report to measure, not corruption. What is checked here is what no served
row can legitimately have: missing columns, a prediction that is not a probability, a row without its request id,
log time or model version, a log time outside the window, a source or a joined label the spec does not know.
Rows that fail are quarantined with their reasons; a table that fails raises.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from coldcast.core.predlog import LOGGED_AT, MODEL_VERSION, PREDICTION_PREFIX, REQUEST_ID, SOURCE
from coldcast.core.spec import NumericFeature, Spec
from coldcast.core.validation import REASON, CheckResult, DataValidationError

# serving refuses NaN and infinities and reads float32: a logged number beyond float32 is a corrupt row
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class LogReport:
    """Rows in, valid and quarantined, with the count per reason and each failed check."""

    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    failures: list[CheckResult]
    tasks: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogValidation:
    """The validated window: the rows that passed, the ones that did not (with `reason`), and the report."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    report: LogReport


def logged_tasks(frame: pd.DataFrame) -> list[str]:
    """Tasks with a prediction column in a log frame."""
    return [c.removeprefix(PREDICTION_PREFIX) for c in frame.columns if c.startswith(PREDICTION_PREFIX)]


def _suite(spec: Spec, tasks: list[str], frame: pd.DataFrame, window: tuple[date, date] | None) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def tag(check: str, column: str) -> dict[str, str]:
        return {"check": check, "column": column}

    ex: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, meta=tag("not_null", c))
        for c in (REQUEST_ID, LOGGED_AT, MODEL_VERSION)
    ]
    for task in tasks:
        column = PREDICTION_PREFIX + task
        ex.append(gxe.ExpectColumnValuesToNotBeNull(column=column, meta=tag("not_null", column)))
        ex.append(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=1, meta=tag("probability", column))
        )
    for f in spec.feature_list:
        if isinstance(f.definition, NumericFeature):
            ex.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=f.name, min_value=-_FLOAT32_MAX, max_value=_FLOAT32_MAX, meta=tag("finite", f.name)
                )
            )
    if SOURCE in frame:
        ex.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=SOURCE, value_set=spec.source_names, meta=tag("value_in_set", SOURCE)
            )
        )
    for outcome in spec.outcome_names:
        if outcome in frame:  # labels joined from delayed outcomes
            ex.append(
                gxe.ExpectColumnValuesToBeInSet(column=outcome, value_set=[0, 1], meta=tag("label_value", outcome))
            )
    if window is not None:
        ex.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=LOGGED_AT,
                min_value=pd.Timestamp(window[0], tz="UTC"),
                max_value=pd.Timestamp(window[1] + timedelta(days=1), tz="UTC"),
                strict_max=True,
                meta=tag("log_window", LOGGED_AT),
            )
        )
    return gx.ExpectationSuite(name=f"{spec.name}-prediction-logs", expectations=ex)


def _run(suite: Any, frame: pd.DataFrame) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    previous = os.environ.get("GX_ANALYTICS_ENABLED")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        context = gx.get_context(mode="ephemeral")
        context.enable_analytics(False)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch = (
            context.data_sources.add_pandas("coldcast")
            .add_dataframe_asset("prediction_logs")
            .add_batch_definition_whole_dataframe("batch")
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite))
        )
        return definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
    finally:
        if previous is None:
            os.environ.pop("GX_ANALYTICS_ENABLED", None)


def validate_logs(
    frame: pd.DataFrame, spec: Spec, *, tasks: list[str] | None = None, window: tuple[date, date] | None = None
) -> LogValidation:
    """Validate logged rows against the spec (and the window's first and last UTC day, if given).

    `tasks` are the heads whose predictions must be there (default: every prediction column in the frame).
    Missing columns raise DataValidationError naming them; failed rows are returned quarantined, never dropped.
    """
    frame = frame.reset_index(drop=True)
    tasks = list(tasks) if tasks is not None else logged_tasks(frame)
    required = [REQUEST_ID, LOGGED_AT, MODEL_VERSION, *spec.feature_names, *(PREDICTION_PREFIX + t for t in tasks)]
    missing = [c for c in required if c not in frame]
    problems = [CheckResult("columns_present", c, "table", 0, "required in a prediction log") for c in missing]
    if not tasks:
        problems.append(CheckResult("columns_present", None, "table", 0, "no prediction_<task> column"))
    if LOGGED_AT in frame and not isinstance(frame[LOGGED_AT].dtype, pd.DatetimeTZDtype):
        problems.append(
            CheckResult(
                "column_type", LOGGED_AT, "table", 0, f"expected UTC timestamps, found {frame[LOGGED_AT].dtype}"
            )
        )
    if problems:
        raise DataValidationError("prediction logs", problems)
    result = _run(_suite(spec, tasks, frame, window), frame)
    reasons = pd.Series([""] * len(frame), dtype=object)
    failures: list[CheckResult] = []
    counts: Counter[str] = Counter()
    for r in result.results:
        meta = r.expectation_config.meta or {}
        info = r.exception_info or {}
        if info.get("raised_exception"):
            raise DataValidationError(
                "prediction logs",
                [CheckResult("expectation_error", meta.get("column"), "table", 0, str(info.get("exception_message")))],
            )
        if r.success:
            continue
        index = np.asarray(
            [i["index"] if isinstance(i, dict) else i for i in r.result.get("unexpected_index_list") or []],
            dtype=np.int64,
        )
        check = CheckResult(
            meta["check"],
            meta["column"],
            "row",
            len(index),
            f"e.g. {list(r.result.get('partial_unexpected_list') or [])[:5]}",
            "great_expectations",
        )
        failures.append(check)
        counts[check.reason] += len(index)
        for i in index:
            reasons.iat[i] = f"{reasons.iat[i]}; {check.reason}" if reasons.iat[i] else check.reason
    bad = (reasons != "").to_numpy()
    report = LogReport(len(frame), int((~bad).sum()), int(bad.sum()), dict(counts), failures, tasks)
    return LogValidation(frame[~bad], frame[bad].assign(**{REASON: reasons[bad]}), report)
