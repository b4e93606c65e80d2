"""The paper's Table 1 on the synthetic world, the ablations it lacks, the learning curve of a new low-data
objective, the channel-similarity sweep and the simulated budget-split A/B test: planned as cells, run in
worker processes (resumable), aggregated into tables, plots and reports.

Protocol (the same for every variant): one shared world per setting, a fixed step budget (`epochs` x
`steps_per_epoch` batches of the spec's batch size) with the spec's checkpoint selection on validation AP and
early stopping, several training seeds per cell, every model scored on the same test days.
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from coldcast.core.data import IMPRESSIONS, MANIFEST, SPEC_FILE, DataError, Dataset, atomic_dir, write_json
from coldcast.core.spec import GROUPS, load_spec
from coldcast.evaluation.cells import PREDICTIONS, RESULT, CellTask, cell_folder, is_done, run_cell

EXPERIMENTS: tuple[str, ...] = ("table", "mask", "sampler", "groups", "encoders", "curve", "similarity", "abtest")
TABLE_VARIANTS: tuple[str, ...] = ("promotions_only", "promo_stream_only", "ads_stream_only", "ads_multitask", "joint")
BASELINE = "promotions_only"
JOINT = "joint"
# Learning-curve arms for a new low-data ad objective; direct apply needs no training.
CURVE_ARMS: tuple[str, ...] = ("finetune_head", "finetune_full", "joint", "scratch")
# What each arm is: preset, warm start from the baseline of the same seed, frozen encoder.
_ARMS: dict[str, tuple[str, bool, bool]] = {
    "finetune_head": ("ads_stream_only", True, True),
    "finetune_full": ("ads_stream_only", True, False),
    "joint": (JOINT, False, False),
    "scratch": ("ads_stream_only", False, False),
}
# Ablations of the joint model: variant -> spec overrides (the joint preset is the "on" setting of each).
MASK_VARIANTS: dict[str, list[str]] = {
    "mask_off": ["tasks.promo_stream.mask.ad=1.0"],
    "mask_symmetric": ["tasks.ad_stream.mask.promotion=0.0"],
}
SAMPLER_VARIANTS: dict[str, list[str]] = {"natural": ["training.sampling=natural"]}
# Quick mode: a small world and a small, briefly trained model (tests, smoke runs).
QUICK_WORLD: list[str] = [
    "world.users=4000",
    "world.shows=600",
    "world.campaigns=120",
    "world.publishers=200",
    "world.impressions=60000",
    "world.days=28",
    "split.validation_days=4",
    "split.test_days=4",
]
QUICK_MODEL: list[str] = [
    "training.batch_size=256",
    "model.shared_layers=[32]",
    "model.tower_layers=[16]",
    "model.embedding_dim=4",
]
LogFn = Callable[[str], None]
ProgressFn = Callable[[int, int], None]


class Protocol(BaseModel):
    """How the experiments run: seeds, step budget, what is swept, and how large the A/B simulation is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    experiments: list[str] = Field(default_factory=lambda: list(EXPERIMENTS))
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    ablation_seeds: list[int] | None = Field(
        default=None,
        description="Seeds of the ablations, the learning curve and the sweep (default: `seeds`); a subset of "
        "`seeds`, since they pair with the table's models of the same seed.",
    )
    epochs: int = Field(default=6, gt=0, description="Largest number of epochs (early stopping ends most sooner).")
    steps_per_epoch: int = Field(default=200, gt=0, description="Batches between two validation checks.")
    patience: int = Field(default=1, ge=0, description="Epochs without a better validation AP before stopping.")
    world: list[str] = Field(default_factory=list, description="Spec overrides for the generated shared world.")
    model: list[str] = Field(default_factory=list, description="Spec overrides applied to every variant.")
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.25])
    curve_arms: list[str] = Field(default_factory=lambda: ["finetune_head", "finetune_full", "joint"])
    similarities: list[float] = Field(default_factory=lambda: [0.0, 0.35, 0.7])
    sweep_variants: list[str] = Field(
        default_factory=lambda: [BASELINE, "ads_multitask", JOINT],
        description="Variants trained at each channel similarity of the sweep.",
    )
    groups: list[str] = Field(default_factory=lambda: list(GROUPS))
    encoders: list[str] = Field(default_factory=lambda: ["mmoe", "ple"])
    bootstrap: int = Field(default=200, ge=0)
    ab_opportunities: int = Field(default=20_000, gt=0)
    ab_campaigns: int = Field(default=40, gt=0)
    ab_budget_ratios: list[float | None] = Field(
        default_factory=lambda: [1.0, 0.5, None],
        description="Budget ratios simulated: every seed at the first, the first seed at all (sensitivity).",
    )
    workers: int = Field(default=1, gt=0, description="Cells trained at once (each in its own process).")
    threads: int | None = Field(default=None, gt=0, description="TensorFlow threads per worker (default: all).")
    keep_models: bool = Field(default=False, description="Keep every model folder, not only those reused later.")

    def ablation_seed_list(self) -> list[int]:
        """The seeds of everything but the table; they must be table seeds, as they pair with its models."""
        seeds = self.ablation_seeds or self.seeds
        if not set(seeds) <= set(self.seeds):
            raise ValueError(f"ablation seeds {seeds} must be among the table's seeds {self.seeds}")
        return seeds

    def only(self, names: Iterable[str]) -> Protocol:
        unknown = sorted(set(names) - set(EXPERIMENTS))
        if unknown:
            raise ValueError(f"unknown experiment(s) {unknown}; experiments are {list(EXPERIMENTS)}")
        return self.model_copy(update={"experiments": [e for e in EXPERIMENTS if e in set(names)]})


