"""The dashboard in a real browser: `coldcast monitor ui` serves a workspace of checked windows on a free port,
headless Chromium renders the project's dashboard, every panel title is in the DOM, a screenshot is kept as an
artifact (test-artifacts/dashboard.png), and stopping the command leaves no UI behind."""

import contextlib
import html
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from coldcast.core.predlog import PredictionLogger, prediction_column
from coldcast.core.procs import free_port
from coldcast.monitoring import DriftResult, build_reference, check_window, join_labels, read_window
from coldcast.monitoring.ui import HEALTH_PATH
from coldcast.monitoring.workspace import add_to_workspace, open_workspace, panel_titles

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PROJECT = "coldcast dashboard test"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is missing (CI runs as root with apt)."""
    if not CHROMIUM.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900, check=True)
            subprocess.run(install, env=env, capture_output=True, timeout=900, check=True)
    assert CHROMIUM.exists(), "chromium is not installed and apt-get could not install it"
    return CHROMIUM


@pytest.fixture(scope="module")
def workspace(small_world, small_model, tmp_path_factory):
    """Two test days, scored by the model, logged as serving logs them, checked and added to one project."""
    from coldcast.model.scoring import ScoringModel

    spec, model_dir = small_model
    model = ScoringModel.load(model_dir)
    reference = build_reference(small_world, model_dir, spec)
    root = tmp_path_factory.mktemp("dashboard")
    ws = root / "workspace"
    days = small_world.split(spec)["test"][:2]
    for day in days:
        frame = small_world.read([day])
        scores = model.predict(frame)
        logger = PredictionLogger(root / "logs" / day, spec, model.tasks, model_version="dashboard-test")
        features = {n: frame[n].to_numpy() for n in spec.feature_names}
        for name, values in features.items():
            if values.dtype == object and isinstance(values[0], np.ndarray):
                features[name] = [list(v) for v in values]
        meta = {"impression_id": list(frame["impression_id"]), "source": list(frame["source"])}
        logger.append(features, {t: scores[t].to_numpy() for t in model.tasks}, request_id=day, meta=meta)
        logger.close()
        window = join_labels(read_window(root / "logs" / day), small_world, spec)
        assert prediction_column("click") in window
        result = check_window(
            reference, window, spec, root / "checks" / day, window=day, timestamp=datetime.fromisoformat(day)
        )
        add_to_workspace(ws, result, spec, project=PROJECT)
    return ws, spec, model.tasks, days


@pytest.fixture(scope="module")
def ui(workspace, tmp_path_factory):
    """`coldcast monitor ui` for real (it runs `evidently ui`) on a free port of 127.0.0.1, stopped by PID."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    command = [sys.executable, "-m", "coldcast.cli", "monitor", "ui", "--workspace", str(workspace[0])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(url + HEALTH_PATH, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            raise AssertionError(f"the UI did not come up: {log.read_text()[-3000:]}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # the command stops the UI it started, then exits
        try:
            proc.wait(timeout=60)
        finally:
            # whatever happened, no process of this test survives it: the command's group, and the UI's while
            # it still answers (so a reused PID is never hit)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            started = re.search(r"\(pid (\d+)\)", log.read_text())
            if started and _answers(url):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(started.group(1)), signal.SIGKILL)
    assert not _answers(url)  # nothing is left listening


def _answers(url: str) -> bool:
    try:
        return requests.get(url + HEALTH_PATH, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def browse(chromium: Path, profile: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",  # let the app fetch its panels' series and draw them
        "--window-size=1400,8400",
    ]
    return subprocess.run([str(chromium), *flags, *extra, url], capture_output=True, text=True, timeout=180)


def test_dashboard_renders_every_panel_in_a_real_browser(chromium, ui, workspace, tmp_path):
    ws, spec, tasks, days = workspace
    assert requests.get(ui + HEALTH_PATH, timeout=10).json()["application"] == "Evidently UI"
    (project,) = [p for p in open_workspace(ws).list_projects() if p.name == PROJECT]
    url = f"{ui}/projects/{project.id}"

    dom = browse(chromium, tmp_path / "profile-dom", url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = html.unescape(dom.stdout)
    titles = panel_titles(spec, tasks)
    assert len(titles) == 4 + 4 + 1 + 3 * len(tasks)  # ... drift within keys, calibration per genre per task
    missing = [t for t in titles if t not in text]
    assert not missing, f"panels not rendered: {missing}"
    assert "Something went wrong" not in text
    # the charts are drawn from the windows' series: both windows' dates are on their time axes
    assert all(f"{day} 00:00:00" in text for day in days)

    # the series of coldcast's own check values (within drift, calibration shifts) have a point per window
    def points(labels: dict[str, str]) -> list[dict[str, float]]:
        """Each matching series as {day: value}: a series' values follow the response's sources (snapshots)."""
        query = {"tags": [], "metadata": {"kind": "checks"}, "metric": "evidently:metric_v2:CheckValue"}
        body = {"series_filter": [query | {"metric_labels": labels}]}
        found = requests.post(f"{ui}/api/v2/snapshots/{project.id}/data_series_batch", json=body, timeout=30)
        assert found.status_code in (200, 201), found.text[:2000]
        response = found.json()
        dates = [source["timestamp"][:10] for source in response["sources"]]
        return [{d: v for d, v in zip(dates, s["values"], strict=False) if v is not None} for s in response["series"]]

    (within,) = points({"check": "within", "task": "", "name": "format|campaign_id"})
    assert list(within) == days and all(v >= 0 for v in within.values())
    # click's shift on its whole population, where a day had enough clicks (the small world has too few per genre)
    shifts = {day: DriftResult.read(ws.parent / "checks" / day).quality["click"].calibration_shift for day in days}
    (click,) = points({"check": "calibration", "task": "click"})
    assert click and click == pytest.approx({d: v for d, v in shifts.items() if v is not None})

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    done = browse(chromium, tmp_path / "profile-shot", url, f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
