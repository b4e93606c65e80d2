"""Prediction logs: what serving scored, appended to date-partitioned Parquet files that monitoring reads."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coldcast.core.data import DataError, write_parquet
from coldcast.core.spec import CategoricalFeature, MultiFeature, NumericFeature, Spec

# Columns every log row carries besides the features (under their data names) and one prediction per task.
REQUEST_ID = "request_id"
LOGGED_AT = "logged_at"
MODEL_VERSION = "model_version"
ENDPOINT = "endpoint"
# Optional per-row identifiers a client may send with a row: they join delayed labels and slice by channel.
IMPRESSION_ID = "impression_id"
SOURCE = "source"
PREDICTION_PREFIX = "prediction_"

log = logging.getLogger(__name__)


def prediction_column(task: str) -> str:
    """The log column holding a task's predicted probability."""
    return PREDICTION_PREFIX + task


def log_schema(spec: Spec, tasks: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a log file for a model with `tasks` trained under `spec`."""
    fields = [
        pa.field(REQUEST_ID, pa.string()),
        pa.field(LOGGED_AT, pa.timestamp("us", tz="UTC")),
        pa.field(MODEL_VERSION, pa.string()),
        pa.field(ENDPOINT, pa.string()),
        pa.field(IMPRESSION_ID, pa.string()),
        pa.field(SOURCE, pa.string()),
    ]
    for f in spec.feature_list:
        d = f.definition
        if isinstance(d, MultiFeature):
            kind: pa.DataType = pa.list_(pa.string())
        elif isinstance(d, NumericFeature):
            kind = pa.float32()
        elif isinstance(d, CategoricalFeature) and d.dtype == "int64":
            kind = pa.int64()
        else:
            kind = pa.string()
        fields.append(pa.field(f.name, kind))
    fields += [pa.field(prediction_column(t), pa.float32()) for t in tasks]
    return pa.schema(fields)


@dataclass(frozen=True)
class LogFiles:
    """A prediction-log folder: `date=YYYY-MM-DD/part-*.parquet`, one partition per UTC day."""

    root: Path

    def partitions(self) -> list[str]:
        """The dates that have log files, in order."""
        return sorted(p.name.removeprefix("date=") for p in self.root.glob("date=*") if any(p.glob("*.parquet")))

    def files(self, dates: Sequence[str] | None = None) -> list[Path]:
        wanted = set(dates) if dates is not None else None
        out = []
        for part in sorted(self.root.glob("date=*")):
            if wanted is None or part.name.removeprefix("date=") in wanted:
                out.extend(sorted(part.glob("part-*.parquet")))
        return out

    def read(self, dates: Sequence[str] | None = None) -> pd.DataFrame:
        """Every logged row of the given dates (all by default), in the order the files were written."""
        files = self.files(dates)
        if not files:
            raise DataError(f"no prediction logs under {self.root}" + (f" for {list(dates)}" if dates else ""))
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").to_pandas()


@dataclass(frozen=True)
class Repeated:
    """One value shared by every row of an append (a /rank request's user and context): `row` holds it as a
    one-row array, `count` is the rows. The log converts it once and repeats it in Arrow, not per row."""

    row: np.ndarray
    count: int

    def expand(self) -> np.ndarray:
        return np.repeat(self.row, self.count, axis=0)


@dataclass
class _Pending:
    """One append, kept as given: converting to Arrow is the writer's job, not the request's."""

    rows: int
    at: datetime
    request_id: str
    endpoint: str
    features: Mapping[str, Any]
    predictions: Mapping[str, np.ndarray]
    meta: Mapping[str, Sequence[str | None]] | None


class PredictionLogger:
    """Thread-safe, buffered appender: rows are held in memory and written as one file per flush.

    A flush happens when `max_rows` are buffered, when the oldest buffered row is `max_seconds` old, and on
    `close()`. Each file is written atomically, so a reader never sees half a file and a crash loses at most the
    unflushed buffer. By default a flush that falls due runs inside the `append` that made it due; with
    `background=True` (serving) a writer thread does every flush, so `append` only queues the request's arrays
    and the request never waits on Arrow conversion or disk. If the writer falls behind by more than
    `max_buffer_rows`, further rows are dropped and counted in `dropped_rows` (and logged), never silently.
    """

    def __init__(
        self,
        root: str | Path,
        spec: Spec,
        tasks: Sequence[str],
        model_version: str,
        *,
        max_rows: int = 5_000,
        max_seconds: float = 5.0,
        max_buffer_rows: int = 200_000,
        background: bool = False,
    ) -> None:
        self.files = LogFiles(Path(root))
        self.spec = spec
        self.tasks = list(tasks)
        self.model_version = model_version
        self.schema = log_schema(spec, self.tasks)
        self.max_rows, self.max_seconds, self.max_buffer_rows = max_rows, max_seconds, max_buffer_rows
        self.rows_written = 0
        self.files_written = 0
        self.dropped_rows = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one writer at a time, so files keep the order of the rows
        self._buffer: list[_Pending] = []
        self._rows = 0
        self._oldest: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="coldcast-predlog", daemon=True)
            self._thread.start()

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def append(
        self,
        features: Mapping[str, Any],
        predictions: Mapping[str, np.ndarray],
        *,
        request_id: str,
        endpoint: str = "score",
        meta: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        """Buffer one request's rows: raw features by name, a probability array per task, optional ids.

        A feature is an array with one entry per row, a `Repeated` value shared by all rows, or absent. The
        caller must not modify the arrays afterwards: they are converted when the buffer is flushed.
        """
        n = len(next(iter(predictions.values())))
        for name, value in features.items():
            if isinstance(value, Repeated) and value.count != n:
                raise ValueError(f"feature {name!r} repeats a value for {value.count} rows, the append has {n}")
        pending = _Pending(n, datetime.now(UTC), request_id, endpoint, features, predictions, meta)
        with self._lock:
            if self._closed:
                raise RuntimeError("the prediction logger is closed")
            if self._rows + n > self.max_buffer_rows:
                self.dropped_rows += n
                log.warning("prediction log buffer full (%d rows): dropped %d rows", self._rows, n)
                return
            self._buffer.append(pending)
            self._rows += n
            self._oldest = self._oldest or time.monotonic()
            due = self._is_due()
            if self._thread is not None:
                if due:
                    self._due.notify()
                return
            batch = self._take() if due else None
        if batch:
            self._write(batch)

    def flush(self) -> Path | None:
        """Write whatever is buffered now; returns the last file written, if any."""
        with self._lock:
            batch = self._take()
        return self._write(batch) if batch else None

    def close(self) -> None:
        """Stop the writer thread (if any) and write what is left."""
        with self._lock:
            self._closed = True
            self._due.notify()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    # ---- internals
    def _is_due(self) -> bool:
        if not self._rows:
            return False
        assert self._oldest is not None
        return self._rows >= self.max_rows or time.monotonic() - self._oldest >= self.max_seconds

    def _take(self) -> list[_Pending]:
        batch, self._buffer, self._rows, self._oldest = self._buffer, [], 0, None
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._is_due():
                    wait = self.max_seconds
                    if self._oldest is not None:
                        wait = max(0.0, self._oldest + self.max_seconds - time.monotonic())
                    self._due.wait(timeout=wait)
                if self._closed:
                    return  # close() flushes the rest
                batch = self._take()
            try:
                self._write(batch)
            except Exception:  # a full disk must not kill the writer: count the rows and keep going
                log.exception("writing prediction logs failed: %d rows lost", sum(p.rows for p in batch))
                self.write_errors += 1
                self.dropped_rows += sum(p.rows for p in batch)

    def _table(self, batch: list[_Pending]) -> pa.Table:
        """One Arrow table for a whole flush: columns are concatenated as numpy first and converted once, so the
        per-column cost of Arrow is paid per file, not per request."""
        rows = np.array([p.rows for p in batch])
        n = int(rows.sum())

        def repeated(values: list[Any], kind: pa.DataType) -> pa.Array:
            return pa.array(np.repeat(np.array(values, dtype=object), rows), kind)

        def meta(key: str) -> pa.Array:
            parts = [list((p.meta or {}).get(key) or [None] * p.rows) for p in batch]
            return pa.array([v for part in parts for v in part], pa.string())

        columns: list[pa.Array] = [
            repeated([p.request_id for p in batch], pa.string()),
            pa.array(np.repeat([np.datetime64(p.at.replace(tzinfo=None), "us") for p in batch], rows)).cast(
                pa.timestamp("us", tz="UTC")
            ),
            pa.array(np.full(n, self.model_version, dtype=object), pa.string()),
            repeated([p.endpoint for p in batch], pa.string()),
            meta(IMPRESSION_ID),
            meta(SOURCE),
        ]
        for f in self.spec.feature_list:
            columns.append(_feature_column(batch, f.name, self.schema.field(f.name).type))
            # Let the request threads in between columns. Converting a flush's Python strings holds the GIL
            # (about 17 ms in all for 4,000 rows of arrays here, before /rank logged its shared values once),
            # and without a yield the event loop waits up to the interpreter's 5 ms switch interval at each turn.
            time.sleep(0)
        for t in self.tasks:
            columns.append(pa.array(np.concatenate([np.asarray(p.predictions[t], np.float32) for p in batch])))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _write(self, batch: list[_Pending]) -> Path:
        with self._write_lock:
            table = self._table(batch)
            # one partition per UTC day of the rows' log time; a batch straddling midnight is split
            days = np.repeat([f"{p.at:%Y-%m-%d}" for p in batch], [p.rows for p in batch])
            unique = np.unique(days)
            last = None
            for day in unique:
                part = table if len(unique) == 1 else table.filter(pa.array(days == day))
                name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
                last = write_parquet(part, self.files.root / f"date={day}" / name)
                self.files_written += 1
            self.rows_written += table.num_rows
            assert last is not None
            return last


def _feature_column(batch: list[_Pending], name: str, kind: pa.DataType) -> pa.Array:
    parts = [p.features.get(name) for p in batch]
    shared = [v for v in parts if isinstance(v, Repeated)]
    if len(shared) == len(parts):  # a flush is never empty
        # a flush of /rank requests: convert one row per request, then repeat it in Arrow (C, no Python objects)
        rows = _column(np.concatenate([v.row for v in shared]), kind)
        return rows.take(pa.array(np.repeat(np.arange(len(shared)), [v.count for v in shared])))
    parts = [v.expand() if isinstance(v, Repeated) else v for v in parts]
    arrays = [v for v in parts if isinstance(v, np.ndarray)]
    if len(arrays) == len(parts) and len({(a.ndim, a.shape[1:]) for a in arrays}) == 1:
        return _column(np.concatenate(arrays), kind)  # the common case: every request sent the feature
    return pa.concat_arrays(
        [pa.nulls(p.rows, kind) if v is None else _column(v, kind) for v, p in zip(parts, batch, strict=True)]
    )


def _column(values: Any, kind: pa.DataType) -> pa.Array:
    """One feature column as Arrow, converted in C where the input is numpy (this runs for every logged row)."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        # padded multi-valued features ([rows, max_length], '' = padding): flatten, drop the padding and cut the
        # lists at the non-empty counts, all in Arrow (comparing Python strings in numpy is ten times slower)
        flat = pa.array(values.ravel(), pa.string())
        present = pc.not_equal(flat, "").to_numpy(zero_copy_only=False).reshape(values.shape)
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(present.ravel())))
    if isinstance(values, np.ndarray):
        if values.dtype == object:
            return pa.array(values, kind, from_pandas=True)
        return pa.array(values).cast(kind)
    return pa.array(list(values), kind)
