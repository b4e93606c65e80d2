"""Offline evaluation: per task, per source and per slice metrics with intervals, beside the ground-truth ceiling."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from coldcast.core.data import Dataset, task_labels, write_json
from coldcast.core.records import Record
from coldcast.core.spec import TRUE_PREFIX, Spec
from coldcast.evaluation.metrics import MetricSet, Strategy, compute_metrics, stable_seed

# Population of a task without a home source: every row its label map labels, whatever the source.
ALL_LABELLED = "all"
# Slices derived from the training data rather than read from a column.
NEW_SHOW = "new_show"
UNSEEN_USER = "unseen_user"
ProgressFn = Callable[[int, int], None]


class Figure(Record):
    """The model's metrics on some rows, and the ceiling: the same metrics with the true probability as score."""

    model: MetricSet
    ceiling: MetricSet | None = None


class Population(Record):
    """A task evaluated on one population (a source's labelled rows, or all labelled rows), overall and by slice."""

    overall: Figure
    slices: dict[str, dict[str, Figure]]

    def slice(self, name: str, value: str) -> Figure:
        """The figure of one slice value, e.g. slice("popularity_tier", "3")."""
        groups = self.slices.get(name)
        if groups is None:
            raise KeyError(f"no slice {name!r}; slices are {sorted(self.slices)}")
        if value not in groups:
            raise KeyError(f"slice {name!r} has no value {value!r}; values are {sorted(groups)}")
        return groups[value]


class TaskReport(Record):
    """One task: its headline population (the home source, else all labelled rows) and every population."""

    task: str
    headline_population: str
    populations: dict[str, Population]

    @property
    def headline(self) -> Figure:
        return self.populations[self.headline_population].overall

    def population(self, name: str | None = None) -> Population:
        """A population by name (a source or "all"); the headline one by default."""
        name = self.headline_population if name is None else name
        if name not in self.populations:
            raise KeyError(f"task {self.task!r} has no population {name!r}; it has {sorted(self.populations)}")
        return self.populations[name]


