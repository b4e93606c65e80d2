"""`coldcast run` and `coldcast compile`: the training pipeline run locally (kfp.local) or compiled for a cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from coldcast.cli.app import PresetOpt, SetOpt, SpecOpt, app, console, fail, library_errors, progress_enabled

_MARK = {"done": "[green]✓[/]", "cached": "[cyan]↺[/]", "failed": "[red]✗[/]"}


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


class _Display:
    """One line per finished step and a transient spinner with the running step's latest log line."""

    def __init__(self, out: Console) -> None:
        self.out = out
        # the runner redirects stdout into its log while tasks run: rich must not redirect it too
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=out,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            disable=not progress_enabled(),
        )
        self.bar = self.progress.add_task("starting", total=None)

    def __call__(self, event: Any) -> None:
        if event.kind == "started":
            self.progress.update(self.bar, description=f"[bold]{event.task}[/]")
        elif event.kind == "log":
            self.progress.update(self.bar, description=f"[bold]{event.task}[/]: {escape(event.line[:100])}")
        else:
            note = "cached" if event.kind == "cached" else _seconds(event.seconds)
            self.progress.console.print(f"  {_MARK[event.kind]} {event.task:<18} {note}")


@app.command()
def run(
    data: Annotated[
        str, typer.Option("--data", help="Data source: synthetic (the embedded world), kuairand, or path.")
    ] = "synthetic",
    data_path: Annotated[
        Path | None,
        typer.Option("--data-path", help="The KuaiRand folder (--data kuairand) or a coldcast dataset (--data path)."),
    ] = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: training.epochs).")] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(help="Batches per epoch (default: one pass over the training rows).")
    ] = None,
    root: Annotated[
        Path, typer.Option("--root", help="Folder for artifacts, the step cache, logs and the default registry.")
    ] = Path("runs/local"),
    registry: Annotated[
        Path | None, typer.Option("--registry", help="Model registry folder (default: ROOT/registry).")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name in the registry and BentoML (default: the spec's name).")
    ] = None,
    production: Annotated[bool, typer.Option(help="Validate as production data: true_* columns are refused.")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse steps whose inputs match a run.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream every step's full log.")] = False,
) -> None:
    """Run the training pipeline locally: ingest, validate, train, evaluate, and if blessed package and register.

    Each step runs as a kfp task in a subprocess of this environment (kfp.local, no cluster, no Docker); steps
    whose inputs match an earlier run are taken from the cache. Ends with the gate's verdict, per-task AP, where
    each artifact is and the bento tag.
    """
    from coldcast.core.ingest import SOURCES, overrides_from_file
    from coldcast.pipelines.local import PipelineFailed, run_local
    from coldcast.pipelines.training import summarize_training, training_arguments, training_pipeline

    if data not in SOURCES:
        raise fail(f"--data must be one of {', '.join(SOURCES)}, not {data!r}")
    if data != "synthetic" and data_path is None:
        raise fail(f"--data {data} needs --data-path DIR")
    registry = (registry or root / "registry").resolve()
    with library_errors():
        overrides = [*(overrides_from_file(spec) if spec else []), *(set_ or [])]
        arguments = training_arguments(
            data,
            data_path,
            preset=preset,
            overrides=overrides,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            production=production,
            registry=registry,
            model_name=name,
        )
    where = "the synthetic podcast world" if data == "synthetic" else f"{data} data at {data_path}"
    console.print(f"Running the training pipeline locally on {where}; artifacts, cache and logs under [bold]{root}[/]")
    out = Console(file=sys.stdout)  # bound now: while tasks run, sys.stdout is the runner's log
    display = _Display(out)
    try:
        with display.progress:
            result = run_local(
                training_pipeline(registry=str(registry)),
                arguments,
                root=root,
                cache=cache,
                echo=verbose,
                on_event=display,
            )
    except PipelineFailed as err:
        console.print(f"Full log: {escape(str(err.log))}")
        raise fail(f"step {err.step!r} failed: {err.message}") from None
    with library_errors():
        summary = summarize_training(result, registry, arguments["model_name"])
    _print_summary(result, summary)


def _print_summary(result: Any, summary: Any) -> None:
    ran, cached = len(result.executed), len(result.cached)
    console.print(
        f"\nTraining pipeline finished in {_seconds(result.seconds)}: {ran} step(s) run, {cached} from the cache. "
        f"Full log: {escape(str(result.log))}"
    )
    if summary.blessed:
        how = "first model: floors only" if summary.first_model else "floors, and no regression vs the promoted model"
        console.print(f"Gate: [bold green]blessed[/] ({how})")
    else:
        console.print("Gate: [bold red]not blessed[/], the promoted model stays:")
        for reason in summary.reasons:
            console.print(f"  - {escape(reason)}")
    for note in summary.notes:
        console.print(f"  note: {escape(note)}")

    def num(value: float | None, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    table = Table(title="Test days, per task (its headline population)", box=None, padding=(0, 1), title_justify="left")
    for column in ("task", "on", "rows", "pos.", "AP", "95% CI", "ceiling", "AUC"):
        table.add_column(column, justify="left" if column in ("task", "on") else "right", no_wrap=True)
    for f in summary.figures:
        interval = f"{num(f.ap_low, 3)}-{num(f.ap_high, 3)}" if f.ap_low is not None else ""
        cells = [f.task, f.population, f"{f.rows:,}", f"{f.positives:,}", num(f.ap), interval, num(f.ceiling_ap)]
        table.add_row(*(escape(c) for c in cells), num(f.auc, 3))
    console.print(table)
    base = result.root / "artifacts"
    console.print(f"Artifacts (under {escape(str(base))}):")
    for key, path in summary.artifacts.items():
        shown = path.relative_to(base) if path.is_relative_to(base) else path
        console.print(f"  {key:<11} {escape(str(shown))}", soft_wrap=True)
    if summary.bento_tag:
        console.print(f"Bento: [bold]{escape(summary.bento_tag)}[/] (`bentoml serve {escape(summary.bento_tag)}`)")
    else:
        console.print("Bento: none built (the gate did not bless the model)")
    registered = f"registered {summary.version}, " if summary.version else ""
    console.print(
        f"Registry {escape(str(summary.registry))}: {summary.model_name} {registered}"
        f"promoted version {summary.promoted or 'none'}"
    )


@app.command("compile")
def compile_(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the pipeline YAML files into.")] = Path(
        "runs/pipelines"
    ),
    image: Annotated[
        str | None, typer.Option(help="Container image for every task (default: the platform image name).")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry path in the pods, a mounted volume (default /mnt/coldcast/registry).")
    ] = None,
    bentoml_home: Annotated[
        str | None, typer.Option(help="BENTOML_HOME of the package step (default /mnt/coldcast/bentoml).")
    ] = None,
) -> None:
    """Compile the training and monitoring pipelines to Kubeflow Pipelines IR YAML (no cluster needed)."""
    from coldcast.pipelines import compile_pipelines

    with library_errors():
        written = compile_pipelines(out, image=image, registry=registry, bentoml_home=bentoml_home)
    for path in written:
        console.print(f"Wrote [bold]{path}[/]")
