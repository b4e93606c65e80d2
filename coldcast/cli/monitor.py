"""`coldcast monitor check | ui | simulate`: drift and quality checks of serving logs, the Evidently UI, the demo."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldcast.cli.app import SetOpt, SpecOpt, app, console, fail, library_errors, load, progress_bar

monitor_app = typer.Typer(
    name="monitor",
    help="Drift and quality monitoring of serving logs with Evidently: checks, the dashboard UI, a drift demo.",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")

_STYLE = {"OK": "bold green", "WARN": "bold yellow", "ALERT": "bold red"}


def print_result(result: Any, *, reasons: int = 12) -> None:
    """The status, the drift share per segment and feature group, the label-based figures and the reasons."""
    console.print(
        f"[{_STYLE[result.status.value]}]{result.status.value}[/] window {result.window}: {result.rows:,} rows "
        f"({result.labelled_rows:,} labelled) vs {result.reference_rows:,} reference rows"
    )
    groups = [g.group for g in result.segments[0].groups] if result.segments else []
    table = Table(title="Share of drifted columns", title_justify="left")
    table.add_column("segment")
    table.add_column("rows", justify="right")
    for g in groups:
        table.add_column(g, justify="right")
    within = [c.column for c in result.segments[0].within] if result.segments else []
    for name in within:  # scores, not shares: a column tested within a key's values (drift.within)
        table.add_column(name.replace("|", " within "), justify="right")
    for seg in result.segments:
        scores = {c.column: c.score for c in seg.within}
        shares = [f"{seg.group(g).share:.0%}" for g in groups]
        table.add_row(seg.segment, f"{seg.rows:,}", *shares, *(_num(scores.get(n)) for n in within))
    console.print(table)
    tasks = Table(title="Per task (whole window; label-based figures on labelled rows)", title_justify="left")
    for name in ("task", "score drift", "mean score", "ref mean", "AP", "ref AP", "calibration shift"):
        tasks.add_column(name, justify="left" if name == "task" else "right")
    overall = result.segment("all")
    for t in result.tasks:
        p = next((x for x in overall.predictions if x.task == t), None)
        q = result.quality.get(t)
        shift = q.calibration_shift if q is not None else None
        tasks.add_row(
            t,
            _num(p.score if p else None),
            _num(p.mean if p else None),
            _num(p.reference_mean if p else None),
            _num(q.average_precision if q else None),
            _num(q.reference_average_precision if q else None),
            _num(shift) if shift is not None else (q.note or "n/a") if q else "n/a",
        )
    console.print(tasks)
    for reason in result.reasons[:reasons]:
        level, _, text = reason.partition(": ")
        console.print(f"  [{_STYLE.get(level, '')}]{level}[/] {text}", soft_wrap=True)
    if len(result.reasons) > reasons:
        console.print(f"  ... and {len(result.reasons) - reasons} more (see {result.json_path})")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@monitor_app.command()
def check(
    model: Annotated[Path, typer.Argument(help="The served model's directory (its spec and metadata are read).")],
    logs: Annotated[Path, typer.Option("--logs", help="Prediction-log folder written by `coldcast serve --log-dir`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for drift.json, report.html and snapshots.")],
    date: Annotated[
        list[str] | None, typer.Option(help="A UTC date (YYYY-MM-DD) of logs to check (repeatable).")
    ] = None,
    days: Annotated[
        int | None, typer.Option(min=1, help="Check the last N dates that have logs (default: drift.window_days).")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="A dataset whose outcomes are joined to the logs by impression_id (delayed labels); the label "
            "checks judge the last drift.label_window_days days of logs."
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The dataset to sample the reference from (default: the model's own).")
    ] = None,
    request_prefix: Annotated[
        str | None, typer.Option(help="Only requests whose id starts with this (e.g. one client or replay).")
    ] = None,
    workspace: Annotated[
        Path | None, typer.Option(help="Also add the window to this Evidently workspace (created if missing).")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Workspace project of the model (default: the model directory's name).")
    ] = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Check logged serving traffic against the model's data: feature, prediction and label drift, OK/WARN/ALERT.

    Exits 0 for OK, 3 for WARN and 4 for ALERT (2 for bad input), so a scheduler can trigger retraining on it.
    """
    from coldcast.core.data import SPEC_FILE
    from coldcast.monitoring import build_reference, check_window, join_labels, latest_dates, read_window
    from coldcast.monitoring.windows import model_metadata

    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it")
    if date and days:
        raise fail("give either --date or --days, not both")
    with library_errors():
        meta = model_metadata(model)
        resolved = load(spec, set_, base=model / SPEC_FILE)
        dates = list(date) if date else latest_dates(logs, days or resolved.drift.window_days)
        source = data or Path((meta.get("data") or {}).get("path", ""))
        if not str(source) or not source.exists():
            raise fail(f"the model's dataset {source} is not there; pass --data DATASET for the reference")
        console.print(f"Checking logs of {', '.join(dates)} against a reference from [bold]{source}[/]")
        window = read_window(
            logs, dates, request_prefix=request_prefix, rows=resolved.drift.current_rows, seed=resolved.drift.seed
        )
        labelled = None
        if labels is not None:
            # label-based checks judge the last label_window_days of traffic up to the window's end
            label_dates = latest_dates(logs, resolved.drift.label_window_days, until=dates[-1])
            labelled = join_labels(read_window(logs, label_dates, request_prefix=request_prefix), labels, resolved)
        reference = build_reference(source, model, resolved)
        versions = sorted(set(window["model_version"].dropna().astype(str))) if "model_version" in window else []
        with progress_bar("checking", 1, "reports") as update:
            result = check_window(
                reference,
                window,
                resolved,
                out,
                labelled=labelled,
                window=dates[0] if len(dates) == 1 else f"{dates[0]}..{dates[-1]}",
                model_version=", ".join(versions) or None,
                overwrite=overwrite,
                progress=update,
            )
        if workspace is not None:
            from coldcast.monitoring.workspace import add_to_workspace

            add_to_workspace(workspace, result, resolved, project=project or model.resolve().name)
    print_result(result)
    console.print(f"Wrote [bold]{result.json_path}[/] and [bold]{result.html}[/]")
    raise typer.Exit(code=result.exit_code)


