"""Input pipeline: Parquet shards streamed into numpy batches (source-balanced or natural) and then tf.data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coldcast.core.data import DataError
from coldcast.core.spec import CategoricalFeature, MultiFeature, NumericFeature, Spec

Batch = dict[str, np.ndarray]
LABELS = "labels"
WEIGHTS = "weights"


# --------------------------------------------------------------------------------------------------- conversion
def feature_arrays(table: pa.Table | pa.RecordBatch | pd.DataFrame, spec: Spec) -> Batch:
    """Raw feature values as the model's inputs: strings, int64, float32, and lists padded with ''."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    missing = [f.name for f in spec.feature_list if f.name not in table.column_names]
    if missing:
        raise DataError(f"the data lacks feature column(s) the spec declares: {missing}")
    out: Batch = {}
    for f in spec.feature_list:
        col = table.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        d = f.definition
        if isinstance(d, MultiFeature):
            out[f.name] = _pad_lists(col, d.max_length)
        elif isinstance(d, NumericFeature):
            out[f.name] = col.to_numpy(zero_copy_only=False).astype(np.float32)  # NaN -> the mean, in the model
        elif isinstance(d, CategoricalFeature) and d.dtype == "int64":
            values = col.to_numpy(zero_copy_only=False)
            out[f.name] = np.nan_to_num(values.astype(np.float64), nan=-1).astype(np.int64)
        else:
            values = col.cast(pa.string()).fill_null("")
            out[f.name] = values.to_numpy(zero_copy_only=False).astype(object)
    return out


def _pad_lists(col: pa.Array, max_length: int) -> np.ndarray:
    """A list<string> column as a dense [n, max_length] object array padded with '' (longer lists are cut)."""
    n = len(col)
    out = np.full((n, max_length), "", dtype=object)
    if n == 0:
        return out
    if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
        raise DataError(f"expected a list column, got {col.type}")
    col = col.fill_null(pa.scalar([], type=col.type))
    offsets = col.offsets.to_numpy()
    values = col.values.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
    # only the slice of values this (possibly sliced) array refers to
    start = offsets[0]
    lengths = np.diff(offsets)
    rows = np.repeat(np.arange(n), lengths)
    positions = np.arange(offsets[-1] - start) - (offsets[:-1] - start)[rows]
    keep = positions < max_length
    out[rows[keep], positions[keep]] = values[start : offsets[-1]][keep]
    return out


def label_arrays(table: pa.Table | pd.DataFrame, spec: Spec) -> tuple[Batch, Batch]:
    """Per task: label (0 where unlabelled, so no NaN reaches the loss) and weight = mask x observed."""
    if isinstance(table, pd.DataFrame):

        def column(name: str) -> np.ndarray:
            return table[name].to_numpy()

        names = set(table.columns)
    else:

        def column(name: str) -> np.ndarray:
            return table.column(name).to_numpy()

        names = set(table.column_names)
    sources = column("source")
    n = len(sources)
    outcomes = {o: column(o).astype(np.float32) for o in spec.outcome_names if o in names}
    labels: Batch = {}
    weights: Batch = {}
    for name, task in spec.tasks.items():
        y = np.full(n, np.nan, dtype=np.float32)
        mask = np.zeros(n, dtype=np.float32)
        for source, outcome in task.labels.items():
            rows = sources == source
            if outcome is not None and rows.any():
                if outcome not in outcomes:
                    raise DataError(f"task {name!r} needs outcome column {outcome!r}, which the data lacks")
                y[rows] = outcomes[outcome][rows]
            mask[rows] = task.mask.get(source, 0.0)
        observed = ~np.isnan(y)
        labels[name] = np.where(observed, y, 0.0).astype(np.float32)
        weights[name] = (mask * observed).astype(np.float32)
    return labels, weights


# --------------------------------------------------------------------------------------------------- streaming
Rows = dict[str, np.ndarray]  # features, then "label:<task>" and "weight:<task>" columns, all the same length


def _rows(table: pa.Table, spec: Spec) -> Rows:
    """Convert a chunk once (vectorised) so that batches are cheap numpy slices of it."""
    rows = feature_arrays(table, spec)
    labels, weights = label_arrays(table, spec)
    rows.update({f"label:{t}": v for t, v in labels.items()})
    rows.update({f"weight:{t}": v for t, v in weights.items()})
    return rows


def _length(rows: Rows | None) -> int:
    return 0 if not rows else len(next(iter(rows.values())))


def _concat(parts: list[Rows]) -> Rows:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _index(rows: Rows, idx: np.ndarray | slice) -> Rows:
    return {k: v[idx] for k, v in rows.items()}