def protocol_from_file(path: str | Path, base: Protocol) -> Protocol:
    """`base` with the fields of a YAML (or JSON) file over it, validated; unknown fields are an error."""
    import yaml
    from pydantic import ValidationError

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a protocol file is a mapping of protocol fields, not {type(data).__name__}")
    try:
        return Protocol.model_validate({**base.model_dump(), **data})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: invalid protocol: {problems}") from None


DEFAULT = Protocol()
QUICK = Protocol(
    name="quick",
    experiments=["table", "mask", "abtest"],
    seeds=[1],
    epochs=2,
    steps_per_epoch=15,
    world=QUICK_WORLD,
    model=QUICK_MODEL,
    fractions=[0.25],
    similarities=[0.7],
    bootstrap=20,
    ab_opportunities=300,
    ab_campaigns=10,
    ab_budget_ratios=[1.0],
)


# --------------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Cell:
    """One trained model of the plan: which experiment and variant, which seed, on which data."""

    id: str
    experiment: str
    variant: str
    seed: int
    world: str  # key into Plan.worlds: the data it trains on
    preset: str | None
    overrides: tuple[str, ...] = ()
    warm_start: str | None = None  # id of the cell whose model it starts from
    freeze_encoder: bool = False
    test_world: str | None = None  # default: its own world (the curve's datasets share the base test days)


@dataclass
class Plan:
    """Cells in run order, the datasets they need, and which cells' models must be kept."""

    protocol: Protocol
    root: Path
    worlds: dict[str, Path]
    world_specs: dict[str, list[str]]  # key -> overrides to generate it (or "derive:<fraction>")
    cells: list[Cell]

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells:
            if c.id == cell_id:
                return c
        raise KeyError(cell_id)

    def kept(self) -> set[str]:
        """Cells whose models later steps need: warm starts and the A/B arms."""
        keep = {c.warm_start for c in self.cells if c.warm_start}
        keep |= {c.id for c in self.cells if c.experiment == "table" and c.variant in (BASELINE, JOINT)}
        if self.protocol.keep_models:
            keep |= {c.id for c in self.cells}
        return keep

    def model_dir(self, cell_id: str) -> Path:
        return self.root / "models" / cell_id.replace("/", "__")

    def folder(self, cell_id: str) -> Path:
        return cell_folder(self.root, cell_id)


def _sim_key(value: float) -> str:
    return f"similarity-{value:.2f}"


