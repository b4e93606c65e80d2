"""Benchmark: the training pipeline run locally (kfp.local) vs the same library functions called in one process.

Each variant runs in a fresh interpreter and is timed from the parent (wall time, imports included: a pipeline
task pays its own imports, one process pays them once). Variants alternate within each repeat so that the shared
machine's noise falls on both. Printed: median seconds per variant, the overhead ratio, and per step the time in
one process beside the pipeline task's time.

    python benchmarks/bench_pipeline.py                  # 100k impressions over 14 days, 3 repeats
    python benchmarks/bench_pipeline.py --impressions 300000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IN_PROCESS = r"""
import json, sys, time
args = json.loads(sys.argv[1])
steps = {}
t0 = time.perf_counter()
def step(name, t):
    steps[name] = time.perf_counter() - t
    return time.perf_counter()
t = time.perf_counter()
from pathlib import Path
from coldcast.core.data import Dataset
from coldcast.core.ingest import ingest
from coldcast.core.registry import Registry
from coldcast.core.validation import validate_dataset
from coldcast.evaluation import bless
from coldcast.evaluation.evaluate import evaluate_model
from coldcast.evaluation.render import write_reports
from coldcast.model.train import train
from coldcast.serving.package import build_bento
from coldcast.serving.store import import_model
root = Path(args["root"])
t = step("imports", t)
ingest("synthetic", root / "world", overrides=args["overrides"])
t = step("ingest-data", t)
spec = Dataset.open(root / "world").spec()
validate_dataset(root / "world", spec, root / "validated")
t = step("validate-data", t)
train(spec, root / "validated", root / "model", epochs=args["epochs"], verbose=0, log=lambda _: None)
t = step("train-model", t)
promoted = Registry(root / "registry").promoted("coldcast")
t = step("promoted-version", t)
report = evaluate_model(root / "model", root / "validated", split="test")
verdict = bless(report, spec, None)
files = write_reports(report, root / "evaluation")
verdict.write(root / "verdict.json")
t = step("evaluate-model", t)
if verdict.blessed:  # the pipeline's branch: package and register, or record the rejection
    tag = build_bento(import_model(root / "model", name="coldcast"))
    t = step("package-model", t)
    Registry(root / "registry").register(root / "model", name="coldcast", evaluation=files.json,
                                         verdict=root / "verdict.json", bento_tag=tag, promote=True)
    t = step("register-model", t)
else:
    Registry(root / "registry").reject("coldcast", source=str(root / "model"), reasons=verdict.reasons)
    t = step("reject-model", t)
print(json.dumps({"steps": steps, "blessed": verdict.blessed}))
"""

PIPELINE = r"""
import json, sys
args = json.loads(sys.argv[1])
from coldcast.pipelines.local import run_local
from coldcast.pipelines.training import training_arguments, training_pipeline
registry = args["root"] + "/registry"
arguments = training_arguments(overrides=args["overrides"], epochs=args["epochs"], registry=registry)
run = run_local(training_pipeline(registry=registry), arguments, root=args["root"], cache=args["cache"])
print(json.dumps({"steps": {t.name: t.seconds for t in run.tasks.values()},
                  "cached": run.cached, "blessed": bool(run.outputs["bento_tag"])}))
"""


def timed(script: str, args: dict) -> tuple[float, dict]:
    """Run `script` in a fresh interpreter; its wall time from here and the JSON it printed last."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True, env=os.environ.copy()
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark child failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    overrides = [
        f"world.impressions={opts.impressions}",
        f"world.days={opts.days}",
        f"world.users={max(1000, opts.impressions // 20)}",
        f"world.shows={max(200, opts.impressions // 200)}",
        "split.validation_days=3",
        "split.test_days=3",
    ]
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    results: dict[str, list[float]] = {"one process": [], "pipeline": [], "pipeline rerun": []}
    steps: dict[str, dict[str, list[float]]] = {"one process": {}, "pipeline": {}}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        os.environ["BENTOML_HOME"] = str(Path(tmp) / "bentoml")
        for r in range(opts.repeats):
            order = ["one process", "pipeline"] if r % 2 == 0 else ["pipeline", "one process"]
            for variant in order:
                root = Path(tmp) / f"{variant.replace(' ', '-')}-{r}"
                # a fresh root: the cache starts empty (every step runs) and is filled for the rerun below
                args = {"root": str(root), "overrides": overrides, "epochs": opts.epochs, "cache": True}
                seconds, out = timed(IN_PROCESS if variant == "one process" else PIPELINE, args)
                results[variant].append(seconds)
                for name, s in out["steps"].items():
                    steps[variant].setdefault(name, []).append(s)
                print(f"repeat {r + 1} {variant:<12} {seconds:7.1f} s (blessed: {out['blessed']})", flush=True)
                if variant == "pipeline":
                    # the same run again: what a rerun with nothing changed costs
                    seconds, out = timed(PIPELINE, args)
                    results["pipeline rerun"].append(seconds)
                    print(f"repeat {r + 1} {'rerun':<12} {seconds:7.1f} s (cached: {', '.join(out['cached'])})")
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{opts.impressions:,} impressions over {opts.days} days, {opts.epochs} epoch(s), {opts.repeats} repeats")
    print(f"{'variant':<16}{'median s':>10}{'vs one process':>16}")
    for name, value in median.items():
        print(f"{name:<16}{value:>10.1f}{value / median['one process']:>15.2f}x")
    # pairs from the same repeat share the machine's load at that time: their ratios show the spread
    pairs = ", ".join(f"{p / o:.2f}" for p, o in zip(results["pipeline"], results["one process"], strict=True))
    print(f"pipeline / one process per repeat: {pairs}")
    print(f"\n{'step':<18}{'one process s':>14}{'pipeline task s':>17}")
    for name in steps["pipeline"]:
        one = statistics.median(steps["one process"].get(name, [0.0]))
        print(f"{name:<18}{one:>14.1f}{statistics.median(steps['pipeline'][name]):>17.1f}")
    print(f"{'imports (once)':<18}{statistics.median(steps['one process']['imports']):>14.1f}{'-':>17}")


if __name__ == "__main__":
    main()