@dataclass
class _Stream:
    """Endless shuffled rows of some sources, read shard by shard (so the data need not fit in memory)."""

    files: list[Path]
    sources: list[str]
    spec: Spec
    buffer_rows: int
    rng: np.random.Generator

    def __post_init__(self) -> None:
        self._buffer: Rows | None = None
        self._columns = needed_columns(self.spec)
        self._chunks = self._read()

    def _read(self) -> Iterator[Rows]:
        while True:
            found = False
            for i in self.rng.permutation(len(self.files)):
                for batch in pq.ParquetFile(self.files[i]).iter_batches(batch_size=65_536, columns=self._columns):
                    table = pa.Table.from_batches([batch])
                    table = table.filter(pc.is_in(table.column("source"), pa.array(self.sources)))
                    if table.num_rows:
                        found = True
                        yield _rows(table, self.spec)
            if not found:
                return

    def _fill(self) -> None:
        """Top the buffer up to `buffer_rows` rows and shuffle it, so batches mix rows across shards."""
        parts = [self._buffer] if _length(self._buffer) else []
        have = _length(self._buffer)
        while have < self.buffer_rows:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += _length(chunk)
        if parts:
            merged = _concat(parts)
            self._buffer = _index(merged, self.rng.permutation(_length(merged)))

    def take(self, n: int) -> Rows | None:
        if _length(self._buffer) < max(n, self.buffer_rows // 2):
            self._fill()
        if not _length(self._buffer):
            return None
        assert self._buffer is not None
        part = _index(self._buffer, slice(0, n))
        self._buffer = _index(self._buffer, slice(n, None))
        return part


def count_rows(files: Sequence[Path], sources: Sequence[str] | None = None) -> dict[str, int]:
    """Rows per source in the shards, read from the `source` column only."""
    counts: dict[str, int] = {}
    for f in files:
        values = pq.read_table(f, columns=["source"]).column("source").to_pandas().value_counts()
        for source, n in values.items():
            if sources is None or source in sources:
                counts[str(source)] = counts.get(str(source), 0) + int(n)
    return counts


def needed_columns(spec: Spec) -> list[str]:
    return ["source", *spec.feature_names, *spec.outcome_names]


def training_batches(
    files: Sequence[Path],
    spec: Spec,
    *,
    batch_size: int,
    steps: int,
    seed: int,
    sources: Sequence[str] | None = None,
) -> Iterator[tuple[Batch, Batch, Batch]]:
    """`steps` shuffled batches of (features, labels, weights).

    With `training.sampling: balanced` each batch holds rows of each source in the spec's ratio (the smaller
    source is cycled more often); with `natural` rows come in the data's own mix.
    """
    sources = list(sources or spec.source_names)
    rng = np.random.default_rng(seed)
    buffer = max(spec.training.shuffle_buffer, batch_size * 4)
    if spec.training.sampling == "natural" or len(sources) == 1:
        streams = {",".join(sources): _Stream(list(files), sources, spec, buffer, rng)}
        ratio = [1.0]
    else:
        shares = _ratios(spec, sources)
        streams = {s: _Stream(list(files), [s], spec, buffer // len(sources), rng) for s in sources}
        ratio = [shares[s] for s in sources]
    for _ in range(steps):
        counts = rng.multinomial(batch_size, ratio)
        parts = []
        for (name, stream), n in zip(streams.items(), counts, strict=True):
            if n:
                part = stream.take(int(n))
                if part is None:
                    raise DataError(f"no training rows of source {name!r} in the data")
                parts.append(part)
        rows = _concat(parts) if len(parts) > 1 else parts[0]
        rows = _index(rows, rng.permutation(_length(rows)))
        features = {k: v for k, v in rows.items() if ":" not in k}
        labels = {t: rows[f"label:{t}"] for t in spec.task_names}
        weights = {t: rows[f"weight:{t}"] for t in spec.task_names}
        yield features, labels, weights


def _ratios(spec: Spec, sources: list[str]) -> dict[str, float]:
    given = {s: spec.training.source_ratio.get(s, 0.0) for s in sources}
    total = sum(given.values())
    if total <= 0:
        return {s: 1.0 / len(sources) for s in sources}
    return {s: v / total for s, v in given.items()}


def eval_batches(
    files: Sequence[Path],
    spec: Spec,
    *,
    batch_size: int,
    sources: Sequence[str] | None = None,
    columns: Sequence[str] = (),
) -> Iterator[tuple[Batch, pa.Table]]:
    """Every row once, in order: (features, the table with `columns` for scoring and metrics)."""
    read = list(dict.fromkeys(["source", *spec.feature_names, *columns]))
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=read):
            table = pa.Table.from_batches([batch])
            if sources is not None:
                table = table.filter(pc.is_in(table.column("source"), pa.array(list(sources))))
            if table.num_rows:
                yield feature_arrays(table, spec), table


def check_columns(files: Sequence[Path], spec: Spec) -> None:
    """Stop early, naming them, if the data lacks columns the spec's features or tasks need."""
    if not files:
        raise DataError("no training shards")
    schema = pq.read_schema(files[0])
    missing = [c for c in needed_columns(spec) if c not in schema.names]
    for name, task in spec.tasks.items():
        for source, outcome in task.labels.items():
            if outcome is not None and outcome not in schema.names:
                raise DataError(
                    f"spec and data disagree: task {name!r} takes its {source} label from column {outcome!r}, "
                    f"which {files[0].parent.parent} does not have"
                )
    if missing:
        raise DataError(f"spec and data disagree: {files[0].parent.parent} lacks column(s) {missing}")
