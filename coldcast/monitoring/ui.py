"""Start the Evidently UI on a workspace for real (`evidently ui`), wait until it answers, stop it by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from coldcast.core.data import DataError
from coldcast.core.procs import GroupHandle, free_port, http_url, stop_group, wait_ready

HEALTH_PATH = "/api/version"


class UIError(DataError):
    """The Evidently UI did not start; the message carries the end of its output."""


@dataclass
class RunningUI(GroupHandle):
    """An `evidently ui` process group started by this process; `stop()` (or leaving a `with`) ends it."""

    url: str
    pid: int
    workspace: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def project_url(self, project_id: str) -> str:
        return f"{self.url}/projects/{project_id}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the UI's process group, SIGKILL if it lingers."""
        stop_group(self.process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


def ui_command(workspace: Path, host: str, port: int) -> list[str]:
    """`evidently ui --workspace DIR --host H --port N`, with the `evidently` script of this environment."""
    script = Path(sys.executable).parent / "evidently"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "evidently.cli"]
    return [*base, "ui", "--workspace", str(workspace), "--host", host, "--port", str(port)]


def start_ui(
    workspace: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 90.0,
    output: Path | None = None,
) -> RunningUI:
    """Serve the Evidently UI on `workspace` at host:port (a free port when None), telemetry off.

    Returns once GET /api/version answers 200; if the UI exits or is not up within `timeout` seconds it is
    stopped and a UIError carries the end of its output.
    """
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise DataError(f"workspace folder not found: {workspace}")
    port = port or free_port(host)
    log_path = output or Path(tempfile.mkstemp(prefix="coldcast-evidently-ui-", suffix=".log")[1])
    log = open(log_path, "ab")  # noqa: SIM115  (closed by RunningUI.stop)
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    process = subprocess.Popen(
        ui_command(workspace, host, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=workspace,
        start_new_session=True,  # its own process group, which stop() signals as a whole
    )
    ui = RunningUI(
        url=http_url(host, port),
        pid=process.pid,
        workspace=workspace,
        process=process,
        log_path=log_path,
        _log=log,
    )
    try:
        _wait_ready(ui, timeout)
    except BaseException:
        ui.stop()
        raise
    return ui


def _wait_ready(ui: RunningUI, timeout: float) -> None:
    wait_ready(
        ui.process,
        ui.url + HEALTH_PATH,
        timeout,
        exited=lambda code: UIError(f"evidently ui exited with code {code}:\n{ui.log_tail()}"),
        timed_out=lambda: UIError(f"the Evidently UI at {ui.url} was not up after {timeout:.0f} s:\n{ui.log_tail()}"),
    )
