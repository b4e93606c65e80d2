"""The monitored columns generated from the spec: how each feature becomes an Evidently column, and the definition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from evidently import BinaryClassification, DataDefinition

from coldcast.core.data import DataError, task_labels
from coldcast.core.predlog import SOURCE, prediction_column
from coldcast.core.spec import CategoricalFeature, IdFeature, MultiFeature, NumericFeature, Spec, drift_columns

OTHER = "(other)"  # an id or list value outside the reference's top k
EMPTY = "(empty)"  # an empty list
MISSING = "(missing)"  # a null categorical or id value
LABEL_PREFIX = "label_"
ALL = "all"  # the segment of every row in the window

Encoding = Literal["value", "log1p", "top_k", "length", "top_member"]


def label_column(task: str) -> str:
    """The monitoring frame's column holding a task's label (NaN where the row's source does not label it)."""
    return LABEL_PREFIX + task


@dataclass(frozen=True)
class MonitoredColumn:
    """One column tested for drift: which feature it comes from and how it is derived."""

    name: str
    feature: str
    group: str
    kind: Literal["numerical", "categorical"]
    encoding: Encoding


@dataclass(frozen=True)
class ColumnPlan:
    """How a window's raw rows (features under their data names) become the columns monitoring compares.

    Built once from the reference: the top-k vocabularies of id and multi-valued features are the reference's
    most frequent values, so the reference and every window are encoded the same way.
    """

    spec: Spec
    tasks: tuple[str, ...]
    columns: tuple[MonitoredColumn, ...]
    excluded: dict[str, str]
    vocabularies: dict[str, tuple[str, ...]] = field(repr=False)

    @classmethod
    def from_reference(cls, spec: Spec, reference: pd.DataFrame, tasks: Sequence[str]) -> ColumnPlan:
        """The plan for `spec`'s features and `tasks`, with vocabularies from the reference's raw rows."""
        missing = [f.name for f in spec.feature_list if f.name not in spec.drift.exclude and f.name not in reference]
        if missing:
            raise DataError(f"the reference lacks feature column(s) the spec declares: {missing}")
        k = spec.drift.top_k
        vocab: dict[str, tuple[str, ...]] = {}
        columns: list[MonitoredColumn] = []
        for name, f in drift_columns(spec).items():
            d = f.definition
            if isinstance(d, NumericFeature):
                columns.append(MonitoredColumn(name, f.name, f.group, "numerical", "log1p" if d.log else "value"))
            elif isinstance(d, CategoricalFeature):
                columns.append(MonitoredColumn(name, f.name, f.group, "categorical", "value"))
            elif isinstance(d, IdFeature):
                vocab[f.name] = _top_values(reference[f.name], k)
                columns.append(MonitoredColumn(name, f.name, f.group, "categorical", "top_k"))
            elif isinstance(d, MultiFeature):
                if name.endswith(".len"):
                    columns.append(MonitoredColumn(name, f.name, f.group, "numerical", "length"))
                else:
                    vocab[f.name] = _top_values(_explode(reference[f.name]), k)
                    columns.append(MonitoredColumn(name, f.name, f.group, "categorical", "top_member"))
        excluded = {n: r for n, r in spec.drift.exclude.items() if n in spec.feature_names}
        return cls(spec, tuple(tasks), tuple(columns), excluded, vocab)

    # ---- views
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def group_columns(self, group: str) -> list[str]:
        return [c.name for c in self.columns if c.group == group]

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(c.group for c in self.columns))

    @property
    def prediction_columns(self) -> list[str]:
        return [prediction_column(t) for t in self.tasks]

    def column(self, name: str) -> MonitoredColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"no monitored column {name!r}")

    # ---- frames
    def frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The monitored columns, segment columns, one prediction per task and (where known) one label per task."""
        missing = [c.feature for c in self.columns if c.feature not in raw]
        missing += [p for p in self.prediction_columns if p not in raw]
        if missing:
            raise DataError(f"the window lacks column(s) monitoring needs: {sorted(set(missing))}")
        raw = raw.reset_index(drop=True)  # list encodings group exploded values by row label
        out: dict[str, pd.Series] = {}
        for c in self.columns:
            out[c.name] = self._encode(c, raw[c.feature])
        for segment in self.spec.drift.segments:
            if segment not in out:  # a categorical feature is its own segment column
                out[segment] = _as_text(raw[segment]) if segment in raw else pd.Series(MISSING, raw.index)
        for name in [*self.spec.drift.within.values(), *self.spec.drift.label_segments]:
            if name not in out and name in raw:  # keys of within columns and label segments, as they are
                out[name] = _as_text(raw[name])
        self._add_scores_and_labels(raw, out)
        return pd.DataFrame(out, index=raw.index)

    def label_frame(self, raw: pd.DataFrame) -> pd.DataFrame:
        """What the label-based checks read, without encoding every feature (label windows and their reference
        are large): source, label segments, one prediction and (where known) one label per task."""
        missing = [p for p in self.prediction_columns if p not in raw]
        if missing:
            raise DataError(f"the window lacks column(s) monitoring needs: {missing}")
        raw = raw.reset_index(drop=True)
        out: dict[str, pd.Series] = {}
        for name in [SOURCE, *self.spec.drift.label_segments]:
            if name in raw:
                out[name] = _as_text(raw[name])
        self._add_scores_and_labels(raw, out)
        return pd.DataFrame(out, index=raw.index)

    def _add_scores_and_labels(self, raw: pd.DataFrame, out: dict[str, pd.Series]) -> None:
        """One prediction column per task and, where the outcomes are there, one label column per task."""
        for t in self.tasks:
            out[prediction_column(t)] = pd.to_numeric(raw[prediction_column(t)], errors="coerce").astype(float)
        labels = self.labels(raw)
        if labels is not None:
            for t in self.tasks:
                out[label_column(t)] = labels[t]

    def labels(self, raw: pd.DataFrame) -> pd.DataFrame | None:
        """Per task, the label its label map assigns on each row (NaN where none), or None without outcomes."""
        outcomes = self.spec.outcome_names
        if SOURCE not in raw or not any(o in raw for o in outcomes):
            return None
        frame = raw[[SOURCE]].copy()
        for o in outcomes:
            frame[o] = pd.to_numeric(raw[o], errors="coerce") if o in raw else np.nan
        return task_labels(frame, self.spec)[list(self.tasks)]

    def data_definition(self, *, extra_numerical: Sequence[str] = ()) -> DataDefinition:
        """The Evidently definition of a drift dataset: monitored columns by kind, and the predictions."""
        numerical = [c.name for c in self.columns if c.kind == "numerical"] + self.prediction_columns
        categorical = [c.name for c in self.columns if c.kind == "categorical"]
        categorical += [s for s in self.spec.drift.segments if s not in categorical]
        return DataDefinition(numerical_columns=[*numerical, *extra_numerical], categorical_columns=categorical)

    def quality_definition(self, task: str) -> DataDefinition:
        """The Evidently definition of one task's labelled rows: its prediction and its 0/1 label."""
        return DataDefinition(
            numerical_columns=[prediction_column(task), label_column(task)],
            classification=[
                BinaryClassification(name=task, target=label_column(task), prediction_probas=prediction_column(task))
            ],
        )

    def _encode(self, c: MonitoredColumn, values: pd.Series) -> pd.Series:
        if c.encoding == "value" and c.kind == "numerical":
            return pd.to_numeric(values, errors="coerce").astype(float)
        if c.encoding == "log1p":
            return np.log1p(pd.to_numeric(values, errors="coerce").astype(float).clip(lower=0))
        if c.encoding == "value":
            return _as_text(values)
        if c.encoding == "top_k":
            text = _as_text(values)
            top = set(self.vocabularies[c.feature])
            return text.where(text.isin(top) | (text == MISSING), OTHER)
        if c.encoding == "length":
            return values.map(lambda v: float(len(v)) if v is not None else np.nan)
        return _top_member(values, self.vocabularies[c.feature])