def _frac_key(fraction: float) -> str:
    return f"ads-{fraction * 100:g}pct"


def plan(protocol: Protocol, root: Path, base_world: Path, base_similarity: float) -> Plan:
    """Every cell the protocol asks for, in the order they should run (the paper's table first)."""
    worlds = {"base": base_world}
    world_specs: dict[str, list[str]] = {"base": []}
    cells: list[Cell] = []
    table_seeds = protocol.seeds
    exps = set(protocol.experiments)
    if exps & {"table", "abtest", "curve", "mask", "sampler", "groups", "encoders", "similarity"}:
        # The joint model and the baseline anchor every comparison, so they always run.
        wanted = TABLE_VARIANTS if "table" in exps else (BASELINE, JOINT)
        cells += [Cell(f"table/{v}/s{s}", "table", v, s, "base", v) for s in table_seeds for v in wanted]
    seeds = protocol.ablation_seed_list()
    if "mask" in exps:
        cells += [
            Cell(f"mask/{v}/s{s}", "mask", v, s, "base", JOINT, tuple(o))
            for s in seeds
            for v, o in MASK_VARIANTS.items()
        ]
    if "sampler" in exps:
        cells += [
            Cell(f"sampler/{v}/s{s}", "sampler", v, s, "base", JOINT, tuple(o))
            for s in seeds
            for v, o in SAMPLER_VARIANTS.items()
        ]
    if "encoders" in exps:
        cells += [
            Cell(f"encoders/{e}/s{s}", "encoders", e, s, "base", JOINT, (f"model.encoder={e}",))
            for s in seeds
            for e in protocol.encoders
        ]
    if "curve" in exps:
        for f in protocol.fractions:
            key = _frac_key(f)
            worlds[key] = root / "worlds" / key
            world_specs[key] = [f"derive:{f}"]
            for s in seeds:
                base = f"table/{BASELINE}/s{s}"
                tag = f"{f * 100:g}pct"
                for arm in protocol.curve_arms:
                    preset, warm, frozen = _ARMS[arm]
                    cells.append(
                        Cell(
                            f"curve/{arm}-{tag}/s{s}",
                            "curve",
                            f"{arm}@{f}",
                            s,
                            key,
                            preset,
                            warm_start=base if warm else None,
                            freeze_encoder=frozen,
                            test_world="base",
                        )
                    )
    if "similarity" in exps:
        for value in protocol.similarities:
            if abs(value - base_similarity) < 1e-9:
                continue  # the table's cells are this point of the sweep
            key = _sim_key(value)
            worlds[key] = root / "worlds" / key
            world_specs[key] = [f"world.channel_similarity={value}"]
            for s in seeds:
                cells += [
                    Cell(f"similarity/{v}-r{value:.2f}/s{s}", "similarity", f"{v}@{value}", s, key, v)
                    for v in protocol.sweep_variants
                ]
    if "groups" in exps:
        cells += [
            Cell(f"groups/no_{g}/s{s}", "groups", f"no_{g}", s, "base", JOINT, (f"model.exclude_groups=[{g}]",))
            for s in seeds
            for g in protocol.groups
        ]
    # The paper's table at every seed first (the A/B test needs its models too), then the rest seed by seed: a
    # run cut short still has the table complete and every other experiment at its first seeds.
    cells.sort(key=lambda c: (c.experiment != "table", table_seeds.index(c.seed)))
    return Plan(protocol=protocol, root=root, worlds=worlds, world_specs=world_specs, cells=cells)


# --------------------------------------------------------------------------------------------------- data
def prepare_worlds(plan_: Plan, log: LogFn) -> None:
    """Generate or derive every dataset the plan needs that is not there yet."""
    from coldcast.core.world import generate

    base = Dataset.open(plan_.worlds["base"])
    for key, path in plan_.worlds.items():
        if key == "base" or (path / MANIFEST).exists():
            continue
        how = plan_.world_specs[key]
        started = time.perf_counter()
        if how and how[0].startswith("derive:"):
            fraction = float(how[0].split(":", 1)[1])
            derive_ad_fraction(base, path, fraction)
            log(f"derived {key} from {base.root} ({fraction:.0%} of ad rows on training and validation days)")
        else:
            spec = load_spec(base=base.root / SPEC_FILE, overrides=how)
            generate(spec, path)
            log(f"generated {key} ({spec.world.impressions:,} impressions, {how})")
        log(f"  in {time.perf_counter() - started:.0f} s")


