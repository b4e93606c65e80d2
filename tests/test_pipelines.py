"""Both pipelines compile to the expected IR; the training pipeline runs end to end locally, fails and resumes."""

import os

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.components.base import PLATFORM_IMAGE
from coldcast.core.registry import REGISTRY_FILE, Registry
from coldcast.core.validation import REASON
from coldcast.monitoring import DriftResult
from coldcast.pipelines import compile_pipelines
from coldcast.pipelines.local import PipelineFailed, exception_message, run_local
from coldcast.pipelines.monitoring import monitoring_pipeline
from coldcast.pipelines.training import summarize_training, training_arguments, training_pipeline
from tests.test_components import log_predictions
from tests.worlds import PIPELINE

TRAINING_TASKS = {"ingest-data", "validate-data", "train-model", "promoted-version", "evaluate-model"}
MONITORING_TASKS = {"promoted-version", "reference-data", "read-logs", "validate-logs", "drift-report", "raise-alert"}


def ir(path):
    return yaml.safe_load(path.read_text())


def tasks_of(doc, component=None):
    dag = doc["root"]["dag"] if component is None else doc["components"][component]["dag"]
    return dag["tasks"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    paths = compile_pipelines(out, image="registry.example/coldcast/platform:test", registry="/mnt/reg")
    return {p.stem: ir(p) for p in paths}


def test_training_pipeline_has_its_tasks_and_the_blessed_condition(compiled):
    doc = compiled["coldcast-training"]
    top = tasks_of(doc)
    assert set(top) >= TRAINING_TASKS
    assert top["validate-data"]["dependentTasks"] == ["ingest-data"]
    assert top["evaluate-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train-model"
    # the registry lookup runs after training and never from the cache
    assert "train-model" in top["promoted-version"]["dependentTasks"]
    assert top["promoted-version"].get("cachingOptions", {}).get("enableCache") is not True
    assert top["train-model"]["cachingOptions"]["enableCache"] is True
    branches = [name for name in top if name.startswith("condition-branches")]
    assert len(branches) == 1
    conditions = tasks_of(doc, top[branches[0]]["componentRef"]["name"])
    by_name = {t["taskInfo"]["name"]: t for t in conditions.values()}
    blessed, rejected = by_name["blessed"], by_name["not-blessed"]
    assert blessed["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-model-blessed'] == true"
    )
    assert rejected["triggerPolicy"]["condition"].startswith("!(")
    assert set(tasks_of(doc, blessed["componentRef"]["name"])) == {"package-model", "register-model"}
    assert set(tasks_of(doc, rejected["componentRef"]["name"])) == {"reject-model"}
    params = doc["root"]["inputDefinitions"]["parameters"]
    assert params["registry"]["defaultValue"] == "/mnt/reg"
    assert {"source", "data_path", "overrides", "epochs", "preset"} <= set(params)


def test_every_task_runs_the_one_platform_image_and_installs_nothing(compiled):
    for doc in compiled.values():
        for name, executor in doc["deploymentSpec"]["executors"].items():
            container = executor["container"]
            assert container["image"] == "registry.example/coldcast/platform:test", name
            assert "pip install" not in " ".join(container["command"] + container.get("args", [])), name


def test_the_default_image_is_named_in_one_place(tmp_path):
    (path,) = [p for p in compile_pipelines(tmp_path) if p.stem == "coldcast-training"]
    images = {e["container"]["image"] for e in ir(path)["deploymentSpec"]["executors"].values()}
    assert images == {PLATFORM_IMAGE}


def test_monitoring_pipeline_has_its_tasks_and_the_retraining_condition(compiled):
    doc = compiled["coldcast-monitoring"]
    top = tasks_of(doc)
    assert set(top) >= MONITORING_TASKS
    assert {"validate-logs", "reference-data"} <= set(top["drift-report"]["dependentTasks"])
    for uncached in ("promoted-version", "read-logs"):  # registry state and growing logs: never from the cache
        assert top[uncached].get("cachingOptions", {}).get("enableCache") is not True
    (outer,) = [t for t in top.values() if "triggerPolicy" in t]
    assert outer["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--retrain'] == true"
    (inner,) = tasks_of(doc, outer["componentRef"]["name"]).values()
    assert inner["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--raise-alert-Output'] == 'ALERT'"
    )
    # retraining is the training pipeline itself, nested
    (nested,) = tasks_of(doc, inner["componentRef"]["name"]).values()
    assert set(tasks_of(doc, nested["componentRef"]["name"])) >= TRAINING_TASKS


def test_exception_message_reads_the_last_traceback_line():
    lines = [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "    coldcast.core.data.DataError: first line",
        "    second line",
        "",
    ]
    assert exception_message(lines) == "DataError: first line second line"
    assert exception_message(["all fine"]) is None


def test_cli_refuses_bad_sources_and_compiles(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--data", "kuairand"])
    assert result.exit_code == 2 and "needs --data-path" in result.output
    result = runner.invoke(app, ["run", "--data", "csv"])
    assert result.exit_code == 2 and "--data must be one of" in result.output
    result = runner.invoke(app, ["run", "--set", "world.sede=1", "--root", str(tmp_path / "r")])
    assert result.exit_code == 2 and "world.sede" in result.output
    assert not (tmp_path / "r").exists()
    result = runner.invoke(app, ["compile", "--out", str(tmp_path / "ir"), "--image", "reg/img:1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["coldcast-monitoring.yaml", "coldcast-training.yaml"]
    for command in ("run", "compile"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


# --------------------------------------------------------------------------------------------------- local run
def test_local_run_fails_naming_the_step_then_resumes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / REGISTRY_FILE).write_text("{ truncated")
    # no floors: a model trained for a few steps on a tiny world could not pass them, and the blessed branch runs
    overrides = [*PIPELINE, "gate.floors=null"]
    arguments = training_arguments(overrides=overrides, epochs=1, steps_per_epoch=10, registry=registry)
    pipeline = training_pipeline(registry=str(registry))

    with pytest.raises(PipelineFailed) as err:
        run_local(pipeline, arguments, root=tmp_path / "runs")
    assert err.value.step == "promoted-version"
    assert "RegistryError" in err.value.message and "registry.json is not valid JSON" in err.value.message
    assert {t for t, r in err.value.tasks.items() if r.state == "done"} == {
        "ingest-data",
        "validate-data",
        "train-model",
    }
    assert err.value.log.exists() and "registry.json is not valid JSON" in err.value.log.read_text()

    (registry / REGISTRY_FILE).unlink()  # the cause, fixed
    events = []
    run = run_local(pipeline, arguments, root=tmp_path / "runs", on_event=events.append)
    assert set(run.cached) == {"ingest-data", "validate-data", "train-model"}
    assert set(run.executed) == {"promoted-version", "evaluate-model", "package-model", "register-model"}
    assert [e.task for e in events if e.kind == "started"] == [t for t in run.tasks if t in run.executed]

    summary = summarize_training(run, registry)
    assert summary.blessed and summary.first_model
    assert summary.version == "v1" == summary.promoted == Registry(registry).promoted("coldcast").version
    assert summary.bento_tag.startswith("coldcast") and summary.bento_tag == run.outputs["bento_tag"]
    assert {f.task for f in summary.figures} == set(arguments_tasks(run))
    assert all(f.ap is not None and 0 <= f.ap <= 1 for f in summary.figures)
    for name in ("dataset", "quarantine", "model", "evaluation", "report", "verdict", "metrics"):
        assert summary.artifacts[name].exists(), name
    # artifacts of cached steps keep the first run's folder; the new steps write into the second run's
    assert summary.artifacts["model"].parent.parent != summary.artifacts["report"].parent.parent
    assert os.listdir(tmp_path / "bentoml" / "bentos")

    # monitoring: the promoted model's serving logs (one corrupt row) against its reference, labels joined
    logs = tmp_path / "logs"
    logged = log_predictions(Registry(registry).model_dir("coldcast", "v1"), summary.artifacts["dataset"], logs)
    arguments = {"logs": str(logs), "labels": str(summary.artifacts["dataset"]), "registry": str(registry)}
    monitored = run_local(monitoring_pipeline(registry=str(registry)), arguments, root=tmp_path / "runs")
    assert set(monitored.executed) == MONITORING_TASKS  # no ALERT-driven retraining: `retrain` is off
    status = monitored.outputs["status"]
    drift = DriftResult.read(monitored.path("drift"))
    assert drift.status.value == status and drift.model_version == "v1"
    assert drift.rows == len(logged) - 1 and drift.labelled_rows == len(logged) - 1
    assert (monitored.path("report")).read_text().lower().count("<html") >= 1
    quarantined = pd.read_parquet(monitored.path("quarantine") / "window.parquet")
    assert quarantined[REASON].tolist() == ["probability:prediction_click"]
    event = Registry(registry).history("coldcast")[-1]
    assert (event.event, event.version, event.status) == ("monitored", "v1", status)


def arguments_tasks(run):
    return yaml.safe_load((run.path("model") / "spec.yaml").read_text())["tasks"]
