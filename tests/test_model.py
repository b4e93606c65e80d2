"""The multi-task model: masked loss, per-task normalisation, unknown values, export and reload, transfer modes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from coldcast.core.data import DataError
from coldcast.core.procs import free_port
from coldcast.core.spec import load_spec
from coldcast.model.inputs import feature_arrays, label_arrays
from coldcast.model.multitask import MultiTaskModel, model_features
from coldcast.model.scoring import ScoringModel, input_signature
from coldcast.model.train import train
from tests.worlds import SMALL

FAST = [
    "training.epochs=1",
    "training.batch_size=256",
    "model.shared_layers=[32]",
    "model.tower_layers=[16]",
    "model.embedding_dim=4",
]


def _tensors(spec, arrays):
    return {k: tf.constant(arrays[k]) for k in input_signature(spec, model_features(spec))}


def _batch(ds, spec, source=None, n=64):
    df = ds.read(ds.dates[:2])
    if source is not None:
        df = df[df["source"] == source]
    df = df.head(n)
    labels, weights = label_arrays(df, spec)
    return df, _tensors(spec, feature_arrays(df, spec)), labels, weights


@pytest.fixture(scope="module")
def fast_spec():
    return load_spec(overrides=[*SMALL, *FAST])


def test_an_ad_impression_never_trains_a_promotion_tower(small_world, fast_spec):
    model = MultiTaskModel(fast_spec)
    _, features, labels, weights = _batch(small_world, fast_spec, source="ad")
    labels = {t: np.ones_like(v) for t, v in labels.items()}  # every label positive: nothing is trivially zero
    with tf.GradientTape() as tape:
        loss = model.compute_loss((features, labels, weights), training=True)
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    by_id = {id(v): g for v, g in zip(variables, grads, strict=True)}

    def norm(layer):
        found = [by_id[id(v)] for v in layer.trainable_variables]
        assert found, layer.name
        return sum(float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) for g in found if g is not None)

    assert norm(model.towers["promo_stream"]) == 0.0
    assert norm(model.towers["ad_stream"]) > 0.0
    assert norm(model.encoder) > 0.0  # ad rows still update the shared encoder through the ad towers


def test_a_promotion_impression_trains_every_tower(small_world, fast_spec):
    model = MultiTaskModel(fast_spec)
    _, features, labels, weights = _batch(small_world, fast_spec, source="promotion")
    labels = {t: np.ones_like(v) for t, v in labels.items()}
    with tf.GradientTape() as tape:
        loss = model.compute_loss((features, labels, weights), training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    for task in fast_spec.task_names:
        by_id = {id(v): g for v, g in zip(model.trainable_variables, grads, strict=True)}
        tower = [by_id[id(v)] for v in model.towers[task].trainable_variables]
        assert sum(float(tf.reduce_sum(tf.abs(g))) for g in tower) > 0, task


def test_per_task_loss_is_normalised_over_labelled_rows(small_world, fast_spec):
    model = MultiTaskModel(fast_spec)
    df, features, labels, weights = _batch(small_world, fast_spec, n=200)
    rng = np.random.default_rng(0)
    labels = {t: rng.integers(0, 2, len(df)).astype(np.float32) for t in labels}
    losses = model.task_losses((features, labels, weights), training=False, compute_metrics=False)
    predictions = model(features, training=False)
    for task in fast_spec.task_names:
        p = np.clip(predictions[task].numpy().astype(np.float64), 1e-7, 1 - 1e-7)
        y, w = labels[task], weights[task]
        bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        expected = (w * bce).sum() / w.sum()
        assert float(losses[task]) == pytest.approx(expected, rel=1e-4), task
    # the promotion tower only counts promotion rows: its denominator is not the batch size
    assert weights["promo_stream"].sum() < len(df)


def test_unknown_ids_and_categories_are_scored(small_world, fast_spec):
    model = MultiTaskModel(fast_spec)
    df = small_world.read(small_world.dates[:1]).head(4).copy()
    df["user_id"] = "never-seen-user"
    df["show_id"] = "brand-new-show"
    df["country"] = "XX"
    df["hour"] = 99
    df["genre"] = "mystery_genre"
    df["listened_genres"] = [["unknown_genre", "comedy"]] * 4
    df["recent_shows"] = [[]] * 4
    out = model(_tensors(fast_spec, feature_arrays(df, fast_spec)), training=False)
    for task, p in out.items():
        assert np.all(np.isfinite(p.numpy())) and np.all((p.numpy() > 0) & (p.numpy() < 1)), task


# Enough ad impressions that the rarest ad label has about a hundred test positives: with the small world's
# thirty, an AUC is too noisy to tell a head that learns from one that does not.
LEARN = [*SMALL, "world.impressions=150000", "world.ads_share=0.5", "world.users=6000", "world.shows=800"]


@pytest.fixture(scope="module")
def learn_world(tmp_path_factory):
    from coldcast.core.data import Dataset
    from coldcast.core.world import generate

    out = tmp_path_factory.mktemp("worlds") / "learn"
    generate(load_spec(overrides=LEARN), out)
    return Dataset.open(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, learn_world):
    spec = load_spec(overrides=[*LEARN, "training.epochs=2", "training.batch_size=512"])
    out = tmp_path_factory.mktemp("models") / "joint"
    result = train(spec, learn_world.root, out, verbose=0, log=lambda _: None)
    return spec, result


def test_model_directory_layout_and_metadata(trained):
    spec, result = trained
    root = result.model_dir
    assert (root / "saved_model" / "saved_model.pb").exists()
    meta = json.loads((root / "metadata.json").read_text())
    assert meta["tasks"] == spec.task_names
    assert meta["spec_fingerprint"] == spec.fingerprint()
    assert meta["versions"]["tensorflow"].startswith("2.21")
    assert set(meta["validation"]) == set(spec.task_names)
    assert load_spec(base=root / "spec.yaml") == spec
    assert not list(root.parent.glob(".*tmp*"))


def test_every_head_learns_and_stays_below_the_ceiling(trained, learn_world):
    from sklearn.metrics import roc_auc_score

    spec, result = trained
    model = ScoringModel.load(result.model_dir)
    test = learn_world.read_split(spec, "test")
    scores = model.predict(test)
    checked = 0
    for task in spec.task_names:
        home = spec.tasks[task].home_source
        rows = (test["source"] == home) if home else np.ones(len(test), bool)
        outcome = spec.tasks[task].labels[home or "promotion"]
        y = test.loc[rows, outcome].to_numpy()
        assert y.sum() >= 50, (task, y.sum())
        auc = roc_auc_score(y, scores.loc[rows, task])
        ceiling = roc_auc_score(y, test.loc[rows, "true_" + outcome])
        assert auc > 0.6, (task, auc)
        assert auc < ceiling, (task, auc, ceiling)
        checked += 1
    assert checked == len(spec.task_names)


def test_reload_in_a_fresh_process_without_tfrs_gives_the_same_scores(trained, learn_world, tmp_path):
    spec, result = trained
    df = learn_world.read(learn_world.dates[-1:]).head(300)
    df.to_parquet(tmp_path / "rows.parquet")
    # the in-memory Keras model that training produced is the reference
    outputs = result.model(_tensors(spec, feature_arrays(df, spec)), training=False)
    expected = pd.DataFrame({t: outputs[t].numpy() for t in spec.task_names})
    script = textwrap.dedent(f"""
        import sys
        # loading must need TensorFlow only: make TFRS and Keras unimportable
        sys.modules["tensorflow_recommenders"] = None
        sys.modules["tf_keras"] = None
        import pandas as pd
        from coldcast.model.scoring import ScoringModel
        model = ScoringModel.load({str(result.model_dir)!r})
        model.predict(pd.read_parquet({str(tmp_path / "rows.parquet")!r})).to_parquet({str(tmp_path / "out.parquet")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    got = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
def test_spec_and_data_that_disagree_stop_with_a_clear_message(small_world, tmp_path):
    spec = load_spec(
        overrides={
            **_as_dict([*SMALL, *FAST]),
            "outcomes": {"share": {}},
            "sources": {"promotion": {"observes": ["stream", "click", "like", "follow", "share"]}},
            "world": {"outcomes": {"share": {"given": "stream", "rate": {"promotion": 0.1}}}},
            "tasks": {"share": {"labels": {"promotion": "share"}, "mask": {"promotion": 1.0}}},
        }
    )
    with pytest.raises(DataError, match="task 'share' takes its promotion label from column 'share'"):
        train(spec, small_world.root, tmp_path / "m", verbose=0, log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_a_missing_feature_column_is_named(small_world, tmp_path):
    spec = load_spec(overrides=[*SMALL, *FAST, "features.user.battery={kind: numeric, min: 0, max: 1}"])
    with pytest.raises(DataError, match="battery"):
        train(spec, small_world.root, tmp_path / "m", verbose=0, log=lambda _: None)


def test_an_empty_or_label_less_training_set_stops(small_world, tmp_path):
    spec = load_spec(
        overrides=[
            *SMALL,
            *FAST,
            "sources.radio={observes: [stream]}",
            "training.sources=[radio]",
            "world.outcomes.stream.rate.radio=0.1",
        ]
    )
    with pytest.raises(DataError, match="empty training set"):
        train(spec, small_world.root, tmp_path / "m", verbose=0, log=lambda _: None)
    # every task's label mapped to nothing on the data's sources
    spec = load_spec(overrides=[*SMALL, *FAST, "training.sources=[ad]", "tasks.click.mask.ad=0"])
    with pytest.raises(DataError, match=r"no labelled training rows for task\(s\) \['promo_stream', 'click'\]"):
        train(spec, small_world.root, tmp_path / "m", verbose=0, log=lambda _: None)
    assert not (tmp_path / "m").exists()


def test_a_missing_model_directory_is_named(tmp_path):
    with pytest.raises(DataError, match="model directory not found"):
        ScoringModel.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a coldcast model directory"):
        ScoringModel.load(tmp_path / "empty")


def test_a_crash_during_training_leaves_no_model_directory(small_world, tmp_path, monkeypatch):
    import coldcast.model.train as training

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while saving")

    monkeypatch.setattr(training.tf.saved_model, "save", broken)
    spec = load_spec(overrides=[*SMALL, *FAST])
    with pytest.raises(RuntimeError, match="disk full"):
        train(spec, small_world.root, tmp_path / "m", verbose=0, log=lambda _: None, steps_per_epoch=2)
    assert list(tmp_path.iterdir()) == []


def _as_dict(overrides):
    from coldcast.core.spec import apply_overrides

    return apply_overrides({}, overrides)


# ------------------------------------------------------------------------------------------------ transfer
@pytest.fixture(scope="module")
def promotions_model(tmp_path_factory, small_world):
    spec = load_spec(preset="promotions_only", overrides=[*SMALL, *FAST])
    out = tmp_path_factory.mktemp("models") / "promotions"
    train(spec, small_world.root, out, verbose=0, log=lambda _: None)
    return spec, out


def test_direct_apply_scores_a_task_with_another_head(promotions_model, small_world, tmp_path):
    from coldcast.model.transfer import direct_apply

    _, source = promotions_model
    out = direct_apply(source, tmp_path / "direct", {"ad_stream": "promo_stream"})
    df = small_world.read(small_world.dates[-1:]).head(200)
    loaded = ScoringModel.load(source)
    # the spec comes back as trained (a preset's deleted task stays deleted), not merged over the default
    assert loaded.spec.task_names == loaded.tasks == ["promo_stream", "click", "like", "follow"]
    original = loaded.predict(df)
    applied = ScoringModel.load(out).predict(df)
    assert "ad_stream" not in original
    np.testing.assert_allclose(applied["ad_stream"], original["promo_stream"], atol=1e-7)
    np.testing.assert_allclose(applied["click"], original["click"], atol=1e-7)
    with pytest.raises(DataError, match="no head"):
        direct_apply(source, tmp_path / "bad", {"ad_stream": "nope"})


def _weights(model_dir, prefix):
    reader = tf.train.load_checkpoint(str(Path(model_dir) / "checkpoint" / "ckpt"))
    names = [n for n in reader.get_variable_to_shape_map() if prefix in n and "OPTIMIZER" not in n]
    assert names, prefix
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.parametrize("freeze", [True, False])
def test_fine_tune_adds_a_head_and_keeps_or_moves_the_encoder(promotions_model, small_world, tmp_path, freeze):
    _, source = promotions_model
    joint = load_spec(overrides=[*SMALL, *FAST])
    out = tmp_path / "finetuned"
    train(
        joint,
        small_world.root,
        out,
        warm_start=source,
        freeze_encoder=freeze,
        steps_per_epoch=20,
        verbose=0,
        log=lambda _: None,
    )
    assert ScoringModel.load(out).tasks == joint.task_names
    before, after = _weights(source, "encoder"), _weights(out, "encoder")
    same = all(np.array_equal(before[n], after[n]) for n in before if n in after and "moving" not in n)
    assert same == freeze
    # the restored towers start from the source model's weights, the new one does not exist there
    assert _weights(out, "towers/ad_stream")
    with pytest.raises(AssertionError):
        _weights(source, "towers/ad_stream")


def test_presets_give_the_paper_variants():
    expected = {
        "promotions_only": (["promo_stream", "click", "like", "follow"], ["promotion"]),
        "promo_stream_only": (["promo_stream"], ["promotion"]),
        "ads_stream_only": (["ad_stream"], ["ad"]),
        "ads_multitask": (["ad_stream", "click", "like", "follow"], ["ad"]),
        "joint": (["promo_stream", "ad_stream", "click", "like", "follow"], []),
    }
    for preset, (tasks, sources) in expected.items():
        spec = load_spec(preset=preset)
        assert spec.task_names == tasks
        assert spec.training.sources == sources
        MultiTaskModel(load_spec(preset=preset, overrides=FAST))  # builds


@pytest.mark.parametrize("encoder", ["mmoe", "ple"])
def test_other_encoders_build_and_train_a_step(small_world, encoder):
    spec = load_spec(overrides=[*SMALL, *FAST, f"model.encoder={encoder}", "model.expert_layers=[8]"])
    model = MultiTaskModel(spec)
    _, features, labels, weights = _batch(small_world, spec)
    with tf.GradientTape() as tape:
        loss = model.compute_loss((features, labels, weights), training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert sum(float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))) for g in grads if g is not None) > 0


# ------------------------------------------------------------------------------------------------ distributed
def test_two_workers_train_one_epoch_and_write_a_model(small_world, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = textwrap.dedent(f"""
        from coldcast.core.spec import load_spec
        from coldcast.model.train import train
        spec = load_spec(overrides={[*SMALL, *FAST]!r})
        train(spec, {str(small_world.root)!r}, {str(tmp_path / "model")!r}, steps_per_epoch=5, verbose=0)
    """)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=400)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    assert "2 replica(s)" in outputs[0]
    model = ScoringModel.load(tmp_path / "model")
    assert model.metadata["training"]["replicas"] == 2
    scores = model.predict(small_world.read(small_world.dates[-1:]).head(50))
    assert np.isfinite(scores.to_numpy()).all()
