"""Components called directly (`python_func`) with temporary artifacts, and the library parts they stand on."""

import json
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from coldcast.components.data import ingest_data, validate_data
from coldcast.components.model import (
    evaluate_model,
    package_model,
    promoted_version,
    register_model,
    reject_model,
    train_model,
)
from coldcast.components.monitoring import drift_report, raise_alert, read_logs, reference_data, validate_logs
from coldcast.core.data import DataError, Dataset, write_parquet
from coldcast.core.ingest import folder_version, ingest, overrides_from_file, resolve_spec
from coldcast.core.registry import REGISTRY_FILE, Registry, RegistryError
from coldcast.core.spec import SpecError, load_spec
from coldcast.core.validation import REASON
from tests.worlds import PIPELINE


def artifact(kind, path: Path, **metadata):
    """A kfp artifact at a local path, as the executor would hand it to a component."""
    return kind(name=path.name, uri=str(path), metadata=dict(metadata))


# --------------------------------------------------------------------------------------------------- registry
def fake_model(root: Path, content: str) -> Path:
    root.mkdir(parents=True)
    (root / "saved_model").mkdir()
    (root / "saved_model" / "saved_model.pb").write_text(content)
    (root / "metadata.json").write_text(json.dumps({"tasks": ["a"]}))
    return root


def test_registry_versions_promotion_and_history(tmp_path):
    reg = Registry(tmp_path / "reg")
    assert reg.promoted("m") is None and reg.versions("m") == []
    report = tmp_path / "evaluation.json"
    report.write_text("{}")
    first = reg.register(fake_model(tmp_path / "a", "one"), name="m", evaluation=report, promote=True, reasons=["ok"])
    assert first.version == "v1" and reg.promoted("m").version == "v1"
    assert (reg.model_dir("m", "v1") / "saved_model" / "saved_model.pb").read_text() == "one"
    assert reg.evaluation("m", "v1").read_text() == "{}" and reg.verdict("m", "v1") is None
    # the same files again (a rerun): the same version, not a copy
    assert reg.register(tmp_path / "a", name="m", promote=True).version == "v1"
    second = reg.register(fake_model(tmp_path / "b", "two"), name="m")
    assert second.version == "v2" and reg.promoted("m").version == "v1"  # registered, not promoted
    reg.promote("m", "v2", reasons=["better"])
    reg.reject("m", source="runs/x/model", reasons=["promo_stream auc too low"])
    reg.promote("m", "v1", reasons=["rollback"])
    events = [(e.event, e.version, e.previous) for e in reg.history("m")]
    assert events == [
        ("registered", "v1", None),
        ("promoted", "v1", None),
        ("registered", "v2", None),
        ("promoted", "v2", "v1"),
        ("rejected", None, "v2"),
        ("promoted", "v1", "v2"),
    ]
    assert reg.history("m")[4].reasons == ["promo_stream auc too low"]
    with pytest.raises(RegistryError, match=r"no version 'v9'.*\['v1', 'v2'\]"):
        reg.promote("m", "v9")


def test_registry_refuses_a_corrupt_state_file_naming_it(tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.register(fake_model(tmp_path / "a", "one"), name="m")
    (tmp_path / "reg" / REGISTRY_FILE).write_text("{not json")
    with pytest.raises(RegistryError, match=r"registry\.json is not valid JSON"):
        reg.promoted("m")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="exists but is not a folder"):
        Registry(tmp_path / "file").versions("m")
    with pytest.raises(RegistryError, match="cannot be a registry folder name"):
        Registry(tmp_path / "r2").register(tmp_path / "a", name="../escape")


def test_a_failed_copy_leaves_the_registry_unchanged(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "reg")
    reg.register(fake_model(tmp_path / "a", "one"), name="m", promote=True)
    before = (tmp_path / "reg" / REGISTRY_FILE).read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("coldcast.core.registry.shutil.copytree", broken)
    with pytest.raises(OSError, match="disk full"):
        reg.register(fake_model(tmp_path / "b", "two"), name="m", promote=True)
    assert (tmp_path / "reg" / REGISTRY_FILE).read_text() == before
    assert sorted(p.name for p in (tmp_path / "reg" / "m").iterdir()) == ["v1"]


