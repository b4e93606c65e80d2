"""Requests in flight per worker, shared by a server's workers, so a crowded worker can hand connections back."""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import tempfile
from pathlib import Path

SLOT = 8  # one signed 64-bit count per worker


def load_file(server_pid: int) -> Path:
    """Where the workers of the server whose arbiter is `server_pid` share their counts (RAM-backed if possible)."""
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return root / f"coldcast-inflight-{server_pid}"


class WorkerLoad:
    """This worker's count of API requests in flight, and its siblings', in one small memory-mapped file.

    Each worker writes only its own slot (from its one event loop, so no lock is needed: an aligned 8-byte store
    is atomic) and reads the others'. A worker that starts resets its slot, so a file left by an earlier server
    with the same arbiter PID holds no stale count of it for long.
    """

    def __init__(self, path: Path, workers: int, index: int) -> None:
        if not 0 <= index < workers:
            raise ValueError(f"worker index {index} is outside 0..{workers - 1}")
        self.path, self.workers, self.index = path, workers, index
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != workers * SLOT:
                os.ftruncate(fd, workers * SLOT)
            self._map = mmap.mmap(fd, workers * SLOT)
        finally:
            os.close(fd)
        self.counts = memoryview(self._map).cast("q")
        self.counts[index] = 0

    def enter(self) -> None:
        self.counts[self.index] += 1

    def leave(self) -> None:
        self.counts[self.index] -= 1

    def snapshot(self) -> list[int]:
        return list(self.counts)

    def crowded(self) -> bool:
        """Whether this worker has clearly more requests in flight than the least loaded one: at least 2 more,
        and at least a quarter more of its own (so that many connections' ordinary jitter does not count)."""
        counts = self.counts
        mine = counts[self.index]
        least = min(counts[i] for i in range(self.workers) if i != self.index)
        return mine - least >= max(2, mine // 4)

    def close(self) -> None:
        self.counts.release()
        with contextlib.suppress(BufferError):
            self._map.close()


@functools.cache
def worker_load(workers: int) -> WorkerLoad | None:
    """The shared counts for this BentoML worker process (one per process), or None where there is nothing to
    balance (one worker, or not inside a BentoML worker). The workers of one server are children of its arbiter,
    the process `bentoml serve` runs in."""
    import bentoml

    index = bentoml.server_context.worker_index  # 1-based, set by BentoML before the service loads
    if workers < 2 or index is None:
        return None
    return WorkerLoad(load_file(os.getppid()), workers, index - 1)
