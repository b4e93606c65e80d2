"""The two sides of a check: a reference sampled from the model's dataset, and a window of serving logs with labels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from coldcast.core.data import DataError, Dataset
from coldcast.core.predlog import IMPRESSION_ID, LOGGED_AT, SOURCE, LogFiles, prediction_column
from coldcast.core.spec import Spec

METADATA = "metadata.json"


def model_metadata(model_dir: str | Path) -> dict:
    """A model directory's metadata.json (its tasks, training and validation dates, dataset path)."""
    path = Path(model_dir) / METADATA
    if not path.exists():
        raise DataError(f"{model_dir} is not a coldcast model directory: it has no {METADATA}")
    return json.loads(path.read_text())


def reference_dates(model_dir: str | Path, split: str) -> list[str]:
    """The dates of the model's dataset it was trained ("train") or selected ("validation") on."""
    meta = model_metadata(model_dir)
    if split == "validation":
        dates = list(meta.get("validation_dates") or [])
    elif split == "train":
        dates = list((meta.get("data") or {}).get("rows") or {})
    else:
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    if not dates:
        raise DataError(f"{model_dir} records no {split} dates in its {METADATA}")
    return dates


def build_reference(
    dataset: str | Path | Dataset,
    model_dir: str | Path,
    spec: Spec,
    *,
    dates: Sequence[str] | None = None,
    rows: int | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """A seeded sample of the model's dataset scored by the model: features, source, outcomes, one prediction a task.

    By default the days are the model's `drift.reference_split` days and the sample has the larger of
    `drift.reference_rows` and `drift.label_reference_rows` (check_window subsamples it for feature drift).
    """
    from coldcast.model.scoring import ScoringModel  # TensorFlow only when a reference is built

    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    cfg = spec.drift
    dates = list(dates) if dates is not None else reference_dates(model_dir, cfg.reference_split)
    missing = sorted(set(dates) - set(ds.dates))
    if missing:
        raise DataError(f"{ds.root} has no shards for reference date(s) {missing}")
    frame = ds.read(dates)
    n = rows or max(cfg.reference_rows, cfg.label_reference_rows)
    if len(frame) > n:
        picked = np.random.default_rng(cfg.seed if seed is None else seed).choice(len(frame), n, replace=False)
        frame = frame.iloc[np.sort(picked)]
    frame = frame.reset_index(drop=True)
    model = ScoringModel.load(model_dir)
    scores = model.predict(frame)
    for task in model.tasks:
        frame[prediction_column(task)] = scores[task].to_numpy()
    return frame


def read_window(
    log_dir: str | Path,
    dates: Sequence[str] | None = None,
    *,
    request_prefix: str | Sequence[str] | None = None,
    rows: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Logged rows of the given UTC dates (all by default), optionally only requests whose id starts with a prefix
    (or any of several), sampled (seeded) down to `rows`."""
    frame = LogFiles(Path(log_dir)).read(dates)
    if request_prefix is not None:
        prefixes = (request_prefix,) if isinstance(request_prefix, str) else tuple(request_prefix)
        frame = frame[frame["request_id"].astype(str).str.startswith(prefixes)]
        if frame.empty:
            raise DataError(f"no logged requests with ids starting {list(prefixes)} under {log_dir}")
    if rows is not None and len(frame) > rows:
        picked = np.random.default_rng(seed).choice(len(frame), rows, replace=False)
        frame = frame.iloc[np.sort(picked)]
    return frame.reset_index(drop=True)


def latest_dates(log_dir: str | Path, days: int, *, until: str | None = None) -> list[str]:
    """The last `days` dates that have prediction logs (up to and including `until`, if given)."""
    dates = [d for d in LogFiles(Path(log_dir)).partitions() if until is None or d <= until]
    if not dates:
        raise DataError(f"no prediction logs under {log_dir}" + (f" up to {until}" if until else ""))
    return dates[-days:]


def join_labels(
    window: pd.DataFrame, labels: str | Path | Dataset, spec: Spec, *, dates: Sequence[str] | None = None
) -> pd.DataFrame:
    """The window with each row's outcomes (delayed labels) joined from a dataset by impression id.

    Rows without an impression id, or whose impression the dataset does not have (yet), keep null outcomes and
    are left out of the label-based checks. A missing `source` is filled from the dataset.
    """
    ds = labels if isinstance(labels, Dataset) else Dataset.open(labels)
    if IMPRESSION_ID not in window:
        raise DataError("the window has no impression_id column to join labels on")
    outcomes = spec.outcome_names
    truth = ds.read(dates, columns=[IMPRESSION_ID, SOURCE, *outcomes])
    duplicated = truth[IMPRESSION_ID].duplicated()
    if duplicated.any():
        raise DataError(
            f"{ds.root}: {int(duplicated.sum())} impression ids occur more than once, so labels cannot be joined"
        )
    truth = truth.rename(columns={SOURCE: "_labelled_source"})
    out = window.drop(columns=[o for o in outcomes if o in window]).merge(truth, on=IMPRESSION_ID, how="left")
    if SOURCE in out:
        out[SOURCE] = out[SOURCE].where(out[SOURCE].notna(), out["_labelled_source"])
    else:
        out[SOURCE] = out["_labelled_source"]
    return out.drop(columns="_labelled_source")


def window_label(frame: pd.DataFrame) -> str:
    """A window's name from its log times: `2026-01-19`, or `2026-01-19..2026-01-21` for several days."""
    if LOGGED_AT not in frame or frame.empty:
        return "window"
    days = pd.to_datetime(frame[LOGGED_AT], utc=True).dt.strftime("%Y-%m-%d")
    first, last = days.min(), days.max()
    return first if first == last else f"{first}..{last}"
