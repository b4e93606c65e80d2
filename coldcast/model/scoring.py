"""Load a model directory and score impressions with TensorFlow only (no TFRS, no Keras needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow as tf

from coldcast.core.data import DataError
from coldcast.core.spec import CategoricalFeature, MultiFeature, NumericFeature, Spec, load_spec
from coldcast.model.inputs import feature_arrays

SAVED_MODEL = "saved_model"
CHECKPOINT = "checkpoint"
SPEC_FILE = "spec.yaml"
METADATA = "metadata.json"


def input_signature(spec: Spec, features: list[Any] | None = None) -> dict[str, tf.TensorSpec]:
    """The serving signature: raw feature values under their data names."""
    out = {}
    for f in features if features is not None else spec.feature_list:
        d = f.definition
        if isinstance(d, MultiFeature):
            out[f.name] = tf.TensorSpec([None, None], tf.string, name=f.name)
        elif isinstance(d, NumericFeature):
            out[f.name] = tf.TensorSpec([None], tf.float32, name=f.name)
        elif isinstance(d, CategoricalFeature) and d.dtype == "int64":
            out[f.name] = tf.TensorSpec([None], tf.int64, name=f.name)
        else:
            out[f.name] = tf.TensorSpec([None], tf.string, name=f.name)
    return out


def to_tensors(arrays: dict[str, np.ndarray], signature: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(arrays[name], dtype=spec.dtype) for name, spec in signature.items()}


def flat_argument_order(fn: Any) -> list[str] | None:
    """The signature's input names in the order of the function's flat arguments, or None where unknown.

    A SavedModel signature called with keywords first binds them to its structured signature in Python
    (`FunctionType.bind`, shape and dtype casts per input): about 0.5 ms of a 1-2 ms call here, for inputs
    that `to_tensors` has already made of the right dtypes. `_call_flat` on the ordered tensors skips that. It
    is TensorFlow's own private entry, so anything unexpected falls back to the keywords.
    """
    keys = getattr(fn, "_arg_keywords", None)
    if keys is None or getattr(fn, "_num_positional_args", None) != 0 or not callable(getattr(fn, "_call_flat", None)):
        return None
    positional, named = fn.structured_input_signature
    return list(keys) if not positional and sorted(keys) == sorted(named) else None


@dataclass
class ScoringModel:
    """A trained model as serving sees it: its spec, metadata and the SavedModel's `serving_default`."""

    path: Path
    spec: Spec
    metadata: dict[str, Any]
    _fn: Any
    _signature: dict[str, tf.TensorSpec] = field(init=False, repr=False)
    _flat_order: list[str] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._signature = dict(self._fn.structured_input_signature[1])
        self._flat_order = flat_argument_order(self._fn)

    @classmethod
    def load(cls, model_dir: str | Path) -> ScoringModel:
        path = Path(model_dir)
        if not path.is_dir():
            raise DataError(f"model directory not found: {path}")
        for needed in (SAVED_MODEL, SPEC_FILE, METADATA):
            if not (path / needed).exists():
                raise DataError(f"{path} is not a coldcast model directory: it has no {needed}")
        spec = load_spec(base=path / SPEC_FILE)  # the full spec it was trained with, not merged over the default
        metadata = json.loads((path / METADATA).read_text())
        fn = tf.saved_model.load(str(path / SAVED_MODEL)).signatures["serving_default"]
        return cls(path=path, spec=spec, metadata=metadata, _fn=fn)

    @property
    def tasks(self) -> list[str]:
        return list(self.metadata["tasks"])

    @property
    def signature(self) -> dict[str, tf.TensorSpec]:
        return dict(self._signature)

    def predict_arrays(self, arrays: dict[str, np.ndarray], *, flat: bool = True) -> dict[str, np.ndarray]:
        """One probability array per task for feature arrays keyed by the signature's names.

        `flat=False` calls the signature with keywords (TensorFlow's checked path; the scores are the same).
        """
        tensors = to_tensors(arrays, self._signature)
        if flat and self._flat_order is not None:
            out = self._fn._call_flat([tensors[k] for k in self._flat_order], self._fn.captured_inputs)
        else:
            out = self._fn(**tensors)
        return {t: out[t].numpy() for t in self.tasks}

    def predict(
        self, data: pd.DataFrame | pa.Table, *, batch_size: int = 8192, heads: dict[str, str] | None = None
    ) -> pd.DataFrame:
        """One probability column per task. `heads` scores a task with another task's head (direct apply)."""
        table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        for start in range(0, table.num_rows, batch_size):
            scores = self.predict_arrays(feature_arrays(table.slice(start, batch_size), self.spec))
            for t in self.tasks:
                parts[t].append(scores[t])
        frame = pd.DataFrame(
            {t: np.concatenate(v) if v else np.zeros(0, np.float32) for t, v in parts.items()},
            index=data.index if isinstance(data, pd.DataFrame) else None,
        )
        for task, head in (heads or {}).items():
            if head not in frame:
                raise KeyError(f"model has no head {head!r}; heads are {self.tasks}")
            frame[task] = frame[head]
        return frame
