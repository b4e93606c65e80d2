"""Data components: ingest (the synthetic world, KuaiRand or an existing dataset) and validation."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from coldcast.components.base import component


@component
def ingest_data(
    source: str, data_path: str, data_version: str, preset: str, overrides: list[str], dataset: Output[Dataset]
) -> None:
    """Generate the synthetic world, import KuaiRand from `data_path`, or snapshot the dataset at `data_path`.

    The spec is the shipped default (for a path: the dataset's own) with `preset` and `overrides` over it; the
    dataset carries it to every later step. `data_version` only keys the cache (see coldcast.core.ingest).
    """
    from coldcast.core.ingest import ingest

    result = ingest(source, dataset.path, path=data_path or None, preset=preset, overrides=overrides)
    dataset.metadata.update(
        source=source, path=data_path, data_version=data_version, rows=result.rows, spec=result.spec_fingerprint
    )


@component
def validate_data(
    data: Input[Dataset],
    production: bool,
    validated: Output[Dataset],
    quarantine: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> None:
    """Run the spec's Great Expectations suite shard by shard; bad rows go to `quarantine` with their reason."""
    import json
    import os

    from coldcast.components.summaries import validation_markdown, validation_metrics
    from coldcast.core.data import Dataset as Data
    from coldcast.core.validation import QUARANTINE, validate_dataset

    result = validate_dataset(data.path, Data.open(data.path).spec(), validated.path, production=production)
    os.replace(os.path.join(validated.path, QUARANTINE), quarantine.path)
    with open(report.path, "w") as f:
        f.write(validation_markdown(result))
    for key, value in validation_metrics(result).items():
        metrics.log_metric(key, value)
    with open(metrics.path, "w") as f:
        json.dump(metrics.metadata, f)
    validated.metadata.update(rows=result.rows_valid, quarantined=result.rows_quarantined, reasons=result.reasons)
    quarantine.metadata.update(rows=result.rows_quarantined, reasons=result.reasons)