class EvaluationReport(Record):
    """Metrics of one model's predictions on one evaluation set."""

    rows: int
    data_fingerprint: str
    spec_fingerprint: str
    train_cutoff: str | None
    bootstrap: int
    calibration_bins: int
    calibration_strategy: str = "uniform"
    seed: int
    has_ceiling: bool
    tasks: dict[str, TaskReport]
    # Where the figures come from (filled by evaluate_model; None for predictions evaluated directly).
    model: str | None = None
    data: str | None = None
    split: str | None = None
    dates: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def task(self, name: str) -> TaskReport:
        if name not in self.tasks:
            raise KeyError(f"no task {name!r} in the report; it has {sorted(self.tasks)}")
        return self.tasks[name]

    def write(self, path: str | Path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def read(cls, path: str | Path) -> EvaluationReport:
        return cls.model_validate(json.loads(Path(path).read_text()))


class TrainingReference(Record):
    """What the model saw in training, for the slices that must not use later information."""

    cutoff: str
    users: frozenset[str]


def training_reference(dataset: Dataset, spec: Spec) -> TrainingReference:
    """The last training date and the users seen on training days (from the temporal split, nothing later)."""
    train_dates = dataset.split(spec)["train"]
    users = dataset.read(train_dates, columns=["user_id"])["user_id"]
    return TrainingReference(cutoff=max(train_dates), users=frozenset(users.astype(str)))


def evaluate_predictions(
    df: pd.DataFrame,
    predictions: Mapping[str, np.ndarray],
    spec: Spec,
    *,
    train_cutoff: str | None,
    train_users: set[str] | frozenset[str] | None,
    seed: int = 0,
    bootstrap: int | None = None,
    progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Evaluate per-task probabilities aligned with the impressions `df` (dataset schema).

    Every task in `predictions` is evaluated on the rows its label map labels, per source and, where the task
    has no home source, on all labelled rows together; each population is cut by the spec's slices plus
    `new_show` (show launched after `train_cutoff`, the last training date) and `unseen_user` (user not in
    `train_users`). Both derived slices are computed only from those two arguments, never from `df` itself.
    Where `df` carries the true_* columns, the ground-truth ceiling stands beside every figure.
    """
    unknown = set(predictions) - set(spec.tasks)
    if unknown:
        raise KeyError(f"predictions for unknown task(s) {sorted(unknown)}; tasks are {spec.task_names}")
    for task, p in predictions.items():
        if len(p) != len(df):
            raise ValueError(f"predictions for {task!r} have {len(p)} rows; the data has {len(df)}")
    n_boot = spec.evaluation.bootstrap if bootstrap is None else bootstrap
    if n_boot < 0:
        raise ValueError(f"bootstrap must be >= 0, not {n_boot}")
    bins = spec.evaluation.calibration_bins
    strategy = spec.evaluation.calibration_strategy
    labels = task_labels(df, spec)
    truth = _truth(df, spec)
    slices = {name: _codes(values) for name, values in slice_values(df, spec, train_cutoff, train_users).items()}
    sources = df["source"].astype(str).to_numpy()
    tasks: dict[str, TaskReport] = {}
    for i, task in enumerate(t for t in spec.task_names if t in predictions):
        y_all = labels[task].to_numpy()
        p_all = np.asarray(predictions[task], dtype=np.float64)
        labelled = ~np.isnan(y_all)
        if np.isnan(p_all[labelled]).any():
            raise ValueError(f"predictions for {task!r} are NaN on labelled rows")
        if not labelled.any():
            raise ValueError(f"task {task!r} has no labelled rows in the evaluation data")
        t_all = truth.get(task)
        home = spec.tasks[task].home_source
        masks = {s: labelled & (sources == s) for s in spec.tasks[task].labels if spec.tasks[task].labels[s]}
        if home not in masks:
            masks[ALL_LABELLED] = labelled
        populations = {}
        for name, rows in masks.items():
            # Within one source, slicing by source would repeat the overall figure.
            cuts = {k: v for k, v in slices.items() if name == ALL_LABELLED or k != "source"}
            scores = _Scores(y_all, p_all, t_all, bins, strategy, n_boot, (seed, task, name))
            populations[name] = _population(scores, rows, cuts)
        tasks[task] = TaskReport(
            task=task,
            headline_population=home if home in masks else ALL_LABELLED,
            populations=populations,
        )
        if progress is not None:
            progress(i + 1, len(predictions))
    return EvaluationReport(
        rows=len(df),
        data_fingerprint=data_fingerprint(df),
        spec_fingerprint=spec.fingerprint(),
        train_cutoff=train_cutoff,
        bootstrap=n_boot,
        calibration_bins=bins,
        calibration_strategy=strategy,
        seed=seed,
        has_ceiling=bool(truth),
        tasks=tasks,
    )


@dataclass(frozen=True)
class _Scores:
    """A task's labels, predictions and true probabilities over all rows, and how to bootstrap them."""

    y: np.ndarray
    p: np.ndarray
    truth: np.ndarray | None
    bins: int
    strategy: Strategy
    bootstrap: int
    key: tuple[object, ...]

    def figure(self, idx: np.ndarray, *key: str) -> Figure:
        # The seed depends on the task, population and slice only, so the ceiling, and any other model
        # evaluated on the same rows, see exactly the same resamples as this one.
        seed = stable_seed(*self.key, *key)
        y = self.y[idx]
        settings = dict(bins=self.bins, strategy=self.strategy, bootstrap=self.bootstrap, seed=seed)
        model = compute_metrics(y, self.p[idx], **settings)  # type: ignore[arg-type]
        ceiling = None
        if self.truth is not None:
            ceiling = compute_metrics(y, self.truth[idx], **settings)  # type: ignore[arg-type]
        return Figure(model=model, ceiling=ceiling)


def _population(scores: _Scores, rows: np.ndarray, slices: dict[str, tuple[np.ndarray, np.ndarray]]) -> Population:
    cut: dict[str, dict[str, Figure]] = {}
    for name, (codes, labels) in slices.items():
        present = sorted(np.unique(codes[rows]), key=lambda c: _order(labels[c]))
        cut[name] = {
            str(labels[c]): scores.figure(np.flatnonzero(rows & (codes == c)), name, str(labels[c])) for c in present
        }
    return Population(overall=scores.figure(np.flatnonzero(rows)), slices=cut)


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes per row and the label of each code (comparing integers is far cheaper than strings)."""
    codes, labels = pd.factorize(values, sort=False)
    return codes, np.asarray(labels, dtype=object)


def data_fingerprint(df: pd.DataFrame) -> str:
    """A short hash of which impressions were evaluated: reports on different rows should not be compared."""
    ids = df["impression_id"].astype(str) if "impression_id" in df else pd.Series(np.arange(len(df)).astype(str))
    digest = hashlib.sha256(pd.util.hash_pandas_object(ids, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _truth(df: pd.DataFrame, spec: Spec) -> dict[str, np.ndarray]:
    """Per task, the true probability of the outcome its label map assigns on each row's source (NaN elsewhere)."""
    out = {}
    sources = df["source"].astype(str).to_numpy()
    for name, task in spec.tasks.items():
        needed = {TRUE_PREFIX + o for o in task.labels.values() if o is not None}
        if not needed <= set(df.columns):
            continue
        values = np.full(len(df), np.nan)
        for source, outcome in task.labels.items():
            if outcome is not None:
                rows = sources == source
                values[rows] = df.loc[rows, TRUE_PREFIX + outcome].to_numpy(dtype=np.float64)
        out[name] = values
    return out


def slice_values(
    df: pd.DataFrame, spec: Spec, train_cutoff: str | None, train_users: set[str] | frozenset[str] | None
) -> dict[str, np.ndarray]:
    """Per slice, a string value per row: the spec's column slices, then `new_show` and `unseen_user`.

    Column slices are values recorded at impression time (the popularity tier and less-streamed flag come from
    each impression's trailing window, never later days). The derived slices read only the training cut-off,
    each row's show launch date and the training users: no outcome, no true_* column, no other row.
    """
    out = {}
    for name, definition in spec.evaluation.slices.items():
        if definition.column in df.columns:
            out[name] = _as_text(df[definition.column])
    if train_cutoff is not None and "show_launch_date" in df.columns:
        launched = pd.to_datetime(df["show_launch_date"])
        out[NEW_SHOW] = _as_text(launched > pd.Timestamp(train_cutoff))
    if train_users is not None and "user_id" in df.columns:
        out[UNSEEN_USER] = _as_text(~df["user_id"].astype(str).isin(train_users))
    return out


def _as_text(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return np.where(col.to_numpy(), "true", "false").astype(object)
    return col.astype(object).where(col.notna(), "missing").astype(str).to_numpy(dtype=object)


def _order(value: str) -> tuple[int, float | str]:
    """Numeric slice values (tiers) in numeric order, the rest alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
