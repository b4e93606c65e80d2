"""The monitoring demo: serve a model, replay a drifting synthetic world through /score day by day, check each day.

A world is generated with a drift scenario that starts on a known day inside the replayed days; the model is
trained on the days before the replay; the real BentoML server scores every replayed impression and logs it;
each day's logs (with that day's labels joined) are checked against the reference and added to an Evidently
workspace, so the dashboard shows the drift appear and the status turn to ALERT.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from coldcast.core.data import DataError, Dataset, write_json
from coldcast.core.predlog import IMPRESSION_ID, SOURCE
from coldcast.core.spec import Spec, load_spec
from coldcast.monitoring.check import check_window
from coldcast.monitoring.status import Status
from coldcast.monitoring.windows import build_reference, join_labels, model_metadata, read_window
from coldcast.monitoring.workspace import add_to_workspace, open_workspace, project_for

REPLAY_PREFIX = "replay-"
RESULT_FILE = "simulation.json"
LogFn = Callable[[str], None]


class DayStatus(BaseModel):
    """One replayed day: whether the scenario's drift was on, the status, and where its report is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    date: str
    drifting: bool
    status: Status
    rows: int
    labelled_rows: int
    reasons: list[str]
    report: str


class SimulationResult(BaseModel):
    """The demo's outcome: per-day statuses, the first ALERT, and the folders to look at."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drift: str
    drift_start: str
    world: str
    model: str
    logs: str
    workspace: str
    project: str
    project_id: str
    days: list[DayStatus]

    @property
    def first_alert(self) -> str | None:
        return next((d.date for d in self.days if d.status is Status.ALERT), None)


def simulation_spec(
    drift: str = "new_show_surge",
    *,
    train_days: int = 14,
    validation_days: int = 4,
    clean_days: int = 4,
    drift_days: int = 6,
    impressions_per_day: int = 17_857,
    seed: int = 7,
    overrides: Sequence[str] = (),
) -> Spec:
    """The demo's spec: the default world with `drift` starting after `clean_days` replayed days without it."""
    replay = clean_days + drift_days
    days = train_days + validation_days + replay
    return load_spec(
        overrides=[
            f"world.seed={seed}",
            f"world.days={days}",
            f"world.impressions={impressions_per_day * days}",
            f"world.drift.kind={drift}",
            f"world.drift.start_day={train_days + validation_days + clean_days}",
            f"split.validation_days={validation_days}",
            f"split.test_days={replay}",
            "training.epochs=1",
            *overrides,
        ]
    )


