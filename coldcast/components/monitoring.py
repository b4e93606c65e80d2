"""Monitoring components: the promoted model's reference, a window of serving logs, validation, drift, the alert."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from coldcast.components.base import component


@component
def reference_data(registry: str, name: str, version: str, dataset_path: str, reference: Output[Dataset]) -> None:
    """Sample and score the promoted model's dataset (default: the one it was trained on): drift's reference."""
    from pathlib import Path

    from coldcast.core.data import write_parquet
    from coldcast.core.registry import Registry
    from coldcast.core.spec import load_spec
    from coldcast.monitoring import build_reference
    from coldcast.monitoring.windows import model_metadata

    model_dir = Registry(registry).model_dir(name, version)
    data = dataset_path or model_metadata(model_dir)["data"]["path"]
    frame = build_reference(data, model_dir, load_spec(base=model_dir / "spec.yaml"))
    write_parquet(frame, Path(reference.path) / "reference.parquet")
    reference.metadata.update(rows=len(frame), dataset=str(data), version=version)


@component
def read_logs(
    logs: str, days: int, labels: str, registry: str, name: str, version: str, window: Output[Dataset]
) -> None:
    """The last `days` UTC days of serving logs (0: the spec's drift.window_days), with delayed labels joined."""
    from pathlib import Path

    from coldcast.core.data import write_parquet
    from coldcast.core.registry import Registry
    from coldcast.core.spec import load_spec
    from coldcast.monitoring import join_labels, latest_dates, read_window

    spec = load_spec(base=Registry(registry).model_dir(name, version) / "spec.yaml")
    dates = latest_dates(logs, days or spec.drift.window_days)
    frame = read_window(logs, dates)
    frame = join_labels(frame, labels, spec) if labels else frame
    write_parquet(frame, Path(window.path) / "window.parquet")
    window.metadata.update(rows=len(frame), dates=dates, labels=labels, logs=logs)


@component
def validate_logs(
    window: Input[Dataset],
    registry: str,
    name: str,
    version: str,
    valid: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> None:
    """Check the window's rows against the model's spec and heads; rows that fail go to `quarantine`."""
    import json
    from datetime import date
    from pathlib import Path

    import pandas as pd

    from coldcast.components.summaries import log_validation_markdown
    from coldcast.core.data import write_parquet
    from coldcast.core.logcheck import validate_logs as check
    from coldcast.core.registry import Registry
    from coldcast.core.spec import load_spec
    from coldcast.monitoring.windows import model_metadata

    model_dir = Registry(registry).model_dir(name, version)
    days = [date.fromisoformat(d) for d in window.metadata["dates"]]
    result = check(
        pd.read_parquet(Path(window.path) / "window.parquet"),
        load_spec(base=model_dir / "spec.yaml"),
        tasks=model_metadata(model_dir)["tasks"],
        window=(min(days), max(days)),
    )
    write_parquet(result.valid, Path(valid.path) / "window.parquet")
    write_parquet(result.quarantined, Path(quarantine.path) / "window.parquet")
    Path(report.path).write_text(log_validation_markdown(result.report))
    for key in ("rows_in", "rows_valid", "rows_quarantined"):
        metrics.log_metric(key, float(getattr(result.report, key)))
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    valid.metadata.update(rows=result.report.rows_valid, dates=window.metadata["dates"])
    quarantine.metadata.update(rows=result.report.rows_quarantined, reasons=result.report.reasons)


@component
def drift_report(
    reference: Input[Dataset],
    current: Input[Dataset],
    registry: str,
    name: str,
    version: str,
    result: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> NamedTuple("DriftOutputs", [("status", str)]):
    """Compare the window with the reference (Evidently) and apply the spec's thresholds: OK, WARN or ALERT."""
    import json
    import shutil
    from collections import namedtuple
    from pathlib import Path

    import pandas as pd

    from coldcast.components.summaries import drift_metrics
    from coldcast.core.registry import Registry
    from coldcast.core.spec import load_spec
    from coldcast.monitoring import check_window

    spec = load_spec(base=Registry(registry).model_dir(name, version) / "spec.yaml")
    checked = check_window(
        pd.read_parquet(Path(reference.path) / "reference.parquet"),
        pd.read_parquet(Path(current.path) / "window.parquet"),
        spec,
        result.path,
        model_version=version,
    )
    shutil.copyfile(checked.html, report.path)
    for key, value in drift_metrics(checked).items():
        metrics.log_metric(key, value)
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    result.metadata.update(status=checked.status.value, window=checked.window, reasons=checked.reasons)
    return namedtuple("DriftOutputs", ["status"])(checked.status.value)


@component
def raise_alert(result: Input[Artifact], registry: str, name: str, version: str, alert: Output[Markdown]) -> str:
    """Record the check in the registry's history, write the alert, and return the status retraining keys on."""
    from pathlib import Path

    from coldcast.components.summaries import alert_markdown
    from coldcast.core.registry import Registry
    from coldcast.monitoring import DriftResult

    checked = DriftResult.read(result.path)
    Registry(registry).monitored(
        name,
        version=version,
        status=checked.status.value,
        reasons=checked.reasons,
        window=checked.window,
        source=result.uri,
    )
    Path(alert.path).write_text(alert_markdown(checked, name, version))
    print(f"monitoring {name} {version} on {checked.window}: {checked.status.value}", *checked.reasons, sep="\n  ")
    return checked.status.value
