"""Evaluate a model directory on a dataset split: score the rows, find what training saw, compute the report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from coldcast.core.data import DataError, Dataset
from coldcast.core.spec import Spec, spec_from_dict
from coldcast.evaluation.report import EvaluationReport, TrainingReference, evaluate_predictions

SPLITS = ("train", "validation", "test", "all")
# Progress callback: (stage, done, total), stage one of "score" or "metrics".
StageProgress = Callable[[str, int, int], None]


def evaluation_spec(model_spec: Spec, data_spec: Spec, tasks: list[str]) -> Spec:
    """The model's spec, plus the definitions (label map, home source) of tasks it scores but was not trained on.

    A direct-apply model scores `ad_stream` with its `promo_stream` head although its own spec has no
    `ad_stream` task: the labels of that task come from the spec the data was made with.
    """
    missing = [t for t in tasks if t not in model_spec.tasks]
    if not missing:
        return model_spec
    unknown = [t for t in missing if t not in data_spec.tasks]
    if unknown:
        raise DataError(
            f"the model scores task(s) {unknown} that neither its spec nor the data's spec defines, so they have "
            "no labels to evaluate against"
        )
    raw = model_spec.model_dump(mode="json")
    raw["tasks"].update({t: data_spec.tasks[t].model_dump(mode="json") for t in missing})
    return spec_from_dict(raw)


def training_reference_for(metadata: Mapping[str, Any], dataset: Dataset, spec: Spec) -> TrainingReference | None:
    """The model's training cut-off and the users of its training rows, from its metadata (None if unknown).

    The training rows are read from the dataset the model was trained on when it still exists, else from the
    evaluation dataset's days up to the cut-off; nothing on or after the first day after the cut-off is read.
    """
    data = metadata.get("data") or {}
    dates = list(data.get("dates") or [])
    if len(dates) != 2:
        return None
    first, cutoff = str(dates[0]), str(dates[1])
    source = dataset
    trained_on = data.get("path")
    if trained_on and Path(trained_on).resolve() != dataset.root.resolve() and Path(trained_on).is_dir():
        try:
            source = Dataset.open(trained_on)
        except DataError:
            source = dataset
    days = [d for d in source.dates if first <= d <= cutoff]
    if not days:
        return None
    users = source.read(days, columns=["user_id"])["user_id"] if "user_id" in spec.feature_names else None
    return TrainingReference(cutoff=cutoff, users=frozenset(users.astype(str)) if users is not None else frozenset())


def evaluate_model(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str = "test",
    spec: Spec | None = None,
    heads: Mapping[str, str] | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
    batch_size: int = 8192,
    progress: StageProgress | None = None,
) -> EvaluationReport:
    """Score a dataset split with a model directory and evaluate every task it scores, per source and slice.

    `spec` replaces the evaluation settings (slices, bootstrap, calibration bins); by default they come from the
    model's own spec, with any task the model scores but does not define taken from the data's spec. `heads`
    scores a task with another head (direct apply without writing a model directory). The `new_show` and
    `unseen_user` slices use the model's training cut-off and training users only.
    """
    from coldcast.model.scoring import ScoringModel  # TensorFlow: imported only when a model is scored

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {list(SPLITS)}")
    model = ScoringModel.load(model_dir)
    dataset = Dataset.open(data_dir)
    tasks = list(dict.fromkeys([*model.tasks, *(heads or {})]))
    resolved = spec or evaluation_spec(model.spec, dataset.spec(), tasks)
    dates = dataset.dates if split == "all" else dataset.split(resolved)[split]
    df = dataset.read(dates)
    notes = []
    scored = [t for t in tasks if t in resolved.tasks]
    skipped = [t for t in tasks if t not in resolved.tasks]
    if skipped:
        notes.append(f"heads without a task definition in the evaluation spec, not evaluated: {skipped}")
    predictions = _score(model, df, scored, heads, batch_size, progress)
    reference = training_reference_for(model.metadata, dataset, resolved)
    if reference is None:
        notes.append("the model's metadata names no training window: new_show and unseen_user slices are omitted")
    elif dates and min(dates) <= reference.cutoff:
        notes.append(
            f"the evaluated days ({dates[0]}..{dates[-1]}) overlap the model's training window (to "
            f"{reference.cutoff}): figures are optimistic"
        )

    def metrics_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("metrics", done, total)

    report = evaluate_predictions(
        df,
        predictions,
        resolved,
        train_cutoff=reference.cutoff if reference else None,
        train_users=reference.users if reference and reference.users else None,
        seed=seed,
        bootstrap=bootstrap,
        progress=metrics_progress,
    )
    return report.model_copy(
        update={
            "model": str(model_dir),
            "data": str(data_dir),
            "split": split,
            "dates": [dates[0], dates[-1]] if dates else [],
            "notes": notes,
        }
    )


def _score(
    model: Any,
    df: Any,
    tasks: list[str],
    heads: Mapping[str, str] | None,
    batch_size: int,
    progress: StageProgress | None,
) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    parts: dict[str, list[Any]] = {t: [] for t in tasks}
    total = table.num_rows
    for start in range(0, total, batch_size):
        chunk = model.predict(table.slice(start, batch_size), batch_size=batch_size, heads=dict(heads or {}))
        for t in tasks:
            parts[t].append(chunk[t].to_numpy(dtype=np.float64))
        if progress is not None:
            progress("score", min(start + batch_size, total), total)
    return {t: np.concatenate(v) if v else np.zeros(0) for t, v in parts.items()}