def test_concurrent_registrations_all_land(tmp_path):
    reg_root = tmp_path / "reg"
    models = [fake_model(tmp_path / f"m{i}", f"model {i}") for i in range(6)]
    errors = []

    def register(path):
        try:
            Registry(reg_root).register(path, name="m")
        except Exception as err:  # surfaced below: a thread's exception is otherwise lost
            errors.append(err)

    threads = [threading.Thread(target=register, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = Registry(reg_root).versions("m")
    assert sorted(v.version for v in versions) == [f"v{i}" for i in range(1, 7)]
    assert {v.source for v in versions} == {str(m) for m in models}


# --------------------------------------------------------------------------------------------------- ingest
def test_resolve_spec_names_bad_sources_and_keys(tmp_path):
    with pytest.raises(SpecError, match=r"unknown data source 'csv'.*synthetic"):
        resolve_spec("csv")
    with pytest.raises(DataError, match="needs a path"):
        resolve_spec("path")
    with pytest.raises(SpecError, match=r"world\.sede"):
        resolve_spec("synthetic", overrides=["world.sede=3"])
    assert resolve_spec("kuairand", tmp_path).name == "kuairand"  # KuaiRand gets its own preset by default


def test_a_spec_file_travels_as_equivalent_overrides(tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text(
        "world: {users: 321, start_date: 2026-02-02}\n"
        "training: {source_ratio: {promotion: 0.6, ad: 0.4}}\n"
        "tasks: {like: null}\n"
        "gate: {floors: {promo_stream: {auc: 0.55}}}\n"
    )
    overrides = overrides_from_file(partial)
    assert "world.users=321" in overrides
    assert load_spec(overrides=overrides) == load_spec(partial)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("ingest") / "dataset"
    dataset = artifact(dsl.Dataset, out)
    ingest_data.python_func(
        source="synthetic", data_path="", data_version="", preset="", overrides=PIPELINE, dataset=dataset
    )
    assert dataset.metadata["rows"] == Dataset.open(out).manifest["rows"] > 1000
    return Dataset.open(out)


def test_ingest_generates_the_world_under_the_overrides(ingested):
    assert ingested.spec() == load_spec(overrides=PIPELINE)
    assert len(ingested.dates) == ingested.spec().world.days


def test_ingest_snapshots_a_path_with_its_spec_changed(ingested, tmp_path):
    before = folder_version(ingested.root)
    dataset = artifact(dsl.Dataset, tmp_path / "snap")
    ingest_data.python_func(
        source="path",
        data_path=str(ingested.root),
        data_version=before,
        preset="",
        overrides=["training.epochs=7"],
        dataset=dataset,
    )
    snap = Dataset.open(tmp_path / "snap")
    assert snap.spec().training.epochs == 7 and ingested.spec().training.epochs != 7
    pd.testing.assert_frame_equal(snap.read(), ingested.read())
    first = snap.shards()[0]
    assert first.stat().st_ino == ingested.shards()[0].stat().st_ino  # hard links, not copies
    assert snap.manifest["snapshot_of"]["path"] == str(ingested.root.resolve())
    assert dataset.metadata["data_version"] == before
    assert folder_version(ingested.root) == before  # the source is untouched


def test_folder_version_changes_with_the_files(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    v1 = folder_version(tmp_path)
    (tmp_path / "a.csv").write_text("x\n1\n2\n")
    assert folder_version(tmp_path) != v1
    with pytest.raises(DataError, match="not found"):
        folder_version(tmp_path / "missing")


def test_ingest_rejects_an_unknown_source(tmp_path):
    with pytest.raises(SpecError, match="unknown data source 'kuairnd'"):
        ingest_data.python_func(
            source="kuairnd",
            data_path="/data",
            data_version="",
            preset="",
            overrides=[],
            dataset=artifact(dsl.Dataset, tmp_path / "d"),
        )
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------------------------------- validate
@pytest.fixture(scope="module")
def validated(ingested, tmp_path_factory):
    """The ingested world with one bad row planted in its first shard, through validate_data."""
    root = tmp_path_factory.mktemp("validate")
    src = root / "with-bad-row"
    ingest("path", src, path=ingested.root)
    shard = Dataset.open(src).shards()[0]
    table = pq.read_table(shard)
    df = table.to_pandas()
    country = df["country"].copy()
    country.iat[7] = "XX"
    df["country"] = country
    # the shard is a hard link to the ingested world's: write_parquet replaces the link rather than writing through
    write_parquet(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), shard)
    outputs = {
        "validated": artifact(dsl.Dataset, root / "validated"),
        "quarantine": artifact(dsl.Dataset, root / "quarantine"),
        "report": artifact(dsl.Markdown, root / "report.md"),
        "metrics": artifact(dsl.Metrics, root / "metrics.json"),
    }
    validate_data.python_func(data=artifact(dsl.Dataset, src), production=False, **outputs)
    return df, outputs


def test_validate_quarantines_bad_rows_into_their_own_artifact(validated, ingested):
    bad_shard, out = validated
    valid = Dataset.open(out["validated"].path)
    assert valid.manifest["rows"] == ingested.manifest["rows"] - 1
    quarantined = pd.read_parquet(Path(out["quarantine"].path) / f"{ingested.dates[0]}.parquet")
    assert quarantined["impression_id"].tolist() == [bad_shard["impression_id"].iat[7]]
    assert quarantined[REASON].tolist() == ["value_in_set:country"]
    assert not (Path(out["validated"].path) / "quarantine").exists()
    assert out["quarantine"].metadata["reasons"] == {"value_in_set:country": 1}
    assert "`value_in_set:country` | 1 |" in Path(out["report"].path).read_text()
    metrics = json.loads(Path(out["metrics"].path).read_text())
    assert metrics == out["metrics"].metadata and metrics["rows_quarantined"] == 1.0


# --------------------------------------------------------------------------------------------------- model steps
@pytest.fixture(scope="module")
def trained(validated, tmp_path_factory):
    _, out = validated
    root = tmp_path_factory.mktemp("train")
    model = artifact(dsl.Model, root / "model")
    metrics = artifact(dsl.Metrics, root / "metrics.json")
    train_model.python_func(data=out["validated"], epochs=1, steps_per_epoch=8, model=model, metrics=metrics)
    return model, metrics


def test_train_writes_a_model_directory_and_its_validation_metrics(trained):
    model, metrics = trained
    assert {"saved_model", "spec.yaml", "metadata.json"} <= {p.name for p in Path(model.path).iterdir()}
    assert model.metadata["framework"] == "tensorflow"
    assert set(model.metadata["tasks"]) == set(load_spec(overrides=PIPELINE).task_names)
    written = json.loads(Path(metrics.path).read_text())
    assert written == metrics.metadata and "promo_stream.validation_average_precision" in written


def evaluate(model, data, registry, promoted, root: Path):
    outputs = {
        "evaluation": artifact(dsl.Artifact, root / "evaluation"),
        "verdict": artifact(dsl.Artifact, root / "verdict.json"),
        "report": artifact(dsl.HTML, root / "report.html"),
        "summary": artifact(dsl.Markdown, root / "gate.md"),
        "metrics": artifact(dsl.Metrics, root / "metrics.json"),
    }
    result = evaluate_model.python_func(
        model=model, data=data, registry=str(registry), name="coldcast", promoted=promoted, **outputs
    )
    return result.blessed, outputs


@pytest.fixture(scope="module")
def registered(trained, validated, tmp_path_factory):
    """The trained model evaluated against an empty registry, packaged, and registered as v1."""
    model, _ = trained
    data = validated[1]["validated"]
    root = tmp_path_factory.mktemp("registered")
    registry = root / "registry"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(root / "bentoml"))
        assert promoted_version.python_func(registry=str(registry), name="coldcast") == ""
        blessed, out = evaluate(model, data, registry, "", root / "first")
        tags = package_model.python_func(model=model, name="coldcast")
        version = register_model.python_func(
            model=model,
            evaluation=out["evaluation"],
            verdict=out["verdict"],
            registry=str(registry),
            name="coldcast",
            bento_tag=tags.bento_tag,
        )
    return {
        "model": model,
        "data": data,
        "registry": registry,
        "blessed": blessed,
        "out": out,
        "tags": tags,
        "version": version,
    }


def test_evaluate_writes_the_report_the_verdict_and_metrics(registered):
    from coldcast.evaluation import GateVerdict
    from coldcast.evaluation.render import read_report

    out = registered["out"]
    verdict = GateVerdict.read(out["verdict"].path)
    assert registered["blessed"] == verdict.blessed and verdict.first_model
    assert {c.kind for c in verdict.checks} == {"floor"}  # nothing promoted yet: floors only
    report = read_report(out["evaluation"].path)
    assert set(report.tasks) == set(registered["model"].metadata["tasks"]) and report.split == "test"
    assert "<html" in Path(out["report"].path).read_text().lower()
    assert "# Promotion gate" in Path(out["summary"].path).read_text()
    assert json.loads(Path(out["metrics"].path).read_text()) == out["metrics"].metadata


def test_package_and_register_promote_the_model(registered):
    tags, registry = registered["tags"], registered["registry"]
    assert tags.model_tag.startswith("coldcast:") and tags.bento_tag.startswith("coldcast:")
    assert registered["version"] == "v1" == promoted_version.python_func(registry=str(registry), name="coldcast")
    entry = Registry(registry).get("coldcast", "v1")
    assert entry.bento_tag == tags.bento_tag and "promo_stream.average_precision" in entry.metrics
    assert entry.has_evaluation and entry.has_verdict


def test_a_candidate_is_gated_against_the_promoted_then_rejected(registered, tmp_path):
    from coldcast.evaluation import GateVerdict

    model, registry = registered["model"], registered["registry"]
    blessed, out = evaluate(model, registered["data"], registry, "v1", tmp_path)
    verdict = GateVerdict.read(out["verdict"].path)
    assert not verdict.first_model and blessed == registered["blessed"]
    # the same model on the same rows: every regression check runs, and none can fail
    regressions = [c for c in verdict.checks if c.kind == "regression"]
    assert regressions and all(c.passed is not False for c in regressions)
    assert reject_model.python_func(model=model, verdict=out["verdict"], registry=str(registry), name="coldcast") == ""
    assert Registry(registry).history("coldcast")[-1].event == "rejected"
    assert sorted(p.name for p in (registry / "coldcast").iterdir()) == ["v1"]  # a rejection copies nothing


def log_predictions(model_dir, dataset_root, logs, spec_rows=400):
    """Serve-like logs: the dataset's test rows scored by the model, written through the prediction logger."""
    import numpy as np

    from coldcast.core.data import Dataset
    from coldcast.core.predlog import PredictionLogger
    from coldcast.model.scoring import ScoringModel

    model = ScoringModel.load(model_dir)
    data = Dataset.open(dataset_root)
    rows = data.read_split(model.spec, "test").head(spec_rows)
    scores = model.predict(rows)
    logger = PredictionLogger(logs, model.spec, model.tasks, "v1")
    features = {f: rows[f].to_numpy() for f in model.spec.feature_names}
    predictions = {t: scores[t].to_numpy().astype(np.float32) for t in model.tasks}
    predictions["click"][3] = 1.5  # a corrupt row: no served prediction can be outside [0, 1]
    logger.append(
        features,
        predictions,
        request_id="r1",
        meta={"source": list(rows["source"]), "impression_id": list(rows["impression_id"])},
    )
    logger.close()
    return rows


# --------------------------------------------------------------------------------------------------- monitoring
def test_monitoring_components_check_a_window_of_serving_logs(registered, tmp_path):
    from coldcast.monitoring import DriftResult

    registry, version = str(registered["registry"]), registered["version"]
    model_dir = Registry(registry).model_dir("coldcast", version)
    logged = log_predictions(model_dir, registered["data"].path, tmp_path / "logs")
    common = {"registry": registry, "name": "coldcast", "version": version}

    reference = artifact(dsl.Dataset, tmp_path / "reference")
    reference_data.python_func(dataset_path="", reference=reference, **common)
    ref = pd.read_parquet(tmp_path / "reference" / "reference.parquet")
    assert {f"prediction_{t}" for t in registered["model"].metadata["tasks"]} <= set(ref.columns)
    # by default the reference is sampled from the dataset the model was trained on
    assert reference.metadata["dataset"] == str(Path(registered["data"].path))

    window = artifact(dsl.Dataset, tmp_path / "window")
    read_logs.python_func(logs=str(tmp_path / "logs"), days=0, labels=registered["data"].path, window=window, **common)
    assert window.metadata["rows"] == len(logged) and len(window.metadata["dates"]) == 1

    checked = {
        "valid": artifact(dsl.Dataset, tmp_path / "valid"),
        "quarantine": artifact(dsl.Dataset, tmp_path / "quarantine"),
        "report": artifact(dsl.Markdown, tmp_path / "logs.md"),
        "metrics": artifact(dsl.Metrics, tmp_path / "logs.json"),
    }
    validate_logs.python_func(window=window, **checked, **common)
    quarantined = pd.read_parquet(tmp_path / "quarantine" / "window.parquet")
    assert quarantined[REASON].tolist() == ["probability:prediction_click"]
    assert checked["metrics"].metadata == {"rows_in": len(logged), "rows_valid": len(logged) - 1, "rows_quarantined": 1}

    drift = {
        "result": artifact(dsl.Artifact, tmp_path / "drift"),
        "report": artifact(dsl.HTML, tmp_path / "drift.html"),
        "metrics": artifact(dsl.Metrics, tmp_path / "drift.json"),
    }
    status = drift_report.python_func(reference=reference, current=checked["valid"], **drift, **common).status
    result = DriftResult.read(tmp_path / "drift")
    assert status == result.status.value in {"OK", "WARN", "ALERT"}
    assert result.rows == len(logged) - 1 and result.labelled_rows == len(logged) - 1
    assert drift["metrics"].metadata["status_level"] == result.status.level
    assert "<html" in (tmp_path / "drift.html").read_text().lower()

    alert = artifact(dsl.Markdown, tmp_path / "alert.md")
    assert raise_alert.python_func(result=drift["result"], alert=alert, **common) == status
    assert (tmp_path / "alert.md").read_text().startswith(f"# {status}: coldcast {version}")
    event = Registry(registry).history("coldcast")[-1]
    assert (event.event, event.version, event.status, event.window) == ("monitored", version, status, result.window)


def test_log_validation_refuses_a_window_without_the_models_columns(ingested):
    from coldcast.core.logcheck import validate_logs as check
    from coldcast.core.validation import DataValidationError

    spec = ingested.spec()
    frame = ingested.read(ingested.dates[:1]).head(50)[spec.feature_names].assign(request_id="r", model_version="v1")
    with pytest.raises(DataValidationError) as err:
        check(frame, spec, tasks=["promo_stream"])
    assert {(f.check, f.column) for f in err.value.failures} == {
        ("columns_present", "logged_at"),
        ("columns_present", "prediction_promo_stream"),
    }
    assert "'prediction_promo_stream'" in str(err.value)
