"""Evidently drift and quality reports, the dashboard workspace and alert thresholds."""

from coldcast.monitoring.check import DriftResult, apply_thresholds, check_window
from coldcast.monitoring.columns import ColumnPlan, MonitoredColumn
from coldcast.monitoring.reports import ColumnDrift, GroupDrift, PredictionDrift, SegmentReport, TaskQuality
from coldcast.monitoring.status import Check, Status
from coldcast.monitoring.windows import build_reference, join_labels, latest_dates, read_window

__all__ = [
    "Check",
    "ColumnDrift",
    "ColumnPlan",
    "DriftResult",
    "GroupDrift",
    "MonitoredColumn",
    "PredictionDrift",
    "SegmentReport",
    "Status",
    "TaskQuality",
    "apply_thresholds",
    "build_reference",
    "check_window",
    "join_labels",
    "latest_dates",
    "read_window",
]
