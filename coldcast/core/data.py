"""Dataset layout, atomic Parquet I/O, the temporal split, and feature / label / task columns from the spec."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coldcast.core.spec import META_COLUMNS, TRUE_PREFIX, Spec, spec_from_dict

MANIFEST = "manifest.json"
SPEC_FILE = "spec.yaml"
IMPRESSIONS = "impressions"


class DataError(ValueError):
    """A dataset that is missing, malformed or does not match the spec."""


# --------------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_dir(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes `target` only if the block finishes.

    A crash leaves the temporary folder removed and `target` untouched, so no half-written dataset or model
    directory is ever visible under the final name.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True / --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_parquet(table: pa.Table | pd.DataFrame, path: str | Path, *, use_dictionary: bool = True) -> Path:
    """Write a Parquet file atomically (temporary file in the same folder, then rename).

    `use_dictionary=False` for columns of long distinct values, where dictionary encoding only costs time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=use_dictionary)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------- a dataset
@dataclass(frozen=True)
class Dataset:
    """A folder of impressions sharded by date, with its manifest and the spec it was made with."""

    root: Path

    @classmethod
    def open(cls, root: str | Path) -> Dataset:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset folder not found: {root}")
        if not (root / MANIFEST).exists():
            raise DataError(f"{root} is not a coldcast dataset: it has no {MANIFEST}")
        if not (root / IMPRESSIONS).is_dir() or not any((root / IMPRESSIONS).glob("*.parquet")):
            raise DataError(f"{root} has no impression shards under {IMPRESSIONS}/")
        return cls(root)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / MANIFEST).read_text())

    def spec(self) -> Spec:
        """The spec the data was generated or imported with."""
        import yaml

        return spec_from_dict(yaml.safe_load((self.root / SPEC_FILE).read_text()))

    def shards(self, dates: Sequence[str] | None = None) -> list[Path]:
        """Impression shard files in date order, optionally only those of `dates` (YYYY-MM-DD)."""
        files = sorted((self.root / IMPRESSIONS).glob("*.parquet"))
        if dates is not None:
            wanted = set(dates)
            files = [f for f in files if f.stem in wanted]
        return files

    @property
    def dates(self) -> list[str]:
        return [f.stem for f in self.shards()]

    def read(self, dates: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read impressions (all, or the given dates) into one DataFrame."""
        return read_shards(self.shards(dates), columns)

    def split(self, spec: Spec) -> dict[str, list[str]]:
        """Dates of the temporal train / validation / test split."""
        return temporal_split(self.dates, spec)

    def read_split(self, spec: Spec, part: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        return self.read(self.split(spec)[part], columns)

    def entity(self, name: str) -> pd.DataFrame:
        path = self.root / "entities" / f"{name}.parquet"
        if not path.exists():
            raise DataError(f"{self.root} has no entity table {name!r}")
        return pd.read_parquet(path)


def read_shards(files: Sequence[Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and concatenate Parquet shards; list columns come back as numpy arrays per row."""
    if not files:
        raise DataError("no shards to read")
    tables = [pq.read_table(f, columns=list(columns) if columns else None) for f in files]
    return pa.concat_tables(tables).to_pandas()


def temporal_split(dates: Sequence[str], spec: Spec) -> dict[str, list[str]]:
    """Split sorted dates: the last `test_days` are test, the `validation_days` before them validation."""
    dates = sorted(dates)
    v, t = spec.split.validation_days, spec.split.test_days
    if len(dates) <= v + t:
        raise DataError(f"{len(dates)} days of data cannot hold {v} validation and {t} test days plus training days")
    return {"train": dates[: -(v + t)], "validation": dates[-(v + t) : -t], "test": dates[-t:]}


# --------------------------------------------------------------------------------------------------- columns
def feature_columns(spec: Spec) -> list[str]:
    """The model's input columns, in spec order. Never a meta, outcome or true_* column (the spec enforces it)."""
    return spec.feature_names


def label_columns(spec: Spec) -> list[str]:
    """Raw outcome columns (null where a source does not observe the outcome)."""
    return spec.outcome_names


def non_feature_columns(spec: Spec) -> list[str]:
    return [*META_COLUMNS, *spec.outcome_names, *spec.true_columns]


def task_labels(df: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """One column per task: the outcome its label map assigns on each row's source, NaN where none is."""
    out = pd.DataFrame(index=df.index)
    sources = df["source"].to_numpy()
    for task_name, task in spec.tasks.items():
        values = np.full(len(df), np.nan, dtype=np.float32)
        for source, outcome in task.labels.items():
            if outcome is None:
                continue
            rows = sources == source
            values[rows] = df.loc[rows, outcome].to_numpy(dtype=np.float32, na_value=np.nan)
        out[task_name] = values
    return out


def task_weights(df: pd.DataFrame, spec: Spec, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per row and task: directional mask[source, task] x label observed (the loss weight before normalising)."""
    labels = task_labels(df, spec) if labels is None else labels
    out = pd.DataFrame(index=df.index)
    sources = df["source"].to_numpy()
    for task_name, task in spec.tasks.items():
        mask = np.zeros(len(df), dtype=np.float32)
        for source, weight in task.mask.items():
            mask[sources == source] = weight
        out[task_name] = mask * (~np.isnan(labels[task_name].to_numpy())).astype(np.float32)
    return out


def is_truth_column(name: str) -> bool:
    return name.startswith(TRUE_PREFIX)
