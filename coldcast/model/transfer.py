"""Transfer modes for a new or low-data objective: direct apply, joint training and fine-tuning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import tensorflow as tf

from coldcast.core.data import DataError, atomic_dir, write_json
from coldcast.core.spec import Spec
from coldcast.model.scoring import METADATA, SAVED_MODEL, SPEC_FILE, ScoringModel

Mode = Literal["direct", "joint", "finetune"]


class _Aliased(tf.Module):
    """A SavedModel whose outputs gain tasks scored by another task's head."""

    def __init__(self, loaded: Any, heads: dict[str, str]) -> None:
        super().__init__()
        self.loaded = loaded
        inner = loaded.signatures["serving_default"]
        self.signature = dict(inner.structured_input_signature[1])

        @tf.function
        def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            out = dict(inner(**features))
            for task, head in heads.items():
                out[task] = tf.identity(out[head])
            return out

        self.serve = serve


def direct_apply(model_dir: str | Path, out: str | Path, heads: dict[str, str], *, overwrite: bool = False) -> Path:
    """Write a model directory that scores each task in `heads` with another, existing head.

    This is the old practice the paper's A/B test used as control: the promotions model's stream head scoring
    ad impressions (`{"ad_stream": "promo_stream"}`). Needs TensorFlow only.
    """
    source = ScoringModel.load(model_dir)
    unknown = [h for h in heads.values() if h not in source.tasks]
    if unknown:
        raise DataError(f"{model_dir} has no head(s) {unknown}; heads are {source.tasks}")
    loaded = tf.saved_model.load(str(Path(model_dir) / SAVED_MODEL))
    module = _Aliased(loaded, heads)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tf.saved_model.save(
            module,
            str(tmp / SAVED_MODEL),
            signatures={"serving_default": module.serve.get_concrete_function(module.signature)},
        )
        shutil.copy(Path(model_dir) / SPEC_FILE, tmp / SPEC_FILE)
        metadata = json.loads((Path(model_dir) / METADATA).read_text())
        metadata["tasks"] = list(dict.fromkeys([*metadata["tasks"], *heads]))
        metadata["transfer"] = {"mode": "direct", "from": str(model_dir), "heads": heads}
        write_json(metadata, tmp / METADATA)
    return Path(out)


def transfer(
    mode: Mode,
    spec: Spec,
    data_dir: str | Path | None,
    out: str | Path,
    *,
    source: str | Path | None = None,
    heads: dict[str, str] | None = None,
    freeze_encoder: bool = False,
    **train_kwargs: Any,
) -> Path:
    """One entry point for the three modes (what `coldcast train --transfer` calls)."""
    from coldcast.model.train import train

    if mode == "direct":
        if source is None or not heads:
            raise ValueError("direct apply needs a source model directory and task=head mappings")
        return direct_apply(source, out, heads, overwrite=train_kwargs.get("overwrite", False))
    if data_dir is None:
        raise ValueError(f"{mode} training needs a dataset")
    if mode == "finetune":
        if source is None:
            raise ValueError("fine-tuning needs a source model directory to warm-start from")
        return train(spec, data_dir, out, warm_start=source, freeze_encoder=freeze_encoder, **train_kwargs).model_dir
    return train(spec, data_dir, out, **train_kwargs).model_dir
