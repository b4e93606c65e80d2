"""Kubeflow Pipelines v2 definitions: the training and monitoring pipelines, built from the components."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def compile_pipelines(
    out_dir: str | Path, *, image: str | None = None, registry: str | None = None, bentoml_home: str | None = None
) -> list[Path]:
    """Write the IR YAML of every pipeline into `out_dir` (`<pipeline name>.yaml`), each file atomically.

    `image` replaces the platform image in every task; `registry` and `bentoml_home` are the paths the pods see
    on the shared volume (defaults under /mnt/coldcast).
    """
    from kfp import compiler

    from coldcast.components.base import PLATFORM_IMAGE
    from coldcast.pipelines.monitoring import monitoring_pipeline
    from coldcast.pipelines.training import CLUSTER_BENTOML_HOME, CLUSTER_REGISTRY, training_pipeline

    options = {
        "image": image or PLATFORM_IMAGE,
        "registry": registry or CLUSTER_REGISTRY,
        "bentoml_home": bentoml_home or CLUSTER_BENTOML_HOME,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pipeline in (training_pipeline(**options), monitoring_pipeline(**options)):
        path = out / f"{pipeline.name}.yaml"
        tmp = out / f".{pipeline.name}.tmp-{uuid.uuid4().hex[:8]}.yaml"  # kfp insists on the suffix
        try:
            compiler.Compiler().compile(pipeline, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written
