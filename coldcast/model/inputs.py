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
    """Raw feature values as the model's inputs: UTF-8 bytes, int64, float32, and lists padded with b''."""
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
            out[f.name] = _utf8_column(col)
    return out


def _utf8_column(col: pa.Array) -> np.ndarray:
    """A column of strings (or of values cast to strings) as fixed-width UTF-8 bytes, nulls as b''.

    Through a dictionary: a categorical column has few distinct values, so converting those once and indexing is
    cheaper than converting every value.
    """
    if pa.types.is_dictionary(col.type):
        words, codes = col.dictionary.cast(pa.string()), col.indices
    else:
        encoded = pc.dictionary_encode(col.cast(pa.string()))
        words, codes = encoded.dictionary, encoded.indices
    table = np.append(_utf8(words.to_numpy(zero_copy_only=False)), b"")
    return table[codes.fill_null(len(table) - 1).to_numpy()]


def _utf8(values: np.ndarray) -> np.ndarray:
    """Python strings as fixed-width UTF-8 bytes (numpy 'S'), the same tf.string values.

    Why: shuffling and batching copy every row several times, and an object array costs a reference count per
    value on each copy and on each free, which made the input pipeline slower than training needs; a bytes array
    is copied as one block.
    """
    try:
        return values.astype(np.bytes_)  # ASCII, the common case, in one C loop
    except UnicodeEncodeError:
        return np.char.encode(values.astype(np.str_), "utf-8")


def _pad_lists(col: pa.Array, max_length: int) -> np.ndarray:
    """A list<string> column as a dense [n, max_length] UTF-8 bytes array padded with b'' (longer lists are cut)."""
    n = len(col)
    if n == 0:
        return np.full((n, max_length), b"", dtype="S1")
    if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
        raise DataError(f"expected a list column, got {col.type}")
    col = col.fill_null(pa.scalar([], type=col.type))
    offsets = col.offsets.to_numpy()
    values = _utf8_column(col.values)
    out = np.full((n, max_length), b"", dtype=values.dtype if values.itemsize else "S1")
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
Packed = dict[str, np.ndarray]  # FLOATS [n, F], INTS [n, I] and one bytes array per string feature: n rows
FLOATS, INTS = "floats", "ints"


@dataclass(frozen=True)
class Layout:
    """Where each feature, label and weight of a training row sits in its packed arrays.

    Why packed: the shuffle buffer copies every row a few times and tf.data converts each array it is handed
    separately, so a float32 matrix, an int64 matrix and one UTF-8 bytes array per string feature cost a fraction
    of some forty columns. Strings stay one array per feature so that each keeps its own (narrow) width.
    """

    floats: tuple[str, ...]  # numeric features, then "label:<task>" and "weight:<task>"
    ints: tuple[str, ...]
    strings: tuple[tuple[str, int | None], ...]  # (feature, max_length of a list or None)
    tasks: tuple[str, ...]

    @classmethod
    def of(cls, spec: Spec) -> Layout:
        floats: list[str] = []
        ints: list[str] = []
        strings: list[tuple[str, int | None]] = []
        for f in spec.feature_list:
            d = f.definition
            if isinstance(d, NumericFeature):
                floats.append(f.name)
            elif isinstance(d, CategoricalFeature) and d.dtype == "int64":
                ints.append(f.name)
            else:
                strings.append((f.name, d.max_length if isinstance(d, MultiFeature) else None))
        tasks = tuple(spec.task_names)
        floats += [f"label:{t}" for t in tasks] + [f"weight:{t}" for t in tasks]
        return cls(tuple(floats), tuple(ints), tuple(strings), tasks)

    @property
    def string_columns(self) -> list[tuple[str, int, int | None]]:
        """(feature, first column, max_length or None) in the [n, K] matrices `text_blob` returns."""
        out, first = [], 0
        for name, length in self.strings:
            out.append((name, first, length))
            first += length or 1
        return out

    @property
    def string_width(self) -> int:
        """K, the columns of `text_blob`'s matrices."""
        return sum(length or 1 for _, length in self.strings)

    def pack(self, table: pa.Table, spec: Spec) -> Packed:
        """A chunk converted once (vectorised), so that shuffling and batching are cheap numpy indexing."""
        rows = feature_arrays(table, spec)
        labels, weights = label_arrays(table, spec)
        rows.update({f"label:{t}": v for t, v in labels.items()})
        rows.update({f"weight:{t}": v for t, v in weights.items()})
        n = table.num_rows
        return {
            FLOATS: np.stack([rows[k] for k in self.floats], axis=1),  # never empty: every task has a label column
            INTS: np.stack([rows[k] for k in self.ints], axis=1) if self.ints else np.zeros((n, 0), np.int64),
            **{name: rows[name] for name, _ in self.strings},
        }

    def unpack(self, packed: Packed) -> tuple[Batch, Batch, Batch]:
        """(features, labels, weights) as views of the packed arrays (numpy, or tensors in a tf.data map)."""
        columns = {k: packed[FLOATS][:, j] for j, k in enumerate(self.floats)}
        features = {k: v for k, v in columns.items() if ":" not in k}
        features.update({k: packed[INTS][:, j] for j, k in enumerate(self.ints)})
        features.update({name: packed[name] for name, _ in self.strings})
        labels = {t: columns[f"label:{t}"] for t in self.tasks}
        weights = {t: columns[f"weight:{t}"] for t in self.tasks}
        return features, labels, weights

    def text_blob(self, packed: Packed) -> tuple[bytes, np.ndarray, np.ndarray]:
        """Every string of a batch in one bytes object, with [n, K] int32 positions and lengths of each value.

        tf.strings.substr cuts them back out in the graph; see `coldcast.model.train.training_dataset`.
        """
        parts, positions, lengths = [], [], []
        offset = 0
        for name, _ in self.strings:
            values = np.ascontiguousarray(packed[name])
            values = values.reshape(len(values), -1)
            parts.append(values.tobytes())
            positions.append(offset + np.arange(values.size).reshape(values.shape) * values.itemsize)
            lengths.append(np.char.str_len(values))
            offset += values.nbytes
        if not parts:
            n = len(packed[FLOATS])
            return b"", np.zeros((n, 0), np.int32), np.zeros((n, 0), np.int32)
        return (
            b"".join(parts),
            np.concatenate(positions, axis=1).astype(np.int32),
            np.concatenate(lengths, axis=1).astype(np.int32),
        )


