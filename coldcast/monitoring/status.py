"""Thresholds from the spec applied to a window's reports: every check, and the status OK / WARN / ALERT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coldcast.core.spec import DriftThresholds
from coldcast.monitoring.reports import ColumnDrift, SegmentReport, TaskQuality


class Status(StrEnum):
    """The outcome of a check or a window, ordered OK < WARN < ALERT."""

    OK = "OK"
    WARN = "WARN"
    ALERT = "ALERT"

    @property
    def level(self) -> int:
        return _LEVELS[self]

    @property
    def exit_code(self) -> int:
        """`coldcast monitor check` exits with this (1 is left to crashes, 2 to usage and data errors)."""
        return _EXIT_CODES[self]

    @classmethod
    def worst(cls, statuses: Sequence[Status]) -> Status:
        return max(statuses, key=lambda s: s.level, default=cls.OK)


_LEVELS = {Status.OK: 0, Status.WARN: 1, Status.ALERT: 2}
_EXIT_CODES = {Status.OK: 0, Status.WARN: 3, Status.ALERT: 4}

Rule = Literal["column", "within", "group_share", "prediction", "calibration", "quality"]


class Check(BaseModel):
    """One threshold comparison: what was measured, where, its WARN and ALERT levels, and the outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Rule
    segment: str  # a drift segment ("all", "source=ad"), a task's population ("promotion") or a label segment
    subject: str  # a feature group or a task
    value: float
    warn: float
    alert: float
    status: Status
    message: str


def _drift_check(rule: str, segment: str, c: ColumnDrift, major: float, message: str) -> Check:
    """A drifted column: WARN at its threshold, ALERT on its own at `major`."""
    assert c.score is not None
    return Check(
        rule=rule,
        segment=segment,
        subject=c.column,
        value=c.score,
        warn=c.threshold,
        alert=major,
        status=Status.ALERT if c.score >= major else Status.WARN,
        message=message,
    )


def _level(value: float, warn: float, alert: float) -> Status:
    if value >= alert:
        return Status.ALERT
    if value >= warn:
        return Status.WARN
    return Status.OK


