"""The local Evidently workspace: a project per model, a dashboard generated from the spec, checked windows added."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import DashboardPanelPlot, PanelMetric
from evidently.sdk.panels import line_plot_panel
from evidently.ui.workspace import Project, Workspace

from coldcast.core.data import DataError
from coldcast.core.predlog import prediction_column
from coldcast.core.spec import CategoricalFeature, Spec
from coldcast.monitoring.check import DriftResult
from coldcast.monitoring.columns import ALL, label_column
from coldcast.monitoring.reports import KIND, SEGMENT, TASK, threshold_of, within_name


def open_workspace(path: str | Path) -> Workspace:
    """The Evidently workspace in `path`, created if the folder does not exist yet."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"workspace path {path} is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def segment_names(spec: Spec, columns: Sequence[str] | None = None) -> list[str]:
    """Every segment a window can report, in dashboard order: "all", then each value of each segment column
    (drift.segments, or `columns`)."""
    out = [ALL]
    for column in spec.drift.segments if columns is None else columns:
        if column == "source":
            values: Sequence[object] = spec.source_names
        else:
            definition = spec.feature(column).definition
            values = definition.values if isinstance(definition, CategoricalFeature) else []
        out += [f"{column}={v}" for v in values]
    return out


def panel_titles(spec: Spec, tasks: Sequence[str]) -> list[str]:
    """The dashboard's panel titles, in order (the browser test looks for them)."""
    return [p.title for p in dashboard_panels(spec, tasks)]


def dashboard_panels(spec: Spec, tasks: Sequence[str]) -> list[DashboardPanelPlot]:
    """Panels over time: status, drift share overall and per feature group, drift within keys, and per task
    prediction drift, score, quality and calibration per label segment.

    Drift shares have a series per segment; Evidently separates the series of one metric by its parameters
    (never by snapshot metadata alone), so the other panels plot the whole window ("all") only.
    """
    segments = segment_names(spec)
    groups = [g for g in dict.fromkeys(f.group for f in spec.feature_list)]

    def share(group: str) -> list[PanelMetric]:
        return [
            PanelMetric(
                legend=segment,
                metric="FeatureGroupDrift",
                metric_labels={"group": group, "segment": segment, "value_type": "share"},
                metadata={KIND: "drift", SEGMENT: segment},
            )
            for segment in segments
        ]

    panels = [
        line_plot_panel(
            title="Monitoring status (0 OK, 1 WARN, 2 ALERT)",
            values=[PanelMetric(legend="status", metric="MonitoringStatus", metadata={KIND: "status"})],
            size="half",
        ),
        line_plot_panel(
            title="Rows per window",
            values=[PanelMetric(legend="rows", metric="RowCount", metadata={KIND: "drift", SEGMENT: ALL})],
            size="half",
        ),
        line_plot_panel(
            title="Share of drifted feature columns",
            description=f"warn at {spec.drift.warn_share:.0%}, alert at {spec.drift.alert_share:.0%} in any group",
            values=share(ALL),
        ),
    ]
    panels += [
        line_plot_panel(title=f"Feature drift share: {group} features", values=share(group), size="half")
        for group in groups
    ]
    cfg = spec.drift
    if cfg.within:
        within = [within_name(column, key) for column, key in cfg.within.items()]
        levels = ", ".join(f"{n} drifts at {threshold_of(cfg, ALL, n):g}" for n in within)
        panels.append(
            line_plot_panel(
                title="Drift within keys",
                description=f"{cfg.method} of each column within its key's values, the reference resampled to the "
                f"window's mix of keys ({levels})",
                values=[_check_value(name, "within", "", name) for name in within],
            )
        )
    panels.append(
        line_plot_panel(
            title="Prediction drift per task",
            description=f"{spec.drift.method} of each task's scores vs the reference "
            f"(warn {spec.drift.prediction_warn}, alert {spec.drift.prediction_alert})",
            values=[
                PanelMetric(
                    legend=task,
                    metric="ValueDrift",
                    metric_labels={"column": prediction_column(task)},
                    metadata={KIND: "drift", SEGMENT: ALL},
                )
                for task in tasks
            ],
        )
    )
    for task in tasks:
        panels.append(
            line_plot_panel(
                title=f"{task}: mean score and observed rate",
                values=[
                    PanelMetric(
                        legend="mean score (all rows)",
                        metric="MeanValue",
                        metric_labels={"column": prediction_column(task)},
                        metadata={KIND: "drift", SEGMENT: ALL},
                    ),
                    PanelMetric(
                        legend="observed rate (labelled rows)",
                        metric="MeanValue",
                        metric_labels={"column": label_column(task)},
                        metadata={KIND: "quality", TASK: task},
                    ),
                ],
                size="half",
            )
        )
        panels.append(
            line_plot_panel(
                title=f"{task}: average precision and ROC-AUC",
                values=[
                    PanelMetric(
                        legend="average precision",
                        metric="AveragePrecision",
                        metric_labels={"classification_name": task},
                        metadata={KIND: "quality", TASK: task},
                    ),
                    PanelMetric(
                        legend="ROC-AUC",
                        metric="RocAuc",
                        metric_labels={"classification_name": task},
                        metadata={KIND: "quality", TASK: task},
                    ),
                ],
                size="half",
            )
        )
    if cfg.label_segments:
        by = ", ".join(cfg.label_segments)
        for task in tasks:
            warn, alert = cfg.levels(task, "calibration")
            panels.append(
                line_plot_panel(
                    title=f"{task}: calibration shift per {by}",
                    description=f"log of (observed / predicted) over the same in the reference; |shift| WARNs at "
                    f"{warn:g}, ALERTs at {alert:g}, if |z| >= {cfg.calibration_min_z:g}. Segments with fewer than "
                    f"{cfg.min_segment_positives} positives have no point.",
                    values=[
                        _check_value("all rows" if name == ALL else name, "calibration", task, name)
                        for name in segment_names(spec, cfg.label_segments)
                    ],
                )
            )
    return panels


