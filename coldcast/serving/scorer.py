"""The served model as a plain object: /score and /rank on validated requests, batching and prediction logging.

The BentoML service (coldcast.serving.service) is a thin adapter over this class, which runs and tests without a
server: build it with `Scorer.load(model_dir)` and await `score` / `rank` with models from `scorer.schemas`.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np

from coldcast.core.predlog import PredictionLogger
from coldcast.core.spec import Spec
from coldcast.model.scoring import ScoringModel
from coldcast.serving.batching import Batcher
from coldcast.serving.schema import RequestSchemas
from coldcast.serving.store import serving_spec


class Scorer:
    """Score and rank for one model: requests in, typed responses out, every scored row logged."""

    def __init__(
        self,
        model: ScoringModel,
        spec: Spec,
        *,
        model_version: str,
        log_dir: str | Path | None = None,
        schemas: RequestSchemas | None = None,
    ) -> None:
        self.model = model
        self.spec = spec
        self.model_version = model_version
        features = list(model.metadata.get("features") or list(model.signature))
        self.schemas = schemas or RequestSchemas(spec, model.tasks, features)
        cfg = spec.serving
        batching = cfg.batching
        self.batcher = Batcher(
            model.predict_arrays,
            max_rows=batching.max_rows,
            max_wait_ms=batching.max_wait_ms,
            thread=batching.model_thread,
        )
        self.logger: PredictionLogger | None = None
        if log_dir is not None:
            self.logger = PredictionLogger(
                log_dir,
                spec,
                model.tasks,
                model_version,
                max_rows=cfg.log.max_rows,
                max_seconds=cfg.log.max_seconds,
                max_buffer_rows=cfg.log.max_buffer_rows,
                background=True,
            )
        # trace the SavedModel's function for a lone row and a batch, so the first requests are not slow
        for n in (1, 64):
            self.batcher.predict_now(self.schemas.warmup_arrays(n))

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        model_version: str | None = None,
        log_dir: str | Path | None = None,
        overrides: list[str] | None = None,
    ) -> Scorer:
        """A scorer for a model directory, in this process (the benchmark's limit, tests, notebooks)."""
        spec = serving_spec(model_dir, overrides)
        model = ScoringModel.load(model_dir)
        version = model_version or f"{Path(model_dir).name}@{spec.fingerprint()}"
        return cls(model, spec, model_version=version, log_dir=log_dir)

    # ---- endpoints
    async def score(self, request: Any, *, request_id: str, body: bytes | None = None) -> dict[str, Any]:
        """One probability per task for each row of a validated ScoreRequest, as a ScoreResponse-shaped dict.

        `body` is the request's JSON as received, for the prediction log (default: the request re-serialized).
        Responses are plain JSON-ready dicts: validating a response model costs more than scoring 100 rows.
        """
        rows = request.rows
        scores = _finite(await self.batcher.predict(self.schemas.score_arrays(rows)))
        self._log(request, body, scores, request_id, "score")
        tasks = self.model.tasks
        columns = [scores[t].tolist() for t in tasks]
        predictions = [dict(zip(tasks, values, strict=True)) for values in zip(*columns, strict=True)]
        return {
            "request_id": request_id,
            "model_version": self.model_version,
            "tasks": tasks,
            "predictions": predictions,
        }

    async def rank(self, request: Any, *, request_id: str, body: bytes | None = None) -> dict[str, Any]:
        """The candidates of a validated RankRequest, best first by its objective (a RankResponse-shaped dict).

        `body` is the request's JSON as received, for the prediction log (default: the request re-serialized).
        """
        objective = self.schemas.objective(request)
        candidates = request.candidates
        scores = _finite(await self.batcher.predict(self.schemas.rank_arrays(request)))
        self._log(request, body, scores, request_id, "rank")
        cost = np.array([c.cost for c in candidates], dtype=np.float64) if objective.per_cost else None
        value = objective.score(scores, cost)
        order = np.argsort(-value, kind="stable")  # ties keep the request's order
        if request.top_k is not None:
            order = order[: request.top_k]
        tasks = self.model.tasks
        # whole columns reordered in numpy and converted once: per-candidate indexing of arrays costs more
        index = order.tolist()
        columns = [scores[t][order].tolist() for t in tasks]
        predictions = [dict(zip(tasks, p, strict=True)) for p in zip(*columns, strict=True)]
        ranking = [
            {"rank": rank, "index": i, "candidate_id": candidates[i].candidate_id, "score": v, "predictions": p}
            for rank, (i, v, p) in enumerate(zip(index, value[order].tolist(), predictions, strict=True), start=1)
        ]
        return {
            "request_id": request_id,
            "model_version": self.model_version,
            "objective": objective.as_dict(),
            "ranking": ranking,
        }

    def _log(self, request: Any, body: bytes | None, scores: dict[str, np.ndarray], rid: str, endpoint: str) -> None:
        if self.logger is None:
            return
        if body is None:  # an in-process caller: the validated request, as JSON
            body = request.__pydantic_serializer__.to_json(request, exclude_none=True)
        self.logger.append_request(body, scores, request_id=rid, endpoint=endpoint)

    # ---- metadata and lifecycle
    def metadata(self, model_tag: str | None = None) -> dict[str, Any]:
        """What /metadata returns: the model, its tasks and objectives, the spec, and live counters."""
        meta = self.model.metadata
        schemas = self.schemas
        logger = self.logger
        return {
            "model_tag": model_tag,
            "model_version": self.model_version,
            "tasks": self.model.tasks,
            "features": [f.name for f in schemas.model_features],
            "request_groups": schemas.request_groups,
            "max_request_rows": schemas.max_rows,
            "objectives": {
                name: {"weights": o.weights, "per_cost": o.per_cost, "description": o.description}
                for name, o in schemas.objectives.available.items()
            },
            "unavailable_objectives": schemas.objectives.unavailable,
            "default_objective": schemas.objectives.default,
            "spec_fingerprint": self.spec.fingerprint(),
            "trained": {
                "spec_fingerprint": meta.get("spec_fingerprint"),
                "best_epoch": meta.get("best_epoch"),
                "validation": meta.get("validation"),
                "data": meta.get("data"),
                "versions": meta.get("versions"),
            },
            "batching": self.batcher.stats.as_dict(),
            "logging": None
            if logger is None
            else {
                "folder": str(logger.files.root),
                "rows_written": logger.rows_written,
                "files_written": logger.files_written,
                "buffered_rows": logger.buffered_rows,
                "dropped_rows": logger.dropped_rows,
            },
            "spec": self.spec.model_dump(mode="json"),
        }

    def close(self) -> None:
        """Flush the prediction log and stop the batcher (and its model thread, if it has one)."""
        if self.logger is not None:
            self.logger.close()
        self.batcher.close()


def _finite(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's probabilities, refusing (as a server error) anything that is not a finite number."""
    for task, values in scores.items():
        if not np.isfinite(values).all():
            raise RuntimeError(f"the model returned non-finite scores for task {task!r}")
    return scores


def freeze_heap(gc_threshold: int = 0) -> None:
    """Exempt every object alive now (TensorFlow, the loaded model, the request models) from garbage collection,
    and collect the young generation every `gc_threshold` allocations (0: Python's default).

    A worker holds about 400k long-lived objects once TensorFlow and the model are loaded, and every full
    (generation-2) collection walks them all: 100-400 ms here, during which no request in flight progresses, so
    these pauses were most of the p99. Frozen objects are never scanned again; a full collection then only walks
    what requests allocated. A request allocates thousands of short-lived objects, so Python's default threshold
    (700) also runs young collections several times per request and promotes in-flight requests' objects into
    the older generations, whose collections then stall the loop; a larger threshold collects them in bulk.
    Call once per process, after loading and warm-up.
    """
    gc.collect()
    gc.freeze()
    if gc_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(gc_threshold, older, oldest)
