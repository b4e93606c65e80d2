"""Adaptive batching of model calls: rows of concurrent requests are scored together, one model call at a time.

Why not BentoML's `@bentoml.api(batchable=True)`: it batches one list argument across requests and hands the
function a flat list, which loses what coldcast needs per request (the request id and features for the
prediction log, the user, candidates and objective of a /rank), cannot batch /rank candidates together with
/score rows, and sheds requests with 503 once its latency estimate passes `max_latency_ms`. Here each request
is validated and turned into feature arrays on the event loop, then queues its arrays; one batching task takes
everything queued (up to `max_rows`), runs one TensorFlow call (on the event loop, or with `thread=True` on a
model thread of its own) and hands each request its slice. Batches grow with load by themselves: an idle model
runs a lone request at once, and while it runs the next requests gather (in the socket's buffer, or on the loop).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]
Predict = Callable[[Arrays], dict[str, np.ndarray]]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    arrays: Arrays
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    queued_at: float


@dataclass
class BatchStats:
    """Counters for /metadata and the benchmark: how many calls, rows and requests the model saw."""

    calls: int = 0
    rows: int = 0
    requests: int = 0
    largest: int = 0
    model_seconds: float = 0.0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)  # requests per call -> calls

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "rows": self.rows,
            "requests": self.requests,
            "largest_batch_rows": self.largest,
            "mean_batch_rows": self.rows / self.calls if self.calls else 0.0,
            "mean_requests_per_call": self.requests / self.calls if self.calls else 0.0,
            "model_seconds": self.model_seconds,
        }


def concat(parts: list[Arrays]) -> Arrays:
    """Stack the arrays of several requests row-wise (every request carries the same feature keys)."""
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Batcher:
    """Queue feature arrays from concurrent requests and score them in as few model calls as the load allows.

    `max_rows` caps one call (a lone larger request still runs, alone); `max_wait_ms` lets an idle model wait
    that long for company before it runs (0: never wait). Model calls run one at a time: on the event loop
    (default), or with `thread=True` on a dedicated thread, so the loop keeps parsing requests meanwhile. With
    about a core per worker the thread buys no parallelism, only GIL handoffs that more than doubled a call's
    wall time in the server (BENCHMARKS.md, Serving).
    """

    def __init__(
        self, predict: Predict, *, max_rows: int = 4096, max_wait_ms: float = 0.0, thread: bool = False
    ) -> None:
        self._predict = predict
        self.max_rows = max_rows
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # the model thread exists only where calls run on it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coldcast-model") if thread else None

    async def predict(self, arrays: Arrays) -> dict[str, np.ndarray]:
        """One request's scores, computed in a batch with whatever else is queued."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wakeup = loop, asyncio.Event()
            self._task = loop.create_task(self._run(), name="coldcast-batcher")
        assert self._wakeup is not None
        rows = len(next(iter(arrays.values())))
        job = _Job(arrays, rows, loop.create_future(), loop.time())
        self._queue.append(job)
        self._wakeup.set()
        return await job.future

    def predict_now(self, arrays: Arrays) -> dict[str, np.ndarray]:
        """Score at once, outside any batch, where batched calls run (warm-up, synchronous callers)."""
        if self._executor is None:
            return self._predict(arrays)
        return self._executor.submit(self._predict, arrays).result()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.cancel()
        self._queue.clear()
        self._stop_thread()

    def close(self) -> None:
        """Stop without a running loop (service shutdown hooks that are not async)."""
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._stop_thread()

    def _stop_thread(self) -> None:
        """Let the model thread, where there is one, finish its call and end."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ---- the loop
    async def _run(self) -> None:
        assert self._wakeup is not None and self._loop is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait > 0:
                await self._gather()
            elif self._executor is None:
                await asyncio.sleep(0)  # let the requests that are ready queue their rows first
            jobs = self._take()
            if not jobs:
                continue
            try:
                await self._call(jobs)
            except Exception as err:  # the model failed: every request of the batch learns why (a 500)
                log.exception("model call failed for a batch of %d requests", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)

    async def _gather(self) -> None:
        """Wait, up to max_wait after the oldest job arrived, for the queue to fill a batch."""
        assert self._wakeup is not None and self._loop is not None
        deadline = self._queue[0].queued_at + self.max_wait
        while sum(j.rows for j in self._queue) < self.max_rows:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        rows = 0
        while self._queue:
            job = self._queue[0]
            if jobs and rows + job.rows > self.max_rows:
                break
            self._queue.popleft()
            if job.future.done():  # the client went away (cancelled) before its turn
                continue
            jobs.append(job)
            rows += job.rows
        return jobs

    async def _call(self, jobs: list[_Job]) -> None:
        assert self._loop is not None
        merged = concat([j.arrays for j in jobs])
        start = time.perf_counter()
        if self._executor is not None:
            scores = await self._loop.run_in_executor(self._executor, self._predict, merged)
        else:
            scores = self._predict(merged)
        seconds = time.perf_counter() - start
        offset = 0
        for job in jobs:
            part = {t: v[offset : offset + job.rows] for t, v in scores.items()}
            offset += job.rows
            if not job.future.done():
                job.future.set_result(part)
        s = self.stats
        s.calls += 1
        s.rows += offset
        s.requests += len(jobs)
        s.largest = max(s.largest, offset)
        s.model_seconds += seconds
        s.sizes[len(jobs)] += 1