class _Terminated(Exception):
    """SIGTERM arrived."""


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not interrupt the clean-up
    raise _Terminated


@monitor_app.command()
def ui(
    workspace: Annotated[Path, typer.Option(help="The Evidently workspace folder (from check or simulate).")],
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the UI to answer.")] = 90.0,
) -> None:
    """Serve the Evidently UI on WORKSPACE until Ctrl-C (telemetry off): one project per model, its dashboard."""
    from coldcast.monitoring.ui import start_ui
    from coldcast.monitoring.workspace import open_workspace

    if not workspace.is_dir():
        raise fail(f"workspace folder not found: {workspace}")
    # SIGTERM (a scheduler, `timeout`, `kill`) must stop the UI too: the UI runs in its own process group
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with library_errors():
            projects = open_workspace(workspace).list_projects()
            running = start_ui(workspace, host=host, port=port, timeout=timeout)
    except _Terminated:  # start_ui has stopped the half-started UI
        raise typer.Exit(code=143) from None
    with running:
        console.print(f"Evidently UI on [bold]{running.url}[/] (pid {running.pid}); Ctrl-C stops it")
        for p in projects:
            console.print(f"  {p.name}: {running.project_url(str(p.id))}", soft_wrap=True)
        try:
            while running.running:
                time.sleep(0.5)
        except (KeyboardInterrupt, _Terminated):
            console.print("stopping the UI")
    if running.process.returncode not in (None, 0, -15):
        raise fail(f"the Evidently UI exited with code {running.process.returncode}:\n{running.log_tail()}")


@monitor_app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the world, model, logs, reports, workspace.")],
    drift: Annotated[
        str, typer.Option(help="Drift scenario: new_show_surge, video_shift, taste_shift or none.")
    ] = "new_show_surge",
    clean_days: Annotated[int, typer.Option(min=1, help="Replayed days before the drift starts.")] = 4,
    drift_days: Annotated[int, typer.Option(min=1, help="Replayed days with the drift on.")] = 6,
    impressions_per_day: Annotated[
        int, typer.Option(min=100, help="World density (the default world has about 17,900 a day).")
    ] = 17_857,
    seed: Annotated[int, typer.Option(help="World seed.")] = 7,
    set_: SetOpt = None,
) -> None:
    """The drift demo: train, serve for real, replay a drifting world through /score day by day, check each day.

    Each day's report goes into OUT/workspace; open it with `coldcast monitor ui --workspace OUT/workspace`.
    """
    from coldcast.core.spec import SpecError
    from coldcast.monitoring.simulate import simulate as run_simulation
    from coldcast.monitoring.simulate import simulation_spec

    kinds = ("new_show_surge", "video_shift", "taste_shift", "none")
    if drift not in kinds:
        raise fail(f"--drift must be one of {', '.join(kinds)}, not {drift!r}")
    try:
        spec = simulation_spec(
            drift,
            clean_days=clean_days,
            drift_days=drift_days,
            impressions_per_day=impressions_per_day,
            seed=seed,
            overrides=list(set_ or []),
        )
    except SpecError as err:
        raise fail(str(err)) from None

    def on_day(day: Any) -> None:
        mark = "drift on " if day.drifting else "no drift "
        first = day.reasons[0].partition(": ")[2] if day.reasons else ""
        console.print(
            f"  {day.date} {mark} [{_STYLE[day.status.value]}]{day.status.value:<5}[/] {day.rows:>7,} rows  "
            f"{first[:110]}",
            soft_wrap=True,
        )

    signal.signal(signal.SIGTERM, _terminate)  # leave no BentoML server behind: the `with` in simulate stops it
    try:
        with library_errors():
            result = run_simulation(out, spec, on_day=on_day, log=lambda line: console.print(f"[dim]{line}[/]"))
    except _Terminated:
        raise typer.Exit(code=143) from None
    console.print(f"Drift {result.drift} started on {result.drift_start}; first ALERT: {result.first_alert or 'none'}")
    console.print(f"Dashboard: coldcast monitor ui --workspace {result.workspace}  (project {result.project!r})")