def derive_ad_fraction(base: Dataset, out: Path, fraction: float) -> Path:
    """A copy of `base` where only `fraction` of the ad impressions of training and validation days remain.

    Models a newly launched ad objective: few labelled ad rows to learn from (and to select checkpoints on),
    promotions untouched, the test days complete so every arm is judged on the same rows. Which rows remain is
    a hash of the impression id, so the 1% rows are inside the 5% rows, and so on.
    """
    import shutil

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    spec = base.spec()
    split = base.split(spec)
    thinned = set(split["train"]) | set(split["validation"])
    with atomic_dir(out) as tmp:
        (tmp / IMPRESSIONS).mkdir()
        shards: dict[str, int] = {}
        for path in base.shards():
            table = pq.read_table(path)
            if path.stem in thinned:
                df_keys = table.select(["impression_id", "source"]).to_pandas()
                keep = (df_keys["source"].to_numpy() != "ad") | (_unit_hash(df_keys["impression_id"]) < fraction)
                table = table.filter(keep)
            pq.write_table(table, tmp / IMPRESSIONS / path.name, compression="zstd")
            shards[path.stem] = table.num_rows
        if (base.root / "entities").is_dir():
            shutil.copytree(base.root / "entities", tmp / "entities")
        shutil.copy(base.root / SPEC_FILE, tmp / SPEC_FILE)
        manifest = base.manifest
        manifest.update(
            {"rows": sum(shards.values()), "shards": shards, "derived_from": str(base.root), "ad_fraction": fraction}
        )
        manifest.pop("summary", None)  # counts of the full world no longer hold
        write_json(manifest, tmp / MANIFEST)
    return out


def _unit_hash(ids: pd.Series) -> np.ndarray:
    """A stable number in [0, 1) per id (independent of Python's hash seed and of row order)."""
    hashed = pd.util.hash_pandas_object(ids.astype(str), index=False).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(2**53)


# --------------------------------------------------------------------------------------------------- running
def _task(plan_: Plan, cell: Cell) -> CellTask:
    p = plan_.protocol
    overrides = [
        *p.model,
        *cell.overrides,
        f"training.seed={cell.seed}",
        f"training.early_stopping_patience={p.patience}",
    ]
    return CellTask(
        id=cell.id,
        data=str(plan_.worlds[cell.world]),
        test_data=str(plan_.worlds[cell.test_world or cell.world]),
        preset=cell.preset,
        overrides=overrides,
        epochs=p.epochs,
        steps_per_epoch=p.steps_per_epoch,
        warm_start=str(plan_.model_dir(cell.warm_start)) if cell.warm_start else None,
        freeze_encoder=cell.freeze_encoder,
        folder=str(plan_.folder(cell.id)),
        model_dir=str(plan_.model_dir(cell.id)),
        keep_model=cell.id in plan_.kept(),
        threads=p.threads,
    )


