"""Prediction logs: what serving scored, appended to date-partitioned Parquet files that monitoring reads."""

from __future__ import annotations

import json
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
import pyarrow.json as pj
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
# A request file holds one row per request (its JSON body as sent, and its scores) instead of one per scored row;
# its Parquet metadata says so and carries what the reader needs to expand it into the rows of `log_schema`.
REQUEST_BODY = "request"
PREDICTIONS = "predictions"
KIND_KEY = b"coldcast.log.kind"
ROWS_SCHEMA_KEY = b"coldcast.log.rows_schema"
LAYOUT_KEY = b"coldcast.log.layout"

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


FILE_KINDS = ("part", "requests")  # file name prefixes: row records, request records


@dataclass(frozen=True)
class LogFiles:
    """A prediction-log folder: `date=YYYY-MM-DD/{part,requests}-<time>-<id>.parquet`, one partition per UTC day.

    `part-*` files hold one row per scored row; `requests-*` files one row per request (serving's records), which
    `read` expands into the same rows.
    """

    root: Path

    def partitions(self) -> list[str]:
        """The dates that have log files, in order."""
        return sorted(p.name.removeprefix("date=") for p in self.root.glob("date=*") if self._in(p))

    def files(self, dates: Sequence[str] | None = None) -> list[Path]:
        """The log files of the given dates (all by default), in the order they were written."""
        wanted = set(dates) if dates is not None else None
        out = []
        for part in sorted(self.root.glob("date=*")):
            if wanted is None or part.name.removeprefix("date=") in wanted:
                out.extend(sorted(self._in(part), key=lambda f: f.name.split("-", 1)[1]))  # by the time written
        return out

    def read(self, dates: Sequence[str] | None = None) -> pd.DataFrame:
        """Every logged row of the given dates (all by default), in the order the files were written."""
        files = self.files(dates)
        if not files:
            raise DataError(f"no prediction logs under {self.root}" + (f" for {list(dates)}" if dates else ""))
        return pa.concat_tables([read_log_file(f) for f in files], promote_options="default").to_pandas()

    @staticmethod
    def _in(partition: Path) -> list[Path]:
        return [f for kind in FILE_KINDS for f in partition.glob(f"{kind}-*.parquet")]


def read_log_file(path: Path) -> pa.Table:
    """One log file as rows of its `log_schema`: a request file is expanded, a row file read as it is."""
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(KIND_KEY) != b"requests":
        return table
    return _expand_requests(table, path)


def _expand_requests(table: pa.Table, path: Path) -> pa.Table:
    """The rows of a request file: each /score row or /rank candidate with its scores, a /rank's request-level
    groups (user, context) and source repeated on each of its candidates, multi-valued features cut as the model
    reads them (at most max_length values, empty strings dropped). The bodies are parsed by Arrow's JSON reader
    with the logged schema: no Python object per value."""
    meta = table.schema.metadata
    schema = pa.ipc.read_schema(pa.py_buffer(meta[ROWS_SCHEMA_KEY]))
    layout = json.loads(meta[LAYOUT_KEY])
    groups: dict[str, list[str]] = layout["request_groups"]
    group_of = {n: g for g, names in groups.items() for n in names}
    features: list[str] = layout["features"]

    def field(name: str) -> pa.Field:
        return pa.field(name, schema.field(name).type)

    ident = pa.field(IMPRESSION_ID, pa.string())
    row = pa.struct([*map(field, features), ident, pa.field(SOURCE, pa.string())])
    candidate = pa.struct([*(field(n) for n in features if n not in group_of), ident])
    body_schema = pa.schema(
        [
            pa.field("rows", pa.list_(row)),
            pa.field("candidates", pa.list_(candidate)),
            *(pa.field(g, pa.struct([field(n) for n in names])) for g, names in groups.items()),
            pa.field(SOURCE, pa.string()),
        ]
    )
    # JSON allows a raw line break only between tokens (never inside a string), so it can become a space and
    # every body one line of a JSON-lines buffer
    lines = b"\n".join(b.replace(b"\r", b" ").replace(b"\n", b" ") for b in table.column(REQUEST_BODY).to_pylist())
    try:
        parsed = pj.read_json(
            pa.BufferReader(lines),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(lines) + 1),
            parse_options=pj.ParseOptions(explicit_schema=body_schema, unexpected_field_behavior="ignore"),
        ).combine_chunks()
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: a logged request body does not parse as the logged features: {err}") from err
    if parsed.num_rows != table.num_rows:
        raise DataError(f"{path}: {table.num_rows} logged requests, but {parsed.num_rows} bodies parsed")
    head = table.select([REQUEST_ID, LOGGED_AT, MODEL_VERSION, ENDPOINT]).combine_chunks()
    scores = table.column(PREDICTIONS).combine_chunks()
    tasks = [scores.type.field(i).name for i in range(scores.type.num_fields)]
    parts, parents = [], []
    for key in ("rows", "candidates"):  # /score bodies have rows, /rank bodies candidates
        lists = parsed.column(key).chunk(0)
        mine = pc.is_valid(lists)
        if not pc.any(mine).as_py():
            continue
        counts = pc.list_value_length(lists.filter(mine))
        if not pc.all(pc.equal(counts, pc.list_value_length(scores.field(tasks[0]).filter(mine)))).as_py():
            raise DataError(f"{path}: a logged request has a different number of {key} and scores")
        flat, parent = pc.list_flatten(lists), pc.list_parent_indices(lists)
        cols = {name: head.column(name).take(parent) for name in head.column_names}
        cols[IMPRESSION_ID] = flat.field(IMPRESSION_ID)
        cols[SOURCE] = flat.field(SOURCE) if key == "rows" else parsed.column(SOURCE).chunk(0).take(parent)
        for name in features:
            if key == "candidates" and name in group_of:
                cols[name] = parsed.column(group_of[name]).chunk(0).field(name).take(parent)
            else:
                cols[name] = flat.field(name)
            if name in layout["max_length"]:
                cols[name] = _cut(cols[name], layout["max_length"][name])
        for t in tasks:
            cols[prediction_column(t)] = pc.list_flatten(scores.field(t).filter(mine))
        parts.append(pa.Table.from_arrays([cols[n] for n in schema.names], schema=schema))
        parents.append(parent)
    out = pa.concat_tables(parts)
    if len(parts) > 1:  # back into the order of the requests (Arrow's sort is stable: rows keep their order)
        out = out.take(pc.sort_indices(pa.chunked_array(parents)))
    return out


