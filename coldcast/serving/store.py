"""The BentoML model store: import a coldcast model directory, and find a stored model by tag."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from coldcast.core.data import DataError
from coldcast.core.spec import Spec, load_spec

# What goes into the store: the SavedModel and the files that describe it (the warm-start checkpoint stays out).
# The names are coldcast.model.scoring's; repeated here so that the server parent never imports TensorFlow.
SPEC_FILE = "spec.yaml"
METADATA_FILE = "metadata.json"
STORED_FILES = ("saved_model", SPEC_FILE, METADATA_FILE)
LABEL = "coldcast"  # every model this module stores carries the label coldcast=model
DEFAULT_NAME = "coldcast"
LOG_DIR_ENV = "COLDCAST_LOG_DIR"  # the prediction-log folder of a served bento (bento arguments are fixed at build)


class ServingError(DataError):
    """A model, bento or server that cannot be used or started; the message says what and why."""


def check_model_dir(model_dir: str | Path) -> Path:
    """`model_dir` if it is a coldcast model directory (with a SavedModel, spec and metadata), else an error."""
    path = Path(model_dir)
    if not path.is_dir():
        raise ServingError(f"model directory not found: {path}")
    missing = [name for name in STORED_FILES if not (path / name).exists()]
    if missing:
        raise ServingError(f"{path} is not a coldcast model directory: it has no {', '.join(missing)}")
    return path


def import_model(model_dir: str | Path, *, name: str = DEFAULT_NAME, labels: dict[str, str] | None = None) -> str:
    """Copy a model directory (saved_model/, spec.yaml, metadata.json) into the BentoML model store.

    Returns the store tag "name:version". The store is BentoML's (BENTOML_HOME); the store's own create
    writes to a temporary folder and moves it in place, so a failed import leaves no half-written model.
    """
    import bentoml

    path = check_model_dir(model_dir)
    try:
        meta = json.loads((path / METADATA_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ServingError(f"{path / METADATA_FILE} is not valid JSON: {err}") from None
    bad_labels = {k: v for k, v in (labels or {}).items() if not isinstance(k, str) or not isinstance(v, str)}
    if bad_labels:
        raise ServingError(f"labels must map strings to strings, got {bad_labels}")
    stored_meta: dict[str, Any] = {
        "tasks": meta.get("tasks"),
        "features": meta.get("features"),
        "spec_fingerprint": meta.get("spec_fingerprint"),
        "best_epoch": meta.get("best_epoch"),
        "validation": meta.get("validation"),
        "source_dir": str(path.resolve()),
    }
    try:
        with bentoml.models.create(name, labels={LABEL: "model", **(labels or {})}, metadata=stored_meta) as model:
            for item in STORED_FILES:
                src, dst = path / item, Path(model.path) / item
                if src.is_dir():
                    shutil.copytree(src, dst)
                else:
                    shutil.copy2(src, dst)
    except bentoml.exceptions.BentoMLException as err:
        raise ServingError(f"cannot store {path} as {name!r}: {err}") from None
    return str(model.tag)


def stored_model(tag: str) -> Any:
    """The stored model for `tag` ("name:version" or "name:latest"), or an error naming the tag."""
    import bentoml

    try:
        model = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise ServingError(
            f"no model {tag!r} in the BentoML model store ({store_home()}); serve a model directory or import it first"
        ) from None
    except ValueError as err:  # not even a tag ("name:version")
        raise ServingError(f"{tag!r} is neither a model directory nor a store tag: {err}") from None
    check_model_dir(model.path)
    return model


def latest_model() -> Any:
    """The newest coldcast model in the store (in a bento: its one model), or an error if there is none."""
    import bentoml

    models = [m for m in bentoml.models.list() if m.info.labels.get(LABEL) == "model"]
    if not models:
        raise ServingError(f"the BentoML model store ({store_home()}) holds no coldcast model; import one first")
    return max(models, key=lambda m: m.info.creation_time)


def store_home() -> str:
    """The BentoML home this process uses (fixed at first use, from BENTOML_HOME)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return str(BentoMLContainer.bentoml_home.get())


def is_model_dir(value: str | Path) -> bool:
    return Path(value).is_dir()


def serving_spec(model_dir: str | Path, overrides: list[str] | None = None) -> Spec:
    """The spec a model directory was trained with, as the service reads it, with `serving.*` overrides only."""
    for item in overrides or []:
        if not item.strip().startswith("serving."):
            raise ServingError(f"override {item!r}: only serving.* keys can change at serve time")
    return load_spec(base=Path(model_dir) / SPEC_FILE, overrides=list(overrides or []))
