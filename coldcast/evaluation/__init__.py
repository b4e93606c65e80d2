"""Offline evaluation, reports, the promotion gate, the budget-split A/B simulator and the paper's experiments.

The metrics, reports, gate and simulator need numpy, pandas and pydantic only; scoring a model directory
(`evaluate_model`, `model_scorer`) and the experiments import TensorFlow when they run, not at import time.
"""

from coldcast.evaluation.abtest import (
    ABResult,
    ArmStats,
    Lift,
    Scorer,
    Segment,
    model_scorer,
    oracle_scorer,
    random_scorer,
    simulate_ab,
)
from coldcast.evaluation.evaluate import evaluate_model, evaluation_spec
from coldcast.evaluation.gate import GateCheck, GateVerdict, bless
from coldcast.evaluation.metrics import MetricSet, MetricValue, compute_metrics, paired_lift
from coldcast.evaluation.render import ReportFiles, read_report, write_reports
from coldcast.evaluation.report import (
    EvaluationReport,
    Figure,
    Population,
    TaskReport,
    TrainingReference,
    evaluate_predictions,
    slice_values,
    training_reference,
)

__all__ = [
    "ABResult",
    "ArmStats",
    "EvaluationReport",
    "Figure",
    "GateCheck",
    "GateVerdict",
    "Lift",
    "MetricSet",
    "MetricValue",
    "Population",
    "ReportFiles",
    "Scorer",
    "Segment",
    "TaskReport",
    "TrainingReference",
    "bless",
    "compute_metrics",
    "evaluate_model",
    "evaluate_predictions",
    "evaluation_spec",
    "model_scorer",
    "oracle_scorer",
    "paired_lift",
    "random_scorer",
    "read_report",
    "simulate_ab",
    "slice_values",
    "training_reference",
    "write_reports",
]
