"""`coldcast train`: train the multi-task model, or make a model for a task by direct apply or fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coldcast.cli.app import PresetOpt, SetOpt, SpecOpt, app, console, fail, library_errors, load


def parse_heads(pairs: list[str] | None) -> dict[str, str]:
    """`task=head` pairs as a mapping, or exit 2 naming the malformed pair."""
    heads = {}
    for pair in pairs or []:
        task, sep, head = pair.partition("=")
        if not sep or not task or not head:
            raise fail(f"--head {pair!r} is not of the form task=head (e.g. ad_stream=promo_stream)")
        heads[task.strip()] = head.strip()
    return heads


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="A coldcast dataset folder (from `coldcast generate` or an import).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (must not exist).")],
    spec: SpecOpt = None,
    set_: SetOpt = None,
    preset: PresetOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (training.epochs).")] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(help="Batches per epoch (default: one pass over the training rows).")
    ] = None,
    transfer: Annotated[
        str,
        typer.Option(
            help="joint: train the spec's tasks as heads of one model; finetune: warm-start from --from and "
            "train on DATA; direct: score tasks with another head of --from (no training)."
        ),
    ] = "joint",
    from_: Annotated[
        Path | None, typer.Option("--from", help="Source model directory for finetune and direct.")
    ] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(help="For direct apply: task=head, e.g. ad_stream=promo_stream (repeatable)."),
    ] = None,
    freeze_encoder: Annotated[
        bool, typer.Option(help="For finetune: train the towers only, keep the features and encoder fixed.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Train a model on DATA's training days, pick the best epoch on its validation days, write OUT.

    The spec starts from the one DATA was made with; --preset, --spec and --set change it (e.g.
    --preset promotions_only for the paper's baseline).
    """
    from coldcast.core.data import SPEC_FILE, Dataset
    from coldcast.model.transfer import transfer as run_transfer

    if transfer not in ("joint", "finetune", "direct"):
        raise fail(f"--transfer must be joint, finetune or direct, not {transfer!r}")
    if transfer in ("finetune", "direct") and from_ is None:
        raise fail(f"--transfer {transfer} needs --from MODEL_DIR")
    if out.exists() and not overwrite:
        raise fail(f"{out} already exists; pass --overwrite to replace it")
    heads = parse_heads(head)
    if transfer == "direct" and not heads:
        raise fail("--transfer direct needs at least one --head task=head")
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"training.epochs={epochs}")
    with library_errors():
        base = Dataset.open(data).root / SPEC_FILE if transfer != "direct" else None
        resolved = load(spec, overrides, preset, base=base)
        written = run_transfer(
            transfer,  # type: ignore[arg-type]
            resolved,
            data if transfer != "direct" else None,
            out,
            source=from_,
            heads=heads,
            freeze_encoder=freeze_encoder,
            steps_per_epoch=steps_per_epoch,
            overwrite=overwrite,
            verbose=2 if console.is_terminal else 0,
            log=console.print,
        )
    _summary(written)


def _summary(model_dir: Path) -> None:
    import json

    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    console.print(f"Wrote model directory [bold]{model_dir}[/] with heads {', '.join(meta['tasks'])}")
    for task, m in (meta.get("validation") or {}).items():
        console.print(
            f"  {task}: validation AP {m['average_precision']:.4f}, AUC {m['auc']:.4f} "
            f"({m['positives']:,} positives of {m['rows']:,})"
        )
