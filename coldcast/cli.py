"""The `coldcast` command line: a thin Typer adapter over the library."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    name="coldcast",
    help="Cold-start targeting for podcast ads and promotions with one multi-task model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)

SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="A YAML spec (full or partial), merged over the shipped default.",
        exists=True,
        dir_okay=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one spec key, e.g. --set world.impressions=20000 (repeatable)."),
]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="A named spec preset shipped with coldcast.")]


def _fail(message: str) -> typer.Exit:
    # soft_wrap keeps the message on one line; Text keeps brackets in it from being read as markup
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code=2)


def _load(spec: Path | None, overrides: list[str], preset: str | None = None) -> Any:
    from coldcast.core.spec import SpecError, load_spec

    try:
        return load_spec(spec, overrides, preset=preset)
    except SpecError as err:
        raise _fail(str(err)) from None


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the world into (must not exist).")],
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (world.seed).")] = None,
    impressions: Annotated[int | None, typer.Option(help="Number of impressions (world.impressions).")] = None,
    users: Annotated[int | None, typer.Option(help="Number of users (world.users).")] = None,
    shows: Annotated[int | None, typer.Option(help="Number of shows (world.shows).")] = None,
    days: Annotated[int | None, typer.Option(help="Days in the window (world.days).")] = None,
    ads_share: Annotated[float | None, typer.Option(help="Share of ad impressions (world.ads_share).")] = None,
    channel_similarity: Annotated[
        float | None, typer.Option(help="How alike users respond to promotions and ads, 0..1.")
    ] = None,
    new_show_share: Annotated[float | None, typer.Option(help="Share of shows launched inside the window.")] = None,
    drift: Annotated[
        str | None, typer.Option(help="Drift scenario: none, new_show_surge, video_shift or taste_shift.")
    ] = None,
    drift_start: Annotated[int | None, typer.Option(help="Day the drift scenario starts.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Generate the synthetic podcast world: impressions sharded by date, entity tables and a manifest."""
    from coldcast.core.world import generate as generate_world

    shortcuts = {
        "seed": seed,
        "impressions": impressions,
        "users": users,
        "shows": shows,
        "days": days,
        "ads_share": ads_share,
        "channel_similarity": channel_similarity,
        "new_show_share": new_show_share,
    }
    overrides = list(set_ or []) + [f"world.{k}={v}" for k, v in shortcuts.items() if v is not None]
    if drift is not None:
        overrides.append(f"world.drift.kind={drift}")
    if drift_start is not None:
        overrides.append(f"world.drift.start_day={drift_start}")
    resolved = _load(spec, overrides, preset)
    if out.exists() and not overwrite:
        raise _fail(f"{out} already exists; pass --overwrite to replace it")
    w = resolved.world
    console.print(
        f"Generating {w.impressions:,} impressions over {w.days} days ({w.users:,} users, {w.shows:,} shows, "
        f"seed {w.seed}) into [bold]{out}[/]"
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal and os.environ.get("COLDCAST_PROGRESS") != "1",
    ) as bar:
        task = bar.add_task("generating", total=w.days)
        summary = generate_world(
            resolved, out, overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done)
        )
    print_summary(summary, resolved)
    console.print(f"Wrote {summary.rows:,} impressions to [bold]{out}[/]")


def print_summary(summary: Any, spec: Any) -> None:
    """Rows per source and surface, positive rate per label and source, shows per tier, new shows."""
    rows = Table(title="Impressions by source and surface")
    rows.add_column("source")
    rows.add_column("surface")
    rows.add_column("rows", justify="right")
    rows.add_column("share", justify="right")
    for source, n in summary.rows_by_source.items():
        rows.add_row(source, "(all)", f"{n:,}", f"{n / summary.rows:.1%}", style="bold")
        for surface, m in sorted(summary.rows_by_source_surface.get(source, {}).items(), key=lambda x: -x[1]):
            rows.add_row("", surface, f"{m:,}", f"{m / summary.rows:.1%}")
    console.print(rows)

    rates = Table(title="Positive rate per label and source")
    rates.add_column("label")
    for source in spec.source_names:
        rates.add_column(source, justify="right")
    for outcome in spec.outcome_names:
        cells = []
        for source in spec.source_names:
            r = summary.positive_rate(outcome, source)
            cells.append("not observed" if r is None else f"{r:.2%} ({summary.positives[outcome][source]:,})")
        rates.add_row(outcome, *cells)
    console.print(rates)

    tiers = Table(title="Popularity tiers (trailing streams)")
    tiers.add_column("tier", justify="right")
    tiers.add_column("shows at the end", justify="right")
    tiers.add_column("impressions", justify="right")
    for t in range(spec.popularity.tiers):
        tiers.add_row(str(t), f"{summary.shows_by_tier.get(t, 0):,}", f"{summary.impressions_by_tier.get(t, 0):,}")
    console.print(tiers)
    console.print(
        f"New shows launched in the window: {summary.new_shows:,} of {summary.shows:,} "
        f"({summary.new_shows_impressed:,} got impressions). Impressions of less-streamed shows "
        f"(< {spec.popularity.less_streamed_below:,.0f} streams in {spec.popularity.window_days} days): "
        f"{summary.less_streamed_share:.1%}."
    )


@app.command("spec")
def show_spec(
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Print the resolved spec (default + file + overrides) as YAML, after validating it."""
    console.print(_load(spec, list(set_ or []), preset).to_yaml(), markup=False, highlight=False)


def main() -> None:
    """Entry point of the `coldcast` script."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    app()


if __name__ == "__main__":
    main()
