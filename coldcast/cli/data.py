"""`coldcast generate` and `coldcast spec`: the synthetic world and the resolved spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldcast.cli.app import PresetOpt, SetOpt, SpecOpt, app, console, fail, library_errors, load, progress_bar


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
    resolved = load(spec, overrides, preset)
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it")
    w = resolved.world
    console.print(
        f"Generating {w.impressions:,} impressions over {w.days} days ({w.users:,} users, {w.shows:,} shows, "
        f"seed {w.seed}) into [bold]{out}[/]"
    )
    with progress_bar("generating", w.days, "days") as update:
        summary = generate_world(resolved, out, overwrite=overwrite, progress=update)
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
    console.print(load(spec, set_, preset).to_yaml(), markup=False, highlight=False)


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="A coldcast dataset folder (from generate, import-kuairand, ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the valid rows, quarantine and Data Docs.")],
    policy: Annotated[
        str | None, typer.Option(help="fail (stop on any bad row) or quarantine (default: validation.policy).")
    ] = None,
    production: Annotated[
        bool, typer.Option(help="Production data: no true_* column may be present (the world's truth).")
    ] = False,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Validate a dataset with the spec's Great Expectations suite; bad rows are quarantined with their reason.

    The spec is the dataset's own (its spec.yaml) with --spec / --preset / --set over it. OUT appears only when
    validation passes under the policy; it is a dataset of the same layout that `coldcast train` reads.
    """
    from coldcast.core.data import SPEC_FILE
    from coldcast.core.validation import DataValidationError, validate_dataset

    if policy is not None and policy not in ("fail", "quarantine"):
        raise fail(f"--policy must be fail or quarantine, not {policy!r}")
    base = data / SPEC_FILE
    resolved = load(spec, set_, preset, base=base if base.exists() else None)
    console.print(f"Validating [bold]{data}[/] ({resolved.validation.policy if policy is None else policy} policy)")
    with library_errors():
        try:
            report = validate_dataset(
                data,
                resolved,
                out,
                production=production,
                policy=policy,
                overwrite=overwrite,  # type: ignore[arg-type]
            )
        except DataValidationError as err:
            raise fail(str(err)) from None
    table = Table(title="Rows in, valid and quarantined")
    table.add_column("what")
    table.add_column("rows", justify="right")
    table.add_row("in", f"{report.rows_in:,}")
    table.add_row("valid", f"{report.rows_valid:,}")
    table.add_row("quarantined", f"{report.rows_quarantined:,}", style="bold" if report.rows_quarantined else None)
    for reason, n in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{n:,}")
    console.print(table)
    console.print(f"{report.expectations} expectations; Data Docs: {report.docs}; valid rows in [bold]{out}[/]")
