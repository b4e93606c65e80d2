"""Start the BentoML server for real as a subprocess on a free port, wait until it is ready, stop it by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import yaml

from coldcast.core.procs import GroupHandle, free_port, http_url, stop_group, wait_ready
from coldcast.serving.balance import load_file
from coldcast.serving.store import (
    LOG_DIR_ENV,
    ServingError,
    import_model,
    is_model_dir,
    serving_spec,
    store_home,
    stored_model,
)

SERVICE = "coldcast.serving.service:ColdcastService"
READY_PATH = "/readyz"


@dataclass
class RunningServer(GroupHandle):
    """A `bentoml serve` process group started by this process; `stop()` (or leaving a `with`) ends it."""

    url: str
    pid: int
    model_tag: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path | None = None
    _workdir: Path | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's own output (its log file), for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (graceful: the prediction log is flushed), SIGKILL if it lingers.

        BentoML's arbiter starts each worker in a process group of its own, so the workers are found as the
        arbiter's descendants first and any that outlive it are killed by PID.
        """
        workers = _descendants(self.pid)
        stop_group(self.process, timeout)
        _, alive = psutil.wait_procs(workers, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        load_file(self.pid).unlink(missing_ok=True)  # the workers' shared in-flight counts (balance.py)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def resolve_model(model: str | Path) -> str:
    """A store tag for `model`: a model directory is imported into the store first; a tag must exist there."""
    if isinstance(model, Path) or is_model_dir(model):
        return import_model(model)
    return str(stored_model(str(model)).tag)


def start_server(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: str | Path | None = None,
    workers: int | None = None,
    timeout: float = 120.0,
    overrides: Sequence[str] = (),
    output: Path | None = None,
    service: str = SERVICE,
) -> RunningServer:
    """Serve `model` (a model directory, imported into the store first, or a store tag) over HTTP.

    Runs `bentoml serve` in its own process group on `host`:`port` (a free port when None), waits until
    /readyz answers 200, and returns the running server. `log_dir` turns prediction logging on; `overrides` are
    `serving.*` spec settings (e.g. "serving.max_request_rows=5000"); the server's own output goes to `output`
    (default: a temporary file, removed on stop). If the server exits or is not ready within `timeout`
    seconds it is stopped and a ServingError carries the end of its output. `workers` defaults to the spec's
    `serving.workers`. `service` is the `module:attribute` that `bentoml serve` runs, coldcast's service unless a
    variant taking the same bento arguments is given (the serving benchmark's floor).
    """
    if workers is not None and workers < 1:
        raise ServingError(f"workers must be at least 1, got {workers}")
    if log_dir is not None and Path(log_dir).exists() and not Path(log_dir).is_dir():
        raise ServingError(f"log_dir {log_dir} exists and is not a folder")
    tag = resolve_model(model)
    # fail here, not in the child, on an override that is not a serving.* key or has a bad value
    serving_spec(stored_model(tag).path, list(overrides))
    args: dict[str, object] = {
        "model": tag,
        "log_dir": str(Path(log_dir).resolve()) if log_dir is not None else "",
        "overrides": list(overrides),
    }
    if workers is not None:
        args["workers"] = int(workers)
    # the log folder comes from the arguments only (an inherited $COLDCAST_LOG_DIR must not switch logging on)
    env = {LOG_DIR_ENV: ""}
    return _launch(service, args, tag, host=host, port=port, timeout=timeout, output=output, env=env)


def serve_bento(
    bento_tag: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_dir: str | Path | None = None,
    timeout: float = 120.0,
    output: Path | None = None,
) -> RunningServer:
    """Serve a bento built by `coldcast package` from the local bento store, as a container would run it.

    A bento's arguments are fixed when it is built (BentoML replaces any given at serve time), so the log
    folder travels as $COLDCAST_LOG_DIR, as it would into a container.
    """
    env = {LOG_DIR_ENV: str(Path(log_dir).resolve())} if log_dir is not None else {}
    return _launch(bento_tag, None, bento_tag, host=host, port=port, timeout=timeout, output=output, env=env)


def _launch(
    target: str,
    args: dict[str, object] | None,
    tag: str,
    *,
    host: str,
    port: int | None,
    timeout: float,
    output: Path | None,
    env: dict[str, str] | None = None,
) -> RunningServer:
    port = port or free_port(host)
    workdir = Path(tempfile.mkdtemp(prefix="coldcast-serve-"))
    log_path = output or workdir / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115  (closed by RunningServer.stop)
    env = {
        **os.environ,
        # the child must use the store this process imported into, whatever BENTOML_HOME says now
        "BENTOML_HOME": store_home(),
        "BENTOML_DO_NOT_TRACK": os.environ.get("BENTOML_DO_NOT_TRACK", "true"),
        "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK", "1"),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        **(env or {}),
    }
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port)]
    if args is not None:
        arg_file = workdir / "args.yaml"
        arg_file.write_text(yaml.safe_dump(args))
        command += ["--arg-file", str(arg_file)]
    # its own session: the server and its workers form one process group that stop() signals as a whole
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = RunningServer(
        url=http_url(host, port),
        pid=process.pid,
        model_tag=tag,
        process=process,
        log_path=log_path,
        _workdir=workdir if output is None else None,
        _log=log,
    )
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: RunningServer, timeout: float) -> None:
    def exited(code: int) -> ServingError:
        return ServingError(f"bentoml serve exited with code {code} before it was ready:\n{server.log_tail()}")

    def timed_out() -> ServingError:
        return ServingError(f"the server at {server.url} was not ready after {timeout:.0f} s:\n{server.log_tail()}")

    wait_ready(server.process, server.url + READY_PATH, timeout, exited=exited, timed_out=timed_out)
