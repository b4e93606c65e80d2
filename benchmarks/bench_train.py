"""Benchmark: training examples/s and peak memory, vs a plain tf.keras model and vs the input pipeline alone."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# Each measurement runs in a fresh interpreter, so its peak RSS is its own and no graph or cache carries over.
CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
import coldcast  # sets TF_USE_LEGACY_KERAS before tf.keras is touched
import tensorflow as tf
import tf_keras as keras
from coldcast.core.data import Dataset
from coldcast.core.spec import load_spec
from coldcast.model import train as training
from coldcast.model.multitask import MultiTaskModel, model_features
from coldcast.model.layers import ENCODERS, FeatureEncoder, Tower
from coldcast.model.scoring import input_signature

spec = load_spec()
ds = Dataset.open(args["world"])
files = ds.shards(ds.split(spec)["train"])
B, S = spec.training.batch_size, args["steps"]
sources = spec.source_names


class Clock(keras.callbacks.Callback):
    # Times batches after the first, so tracing and warm-up are not counted.
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def materialised():
    # The same batches held in memory, so the model comparison is not bound by input.
    data = training.training_dataset(files, spec, B, 64, 0, sources).cache()
    for _ in data:
        pass
    return data.repeat()


class PlainKeras(keras.Model):
    # The same layers as coldcast's model, trained the stock way: compile(loss=...) with per-task sample weights.
    def __init__(self):
        super().__init__()
        stats = training.numeric_stats(files, spec)
        self.features = FeatureEncoder(model_features(spec), spec.model, stats)
        self.encoder = ENCODERS[spec.model.encoder](spec.model, spec.task_names)
        self.towers = {t: Tower(t, spec.model) for t in spec.task_names}

    def call(self, features, training=None):
        z = self.encoder(self.features(features), training=training)
        return {t: self.towers[t](z[t], training=training)[:, None] for t in spec.task_names}


mode = args["mode"]
result = {"mode": mode, "steps": S, "batch": B}
if mode == "input":
    data = training.training_dataset(files, spec, B, S + 1, 0, sources)
    it = iter(data)
    next(it)
    start = time.perf_counter()
    for _ in range(S):
        next(it)
    result["examples_per_s"] = S * B / (time.perf_counter() - start)
elif mode in ("coldcast", "keras"):
    keras.utils.set_random_seed(1)
    data = materialised()
    clock = Clock()
    if mode == "coldcast":
        model = MultiTaskModel(spec, training.numeric_stats(files, spec))
        model.compile(optimizer=keras.optimizers.Adam(spec.training.learning_rate))
        model.fit(data, steps_per_epoch=S, epochs=1, verbose=0, callbacks=[clock])
    else:
        model = PlainKeras()
        model.compile(
            optimizer=keras.optimizers.Adam(spec.training.learning_rate),
            loss={t: keras.losses.BinaryCrossentropy() for t in spec.task_names},
        )
        columns = lambda f, y, w: (f, {t: v[:, None] for t, v in y.items()}, w)  # noqa: E731
        model.fit(data.map(columns), steps_per_epoch=S, epochs=1, verbose=0, callbacks=[clock])
    result["examples_per_s"] = (S - 1) * B / (clock.end - clock.start)
elif mode == "e2e":
    clock = Clock()
    training.train(spec, args["world"], args["out"], steps_per_epoch=S, epochs=1, overwrite=True, verbose=0,
                   log=lambda _: None, callbacks=[clock])
    result["examples_per_s"] = (S - 1) * B / (clock.end - clock.start)
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def measure(**args: object) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{args['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_world(path: Path, impressions: int) -> Path:
    if not (path / "manifest.json").exists():
        print(f"generating a {impressions:,}-impression world in {path} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "coldcast.cli", "generate", "--out", str(path), "--impressions", str(impressions)],
            check=True,
            capture_output=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worlds", type=Path, default=Path("runs/bench"), help="Where the benchmark worlds live.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of 1,024 rows per measurement.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=5_000_000, help="Impressions of the memory-check world.")
    parser.add_argument(
        "--only",
        default="input,coldcast,keras,e2e,e2e-large",
        help="Comma-separated variants to run: input, coldcast, keras, e2e, e2e-large (ratios need their pairs).",
    )
    args = parser.parse_args()
    wanted = {k.strip() for k in args.only.split(",") if k.strip()}
    small = args.worlds / "world-1m"
    large = args.worlds / f"world-{args.large // 1_000_000}m"
    # key -> (printed name, measurement arguments)
    every = {
        "input": ("input pipeline alone", {"mode": "input", "world": str(small)}),
        "coldcast": ("coldcast model, in-memory batches", {"mode": "coldcast", "world": str(small)}),
        "keras": ("plain tf.keras fit, in-memory batches", {"mode": "keras", "world": str(small)}),
        "e2e": ("coldcast train(), 1M world", {"mode": "e2e", "world": str(small), "out": str(args.worlds / "m1")}),
        "e2e-large": (
            f"coldcast train(), {args.large // 1_000_000}M world",
            {"mode": "e2e", "world": str(large), "out": str(args.worlds / "m2")},
        ),
    }
    if not wanted <= set(every):
        parser.error(f"--only: unknown variant(s) {sorted(wanted - set(every))}; choose from {list(every)}")
    ensure_world(small, 1_000_000)
    if "e2e-large" in wanted:
        ensure_world(large, args.large)
    names = {key: name for key, (name, _) in every.items()}
    variants = {name: v for key, (name, v) in every.items() if key in wanted}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for run in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, v in variants.items():
            r = measure(steps=args.steps, **v)
            results[name].append(r)
            print(f"run {run + 1}: {name:<40} {r['examples_per_s']:>9,.0f} ex/s  peak {r['peak_rss_mb']:>6,.0f} MB")
    med = {
        name: (
            statistics.median(r["examples_per_s"] for r in rs),
            statistics.median(r["peak_rss_mb"] for r in rs),
        )
        for name, rs in results.items()
    }
    print(f"\nmedians of {args.repeats} runs, {args.steps} steps of 1,024 rows, default spec")
    print(f"{'variant':<42} {'examples/s':>11} {'peak RSS MB':>12}")
    for name, (rate, peak) in med.items():
        print(f"{name:<42} {rate:>11,.0f} {peak:>12,.0f}")

    def ratio(a: str, b: str, what: str, target: str, field: str = "examples_per_s", unit: str = "") -> None:
        if a in wanted and b in wanted:
            per_run = [ra[field] / rb[field] for ra, rb in zip(results[names[a]], results[names[b]], strict=True)]
            at = 0 if field == "examples_per_s" else 1  # position in the medians
            value = med[names[a]][at] / med[names[b]][at]
            runs = ", ".join(f"{r:.2f}" for r in per_run)
            print(f"{what}: {value:.2f}{unit} on medians; per run {runs} ({target})")

    print()
    ratio("coldcast", "keras", "coldcast model / plain tf.keras fit", "target >= 0.9")
    ratio("input", "e2e", "input pipeline / coldcast train()", "target >= 3x", unit="x")
    ratio("e2e-large", "e2e", f"peak memory {args.large // 1_000_000}M / 1M world", "flat is 1.0", field="peak_rss_mb")


if __name__ == "__main__":
    main()
