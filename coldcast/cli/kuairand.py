"""`coldcast import-kuairand`: real KuaiRand impressions (upstream file layout) as a coldcast dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldcast.cli.app import SetOpt, SpecOpt, app, console, fail, library_errors, load, progress_bar


@app.command("import-kuairand")
def import_kuairand(
    src: Annotated[
        Path,
        typer.Argument(
            help="Folder of KuaiRand CSVs in the upstream layout (log_*.csv, user_features_*.csv, "
            "video_features_basic_*.csv; video_features_statistic_*.csv is optional and never a feature), or "
            "the folder the upstream archive unpacks to (KuaiRand-Pure/, CSVs in data/).",
            exists=True,
            file_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write (must not exist).")],
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: Annotated[
        str, typer.Option("--preset", help="Spec preset merged over the default; its features must exist in KuaiRand.")
    ] = "kuairand",
    source_by: Annotated[
        str | None,
        typer.Option(help="Derive the source from video_type (AD vs NORMAL) or from tab (kuairand.source_by)."),
    ] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="CSV rows read at a time (kuairand.chunk_rows).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Import KuaiRand logs into impressions by UTC day, with duplicates counted and bad rows quarantined.

    The resolved spec is written beside the data, so `coldcast train OUT --preset kuairand` trains on it.
    """
    from coldcast.core.kuairand import import_kuairand as run_import

    overrides = list(set_ or [])
    if source_by is not None:
        if source_by not in ("video_type", "tab"):
            raise fail(f"--source-by must be video_type or tab, not {source_by!r}")
        overrides.append(f"kuairand.source_by={source_by}")
    if chunk_rows is not None:
        overrides.append(f"kuairand.chunk_rows={chunk_rows}")
    resolved = load(spec, overrides, preset)
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it")
    console.print(
        f"Importing KuaiRand from [bold]{src}[/] into [bold]{out}[/] (sources by {resolved.kuairand.source_by})"
    )
    with library_errors(), progress_bar("importing", 1, "rows (read + write)") as update:
        summary = run_import(src, out, resolved, overwrite=overwrite, progress=update)
    print_summary(summary, resolved)
    console.print(f"Wrote {summary.rows_written:,} impressions in {len(summary.shards)} daily shards to [bold]{out}[/]")


def print_summary(summary: Any, spec: Any) -> None:
    """Rows in and out, positive rates per outcome and source, popularity tiers, new videos per day."""
    rows = Table(title="Rows read, kept, dropped and quarantined")
    rows.add_column("what")
    rows.add_column("rows", justify="right")
    rows.add_row("read", f"{summary.rows_read:,}")
    rows.add_row("written", f"{summary.rows_written:,}")
    rows.add_row("exact duplicates dropped", f"{summary.exact_duplicates:,}")
    rows.add_row("same event in two hour buckets, dropped", f"{summary.bucket_duplicates:,}")
    rows.add_row("quarantined", f"{summary.rows_quarantined:,}", style="bold")
    for reason, n in summary.reasons.items():
        rows.add_row(f"  {reason}", f"{n:,}")
    console.print(rows)

    rates = Table(title="Positive rate per outcome and source")
    rates.add_column("outcome")
    for source in spec.source_names:
        rates.add_column(f"{source} ({summary.rows_by_source.get(source, 0):,} rows)", justify="right")
    for outcome in spec.outcome_names:
        cells = []
        for source in spec.source_names:
            r = summary.positive_rate(outcome, source)
            cells.append("-" if r is None else f"{r:.2%} ({summary.positives[outcome][source]:,})")
        rates.add_row(f"{outcome} <- {spec.kuairand.labels[outcome]}", *cells)
    console.print(rates)

    days = Table(title="Impressions and first-seen videos per UTC day")
    days.add_column("date")
    days.add_column("impressions", justify="right")
    days.add_column("new videos", justify="right")
    for day, n in summary.shards.items():
        days.add_row(day, f"{n:,}", f"{summary.new_videos_by_day.get(day, 0):,}")
    console.print(days)
    tiers = ", ".join(f"{t}: {n:,}" for t, n in sorted(summary.impressions_by_tier.items()))
    console.print(f"Impressions by popularity tier (trailing {spec.kuairand.history_outcome}s): {tiers}")
