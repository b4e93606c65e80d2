"""`coldcast evaluate`, `coldcast gate`, `coldcast abtest` and `coldcast experiments`: offline evaluation, the
promotion gate, the simulated budget-split A/B test and the paper's tables with their ablations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coldcast.cli.app import PresetOpt, SetOpt, SpecOpt, app, console, fail, library_errors, load, progress_bar

if TYPE_CHECKING:
    from coldcast.evaluation.abtest import ABResult
    from coldcast.evaluation.metrics import MetricValue
    from coldcast.evaluation.report import EvaluationReport


@app.command()
def experiments(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for worlds, cells, models and reports.")] = Path(
        "runs/experiments"
    ),
    world: Annotated[
        Path | None,
        typer.Option(help="An existing dataset to use as the shared world (default: generate one under OUT)."),
    ] = None,
    quick: Annotated[bool, typer.Option(help="A small world and brief training: a smoke run in minutes.")] = False,
    protocol_file: Annotated[
        Path | None,
        typer.Option(
            "--protocol",
            help="A YAML file of protocol fields (seeds, epochs, fractions, similarities, ...) over the default.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated experiments: table, mask, sampler, groups, encoders, curve, similarity, abtest."
        ),
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated training seeds (default 1,2,3; quick: 1).")] = None,
    ablation_seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds of the ablations, curve and sweep (default: --seeds; a subset)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Cells trained at once, each in its own process.")] = 1,
    threads: Annotated[int | None, typer.Option(help="TensorFlow threads per worker (default: all cores).")] = None,
    report: Annotated[bool, typer.Option(help="Aggregate and write the reports after the cells.")] = True,
) -> None:
    """Reproduce the paper's Table 1 and Table 2 shapes on the synthetic world, with the ablations it lacks.

    Resumable: finished cells (OUT/cells/*/result.json) are skipped, so a re-run only trains what is missing and
    rewrites the reports.
    """
    from coldcast.evaluation.experiments import DEFAULT, QUICK, protocol_from_file, run_experiments

    protocol = QUICK if quick else DEFAULT
    try:
        if protocol_file is not None:
            protocol = protocol_from_file(protocol_file, protocol)
        if only:
            protocol = protocol.only([s.strip() for s in only.split(",") if s.strip()])
        if seeds:
            protocol = protocol.model_copy(update={"seeds": [int(s) for s in seeds.split(",") if s.strip()]})
        if ablation_seeds:
            picked = [int(s) for s in ablation_seeds.split(",") if s.strip()]
            protocol = protocol.model_copy(update={"ablation_seeds": picked})
        protocol.ablation_seed_list()  # fail now, not after a world is generated
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None
    protocol = protocol.model_copy(update={"workers": workers, "threads": threads})
    with library_errors(), progress_bar("experiment cells", total=1, unit="cells") as update:
        root = run_experiments(protocol, out, world=world, report=report, log=console.print, progress=update)
    if report:
        console.print(f"Wrote [bold]{root / 'summary.md'}[/] and {root / 'report.html'}")


def _heads(pairs: list[str] | None) -> dict[str, str]:
    from coldcast.cli.model import parse_heads

    return parse_heads(pairs)


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (from `coldcast train`).")],
    data: Annotated[Path, typer.Argument(help="A coldcast dataset folder to evaluate on.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Report folder (default: MODEL_DIR-evaluation-SPLIT).")
    ] = None,
    split: Annotated[str, typer.Option(help="Days to evaluate: test, validation, train or all.")] = "test",
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples per figure (default: evaluation.bootstrap).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    head: Annotated[
        list[str] | None,
        typer.Option(help="Score a task with another head (direct apply), e.g. ad_stream=promo_stream (repeatable)."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Another report (JSON or folder) to plot the AP lift by popularity tier against."),
    ] = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Evaluate every task of a model per source and per slice, with bootstrap 95% intervals.

    Writes evaluation.json (what the gate reads), summary.md with plots and a self-contained report.html.
    On synthetic data every figure stands beside the ground-truth ceiling. --spec/--set/--preset change the
    evaluation settings over the model's own spec (e.g. --set evaluation.bootstrap=0).
    """
    from coldcast.evaluation.evaluate import SPLITS, evaluate_model, evaluation_spec
    from coldcast.evaluation.render import read_report, write_reports

    if split not in SPLITS:
        raise fail(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    if bootstrap is not None and bootstrap < 0:
        raise fail("--bootstrap must be >= 0")
    target = out or model_dir.parent / f"{model_dir.name}-evaluation-{split}"
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise fail(f"{target} already exists; pass --overwrite to replace it")
    heads = _heads(head)
    with library_errors():
        from coldcast.core.data import Dataset
        from coldcast.model.scoring import ScoringModel

        resolved = None
        if spec is not None or set_ or preset is not None:
            model = ScoringModel.load(model_dir)
            base = load(spec, set_, preset, base=model_dir / "spec.yaml")
            resolved = evaluation_spec(base, Dataset.open(data).spec(), [*model.tasks, *heads])
        ref = read_report(reference) if reference is not None else None
        with progress_bar("evaluating", total=1) as update:

            def progress(stage: str, done: int, total: int) -> None:
                update(done, total)

            try:
                report = evaluate_model(
                    model_dir, data, split=split, spec=resolved, heads=heads, bootstrap=bootstrap, seed=seed,
                    progress=progress,
                )  # fmt: skip
            except (KeyError, ValueError) as err:
                raise fail(str(err).strip("'\"")) from None
        files = write_reports(report, target, reference=ref, overwrite=overwrite)
    _print_headline(report)
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"Wrote [bold]{files.folder}[/]: {files.json.name}, {files.markdown.name}, {files.html.name}")


def _print_headline(report: EvaluationReport) -> None:
    from rich.table import Table

    from coldcast.evaluation.render import fmt

    table = Table(title="headline per task")
    for col in ("task", "population", "rows", "positives", "AP [95% CI]", "ceiling AP", "AUC", "ECE", "pred/obs"):
        table.add_column(col)
    for name, task in report.tasks.items():
        m, c = task.headline.model, task.headline.ceiling
        table.add_row(
            name,
            task.headline_population,
            f"{m.rows:,}",
            f"{m.positives:,}",
            fmt(m.average_precision),
            fmt(c.average_precision) if c else "–",
            fmt(m.auc, 3),
            "–" if m.ece.value is None else f"{m.ece.value:.4f}",
            "–" if m.predicted_observed.value is None else f"{m.predicted_observed.value:.3f}",
        )
    console.print(table)


@app.command()
def gate(
    candidate: Annotated[
        Path, typer.Argument(help="The candidate's evaluation report (evaluation.json or its folder).")
    ],
    promoted: Annotated[
        Path | None,
        typer.Option(help="The promoted model's report on the same data (omit for the first model: floors only)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the verdict JSON here.")] = None,
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
) -> None:
    """Bless or block a candidate model: the spec's floors always, its largest regressions vs the promoted model.

    The gate settings come from the candidate model's spec (when its folder is still there), changed by
    --spec/--set/--preset. Exit code 0: blessed; 1: blocked (the verdict and its reasons are printed and written
    with --out); 2: bad input.
    """
    from coldcast.evaluation.gate import bless
    from coldcast.evaluation.render import read_report

    with library_errors():
        report = read_report(candidate)
        reference = read_report(promoted) if promoted is not None else None
        base = None
        if report.model and (Path(report.model) / "spec.yaml").exists():
            base = Path(report.model) / "spec.yaml"
        resolved = load(spec, set_, preset, base=base)
        verdict = bless(report, resolved, promoted=reference)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            verdict.write(out)
    passed = sum(c.passed is True for c in verdict.checks)
    skipped = sum(c.passed is None for c in verdict.checks)
    kind = "first model: floors only" if verdict.first_model else "floors and regressions vs the promoted model"
    status = "[bold green]BLESSED[/]" if verdict.blessed else "[bold red]BLOCKED[/]"
    console.print(f"{status} ({kind}): {passed} checks passed, {len(verdict.failed)} failed, {skipped} skipped")
    for reason in verdict.reasons:
        console.print(f"  - {reason}", markup=False)
    for note in verdict.notes:
        console.print(f"note: {note}", markup=False)
    if not verdict.blessed:
        raise typer.Exit(code=1)


@app.command()
def abtest(
    control: Annotated[Path, typer.Argument(help="Control model directory (e.g. the promotions model).")],
    treatment: Annotated[Path, typer.Argument(help="Treatment model directory (e.g. the joint model).")],
    data: Annotated[Path, typer.Argument(help="The synthetic dataset whose world is simulated.")],
    task: Annotated[str, typer.Option(help="The treatment head that ranks ads.")] = "ad_stream",
    control_head: Annotated[
        str, typer.Option(help="The control head that ranks ads (promo_stream: direct apply).")
    ] = "promo_stream",
    opportunities: Annotated[int, typer.Option(help="Ad opportunities over the test days.")] = 20_000,
    campaigns: Annotated[int, typer.Option(help="Campaigns sampled per opportunity.")] = 40,
    budget_ratio: Annotated[
        float | None,
        typer.Option(help="Each arm's budget / the cost of filling every opportunity at the mean CPM."),
    ] = 1.0,
    world_budgets: Annotated[bool, typer.Option(help="Use the world's campaign budgets instead.")] = False,
    rank_by: Annotated[str, typer.Option(help="score (p(stream)) or score_per_cost.")] = "score",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of opportunities for the intervals.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the simulation (results repeat exactly for a seed).")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the result JSON here.")] = None,
) -> None:
    """Simulate a budget-split A/B test of two models from the world's ground truth: i2s, CTR, eCPS, streams.

    Both arms see the same ad opportunities, each with half of every campaign's budget scaled to the traffic it
    serves, and show the ad their model ranks first; streams and clicks are drawn from the true probabilities.
    """
    from coldcast.evaluation.abtest import model_scorer, simulate_ab

    if rank_by not in ("score", "score_per_cost"):
        raise fail(f"--rank-by must be score or score_per_cost, not {rank_by!r}")
    if opportunities <= 0 or campaigns <= 0:
        raise fail("--opportunities and --campaigns must be positive")
    with library_errors():
        from coldcast.core.data import Dataset

        dataset = Dataset.open(data)
        try:
            scorers = (model_scorer(control, task, head=control_head), model_scorer(treatment, task))
        except KeyError as err:
            raise fail(str(err).strip("'\"")) from None
        with progress_bar("simulating days", total=1, unit="days") as update:
            result = simulate_ab(
                dataset,
                *scorers,
                opportunities=opportunities,
                campaigns_per_opportunity=campaigns,
                budget_ratio=None if world_budgets else budget_ratio,
                rank_by=rank_by,  # type: ignore[arg-type]
                bootstrap=bootstrap,
                seed=seed,
                progress=update,
            )
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            result.write(out)
    _print_ab(result)


def _print_ab(result: ABResult) -> None:
    from rich.table import Table

    def rel(v: MetricValue) -> str:
        if v.value is None:
            return "–"
        bounds = f" [{v.low:+.0%}, {v.high:+.0%}]" if v.low is not None and v.high is not None else ""
        return f"{v.value:+.1%}{bounds}"

    table = Table(title=f"simulated A/B, treatment vs control ({result.opportunities:,} opportunities)")
    for col in ("segment", "impr. C/T", "streams C/T", "i2s", "eCPS", "CTR", "streams"):
        table.add_column(col)
    for s in result.segments:
        table.add_row(
            s.name,
            f"{s.control.impressions:,}/{s.treatment.impressions:,}",
            f"{s.control.streams:,}/{s.treatment.streams:,}",
            rel(s.lift.i2s),
            rel(s.lift.ecps),
            rel(s.lift.ctr),
            rel(s.lift.streams),
        )
    console.print(table)