def _cut(lists: pa.Array, width: int) -> pa.Array:
    """Multi-valued features as the model reads them: the first `width` values, without empty strings."""
    sliced = pc.list_slice(lists, 0, width)
    flat, parent = pc.list_flatten(sliced), pc.list_parent_indices(sliced)
    keep = pc.not_equal(flat, "")
    counts = np.bincount(parent.filter(keep).to_numpy(), minlength=len(sliced))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, flat.filter(keep), mask=pc.is_null(sliced))


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


@dataclass
class _Request:
    """One request as the client sent it (its validated JSON body) and its scores: serving's record, stored as
    is, so a request pays for no conversion at all; the reader expands it into rows."""

    rows: int
    at: datetime
    request_id: str
    endpoint: str
    body: bytes
    predictions: Mapping[str, np.ndarray]


class PredictionLogger:
    """Thread-safe, buffered appender: rows are held in memory and written as one file per flush.

    Two kinds of record: `append_request` (serving) keeps a request's JSON body as the client sent it with its
    scores, and the reader expands it into rows; `append` takes the rows' feature arrays. A flush happens when
    `max_rows` are buffered, when the oldest buffered row is `max_seconds` old, and on `close()`. Each file is
    written atomically, so a reader never sees half a file and a crash loses at most the unflushed buffer. By
    default a flush that falls due runs inside the append that made it due; with `background=True` (serving) a
    writer thread does every flush, so an append only queues what it was given and the request never waits on
    Arrow or disk. If the writer falls behind by more than `max_buffer_rows`, further rows are dropped and
    counted in `dropped_rows` (and logged), never silently.
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
        cfg = spec.serving
        layout = {
            "features": [f.name for f in spec.feature_list],
            "request_groups": {g: [f.name for f in spec.group_features(g)] for g in cfg.request_groups},
            "max_length": {
                f.name: f.definition.max_length for f in spec.feature_list if isinstance(f.definition, MultiFeature)
            },
        }
        # what a request file's reader needs to expand it (read_log_file), in the file's Parquet metadata
        self._request_metadata = {
            KIND_KEY: b"requests",
            ROWS_SCHEMA_KEY: self.schema.serialize().to_pybytes(),
            LAYOUT_KEY: json.dumps(layout).encode(),
        }
        self.max_rows, self.max_seconds, self.max_buffer_rows = max_rows, max_seconds, max_buffer_rows
        self.rows_written = 0
        self.files_written = 0
        self.dropped_rows = 0
        self.write_errors = 0
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # one writer at a time, so files keep the order of the rows
        self._buffer: list[_Pending | _Request] = []
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

    def append_request(
        self, body: bytes, predictions: Mapping[str, np.ndarray], *, request_id: str, endpoint: str
    ) -> None:
        """Buffer one validated /score or /rank request: its JSON body as received and a probability array per
        task, one entry per row (/score) or candidate (/rank), in the body's order.

        The body is stored as it came; `LogFiles.read` turns it into the same rows `append` logs (a /rank's user
        and context on every candidate's row, multi-valued features cut as the model reads them).
        """
        if endpoint not in ("score", "rank"):
            raise ValueError(f"endpoint must be 'score' or 'rank', not {endpoint!r}")
        n = len(next(iter(predictions.values())))
        self._enqueue(_Request(n, datetime.now(UTC), request_id, endpoint, bytes(body), predictions))

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

        A feature is an array with one entry per row, or absent. The caller must not modify the arrays
        afterwards: they are converted when the buffer is flushed.
        """
        n = len(next(iter(predictions.values())))
        self._enqueue(_Pending(n, datetime.now(UTC), request_id, endpoint, features, predictions, meta))

    def _enqueue(self, pending: _Pending | _Request) -> None:
        n = pending.rows
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

    def _take(self) -> list[_Pending | _Request]:
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
        """One Arrow table for the row records of a flush: columns are concatenated as numpy first and converted
        once, so the per-column cost of Arrow is paid per file, not per append."""
        rows = np.array([p.rows for p in batch])
        n = int(rows.sum())

        def meta(key: str) -> pa.Array:
            parts = [list((p.meta or {}).get(key) or [None] * p.rows) for p in batch]
            return pa.array([v for part in parts for v in part], pa.string())

        head = self._head(batch).take(pa.array(np.repeat(np.arange(len(batch)), rows)))
        columns: list[pa.Array] = [*(c.combine_chunks() for c in head.columns), meta(IMPRESSION_ID), meta(SOURCE)]
        for f in self.spec.feature_list:
            columns.append(_feature_column(batch, f.name, self.schema.field(f.name).type))
            time.sleep(0)  # converting Python strings holds the GIL: let other threads in between columns
        for t in self.tasks:
            columns.append(pa.array(np.concatenate([np.asarray(p.predictions[t], np.float32) for p in batch])))
        assert len(columns[0]) == n
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _head(self, batch: Sequence[_Pending | _Request]) -> pa.Table:
        """The per-append columns (request id, log time, model version, endpoint), one row per append."""
        return pa.table(
            {
                REQUEST_ID: pa.array([p.request_id for p in batch], pa.string()),
                LOGGED_AT: pa.array([p.at for p in batch], pa.timestamp("us", tz="UTC")),
                MODEL_VERSION: pa.array([self.model_version] * len(batch), pa.string()),
                ENDPOINT: pa.array([p.endpoint for p in batch], pa.string()),
            }
        )

    def _request_table(self, batch: list[_Request]) -> pa.Table:
        """One row per request record: the head columns, the body as bytes, the scores as one list per task.
        No feature is converted here; the file's metadata tells the reader how to expand it."""
        offsets = pa.array(np.concatenate([[0], np.cumsum([p.rows for p in batch])]).astype(np.int32))
        scores = [
            pa.ListArray.from_arrays(
                offsets, pa.array(np.concatenate([np.asarray(p.predictions[t], np.float32) for p in batch]))
            )
            for t in self.tasks
        ]
        table = self._head(batch).append_column(REQUEST_BODY, pa.array([p.body for p in batch], pa.binary()))
        table = table.append_column(PREDICTIONS, pa.StructArray.from_arrays(scores, names=self.tasks))
        return table.replace_schema_metadata(self._request_metadata)

    def _write(self, batch: list[_Pending | _Request]) -> Path:
        with self._write_lock:
            last = None
            requests = [p for p in batch if isinstance(p, _Request)]
            rows = [p for p in batch if isinstance(p, _Pending)]
            for kind, group in (("part", rows), ("requests", requests)):
                if not group:
                    continue
                table = self._table(rows) if kind == "part" else self._request_table(requests)
                # one partition per UTC day of the log time; a batch straddling midnight is split
                days = np.array([f"{p.at:%Y-%m-%d}" for p in group])
                if kind == "part":
                    days = np.repeat(days, [p.rows for p in group])
                unique = np.unique(days)
                for day in unique:
                    part = table if len(unique) == 1 else table.filter(pa.array(days == day))
                    name = f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
                    # request bodies are long and distinct: dictionary encoding would only cost time
                    last = write_parquet(part, self.files.root / f"date={day}" / name, use_dictionary=kind == "part")
                    self.files_written += 1
                self.rows_written += sum(p.rows for p in group)
            assert last is not None
            return last


def _feature_column(batch: list[_Pending], name: str, kind: pa.DataType) -> pa.Array:
    parts = [p.features.get(name) for p in batch]
    arrays = [v for v in parts if isinstance(v, np.ndarray)]
    if len(arrays) == len(parts) and len({(a.ndim, a.shape[1:]) for a in arrays}) == 1:
        return _column(np.concatenate(arrays), kind)  # the common case: every append has the feature
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