def evaluate(
    segments: Sequence[SegmentReport], quality: Mapping[str, TaskQuality], cfg: DriftThresholds
) -> list[Check]:
    """Every check of the spec's drift thresholds on a window's segment and quality reports."""
    checks: list[Check] = []
    for seg in segments:
        for c in seg.columns:
            if c.score is None and c.drifted:  # no values at all: the feature stopped arriving (or never did)
                checks.append(
                    Check(
                        rule="column",
                        segment=seg.segment,
                        subject=c.column,
                        value=1.0,  # the share of rows without a value
                        warn=1.0,
                        alert=1.0,
                        status=Status.ALERT,
                        message=f"{seg.segment}: {c.column} has {c.note or 'no values'}",
                    )
                )
                continue
            if c.score is None or c.score < c.threshold:
                continue  # only drifted columns are listed; the group shares below count them too
            major = cfg.major_factor * c.threshold
            message = (
                f"{seg.segment}: {c.column} drifted {c.score:.3f} ({c.method}; drifts at "
                f"{c.threshold:g}, alerts alone at {major:g})"
            )
            checks.append(_drift_check("column", seg.segment, c, major, message))
        for c in seg.within:
            if c.score is None or c.score < c.threshold:
                continue
            major = cfg.major_factor * c.threshold
            feature, _, key = c.column.partition("|")
            message = (
                f"{seg.segment}: {feature} within {key} drifted {c.score:.3f} ({c.method}, the reference "
                f"at the window's mix of {key}; drifts at {c.threshold:g}, alerts alone at {major:g})"
            )
            checks.append(_drift_check("within", seg.segment, c, major, message))
        for group in seg.groups:
            status = _level(group.share, cfg.warn_share, cfg.alert_share)
            names = ", ".join(group.drifted_columns) or "none"
            checks.append(
                Check(
                    rule="group_share",
                    segment=seg.segment,
                    subject=group.group,
                    value=group.share,
                    warn=cfg.warn_share,
                    alert=cfg.alert_share,
                    status=status,
                    message=f"{seg.segment}: {group.drifted}/{group.columns} {group.group} columns drifted "
                    f"({group.share:.0%}; warn {cfg.warn_share:.0%}, alert {cfg.alert_share:.0%}): {names}",
                )
            )
        for p in seg.predictions:
            if p.score is None:
                continue
            warn, alert = cfg.levels(p.task, "prediction")
            checks.append(
                Check(
                    rule="prediction",
                    segment=seg.segment,
                    subject=p.task,
                    value=p.score,
                    warn=warn,
                    alert=alert,
                    status=_level(p.score, warn, alert),
                    message=f"{seg.segment}: {p.task} predictions drifted {p.score:.3f} "
                    f"(warn {warn}, alert {alert}); mean score "
                    f"{_fmt(p.mean)} vs {_fmt(p.reference_mean)} in the reference",
                )
            )

    def calibration_status(shift: float, z: float, warn: float, alert: float) -> Status:
        """A calibration shift counts only when it is significant (|z| at least drift.calibration_min_z)."""
        return _level(abs(shift), warn, alert) if abs(z) >= cfg.calibration_min_z else Status.OK

    for task, q in quality.items():
        shift, z = q.calibration_shift, q.calibration_z
        warn, alert = cfg.levels(task, "calibration")
        if shift is not None and z is not None:
            checks.append(
                Check(
                    rule="calibration",
                    segment=q.population,
                    subject=task,
                    value=abs(shift),
                    warn=warn,
                    alert=alert,
                    status=calibration_status(shift, z, warn, alert),
                    message=f"{task}: observed / predicted rate {_ratio(q.observed_rate, q.mean_prediction)} vs "
                    f"{_ratio(q.reference_observed_rate, q.reference_mean_prediction)} in the reference "
                    f"(|log ratio| {abs(shift):.3f}, z {z:+.1f}; warn {warn}, alert {alert}, "
                    f"if |z| >= {cfg.calibration_min_z:g})",
                )
            )
        for seg in q.segments if q.note is None else []:
            measured = seg.shift
            if measured is None:
                continue
            shift, z = measured
            status = calibration_status(shift, z, warn, alert)
            if status is Status.OK:
                continue  # only flagged segments are listed: there are many
            checks.append(
                Check(
                    rule="calibration",
                    segment=seg.segment,
                    subject=task,
                    value=abs(shift),
                    warn=warn,
                    alert=alert,
                    status=status,
                    message=f"{task} on {seg.segment}: {seg.positives} positives for {seg.predicted:.0f} predicted "
                    f"vs {seg.reference_positives} for {seg.reference_predicted:.0f} in the reference (|log ratio| "
                    f"{abs(shift):.3f}, z {z:+.1f}; warn {warn}, alert {alert}, if |z| >= {cfg.calibration_min_z:g})",
                )
            )
        drop = q.auc_drop
        if drop is not None:
            warn, alert = cfg.levels(task, "quality")
            checks.append(
                Check(
                    rule="quality",
                    segment=q.population,
                    subject=task,
                    value=drop,
                    warn=warn,
                    alert=alert,
                    status=_level(drop, warn, alert),
                    message=f"{task}: ROC-AUC {_fmt(q.auc)} vs {_fmt(q.reference_auc)} in the reference "
                    f"(drop {drop:+.3f}; warn {warn}, alert {alert}); average precision "
                    f"{_fmt(q.average_precision)} vs {_fmt(q.reference_average_precision)}",
                )
            )
    return checks


def summarise(checks: Sequence[Check]) -> tuple[Status, list[str]]:
    """The window's status (its worst check) and the messages of the checks that reached WARN, worst first."""
    status = Status.worst([c.status for c in checks])
    flagged = sorted((c for c in checks if c.status is not Status.OK), key=lambda c: -c.status.level)
    return status, [f"{c.status.value}: {c.message}" for c in flagged]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _ratio(observed: float | None, predicted: float | None) -> str:
    if observed is None or not predicted:
        return "n/a"
    return f"{observed / predicted:.3f}"