def has_values(values: pd.Series) -> bool:
    """Whether a monitored column holds anything but nulls and MISSING (a feature that stopped arriving does not)."""
    present = values.notna()
    if values.dtype == object:
        present &= values != MISSING
    return bool(present.any())


def _as_text(values: pd.Series) -> pd.Series:
    """Values as strings (ints too: categories like hour must not be tested as numbers); nulls as MISSING."""
    text = values.astype(object).where(values.notna(), MISSING).astype(str)
    return text.astype(object)


def _explode(values: pd.Series) -> pd.Series:
    return values.dropna().explode().dropna().astype(str)


def _top_values(values: pd.Series, k: int) -> tuple[str, ...]:
    counts = _as_text(values).value_counts(sort=False)
    counts = counts[counts.index != MISSING]
    # most frequent first; ties by value so the vocabulary does not depend on row order
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(v for v, _ in ranked[:k])


def _top_member(values: pd.Series, vocabulary: Sequence[str]) -> pd.Series:
    """Per list: its member that ranks highest in the vocabulary, OTHER if none does, EMPTY if it is empty."""
    rank = {v: i for i, v in enumerate(vocabulary)}
    lengths = values.map(lambda v: len(v) if v is not None else -1)
    exploded = _explode(values)
    ranks = exploded.map(rank).dropna()
    best = ranks.groupby(level=0).min() if len(ranks) else pd.Series(dtype=float)
    out = pd.Series(OTHER, index=values.index, dtype=object)
    out[lengths == 0] = EMPTY
    out[lengths < 0] = MISSING
    if len(best):
        out.loc[best.index] = np.asarray(vocabulary, dtype=object)[best.to_numpy(dtype=int)]
    return out
