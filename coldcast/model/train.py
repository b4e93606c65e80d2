"""Training: numeric statistics, the distribution strategy, fit with checkpoint selection, and the model directory."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
import tf_keras as keras
from sklearn.metrics import average_precision_score

from coldcast.core.data import DataError, Dataset, atomic_dir, write_json
from coldcast.core.spec import NumericFeature, Spec
from coldcast.model.inputs import (
    FLOATS,
    INTS,
    Layout,
    check_columns,
    count_rows,
    eval_batches,
    label_arrays,
    packed_batches,
    training_batches,
)
from coldcast.model.multitask import MultiTaskModel, model_features
from coldcast.model.scoring import CHECKPOINT, METADATA, SAVED_MODEL, SPEC_FILE, ScoringModel, input_signature

ProgressFn = Callable[[str], None]


@dataclass
class TrainResult:
    """What training produced: where the model is and how it did on validation."""

    model_dir: Path
    validation: dict[str, dict[str, float]]  # task -> {"average_precision", "auc", "rows", "positives"}
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    examples: int = 0
    seconds: float = 0.0  # inside fit, validation at each epoch's end included
    validation_seconds: float = 0.0
    model: Any = field(default=None, repr=False)  # the trained Keras model, in this process only

    @property
    def examples_per_second(self) -> float:
        """Training examples per second, not counting the validation passes."""
        training = self.seconds - self.validation_seconds
        return self.examples / training if training > 0 else 0.0


# --------------------------------------------------------------------------------------------------- strategy
def strategy_from_env() -> tf.distribute.Strategy:
    """One process by default; MultiWorkerMirroredStrategy when TF_CONFIG names several workers."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """The chief writes the model directory; with no TF_CONFIG this process is the chief."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


# --------------------------------------------------------------------------------------------------- statistics
def numeric_stats(files: Sequence[Path], spec: Spec, max_rows: int = 200_000) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each numeric feature (after log1p where declared) on training rows."""
    numeric = [f for f in spec.feature_list if isinstance(f.definition, NumericFeature)]
    if not numeric:
        return {}
    sums = {f.name: [0.0, 0.0, 0] for f in numeric}
    seen = 0
    # spread the sample over the whole window rather than its first days
    for path in files[:: max(1, len(files) // 8)] or files:
        table = pq.read_table(path, columns=[f.name for f in numeric]).slice(0, max_rows // 8 + 1)
        for f in numeric:
            x = table.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
            if f.definition.log:  # type: ignore[union-attr]
                x = np.log1p(np.maximum(x, 0))
            x = x[~np.isnan(x)]
            acc = sums[f.name]
            acc[0] += x.sum()
            acc[1] += (x**2).sum()
            acc[2] += len(x)
        seen += table.num_rows
        if seen >= max_rows:
            break
    out = {}
    for name, (s, ss, n) in sums.items():
        mean = s / n if n else 0.0
        var = ss / n - mean**2 if n else 1.0
        out[name] = (float(mean), float(math.sqrt(max(var, 1e-12))))
    return out


def label_counts(files: Sequence[Path], spec: Spec, sources: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per task: rows that train it (mask x observed > 0) and their positives, in the given shards."""
    counts = {t: {"rows": 0, "positives": 0} for t in spec.task_names}
    columns = ["source", *dict.fromkeys(o for t in spec.tasks.values() for o in t.labels.values() if o)]
    for path in files:
        table = pq.read_table(path, columns=columns).to_pandas()
        table = table[table["source"].isin(list(sources))]
        labels, weights = label_arrays(table, spec)
        for t in spec.task_names:
            w = weights[t] > 0
            counts[t]["rows"] += int(w.sum())
            counts[t]["positives"] += int(labels[t][w].sum())
    return counts