def _check_value(legend: str, check: str, task: str, name: str) -> PanelMetric:
    """A series of one CheckValue (coldcast's own check values, in the windows' `checks` snapshots)."""
    labels = {"check": check, "task": task, "name": name}
    return PanelMetric(legend=legend, metric="CheckValue", metric_labels=labels, metadata={KIND: "checks"})


def project_for(ws: Workspace, name: str, spec: Spec, tasks: Sequence[str], *, description: str = "") -> Project:
    """The workspace's project called `name`, created with the spec's dashboard if there is none yet."""
    found = [p for p in ws.search_project(name) if p.name == name]
    if len(found) > 1:
        raise DataError(f"the workspace has {len(found)} projects named {name!r}; remove all but one")
    if found:
        return found[0]
    project = ws.create_project(name)
    project.description = description or f"coldcast monitoring of model {name}: tasks {', '.join(tasks)}"
    for panel in dashboard_panels(spec, tasks):
        project.dashboard.add_panel(panel)
    project.save()
    return project


def add_to_workspace(
    workspace: str | Path | Workspace,
    result: DriftResult | str | Path,
    spec: Spec,
    *,
    project: str,
) -> list[str]:
    """Add a checked window's snapshots (written by check_window) to the model's project; returns their ids."""
    ws = workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
    result = result if isinstance(result, DriftResult) else DriftResult.read(result)
    if not result.snapshots:
        raise DataError("the result has no snapshot files: run check_window with an out_dir")
    proj = project_for(ws, project, spec, result.tasks)
    ids = []
    for path in result.snapshots:
        if not Path(path).exists():
            raise DataError(f"snapshot file {path} is missing")
        ids.append(str(ws.add_run(proj.id, Snapshot.load(path), include_data=False).id))
    return ids
