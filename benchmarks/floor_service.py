"""Benchmark only: coldcast's BentoML endpoints with no model behind them, the floor of HTTP + BentoML.

`bench_serving.py --floor` serves this next to the real service: the same stored model's request models (so
BentoML parses and validates the same bodies), the same service settings (workers, timeout, access log,
metrics, the JSON-only and connection-recycling middlewares), and a response of the same shape and size as the
scorer's. What it does not do is everything coldcast does per request: feature arrays, batching, the model
call, prediction logging and building the response. Its latency at a given concurrency is what any model served
this way would pay first.
"""

from __future__ import annotations

from typing import Any

import bentoml
import pydantic_core
from starlette.responses import Response

from coldcast.serving.service import ServeArgs, ServedModel


def make_floor(args: ServeArgs) -> bentoml.Service[Any]:
    """The floor service for one stored model (its spec's request models, serving settings and middlewares)."""
    served = ServedModel.resolve(args)
    tag, schemas, tasks = served.tag, served.schemas, served.schemas.tasks
    predictions = dict.fromkeys(tasks, 0.5)
    canned: dict[tuple[str, int], bytes] = {}

    def body(endpoint: str, n: int) -> bytes:
        """A response shaped like the scorer's for n rows or candidates, built once per size."""
        if (endpoint, n) not in canned:
            head = {"request_id": "0" * 32, "model_version": tag}
            if endpoint == "score":
                payload = {**head, "tasks": tasks, "predictions": [predictions] * n}
            else:
                ranking = [
                    {"rank": i + 1, "index": i, "candidate_id": f"c{i:08d}", "score": 0.5, "predictions": predictions}
                    for i in range(n)
                ]
                objective = {"name": "ad_stream", "weights": {"ad_stream": 1.0}, "per_cost": False}
                payload = {**head, "objective": objective, "ranking": ranking}
            canned[(endpoint, n)] = pydantic_core.to_json(payload)
        return canned[(endpoint, n)]

    @bentoml.service(name="coldcast-floor", **served.settings())
    class Floor:
        """coldcast's /score and /rank request handling in BentoML, answering without a model."""

        @bentoml.api(route="/score", input_spec=schemas.ScoreRequest, output_spec=schemas.ScoreResponse)
        async def score(self, ctx: bentoml.Context, **fields: Any) -> Any:
            return Response(body("score", len(fields["rows"])), media_type="application/json")

        @bentoml.api(route="/rank", input_spec=schemas.RankRequest, output_spec=schemas.RankResponse)
        async def rank(self, ctx: bentoml.Context, **fields: Any) -> Any:
            return Response(body("rank", len(fields["candidates"])), media_type="application/json")

    served.add_middlewares(Floor)
    return Floor


Floor = make_floor(bentoml.use_arguments(ServeArgs))