def run_cells(plan_: Plan, *, log: LogFn = print, progress: ProgressFn | None = None) -> dict[str, dict[str, Any]]:
    """Run every cell without a result yet, `workers` at a time, each in a fresh process; returns all results.

    A cell waits for the cell it warm-starts from. A failed cell is logged and skipped (its dependants too);
    the others go on, and the next run retries it.
    """
    cells = plan_.cells
    done = {c.id for c in cells if is_done(plan_.folder(c.id))}
    failed: set[str] = set()
    pending = [c for c in cells if c.id not in done]
    total = len(cells)
    if progress is not None:
        progress(len(done), total)
    log(f"{len(done)} of {total} cells already done; {len(pending)} to run with {plan_.protocol.workers} worker(s)")
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with futures.ProcessPoolExecutor(
        max_workers=plan_.protocol.workers, mp_context=context, max_tasks_per_child=1
    ) as pool:
        running: dict[futures.Future, Cell] = {}
        while pending or running:
            for cell in list(pending):
                if len(running) >= plan_.protocol.workers:
                    break
                if cell.warm_start and cell.warm_start in failed:
                    pending.remove(cell)
                    failed.add(cell.id)
                    log(f"skip {cell.id}: its warm start {cell.warm_start} failed")
                    continue
                if cell.warm_start and cell.warm_start not in done:
                    continue
                pending.remove(cell)
                running[pool.submit(run_cell, _task(plan_, cell))] = cell
            if not running:
                break
            finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for fut in finished:
                cell = running.pop(fut)
                try:
                    record = fut.result()
                except Exception as err:  # a crashed worker must not stop the other cells
                    failed.add(cell.id)
                    log(f"FAILED {cell.id}: {type(err).__name__}: {err}")
                    continue
                done.add(cell.id)
                elapsed = time.perf_counter() - started
                log(
                    f"done {cell.id} in {record['seconds']:.0f} s (best epoch {record['best_epoch']} of "
                    f"{record['epochs_run']}, {record['examples_per_second']:,.0f} ex/s); "
                    f"{len(done)}/{total} after {elapsed / 60:.1f} min"
                )
                if progress is not None:
                    progress(len(done), total)
    return load_results(plan_)


def load_results(plan_: Plan) -> dict[str, dict[str, Any]]:
    """The result record of every finished cell of the plan."""
    out = {}
    for c in plan_.cells:
        path = plan_.folder(c.id) / RESULT
        if path.exists():
            out[c.id] = json.loads(path.read_text())
    return out


def predictions(plan_: Plan, cell_id: str) -> pd.DataFrame:
    return pd.read_parquet(plan_.folder(cell_id) / PREDICTIONS)


def base_world(protocol: Protocol, root: Path, world: str | Path | None, log: LogFn) -> tuple[Path, float]:
    """The shared world: the given dataset, or one generated under root/worlds/base from the protocol."""
    from coldcast.core.world import generate

    if world is not None:
        ds = Dataset.open(world)
        spec = ds.spec()
        if protocol.world:
            log(f"using the given world {ds.root}; the protocol's world overrides {protocol.world} are not applied")
        return ds.root, spec.world.channel_similarity
    path = root / "worlds" / "base"
    if not (path / MANIFEST).exists():
        spec = load_spec(overrides=protocol.world)
        started = time.perf_counter()
        generate(spec, path)
        log(f"generated the shared world {path} ({spec.world.impressions:,} impressions) in "
            f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    ds = Dataset.open(path)
    return ds.root, ds.spec().world.channel_similarity


def ensure_datasets(plan_: Plan) -> None:
    for key, path in plan_.worlds.items():
        if not (Path(path) / MANIFEST).exists():
            raise DataError(f"dataset {key} is missing at {path}")


# --------------------------------------------------------------------------------------------------- the whole run
def run_experiments(
    protocol: Protocol,
    out: str | Path,
    *,
    world: str | Path | None = None,
    report: bool = True,
    log: LogFn = print,
    progress: ProgressFn | None = None,
) -> Path:
    """Plan, prepare the datasets, run every missing cell, then (with `report`) aggregate and write the reports.

    Everything lands under `out`: worlds/, cells/ (one folder per cell, result.json last), models/ (only those
    reused), results.json, summary.md, report.html and plots/. Re-running skips finished cells.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write_json(protocol.model_dump(mode="json"), root / "protocol.json")
    base, similarity = base_world(protocol, root, world, log)
    plan_ = plan(protocol, root, base, similarity)
    prepare_worlds(plan_, log)
    ensure_datasets(plan_)
    run_cells(plan_, log=log, progress=progress)
    if report:
        from coldcast.evaluation.aggregate import aggregate
        from coldcast.evaluation.experiments_report import write_experiment_reports

        results = aggregate(plan_, log=log)
        write_experiment_reports(results, root, log=log)
    return root
