"""The BentoML service: POST /score and /rank, GET /metadata, /livez and /readyz, over coldcast.serving.scorer.

Start it with `coldcast serve` or `coldcast.serving.server.start_server`, which run
`bentoml serve coldcast.serving.service:ColdcastService --arg-file ARGS` with the bento arguments of
`ServeArgs` (model tag, log folder, workers, serving.* overrides); a bento built by `coldcast package` carries
them. BentoML needs the service class to exist when this module is imported, and the request models are
generated from the stored model's spec, so importing this module reads the bento arguments and that spec (a
YAML file: no TensorFlow). The model itself loads in each worker.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import pydantic_core
from _bentoml_sdk.io_models import IODescriptor
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coldcast.core.spec import Spec
from coldcast.serving.balance import WorkerLoad, worker_load
from coldcast.serving.schema import RequestSchemas, request_id
from coldcast.serving.store import LOG_DIR_ENV, METADATA_FILE, latest_model, serving_spec, stored_model

SERVICE_NAME = "coldcast"


BODY_KEY = "coldcast.body"  # ASGI scope key: the chunks of an API request's body, as received


class JsonBodies:
    """ASGI middleware for the API routes: JSON bodies only, and each body kept for the prediction log.

    Any other body type gets a 415, never a 500 (BentoML would try its multipart or Arrow decoders on such
    bodies, and a malformed one raises inside them). The chunks of a JSON body are recorded in the scope as they
    pass to BentoML, so the log stores the body as received (`request_body`) rather than re-encoding the
    request BentoML parsed.
    """

    def __init__(self, app: Any, paths: tuple[str, ...] = ("/score", "/rank")) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or ()).get(b"content-type", b"application/json")
        media = header.decode("latin-1").split(";")[0].strip().lower()
        if media != "application/json":
            message = f"unsupported content-type {media!r}: {scope['path']} takes application/json"
            await JSONResponse({"error": message}, status_code=415)(scope, receive, send)
            return
        chunks: list[bytes] = []
        scope[BODY_KEY] = chunks

        async def keep() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        await self.app(scope, keep, send)


def request_body(ctx: bentoml.Context) -> bytes | None:
    """The body of the API request being served, as JsonBodies recorded it (None outside one)."""
    chunks = ctx.request.scope.get(BODY_KEY)
    return None if chunks is None else b"".join(chunks)


class RecycleConnections:
    """ASGI middleware: hand keep-alive connections back, so the load spreads over the workers. A response says
    `Connection: close` after `every` requests on its connection (0: never), as nginx's keepalive_requests does,
    and, with `balance`, whenever this worker has clearly more API requests in flight than the least loaded
    other worker (`WorkerLoad.crowded`; the workers share their counts in a small memory-mapped file).

    BentoML's workers accept connections from one shared listening socket, and the first to wake accepts every
    pending one (BentoML issue #5426), so the pool of a client that opens its connections at once can sit on a
    single worker while the others idle, and even a random spread of 8 connections over 2 workers is often 5/3
    or 6/2. A connection closed with `Connection: close` is reopened by the client and accepted by whichever
    worker gets to it first: usually one that is idle, since a crowded one is busy serving.
    """

    MAX_TRACKED = 10_000  # connections the client closed itself leave their counts behind; forget them in bulk

    def __init__(
        self,
        app: Any,
        every: int,
        *,
        balance: bool = False,
        workers: int = 1,
        paths: tuple[str, ...] = ("/score", "/rank"),
    ) -> None:
        self.app, self.every, self.paths = app, every, paths
        self.counts: dict[Any, int] = {}
        self.balance, self.workers = balance, workers
        self.load: WorkerLoad | None = None
        self._load_ready = not balance

    def worker_load(self) -> WorkerLoad | None:
        """This worker's shared counts, mapped at the first request (in the worker process, not at import)."""
        if not self._load_ready:
            self.load, self._load_ready = worker_load(self.workers), True
        return self.load

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope.get("client")
        key = tuple(peer) if peer is not None else None  # (host, port): one TCP connection at a time
        due = False
        if self.every and key is not None:
            n = self.counts.pop(key, 0) + 1
            due = n >= self.every
            if not due:
                if len(self.counts) >= self.MAX_TRACKED:
                    self.counts.clear()
                self.counts[key] = n
        load = self.worker_load() if self.balance and scope.get("path") in self.paths else None
        if load is None and not due:
            await self.app(scope, receive, send)
            return

        async def maybe_close(message: Any) -> None:
            if message["type"] == "http.response.start" and (due or (load is not None and load.crowded())):
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
                if key is not None:
                    self.counts.pop(key, None)  # the connection ends here
            await send(message)

        if load is not None:
            load.enter()
        try:
            await self.app(scope, receive, maybe_close)
        finally:
            if load is not None:
                load.leave()


def json_response(payload: dict[str, Any]) -> Response:
    """The scorer's payload as JSON (shaped as the route's declared output model, which documents it).

    pydantic-core's serializer: several times faster than json.dumps on a 100-candidate ranking.
    """
    return Response(pydantic_core.to_json(payload), media_type="application/json")


class ServeArgs(BaseModel):
    """Bento arguments (`--arg key=value` / `--arg-file`): which model to serve and how."""

    model: str = Field(default="", description="Store tag name:version (empty: the newest coldcast model).")
    log_dir: str = Field(default="", description=f"Prediction-log folder (empty: ${LOG_DIR_ENV}, else none).")
    workers: int | None = Field(default=None, ge=1, description="Worker processes (default: serving.workers).")
    overrides: list[str] = Field(default_factory=list, description="serving.* spec overrides, key=value.")


def model_threads(setting: int, workers: int) -> int:
    """TensorFlow threads per worker: the setting, or (0) the cores shared among the workers, at least 1."""
    return setting or max(1, (os.cpu_count() or 1) // workers)


@dataclass(frozen=True)
class ServedModel:
    """What a service over one stored model needs before any worker loads it: its tag, spec and request models,
    and the BentoML settings and middlewares the spec gives it (benchmarks/floor_service.py shares them)."""

    tag: str
    spec: Spec
    schemas: RequestSchemas
    workers: int

    @classmethod
    def resolve(cls, args: ServeArgs) -> ServedModel:
        """The model the bento arguments name (the newest coldcast model if none), its spec with the overrides."""
        stored = stored_model(args.model) if args.model else latest_model()
        path = Path(stored.path)
        spec = serving_spec(path, args.overrides)
        metadata = json.loads((path / METADATA_FILE).read_text())
        schemas = RequestSchemas(spec, metadata["tasks"], metadata["features"], base=IODescriptor)
        return cls(str(stored.tag), spec, schemas, args.workers or spec.serving.workers)

    def settings(self) -> dict[str, Any]:
        """`@bentoml.service` keyword arguments from the spec: workers, timeout, access log, metrics."""
        cfg = self.spec.serving
        return {
            "workers": self.workers,
            "traffic": {"timeout": cfg.timeout_s},
            "logging": {"access": {"enabled": cfg.access_log}},
            "metrics": {"enabled": cfg.metrics},
        }

    def add_middlewares(self, service: bentoml.Service[Any]) -> None:
        """JSON-only bodies on the API routes (kept for the log), keep-alive connections recycled as the spec says."""
        service.add_asgi_middleware(JsonBodies)
        cfg = self.spec.serving
        service.add_asgi_middleware(
            RecycleConnections,
            every=cfg.max_requests_per_connection,
            balance=cfg.balance_connections,
            workers=self.workers,
        )


def make_service(args: ServeArgs) -> bentoml.Service[Any]:
    """The service class for one stored model: request models from its spec, the model loaded per worker."""
    served = ServedModel.resolve(args)
    tag, spec, schemas, workers = served.tag, served.spec, served.schemas, served.workers
    log_dir = args.log_dir or os.environ.get(LOG_DIR_ENV) or None
    threads = model_threads(spec.serving.model_threads, workers)

    async def describe(_: Request) -> JSONResponse:
        processes = {
            "workers": workers,
            "model_threads": threads,
            "pid": os.getpid(),
            "gc": {"threshold": list(gc.get_threshold()), "frozen_objects": gc.get_freeze_count()},
        }
        load = worker_load(workers) if spec.serving.balance_connections else None
        if load is not None:
            processes["in_flight"] = {"file": str(load.path), "index": load.index, "counts": load.snapshot()}
        return JSONResponse({**bentoml.get_current_service().scorer.metadata(tag), "processes": processes})

    metadata_app = Starlette(routes=[Route("/metadata", describe, methods=["GET"])])

    @bentoml.service(name=SERVICE_NAME, labels={"project": "coldcast", "model": tag}, **served.settings())
    @bentoml.asgi_app(metadata_app, path="/")
    class Coldcast:
        """Per-objective scores and candidate ranking with one multi-task model."""

        model_ref = bentoml.models.BentoModel(tag)

        def __init__(self) -> None:
            # TensorFlow is imported here, in the worker: the parent process only needs the request models
            import tensorflow as tf

            from coldcast.model.scoring import ScoringModel
            from coldcast.serving.scorer import Scorer, freeze_heap

            # before TensorFlow's runtime starts, i.e. before the model loads
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)

            model = ScoringModel.load(self.model_ref.path)
            self.scorer = Scorer(model, spec, model_version=tag, log_dir=log_dir, schemas=schemas)
            # after the model and its warm-up: full collections then skip TensorFlow's objects
            freeze_heap(spec.serving.gc_threshold)

        def __is_ready__(self) -> bool:
            return self.scorer is not None

        @bentoml.api(route="/score", input_spec=schemas.ScoreRequest, output_spec=schemas.ScoreResponse)
        async def score(self, ctx: bentoml.Context, **fields: Any) -> Any:
            """One probability per task for each impression row."""
            rid = request_id(ctx.request.headers.get("x-request-id"))
            ctx.response.headers["x-request-id"] = rid
            request = schemas.ScoreRequest.model_construct(**fields)
            payload = await self.scorer.score(request, request_id=rid, body=request_body(ctx))
            return json_response(payload)

        @bentoml.api(route="/rank", input_spec=schemas.RankRequest, output_spec=schemas.RankResponse)
        async def rank(self, ctx: bentoml.Context, **fields: Any) -> Any:
            """One user's candidate shows / creatives, best first by the objective."""
            rid = request_id(ctx.request.headers.get("x-request-id"))
            ctx.response.headers["x-request-id"] = rid
            request = schemas.RankRequest.model_construct(**fields)
            payload = await self.scorer.rank(request, request_id=rid, body=request_body(ctx))
            return json_response(payload)

        @bentoml.on_shutdown
        def shutdown(self) -> None:
            self.scorer.close()

    served.add_middlewares(Coldcast)
    return Coldcast


ColdcastService = make_service(bentoml.use_arguments(ServeArgs))
