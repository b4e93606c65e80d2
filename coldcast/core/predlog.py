"""Prediction logs: what serving scored, appended to date-partitioned Parquet files that monitoring reads."""

from __future__ import annotations

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


class PredictionLogger:
    """Thread-safe, buffered appender: rows are held in memory and written as one file per flush.

    A flush happens when `max_rows` are buffered, when the oldest buffered row is `max_seconds` old (checked on
    the next append), and on `close()`. Each file is written atomically, so a reader never sees half a file and a
    crash loses at most the unflushed buffer.
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
    ) -> None:
        self.files = LogFiles(Path(root))
        self.spec = spec
        self.tasks = list(tasks)
        self.model_version = model_version
        self.schema = log_schema(spec, self.tasks)
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self._lock = threading.Lock()
        self._buffer: list[pa.Table] = []
        self._rows = 0
        self._oldest: float | None = None

    def append(
        self,
        features: Mapping[str, Any],
        predictions: Mapping[str, np.ndarray],
        *,
        request_id: str,
        endpoint: str = "score",
        meta: Mapping[str, Sequence[str | None]] | None = None,
    ) -> None:
        """Buffer one request's rows: raw features by name, a probability array per task, optional ids."""
        n = len(next(iter(predictions.values())))
        now = datetime.now(UTC)
        columns: dict[str, Any] = {
            REQUEST_ID: [request_id] * n,
            LOGGED_AT: [now] * n,
            MODEL_VERSION: [self.model_version] * n,
            ENDPOINT: [endpoint] * n,
            IMPRESSION_ID: list((meta or {}).get(IMPRESSION_ID) or [None] * n),
            SOURCE: list((meta or {}).get(SOURCE) or [None] * n),
        }
        for f in self.spec.feature_list:
            values = features.get(f.name)
            columns[f.name] = [None] * n if values is None else _as_list(values)
        for t in self.tasks:
            columns[prediction_column(t)] = np.asarray(predictions[t], dtype=np.float32)
        table = pa.table(columns, schema=self.schema)
        with self._lock:
            self._buffer.append(table)
            self._rows += n
            self._oldest = self._oldest or time.monotonic()
            due = self._rows >= self.max_rows or time.monotonic() - self._oldest >= self.max_seconds
            batch = self._take() if due else None
        if batch is not None:
            self._write(batch)

    def flush(self) -> Path | None:
        """Write whatever is buffered now; returns the file written, if any."""
        with self._lock:
            batch = self._take()
        return self._write(batch) if batch is not None else None

    def close(self) -> None:
        self.flush()

    def _take(self) -> pa.Table | None:
        if not self._buffer:
            return None
        batch = pa.concat_tables(self._buffer)
        self._buffer, self._rows, self._oldest = [], 0, None
        return batch

    def _write(self, batch: pa.Table) -> Path:
        # one partition per UTC day of the rows' log time; a batch straddling midnight is split
        days = pc.strftime(batch.column(LOGGED_AT), format="%Y-%m-%d").to_numpy(zero_copy_only=False)
        last = None
        for day in np.unique(days):
            part = batch.filter(pa.array(days == day))
            name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
            last = write_parquet(part, self.files.root / f"date={day}" / name)
        assert last is not None
        return last


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        if values.ndim == 2:  # padded multi-valued features: drop the '' padding
            return [[v for v in row if v != ""] for row in values.tolist()]
        return values.tolist()
    return list(values)
