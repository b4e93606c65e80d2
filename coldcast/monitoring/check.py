"""`check_window`: one window of serving against the reference, as reports, a status and files (the library entry)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from evidently.core.report import Snapshot
from pydantic import BaseModel, ConfigDict

from coldcast.core.data import DataError, atomic_dir, write_json
from coldcast.core.predlog import PREDICTION_PREFIX
from coldcast.core.spec import DriftThresholds, Spec
from coldcast.monitoring.columns import LABEL_PREFIX, ColumnPlan
from coldcast.monitoring.reports import (
    MODEL,
    WINDOW,
    SegmentReport,
    TaskQuality,
    check_values,
    checks_snapshot,
    drift_report,
    quality_report,
    rethreshold,
    segments,
    status_snapshot,
)
from coldcast.monitoring.status import Check, Status, evaluate, summarise
from coldcast.monitoring.windows import window_label

RESULT_FILE = "drift.json"
HTML_FILE = "report.html"
SNAPSHOTS = "snapshots"
ProgressFn = Callable[[int, int], None]


class DriftResult(BaseModel):
    """A checked window: its status, the reasons, every check, the drift and quality reports, and its files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Status
    reasons: list[str]
    window: str
    timestamp: datetime
    model_version: str | None
    spec_fingerprint: str
    rows: int
    reference_rows: int
    labelled_rows: int  # rows the label-based checks judged (in `label_window`, or in the window itself)
    label_window: str | None = None
    tasks: list[str]
    excluded: dict[str, str]
    checks: list[Check]
    segments: list[SegmentReport]
    quality: dict[str, TaskQuality]
    out_dir: str | None = None
    html: str | None = None
    json_path: str | None = None
    snapshots: list[str] = []

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    def segment(self, name: str) -> SegmentReport:
        for s in self.segments:
            if s.segment == name:
                return s
        raise KeyError(f"no segment {name!r}; segments are {[s.segment for s in self.segments]}")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: str | Path) -> DriftResult:
        """A result written by check_window (its drift.json, or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / RESULT_FILE
        if not path.exists():
            raise DataError(f"no monitoring result at {path}")
        return cls.model_validate(json.loads(path.read_text()))


def check_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: Spec,
    out_dir: str | Path | None = None,
    *,
    labelled: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    window: str | None = None,
    label_window: str | None = None,
    timestamp: datetime | None = None,
    model_version: str | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> DriftResult:
    """Compare a window of serving (`current`) with the reference and apply the spec's drift thresholds.

    Both frames hold raw rows (a reference over drift.reference_rows is subsampled for feature drift; the label
    checks use all of it): every feature under its data name, `source`, a `prediction_<task>` per task and,
    where labels have arrived, the outcome columns (see `build_reference`, `read_window`, `join_labels`).
    `labelled` (same layout) is the traffic the label-based checks judge, normally the last
    `drift.label_window_days` days with labels joined; without it they use `current`'s labelled rows.
    Writes `out_dir` atomically: drift.json (this result), report.html (Evidently, the whole window) and
    snapshots/*.json (every Evidently run, for `add_to_workspace`). The name is stable: pipelines call it.
    """
    tasks = list(tasks) if tasks is not None else _common_tasks(reference, current)
    if not tasks:
        raise DataError("no prediction_<task> columns are in both the reference and the window")
    if current.empty:
        raise DataError("the window has no rows")
    cfg = spec.drift
    if len(current) > cfg.current_rows:
        current = current.sample(n=cfg.current_rows, random_state=cfg.seed)
    labelled_reference = reference  # the label checks count positives of rare outcomes: they get every row
    if len(reference) > cfg.reference_rows:  # feature drift needs far fewer, and costs per row
        reference = reference.sample(n=cfg.reference_rows, random_state=cfg.seed)
    plan = ColumnPlan.from_reference(spec, reference, tasks)
    ref, cur = plan.frame(reference), plan.frame(current)
    label_ref = plan.label_frame(labelled_reference)
    judged = plan.label_frame(current if labelled is None else labelled)
    window = window or window_label(current)
    timestamp = timestamp or datetime.now(UTC).replace(tzinfo=None)
    meta = {WINDOW: window, MODEL: model_version or ""}

    parts = segments(plan, ref, cur)
    steps = len(parts) + len(tasks) + 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    reports: list[SegmentReport] = []
    snapshots: dict[str, Snapshot] = {}
    for name, ref_rows, cur_rows in parts:
        report, snap = drift_report(
            plan, ref[ref_rows], cur[cur_rows], segment=name, timestamp=timestamp, metadata=meta
        )
        reports.append(report)
        snapshots[f"drift-{name}"] = snap
        tick()
    quality: dict[str, TaskQuality] = {}
    for task in tasks:
        q, snap = quality_report(plan, label_ref, judged, task, timestamp=timestamp, metadata=meta)
        quality[task] = q
        if snap is not None:
            snapshots[f"quality-{task}"] = snap
        tick()
    checks = evaluate(reports, quality, cfg)
    status, reasons = summarise(checks)
    label_columns = [c for c in judged if c.startswith(LABEL_PREFIX)]
    labelled_rows = int(judged[label_columns].notna().any(axis=1).sum()) if label_columns else 0
    values = checks_snapshot(check_values(reports, quality), timestamp=timestamp, metadata=meta)
    if values is not None:
        snapshots["checks"] = values
    snapshots["status"] = status_snapshot(
        status.level, status.value, reasons, len(cur), timestamp=timestamp, metadata=meta
    )
    tick()
    result = DriftResult(
        status=status,
        reasons=reasons,
        window=window,
        timestamp=timestamp,
        model_version=model_version,
        spec_fingerprint=spec.fingerprint(),
        rows=len(cur),
        reference_rows=len(ref),
        labelled_rows=labelled_rows,
        label_window=None if labelled is None else label_window or window_label(labelled),
        tasks=tasks,
        excluded=plan.excluded,
        checks=checks,
        segments=reports,
        quality=quality,
    )
    if out_dir is None:
        return result
    return write_result(result, snapshots, out_dir, overwrite=overwrite)


def apply_thresholds(result: DriftResult, cfg: DriftThresholds) -> DriftResult:
    """The same window judged by other thresholds: drifted columns, checks, status and reasons recomputed."""
    reports = [rethreshold(s, cfg) for s in result.segments]
    checks = evaluate(reports, result.quality, cfg)
    status, reasons = summarise(checks)
    return result.model_copy(update={"segments": reports, "checks": checks, "status": status, "reasons": reasons})


def write_result(
    result: DriftResult, snapshots: dict[str, Snapshot], out_dir: str | Path, *, overwrite: bool = False
) -> DriftResult:
    """Write the result, the whole-window HTML report and every snapshot into `out_dir`, atomically."""
    out_dir = Path(out_dir)
    names = [f"{SNAPSHOTS}/{_safe(name)}.json" for name in snapshots]
    final = result.model_copy(
        update={
            "out_dir": str(out_dir),
            "html": str(out_dir / HTML_FILE),
            "json_path": str(out_dir / RESULT_FILE),
            "snapshots": [str(out_dir / n) for n in names],
        }
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / SNAPSHOTS).mkdir()
        for name, snap in zip(names, snapshots.values(), strict=True):
            (tmp / name).write_text(snap.dumps())
        main = snapshots.get("drift-all")
        if main is not None:
            main.save_html(str(tmp / HTML_FILE))
        write_json(final.to_dict(), tmp / RESULT_FILE)
    return final


def _common_tasks(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    def tasks(frame: pd.DataFrame) -> list[str]:
        return [c.removeprefix(PREDICTION_PREFIX) for c in frame.columns if c.startswith(PREDICTION_PREFIX)]

    theirs = set(tasks(current))
    return [t for t in tasks(reference) if t in theirs]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
