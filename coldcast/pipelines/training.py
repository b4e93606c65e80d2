"""The training pipeline: ingest -> validate -> train -> evaluate -> if blessed: package -> register."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Metrics, Model

from coldcast.components.base import PLATFORM_IMAGE
from coldcast.components.data import ingest_data, validate_data
from coldcast.components.model import (
    evaluate_model,
    package_model,
    promoted_version,
    register_model,
    reject_model,
    train_model,
)
from coldcast.core.ingest import folder_version, resolve_spec

PIPELINE_NAME = "coldcast-training"
# Where the compiled pipeline expects the registry and the BentoML store: a volume mounted into every pod (see
# the README), so that what the package and register steps write outlives their pods.
CLUSTER_REGISTRY = "/mnt/coldcast/registry"
CLUSTER_BENTOML_HOME = "/mnt/coldcast/bentoml"
DEFAULT_MODEL_NAME = "coldcast"


class TrainingOutputs(NamedTuple):
    """What a training run returns: every artifact a user looks at, the bento tag and the registered version."""

    dataset: Dataset
    quarantine: Dataset
    validation: Markdown
    model: Model
    evaluation: Artifact
    report: HTML
    verdict: Artifact
    gate: Markdown
    metrics: Metrics
    bento_tag: str
    version: str


def use_image(task: dsl.PipelineTask, image: str) -> dsl.PipelineTask:
    """Run `task` in `image` when it is not the platform image the components were declared with."""
    return task if image == PLATFORM_IMAGE else task.set_container_image(image)


def training_pipeline(
    image: str = PLATFORM_IMAGE, registry: str = CLUSTER_REGISTRY, bentoml_home: str | None = None
) -> Any:
    """The training pipeline, every task in `image`, `registry` the default registry location.

    `bentoml_home` sets BENTOML_HOME for the package step (on a cluster: a path on the shared volume); without
    it the step uses the environment's own BentoML home, as a local run does.
    """

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Ingest, validate, train, evaluate and gate the coldcast multi-task model; package and "
        "register it when the gate blesses it.",
    )
    def coldcast_training(
        source: str = "synthetic",
        data_path: str = "",
        data_version: str = "",
        preset: str = "",
        overrides: list[str] = [],  # noqa: B006 (kfp reads defaults from the signature; never mutated)
        epochs: int = 0,
        steps_per_epoch: int = 0,
        production: bool = False,
        registry: str = registry,
        model_name: str = DEFAULT_MODEL_NAME,
    ) -> TrainingOutputs:
        ingested = use_image(
            ingest_data(
                source=source, data_path=data_path, data_version=data_version, preset=preset, overrides=overrides
            ),
            image,
        )
        checked = use_image(validate_data(data=ingested.outputs["dataset"], production=production), image)
        trained = use_image(
            train_model(data=checked.outputs["validated"], epochs=epochs, steps_per_epoch=steps_per_epoch), image
        )
        # Read the registry only once the model is trained, and never from the cache: the gate must compare
        # against whatever is promoted now, which another run may have changed meanwhile.
        promoted = use_image(promoted_version(registry=registry, name=model_name).after(trained), image)
        promoted.set_caching_options(enable_caching=False)
        evaluated = use_image(
            evaluate_model(
                model=trained.outputs["model"],
                data=checked.outputs["validated"],
                registry=registry,
                name=model_name,
                promoted=promoted.output,
            ),
            image,
        )
        with dsl.If(evaluated.outputs["blessed"] == True, "blessed"):  # noqa: E712 (a kfp condition, not a test)
            packaged = use_image(package_model(model=trained.outputs["model"], name=model_name), image)
            if bentoml_home:
                packaged.set_env_variable("BENTOML_HOME", bentoml_home)
            registered = use_image(
                register_model(
                    model=trained.outputs["model"],
                    evaluation=evaluated.outputs["evaluation"],
                    verdict=evaluated.outputs["verdict"],
                    registry=registry,
                    name=model_name,
                    bento_tag=packaged.outputs["bento_tag"],
                ),
                image,
            )
        with dsl.Else("not-blessed"):
            rejected = use_image(
                reject_model(
                    model=trained.outputs["model"],
                    verdict=evaluated.outputs["verdict"],
                    registry=registry,
                    name=model_name,
                ),
                image,
            )
        return TrainingOutputs(
            dataset=checked.outputs["validated"],
            quarantine=checked.outputs["quarantine"],
            validation=checked.outputs["report"],
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            report=evaluated.outputs["report"],
            verdict=evaluated.outputs["verdict"],
            gate=evaluated.outputs["summary"],
            metrics=evaluated.outputs["metrics"],
            bento_tag=dsl.OneOf(packaged.outputs["bento_tag"], rejected.output),
            version=dsl.OneOf(registered.output, rejected.output),
        )

    return coldcast_training


def training_arguments(
    source: str = "synthetic",
    data_path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    production: bool = False,
    registry: str | Path = CLUSTER_REGISTRY,
    model_name: str | None = None,
) -> dict[str, Any]:
    """The pipeline's arguments, with the spec resolved once here so that a bad key fails before any step runs.

    The model's registry name defaults to the spec's `name`, so that models of different specs (the podcast
    world's, KuaiRand's) are never gated against each other.
    """
    spec = resolve_spec(source, data_path, preset, overrides)
    return {
        "source": source,
        "data_path": str(Path(data_path).resolve()) if data_path else "",
        # kfp keys its cache on parameters only: the version makes a changed input folder a cache miss
        "data_version": folder_version(data_path) if data_path else "",
        "preset": preset or "",
        "overrides": list(overrides),
        "epochs": epochs or 0,
        "steps_per_epoch": steps_per_epoch or 0,
        "production": production,
        "registry": str(registry),
        "model_name": model_name or spec.name,
    }


@dataclass(frozen=True)
class TaskFigure:
    """A task's headline test figures: AP with its 95% interval, the ground-truth ceiling where known, AUC."""

    task: str
    population: str
    rows: int
    positives: int
    ap: float | None
    ap_low: float | None
    ap_high: float | None
    ceiling_ap: float | None
    auc: float | None