def _length(rows: Packed | None) -> int:
    return 0 if not rows else len(next(iter(rows.values())))


def _concat(parts: list[Packed]) -> Packed:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _index(rows: Packed, idx: np.ndarray | slice) -> Packed:
    return {k: v[idx] for k, v in rows.items()}


@dataclass
class _Stream:
    """Endless shuffled rows of some sources, read shard by shard (so the data need not fit in memory)."""

    files: list[Path]
    sources: list[str]
    spec: Spec
    layout: Layout
    buffer_rows: int
    rng: np.random.Generator

    def __post_init__(self) -> None:
        self._buffer: Packed | None = None
        self._columns = needed_columns(self.spec)
        self._chunks = self._read()

    def _read(self) -> Iterator[Packed]:
        while True:
            found = False
            for i in self.rng.permutation(len(self.files)):
                for batch in pq.ParquetFile(self.files[i]).iter_batches(batch_size=65_536, columns=self._columns):
                    table = pa.Table.from_batches([batch])
                    table = table.filter(pc.is_in(table.column("source"), pa.array(self.sources)))
                    if table.num_rows:
                        found = True
                        yield self.layout.pack(table, self.spec)
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

    def take(self, n: int) -> Packed | None:
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
    """`steps` shuffled batches of (features, labels, weights); see `packed_batches`."""
    layout = Layout.of(spec)
    for packed in packed_batches(files, spec, batch_size=batch_size, steps=steps, seed=seed, sources=sources):
        yield layout.unpack(packed)


def packed_batches(
    files: Sequence[Path],
    spec: Spec,
    *,
    batch_size: int,
    steps: int,
    seed: int,
    sources: Sequence[str] | None = None,
) -> Iterator[Packed]:
    """`steps` shuffled batches, each packed as `Layout.of(spec)` describes.

    With `training.sampling: balanced` each batch holds rows of each source in the spec's ratio (the smaller
    source is cycled more often); with `natural` rows come in the data's own mix.
    """
    sources = list(sources or spec.source_names)
    layout = Layout.of(spec)
    rng = np.random.default_rng(seed)
    buffer = max(spec.training.shuffle_buffer, batch_size * 4)
    if spec.training.sampling == "natural" or len(sources) == 1:
        streams = {",".join(sources): _Stream(list(files), sources, spec, layout, buffer, rng)}
        ratio = [1.0]
    else:
        shares = _ratios(spec, sources)
        streams = {s: _Stream(list(files), [s], spec, layout, buffer // len(sources), rng) for s in sources}
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
        yield _index(rows, rng.permutation(_length(rows)))


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
