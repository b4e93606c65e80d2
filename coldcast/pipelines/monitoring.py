"""The monitoring pipeline: serving logs -> validate -> drift report -> alert -> (optionally) retrain."""

from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown

from coldcast.components.base import PLATFORM_IMAGE
from coldcast.components.model import promoted_version
from coldcast.components.monitoring import drift_report, raise_alert, read_logs, reference_data, validate_logs
from coldcast.pipelines.training import CLUSTER_REGISTRY, DEFAULT_MODEL_NAME, training_pipeline, use_image

PIPELINE_NAME = "coldcast-monitoring"


class MonitoringOutputs(NamedTuple):
    """What a monitoring run returns: the window checked, its quarantine, the drift result and report, the status."""

    window: Dataset
    quarantine: Dataset
    validation: Markdown
    drift: Artifact
    report: HTML
    alert: Markdown
    status: str


def monitoring_pipeline(
    image: str = PLATFORM_IMAGE, registry: str = CLUSTER_REGISTRY, bentoml_home: str | None = None
) -> Any:
    """The monitoring pipeline; on ALERT with `retrain` set it runs the training pipeline (nested) on fresh data."""
    training = training_pipeline(image=image, registry=registry, bentoml_home=bentoml_home)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Check a window of serving logs against the promoted model's reference: validate, drift "
        "report, alert; on ALERT, optionally retrain through the training pipeline.",
    )
    def coldcast_monitoring(
        logs: str,
        days: int = 0,
        labels: str = "",
        reference: str = "",
        registry: str = registry,
        model_name: str = DEFAULT_MODEL_NAME,
        retrain: bool = False,
        source: str = "path",
        data_path: str = "",
        data_version: str = "",
        preset: str = "",
        overrides: list[str] = [],  # noqa: B006 (kfp reads defaults from the signature; never mutated)
        epochs: int = 0,
    ) -> MonitoringOutputs:
        promoted = use_image(promoted_version(registry=registry, name=model_name), image)
        promoted.set_caching_options(enable_caching=False)  # it reads the registry's current state
        version = promoted.output
        ref = use_image(
            reference_data(registry=registry, name=model_name, version=version, dataset_path=reference), image
        )
        window = use_image(
            read_logs(logs=logs, days=days, labels=labels, registry=registry, name=model_name, version=version),
            image,
        )
        window.set_caching_options(enable_caching=False)  # logs keep arriving under the same path
        checked = use_image(
            validate_logs(window=window.outputs["window"], registry=registry, name=model_name, version=version),
            image,
        )
        drift = use_image(
            drift_report(
                reference=ref.outputs["reference"],
                current=checked.outputs["valid"],
                registry=registry,
                name=model_name,
                version=version,
            ),
            image,
        )
        alert = use_image(
            raise_alert(result=drift.outputs["result"], registry=registry, name=model_name, version=version), image
        )
        # retrain only when asked to and the check raised an ALERT (kfp conditions do not combine with `and`)
        with (
            dsl.If(retrain == True, "retraining-enabled"),  # noqa: E712 (a kfp condition, not a test)
            dsl.If(alert.outputs["Output"] == "ALERT", "on-alert"),
        ):
            training(
                source=source,
                data_path=data_path,
                data_version=data_version,
                preset=preset,
                overrides=overrides,
                epochs=epochs,
                registry=registry,
                model_name=model_name,
            )
        return MonitoringOutputs(
            window=checked.outputs["valid"],
            quarantine=checked.outputs["quarantine"],
            validation=checked.outputs["report"],
            drift=drift.outputs["result"],
            report=drift.outputs["report"],
            alert=alert.outputs["alert"],
            status=alert.outputs["Output"],
        )

    return coldcast_monitoring