# --------------------------------------------------------------------------------------------------- the data
def training_dataset(files: list[Path], spec: Spec, batch_size: int, steps: int, seed: int, sources: list[str]) -> Any:
    """`steps` batches of (features, labels, weights) streamed from the shards as a prefetching tf.data pipeline.

    Batches cross from Python into tf.data packed (`coldcast.model.inputs.Layout`): a float32 and an int64
    matrix, and every string of the batch in one bytes object with the position and length of each value, cut
    back into strings in the graph. Why: tf.data converts each array it is handed on its own, and an array of
    strings value by value through Python objects; that cost more than reading, shuffling and batching together.
    """
    layout = Layout.of(spec)
    features_sig = input_signature(spec, model_features(spec))
    packed_sig = {
        FLOATS: tf.TensorSpec([None, len(layout.floats)], tf.float32),
        INTS: tf.TensorSpec([None, len(layout.ints)], tf.int64),
        "text": tf.TensorSpec([], tf.string),
        "positions": tf.TensorSpec([None, layout.string_width], tf.int32),
        "lengths": tf.TensorSpec([None, layout.string_width], tf.int32),
    }

    def generate() -> Any:
        for packed in packed_batches(files, spec, batch_size=batch_size, steps=steps, seed=seed, sources=sources):
            text, positions, lengths = layout.text_blob(packed)
            yield {FLOATS: packed[FLOATS], INTS: packed[INTS], "text": text, "positions": positions, "lengths": lengths}

    def unpack(packed: dict[str, tf.Tensor]) -> tuple[dict, dict, dict]:
        text = tf.strings.substr(packed["text"], packed["positions"], packed["lengths"])
        strings = {
            name: text[:, first] if length is None else text[:, first : first + length]
            for name, first, length in layout.string_columns
        }
        features, labels, weights = layout.unpack({FLOATS: packed[FLOATS], INTS: packed[INTS], **strings})
        return {k: features[k] for k in features_sig}, labels, weights

    ds = tf.data.Dataset.from_generator(generate, output_signature=packed_sig)
    ds = ds.map(unpack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # the generator already shards by file per worker; Keras must not try to re-shard it
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------- selection
def validation_metrics(
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    files: Sequence[Path],
    spec: Spec,
    *,
    batch_size: int = 8192,
) -> dict[str, dict[str, float]]:
    """Average precision and AUC per task on the rows that train it, on its home source where it has one."""
    from sklearn.metrics import roc_auc_score

    scores: dict[str, list[np.ndarray]] = {t: [] for t in spec.task_names}
    ys: dict[str, list[np.ndarray]] = {t: [] for t in spec.task_names}
    outcome_cols = [o for o in spec.outcome_names]
    for arrays, table in eval_batches(files, spec, batch_size=batch_size, columns=outcome_cols):
        frame = table.select(["source", *outcome_cols]).to_pandas()
        labels, weights = label_arrays(frame, spec)
        predictions = predict(arrays)
        for t in spec.task_names:
            home = spec.tasks[t].home_source
            rows = (
                (weights[t] > 0)
                if home is None
                else (frame["source"].to_numpy() == home) & (~np.isnan(_raw_labels(frame, spec, t)))
            )
            scores[t].append(predictions[t][rows])
            ys[t].append(labels[t][rows])
    out = {}
    for t in spec.task_names:
        y = np.concatenate(ys[t]) if ys[t] else np.zeros(0)
        p = np.concatenate(scores[t]) if scores[t] else np.zeros(0)
        ok = len(y) > 0 and 0 < y.sum() < len(y)
        out[t] = {
            "average_precision": float(average_precision_score(y, p)) if ok else float("nan"),
            "auc": float(roc_auc_score(y, p)) if ok else float("nan"),
            "rows": len(y),
            "positives": int(y.sum()),
        }
    return out


def _raw_labels(frame: Any, spec: Spec, task: str) -> np.ndarray:
    y = np.full(len(frame), np.nan, dtype=np.float32)
    sources = frame["source"].to_numpy()
    for source, outcome in spec.tasks[task].labels.items():
        if outcome is not None:
            rows = sources == source
            y[rows] = frame.loc[rows, outcome].to_numpy(dtype=np.float32, na_value=np.nan)
    return y


class _Selection(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation AP of the selection tasks; stops early."""

    def __init__(self, spec: Spec, files: list[Path], log: ProgressFn) -> None:
        super().__init__()
        self.spec, self.files, self.log = spec, files, log
        self.tasks = spec.training.selection_tasks or spec.task_names
        self.best = -np.inf
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.best_metrics: dict[str, dict[str, float]] = {}
        self.history: list[dict[str, Any]] = []
        self.wait = 0
        self.validation_seconds = 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        signature = list(input_signature(self.spec, model_features(self.spec)))

        def predict(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = self.model({k: tf.constant(arrays[k]) for k in signature}, training=False)
            return {t: v.numpy() for t, v in out.items()}

        started = time.perf_counter()
        metrics = validation_metrics(predict, self.files, self.spec)
        self.validation_seconds += time.perf_counter() - started
        tasks = [t for t in self.tasks if t in metrics and not math.isnan(metrics[t]["average_precision"])]
        score = float(np.mean([metrics[t]["average_precision"] for t in tasks])) if tasks else -np.inf
        self.history.append(
            {
                "epoch": epoch + 1,
                "loss": float((logs or {}).get("loss", np.nan)),
                "selection_ap": score,
                "validation": metrics,
            }
        )
        aps = ", ".join(f"{t} {metrics[t]['average_precision']:.4f}" for t in self.spec.task_names)
        self.log(f"epoch {epoch + 1}: loss {float((logs or {}).get('loss', np.nan)):.4f}; validation AP {aps}")
        if score > self.best:
            self.best, self.best_epoch, self.best_metrics = score, epoch + 1, metrics
            self.best_weights = self.model.get_weights()
            self.wait = 0
        else:
            self.wait += 1
            if self.wait > self.spec.training.early_stopping_patience:
                self.log(f"early stop: no better validation AP for {self.wait} epochs")
                self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# --------------------------------------------------------------------------------------------------- export
class ServingModule(tf.Module):
    """What the SavedModel holds: the Keras model and a `serving_default` of raw features -> probabilities."""

    def __init__(self, model: MultiTaskModel, spec: Spec) -> None:
        super().__init__()
        self.model = model
        self.signature = input_signature(spec, model_features(spec))

        # An input_signature (not get_concrete_function) so that models with distributed variables
        # (MultiWorkerMirroredStrategy) can be saved too.
        @tf.function(input_signature=[self.signature])
        def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return self.model(features, training=False)

        self.serve = serve


def export(model: MultiTaskModel, spec: Spec, out: Path, metadata: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write the model directory atomically: SavedModel, a checkpoint for warm starts, spec and metadata."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        module = ServingModule(model, spec)
        tf.saved_model.save(module, str(tmp / SAVED_MODEL), signatures={"serving_default": module.serve})
        tf.train.Checkpoint(model=model).write(str(tmp / CHECKPOINT / "ckpt"))
        (tmp / SPEC_FILE).write_text(spec.to_yaml())
        write_json(metadata, tmp / METADATA)
    return out


def package_versions() -> dict[str, str]:
    names = ["coldcast", "tensorflow", "tf-keras", "tensorflow-recommenders", "numpy", "pandas", "pyarrow"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def data_fingerprint(ds: Dataset, dates: Sequence[str]) -> dict[str, Any]:
    manifest = ds.manifest
    return {
        "path": str(ds.root.resolve()),
        "kind": manifest.get("kind"),
        "spec_fingerprint": manifest.get("spec_fingerprint"),
        "dates": [dates[0], dates[-1]] if dates else [],
        "rows": {d: manifest.get("shards", {}).get(d) for d in dates},
    }


# --------------------------------------------------------------------------------------------------- train
def train(
    spec: Spec,
    data_dir: str | Path,
    out: str | Path,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    warm_start: str | Path | None = None,
    freeze_encoder: bool = False,
    overwrite: bool = False,
    verbose: int = 2,
    log: ProgressFn = print,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train the spec's multi-task model on a dataset's training days and write a model directory to `out`.

    `warm_start` restores every matching weight (features, encoder, existing towers) from another model
    directory: the fine-tune transfer mode; a task the old model lacked starts fresh. `freeze_encoder` then
    trains the towers only. `callbacks` are extra Keras callbacks for `fit` (TensorBoard, timing, ...).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    ds = Dataset.open(data_dir)
    split = ds.split(spec)
    sources = list(spec.training.sources or spec.source_names)
    train_files, val_files = ds.shards(split["train"]), ds.shards(split["validation"])
    check_columns(train_files, spec)
    counts = count_rows(train_files, sources)
    n_train = sum(counts.values())
    if n_train == 0:
        raise DataError(f"empty training set: no rows of source(s) {sources} in {ds.root} training days")
    labelled = label_counts(train_files, spec, sources)
    unlabelled = [t for t, c in labelled.items() if c["rows"] == 0]
    if unlabelled:
        raise DataError(
            f"no labelled training rows for task(s) {unlabelled} (training sources {sources}; check the tasks' "
            "labels and mask against the data)"
        )
    warm_spec_stats = None
    if warm_start is not None:
        warm = ScoringModel.load(warm_start)  # validates the folder and gives its numeric statistics
        warm_spec_stats = {k: tuple(v) for k, v in warm.metadata["numeric_stats"].items()}

    strategy = strategy_from_env()
    workers = strategy.num_replicas_in_sync
    batch_size = spec.training.batch_size
    steps = steps_per_epoch or max(1, math.ceil(n_train / batch_size))
    n_epochs = epochs or spec.training.epochs
    stats = warm_spec_stats or numeric_stats(train_files, spec)
    log(
        f"training on {n_train:,} rows ({', '.join(f'{s} {n:,}' for s, n in counts.items())}); "
        f"{n_epochs} epoch(s) x {steps} steps of {batch_size} ({spec.training.sampling} sampling); "
        f"{workers} replica(s)"
    )
    keras.utils.set_random_seed(spec.training.seed)
    with strategy.scope():
        model = MultiTaskModel(spec, stats)
        # build the variables before restoring or distributing
        sample = next(training_batches(train_files, spec, batch_size=8, steps=1, seed=0, sources=sources))
        features_sig = input_signature(spec, model_features(spec))
        model({k: tf.constant(sample[0][k]) for k in features_sig}, training=False)
        if warm_start is not None:
            status = tf.train.Checkpoint(model=model).read(str(Path(warm_start) / CHECKPOINT / "ckpt"))
            status.expect_partial()
            log(f"warm start from {warm_start}" + (" (encoder frozen)" if freeze_encoder else ""))
            if freeze_encoder:
                # Keras 2 reads `trainable` at compile time, so this must come before compile().
                model.features.trainable = False
                model.encoder.trainable = False
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.training.learning_rate))

    def dataset_fn(context: tf.distribute.InputContext) -> Any:
        files = train_files[context.input_pipeline_id :: context.num_input_pipelines]
        if not files:
            raise DataError(f"{len(train_files)} training shards cannot feed {context.num_input_pipelines} workers")
        per_replica = context.get_per_replica_batch_size(batch_size)
        seed = spec.training.seed + 1000 * context.input_pipeline_id
        return training_dataset(files, spec, per_replica, steps * n_epochs, seed, sources)

    if workers > 1:
        data = strategy.distribute_datasets_from_function(dataset_fn)
    else:
        data = training_dataset(train_files, spec, batch_size, steps * n_epochs, spec.training.seed, sources)
    selection = _Selection(spec, val_files, log)
    start = time.perf_counter()
    model.fit(data, epochs=n_epochs, steps_per_epoch=steps, callbacks=[selection, *callbacks], verbose=verbose)
    seconds = time.perf_counter() - start
    epochs_run = len(selection.history)
    metadata = {
        "tasks": spec.task_names,
        "features": [f.name for f in model_features(spec)],
        "spec_fingerprint": spec.fingerprint(),
        "data": data_fingerprint(ds, split["train"]),
        "validation_dates": split["validation"],
        "numeric_stats": {k: list(v) for k, v in stats.items()},
        "validation": selection.best_metrics,
        "best_epoch": selection.best_epoch,
        "history": selection.history,
        "training": {
            "rows": n_train,
            "rows_by_source": counts,
            "labelled": labelled,
            "epochs_run": epochs_run,
            "steps_per_epoch": steps,
            "seconds": seconds,
            "validation_seconds": selection.validation_seconds,
            "replicas": workers,
            "warm_start": str(warm_start) if warm_start else None,
            "freeze_encoder": freeze_encoder,
        },
        "versions": package_versions(),
    }
    if is_chief():
        export(model, spec, out, metadata, overwrite=overwrite)
    else:
        # every worker takes part in saving (collective ops); the others write to a scratch folder
        scratch = Path(tempfile.mkdtemp(prefix="coldcast-worker-"))
        try:
            export(model, spec, scratch / "model", metadata)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return TrainResult(
        model_dir=out,
        validation=selection.best_metrics,
        history=selection.history,
        best_epoch=selection.best_epoch,
        examples=steps * epochs_run * batch_size,
        seconds=seconds,
        validation_seconds=selection.validation_seconds,
        model=model,
    )
