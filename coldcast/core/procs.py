"""Local HTTP servers run as child process groups: a free port, waiting on a health URL, stopping the group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Self


class GroupHandle(ABC):
    """A child process group started by this process (`process` leads it): `stop()`, or leaving a `with`, ends it."""

    process: subprocess.Popen[bytes]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """End the group (each launcher also releases what it opened for it)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_url(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 host in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by `pid`; a group that is gone already is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group `process` leads (started with `start_new_session=True`), SIGKILL if it lingers."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    signal_group(process.pid, signal.SIGKILL)  # whatever of the group outlived its leader


def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    *,
    exited: Callable[[int], Exception],
    timed_out: Callable[[], Exception],
) -> None:
    """Poll GET `url` until it answers 200; raise `exited(returncode)` if the process ends, `timed_out()` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise exited(process.returncode)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    raise timed_out()