def simulate(
    out: str | Path,
    spec: Spec,
    *,
    world: str | Path | None = None,
    model: str | Path | None = None,
    dates: Sequence[str] | None = None,
    project: str | None = None,
    monitor_overrides: Sequence[str] = (),
    server_timeout: float = 300.0,
    log_timeout: float = 120.0,
    on_day: Callable[[DayStatus], None] | None = None,
    log: LogFn = print,
) -> SimulationResult:
    """Run the demo into `out` (world/, model/, logs/, reports/<date>/, workspace/, simulation.json).

    `spec` makes the world (generated into out/world unless `world` names one) and the model (trained into
    out/model on the days before the replay unless `model` names one). The replayed days are the spec's test
    days (or `dates`). An existing out/world made with the same spec is reused; logs must start afresh.
    """
    from coldcast.core.world import generate
    from coldcast.model.train import train
    from coldcast.serving.server import start_server

    out = Path(out)
    world_dir = Path(world) if world is not None else out / "world"
    model_dir = Path(model) if model is not None else out / "model"
    logs, reports, ws_dir = out / "logs", out / "reports", out / "workspace"
    if logs.exists() and any(logs.iterdir()):
        raise FileExistsError(f"{logs} already has prediction logs; use a fresh --out folder")
    if world is not None:
        spec = Dataset.open(world_dir).spec()
    elif world_dir.exists():
        if Dataset.open(world_dir).manifest.get("spec_fingerprint") != spec.fingerprint():
            raise DataError(f"{world_dir} was generated with another spec; use a fresh --out folder")
        log(f"reusing the world in {world_dir}")
    else:
        w = spec.world
        log(f"generating a world of {w.impressions:,} impressions over {w.days} days ({w.drift.kind} drift) ...")
        generate(spec, world_dir)
    ds = Dataset.open(world_dir)
    if not model_dir.exists():
        log("training the model on the days before the replay ...")
        train(spec, world_dir, model_dir, verbose=0, log=log)
    # monitoring judges by the spec the model was trained with (with `monitor_overrides`, e.g. drift.* settings)
    model_spec = load_spec(base=model_dir / "spec.yaml", overrides=list(monitor_overrides))
    replay = list(dates) if dates is not None else ds.split(spec)["test"]
    unknown = sorted(set(replay) - set(ds.dates))
    if unknown:
        raise DataError(f"{world_dir} has no impressions on {unknown}")
    start = (spec.world.start_date + timedelta(days=spec.world.drift.start_day)).isoformat()
    name = project or f"coldcast demo: {spec.world.drift.kind} from {start}"
    ws = open_workspace(ws_dir)
    log("building the reference from the model's validation days ...")
    reference = build_reference(ds, model_dir, model_spec)
    log("starting the BentoML server ...")
    days: list[DayStatus] = []
    fast_logs = ["serving.log.max_seconds=0.5"]  # each replayed day reaches the log within a second
    with start_server(model_dir, log_dir=logs, overrides=fast_logs, timeout=server_timeout) as srv:
        proj = project_for(ws, name, model_spec, model_metadata(model_dir)["tasks"])
        for i, date in enumerate(replay):
            sent = replay_day(srv.url, ds.read([date]), date, model_spec)
            window = await_logs(logs, f"{REPLAY_PREFIX}{date}-", sent, log_timeout)
            # labels "arrive" at the end of each day; the label checks judge the last label_window_days days
            label_days = replay[max(0, i + 1 - model_spec.drift.label_window_days) : i + 1]
            labelled = read_window(logs, request_prefix=[f"{REPLAY_PREFIX}{d}-" for d in label_days])
            labelled = join_labels(labelled, ds, model_spec, dates=label_days)
            result = check_window(
                reference,
                window,
                model_spec,
                reports / date,
                labelled=labelled,
                window=date,
                label_window=label_days[0] if len(label_days) == 1 else f"{label_days[0]}..{label_days[-1]}",
                timestamp=datetime.fromisoformat(date),
                model_version=srv.model_tag,
                overwrite=True,
            )
            add_to_workspace(ws, result, model_spec, project=name)
            day = DayStatus(
                date=date,
                drifting=spec.world.drift.kind != "none" and date >= start,
                status=result.status,
                rows=result.rows,
                labelled_rows=result.labelled_rows,
                reasons=result.reasons[:5],
                report=str(result.out_dir),
            )
            days.append(day)
            if on_day is not None:
                on_day(day)
    sim = SimulationResult(
        drift=spec.world.drift.kind,
        drift_start=start,
        world=str(world_dir),
        model=str(model_dir),
        logs=str(logs),
        workspace=str(ws_dir),
        project=name,
        project_id=str(proj.id),
        days=days,
    )
    write_json(sim.model_dump(mode="json"), out / RESULT_FILE)
    return sim


def replay_day(url: str, frame: pd.DataFrame, date: str, spec: Spec) -> int:
    """POST a day's impressions to /score in requests of at most serving.max_request_rows; returns the rows sent."""
    import requests

    columns = [*spec.feature_names, IMPRESSION_ID, SOURCE]  # the ids join delayed labels and slice by channel
    table = pa.Table.from_pandas(frame[columns], preserve_index=False)
    rows = table.to_pylist()
    size = spec.serving.max_request_rows
    with requests.Session() as session:
        for i, start in enumerate(range(0, len(rows), size)):
            body = {"rows": rows[start : start + size]}
            resp = session.post(
                f"{url}/score", json=body, headers={"x-request-id": f"{REPLAY_PREFIX}{date}-{i:05d}"}, timeout=120
            )
            if resp.status_code != 200:
                raise DataError(f"/score refused replayed rows of {date}: {resp.status_code} {resp.text[:500]}")
    return len(rows)


def await_logs(logs: Path, prefix: str, rows: int, timeout: float) -> pd.DataFrame:
    """The logged rows of one replayed day, once the server has flushed all of them."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            window = read_window(logs, request_prefix=prefix)
            seen = len(window)
            if seen >= rows:
                return window
        except DataError:
            pass
        time.sleep(0.25)
    raise DataError(f"only {seen} of {rows} replayed rows ({prefix}*) reached the prediction log in {timeout:.0f} s")


def read_simulation(out: str | Path) -> SimulationResult:
    """A finished demo's result (its simulation.json)."""
    path = Path(out) / RESULT_FILE
    if not path.exists():
        raise DataError(f"no {RESULT_FILE} in {out}")
    return SimulationResult.model_validate(json.loads(path.read_text()))
