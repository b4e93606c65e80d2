"""Run a pipeline on this machine with kfp.local: subprocess tasks, caching, one log file and a typed result."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from kfp import local

ARTIFACTS = "artifacts"
CACHE = "cache"
LOGS = "logs"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# What kfp.local logs around each task (kfp 2.17): the task name is quoted when it runs, bare on a cache hit.
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (SUCCESS|FAILURE)")
_CACHED = re.compile(r"Task (\S+) cache hit")
# The last line(s) of a Python traceback: `package.module.SomeError: message`.
_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Failed|Failure|Interrupt)):\s?(.*)$")

State = Literal["running", "done", "cached", "failed"]
EventKind = Literal["started", "log", "done", "cached", "failed"]


@dataclass
class TaskRun:
    """One task of a local run: how it ended, how long it took, and what it printed."""

    name: str
    state: State = "running"
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list, repr=False)
    _started: float = field(default=0.0, repr=False)


@dataclass(frozen=True)
class TaskEvent:
    """What `on_event` callbacks receive: a task started, printed a line, finished, was cached, or failed."""

    task: str
    kind: EventKind
    line: str = ""
    seconds: float = 0.0


@dataclass
class LocalRun:
    """A finished local run: the pipeline's outputs (artifacts and values), its tasks in order, and the log."""

    pipeline: str
    root: Path
    log: Path
    seconds: float
    tasks: dict[str, TaskRun]
    outputs: dict[str, Any]

    def path(self, output: str) -> Path:
        """The local path of an output artifact (cached tasks keep the path of the run that made it)."""
        value = self.outputs.get(output)
        if value is None or not hasattr(value, "path"):
            raise KeyError(f"{self.pipeline} has no output artifact {output!r}; outputs are {sorted(self.outputs)}")
        return Path(value.path)

    @property
    def cached(self) -> list[str]:
        return [t.name for t in self.tasks.values() if t.state == "cached"]

    @property
    def executed(self) -> list[str]:
        return [t.name for t in self.tasks.values() if t.state == "done"]


class PipelineFailed(RuntimeError):
    """A task of a local run failed: `step` is the task, `message` the error it raised (the library's message)."""

    def __init__(self, pipeline: str, step: str, message: str, log: Path, tasks: dict[str, TaskRun]) -> None:
        self.pipeline, self.step, self.message, self.log, self.tasks = pipeline, step, message, log, tasks
        super().__init__(f"step {step!r} of {pipeline} failed: {message} (full log: {log})")


def component_tasks(pipeline: Any) -> set[str]:
    """Names of the tasks that run a component, in every DAG of the pipeline (condition groups are not tasks)."""
    spec = pipeline.pipeline_spec
    names = set()
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.WhichOneof("implementation") == "dag")]
    for dag in dags:
        for name, task in dag.tasks.items():
            if spec.components[task.component_ref.name].WhichOneof("implementation") == "executor_label":
                names.add(name)
    return names


def exception_message(lines: list[str]) -> str | None:
    """The exception a task died with, from its log: the last `SomeError: message` line and any lines after it."""
    for i in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION.match(lines[i])
        if match:
            kind = match.group(1).rsplit(".", 1)[-1]
            rest = " ".join(line.strip() for line in lines[i + 1 :] if line.strip())
            message = " ".join(part for part in (match.group(2).strip(), rest) if part)
            return f"{kind}: {message}" if message else kind
    return None


class _Tracker(io.TextIOBase):
    """A text stream that kfp.local's output goes through: it is written to the log and parsed into task events."""

    def __init__(
        self, log: TextIO, tasks: set[str], echo: TextIO | None, on_event: Callable[[TaskEvent], None] | None
    ) -> None:
        self.log, self.known, self.echo, self.on_event = log, tasks, echo, on_event
        self.tasks: dict[str, TaskRun] = {}
        self.current: TaskRun | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.echo is not None:
            self.echo.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        if self.echo is not None:
            self.echo.flush()

    def _emit(self, task: str, kind: EventKind, line: str = "", seconds: float = 0.0) -> None:
        if self.on_event is not None:
            self.on_event(TaskEvent(task, kind, line, seconds))

    def _line(self, line: str) -> None:
        if match := _STARTED.search(line):
            name = match.group(1)
            if name in self.known:
                self.current = self.tasks[name] = TaskRun(name, _started=time.perf_counter())
                self._emit(name, "started")
            return
        if match := _FINISHED.search(line):
            task = self.tasks.get(match.group(1))
            if task is not None:
                task.state = "done" if match.group(2) == "SUCCESS" else "failed"
                task.seconds = time.perf_counter() - task._started
                self._emit(task.name, task.state, seconds=task.seconds)
                self.current = None
            return
        if match := _CACHED.search(line):
            name = match.group(1)
            if name in self.known:
                self.tasks[name] = TaskRun(name, state="cached")
                self._emit(name, "cached")
            return
        if self.current is not None:
            self.current.lines.append(line)
            if line.strip():
                self._emit(self.current.name, "log", line.strip())


@contextlib.contextmanager
def _captured(tracker: _Tracker) -> Iterator[None]:
    """Route kfp.local's prints and log records (cache hits are logged outside its own handler) to `tracker`."""
    root = logging.getLogger()
    handler = logging.StreamHandler(tracker)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(tracker), warnings.catch_warnings():
            # The platform image is named without "python" in it, which kfp takes for a non-Python image.
            warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
            yield
    finally:
        tracker.flush()
        root.removeHandler(handler)
        root.setLevel(level)


def run_local(
    pipeline: Any,
    arguments: Mapping[str, Any],
    *,
    root: str | Path,
    cache: bool = True,
    echo: bool = False,
    on_event: Callable[[TaskEvent], None] | None = None,
) -> LocalRun:
    """Run a compiled-in-memory pipeline with kfp.local's SubprocessRunner in this Python environment.

    Artifacts go to `root/artifacts/<pipeline>-<timestamp>/<task>/<output>`, the cache to `root/cache` and the
    whole output of every task to `root/logs/<pipeline>-<timestamp>.log`. With `cache`, a task whose component,
    image and inputs match an earlier successful run is not run again. A failed task raises PipelineFailed with
    the task's name and the exception it raised. `echo` also copies the log to stdout as it is written.
    """
    root = Path(root).resolve()
    for sub in (ARTIFACTS, CACHE, LOGS):
        (root / sub).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root / ARTIFACTS),
        enable_caching=cache,
        cache_root=str(root / CACHE),
    )
    name = pipeline.name
    log_path = root / LOGS / f"{name}-{datetime.now():%Y%m%d-%H%M%S-%f}.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        tracker = _Tracker(log, component_tasks(pipeline), sys.stdout if echo else None, on_event)
        try:
            with _captured(tracker):
                task = pipeline(**arguments)
        except RuntimeError as err:
            failed = [t for t in tracker.tasks.values() if t.state == "failed"]
            if not failed:
                raise
            step = failed[-1]
            message = exception_message(step.lines) or f"the task exited with an error ({_ANSI.sub('', str(err))})"
            raise PipelineFailed(name, step.name, message, log_path, tracker.tasks) from None
    return LocalRun(
        pipeline=name,
        root=root,
        log=log_path,
        seconds=time.perf_counter() - start,
        tasks=tracker.tasks,
        outputs=dict(task.outputs),
    )
