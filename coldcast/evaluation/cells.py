"""One experiment cell: train a model variant on a world, score the world's test days, record the result.

Runs in a fresh worker process per cell (TensorFlow state never leaks from one variant into the next); a cell
is done when its result.json exists, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

RESULT = "result.json"
PREDICTIONS = "predictions.parquet"
LOG = "train.log"


class CellTask(BaseModel):
    """Everything a worker needs to run one cell: no shared state with the parent process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    data: str  # dataset folder the variant trains on
    test_data: str  # dataset folder whose test days it is scored on
    preset: str | None
    overrides: list[str]
    epochs: int
    steps_per_epoch: int
    warm_start: str | None = None  # model folder of another cell
    freeze_encoder: bool = False
    folder: str  # where result.json, predictions and the log go
    model_dir: str
    keep_model: bool = True
    threads: int | None = None


def cell_folder(root: Path, cell_id: str) -> Path:
    return root / "cells" / cell_id.replace("/", "__")


def is_done(folder: str | Path) -> bool:
    return (Path(folder) / RESULT).exists()


def run_cell(task: CellTask) -> dict[str, Any]:
    """Train, score the test days, write predictions and result.json (last, atomically); returns the result."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if task.threads:
        # must precede the first TensorFlow op in this (fresh) process
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(task.threads)
        tf.config.threading.set_inter_op_parallelism_threads(task.threads)
    import numpy as np
    import pandas as pd

    from coldcast.core.data import Dataset, write_json, write_parquet
    from coldcast.core.spec import load_spec
    from coldcast.model.scoring import ScoringModel
    from coldcast.model.train import train

    folder = Path(task.folder)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG
    started = time.perf_counter()
    with log_path.open("w") as log_file:

        def log(message: str) -> None:
            log_file.write(f"{time.strftime('%H:%M:%S')} {message}\n")
            log_file.flush()

        data = Dataset.open(task.data)
        spec = load_spec(preset=task.preset, base=data.root / "spec.yaml", overrides=task.overrides)
        log(f"cell {task.id}: preset {task.preset}, overrides {task.overrides}, data {task.data}")
        result = train(
            spec,
            data.root,
            task.model_dir,
            epochs=task.epochs,
            steps_per_epoch=task.steps_per_epoch,
            warm_start=task.warm_start,
            freeze_encoder=task.freeze_encoder,
            overwrite=True,
            verbose=0,
            log=log,
        )
        trained = time.perf_counter()
        test = Dataset.open(task.test_data)
        df = test.read_split(spec, "test")
        model = ScoringModel.load(task.model_dir)
        scores = model.predict(df)
        out = pd.DataFrame({"impression_id": df["impression_id"].astype(str).to_numpy()})
        for head in model.tasks:
            out[head] = scores[head].to_numpy(dtype=np.float32)
        write_parquet(out, folder / PREDICTIONS)
        log(f"scored {len(df):,} test rows with heads {model.tasks}")
    meta = json.loads((Path(task.model_dir) / "metadata.json").read_text())
    record = {
        "id": task.id,
        "task": task.model_dump(),
        "heads": meta["tasks"],
        "best_epoch": result.best_epoch,
        "epochs_run": meta["training"]["epochs_run"],
        "steps_per_epoch": task.steps_per_epoch,
        "examples": result.examples,
        "train_seconds": result.seconds,
        "validation_seconds": meta["training"].get("validation_seconds"),
        "examples_per_second": result.examples_per_second,
        "seconds": time.perf_counter() - started,
        "score_seconds": time.perf_counter() - trained,
        "validation": result.validation,
        "rows": meta["training"]["rows_by_source"],
        "labelled": meta["training"]["labelled"],
    }
    if not task.keep_model:
        shutil.rmtree(task.model_dir, ignore_errors=True)
    write_json(record, folder / RESULT)
    return record
