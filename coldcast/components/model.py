"""Model components: train, look up the promoted model, evaluate with the gate, package, register or reject."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from coldcast.components.base import component


@component
def train_model(
    data: Input[Dataset], epochs: int, steps_per_epoch: int, model: Output[Model], metrics: Output[Metrics]
) -> None:
    """Train the spec's multi-task model on the training days; the best validation epoch is kept (0 = spec's value)."""
    import json

    from coldcast.components.summaries import training_metrics
    from coldcast.core.data import Dataset as Data
    from coldcast.model.train import train

    # overwrite: a retried task writes to the same artifact path as the attempt before it
    result = train(
        Data.open(data.path).spec(),
        data.path,
        model.path,
        epochs=epochs or None,
        steps_per_epoch=steps_per_epoch or None,
        overwrite=True,
        verbose=2,
        log=print,
    )
    for key, value in training_metrics(result.validation, result.best_epoch).items():
        metrics.log_metric(key, value)
    with open(metrics.path, "w") as f:
        json.dump(metrics.metadata, f)
    model.metadata.update(framework="tensorflow", tasks=list(result.validation), best_epoch=result.best_epoch)


@component
def promoted_version(registry: str, name: str) -> str:
    """The registry's promoted version of `name`, or "" before the first promotion (never cached: it reads state)."""
    from coldcast.core.registry import Registry

    promoted = Registry(registry).promoted(name)
    return promoted.version if promoted else ""


@component
def evaluate_model(
    model: Input[Model],
    data: Input[Dataset],
    registry: str,
    name: str,
    promoted: str,
    evaluation: Output[Artifact],
    verdict: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("EvaluationOutputs", [("blessed", bool)]):
    """Evaluate on the test days (per task and slice) and judge the gate against the promoted model's report."""
    import json
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from coldcast.components.summaries import headline_metrics, verdict_markdown
    from coldcast.core.data import Dataset as Data
    from coldcast.core.registry import Registry
    from coldcast.evaluation import bless
    from coldcast.evaluation.evaluate import evaluate_model as evaluate
    from coldcast.evaluation.render import read_report, write_reports

    result = evaluate(model.path, data.path, split="test")
    # the promoted model's report is the reference for the gate's regression checks (None: floors only)
    promoted_report = Registry(registry).evaluation(name, promoted) if promoted else None
    reference = read_report(promoted_report) if promoted_report else None
    gate = bless(result, Data.open(data.path).spec(), reference)
    files = write_reports(result, evaluation.path, reference=reference)
    shutil.copyfile(files.html, report.path)
    gate.write(verdict.path)
    Path(summary.path).write_text(verdict_markdown(gate, result, promoted or None))
    for key, value in headline_metrics(result).items():
        metrics.log_metric(key, value)
    Path(metrics.path).write_text(json.dumps(metrics.metadata))
    verdict.metadata.update(blessed=gate.blessed, failed=len(gate.failed), promoted=promoted)
    return namedtuple("EvaluationOutputs", ["blessed"])(gate.blessed)


@component
def package_model(model: Input[Model], name: str) -> NamedTuple(
    "PackageOutputs", [("model_tag", str), ("bento_tag", str)]
):
    """Store the SavedModel in the BentoML model store and build the service's bento around it."""
    from collections import namedtuple

    from coldcast.serving.package import build_bento
    from coldcast.serving.store import import_model

    model_tag = import_model(model.path, name=name, labels={"artifact": model.uri})
    return namedtuple("PackageOutputs", ["model_tag", "bento_tag"])(model_tag, build_bento(model_tag))


@component
def register_model(
    model: Input[Model], evaluation: Input[Artifact], verdict: Input[Artifact], registry: str, name: str, bento_tag: str
) -> str:
    """Copy the blessed model, its evaluation report and verdict into the registry and promote it; its version."""
    from pathlib import Path

    from coldcast.components.summaries import headline_metrics, promotion_reasons
    from coldcast.core.registry import Registry
    from coldcast.evaluation import GateVerdict
    from coldcast.evaluation.render import read_report

    report = read_report(evaluation.path)
    version = Registry(registry).register(
        model.path,
        name=name,
        evaluation=Path(evaluation.path) / "evaluation.json",
        verdict=verdict.path,
        bento_tag=bento_tag,
        metrics=headline_metrics(report),
        spec_fingerprint=report.spec_fingerprint,
        labels={"artifact": model.uri},
        promote=True,
        reasons=promotion_reasons(GateVerdict.read(verdict.path)),
    )
    return version.version


@component
def reject_model(model: Input[Model], verdict: Input[Artifact], registry: str, name: str) -> str:
    """Record in the registry's history that the gate did not bless this candidate, and why; returns ""."""
    from coldcast.core.registry import Registry
    from coldcast.evaluation import GateVerdict

    Registry(registry).reject(name, source=model.uri, reasons=GateVerdict.read(verdict.path).reasons)
    return ""