@dataclass(frozen=True)
class TrainingSummary:
    """What a finished training run tells its user: the verdict, per-task AP, artifacts, bento and version."""

    blessed: bool
    first_model: bool
    reasons: list[str]
    notes: list[str]
    figures: list[TaskFigure]
    artifacts: dict[str, Path]
    bento_tag: str
    version: str
    model_name: str
    registry: Path
    promoted: str | None


def summarize_training(run: Any, registry: str | Path, model_name: str = DEFAULT_MODEL_NAME) -> TrainingSummary:
    """Read a finished run's verdict, evaluation report and registry state into a TrainingSummary."""
    from coldcast.core.registry import Registry
    from coldcast.evaluation import GateVerdict
    from coldcast.evaluation.render import read_report

    verdict = GateVerdict.read(run.path("verdict"))
    report = read_report(run.path("evaluation"))
    figures = []
    for name, task in report.tasks.items():
        model, ceiling = task.headline.model, task.headline.ceiling
        figures.append(
            TaskFigure(
                task=name,
                population=task.headline_population,
                rows=model.rows,
                positives=model.positives,
                ap=model.average_precision.value,
                ap_low=model.average_precision.low,
                ap_high=model.average_precision.high,
                ceiling_ap=ceiling.average_precision.value if ceiling else None,
                auc=model.auc.value,
            )
        )
    outputs = [(k, run.outputs.get(k)) for k in TrainingOutputs._fields]
    artifacts = {k: Path(v.path) for k, v in outputs if hasattr(v, "path")}
    promoted = Registry(registry).promoted(model_name)
    return TrainingSummary(
        blessed=verdict.blessed,
        first_model=verdict.first_model,
        reasons=verdict.reasons,
        notes=[*verdict.notes, *report.notes],
        figures=figures,
        artifacts=artifacts,
        bento_tag=str(run.outputs.get("bento_tag") or ""),
        version=str(run.outputs.get("version") or ""),
        model_name=model_name,
        registry=Path(registry),
        promoted=promoted.version if promoted else None,
    )
