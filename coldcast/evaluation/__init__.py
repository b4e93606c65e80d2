"""Offline evaluation, the promotion gate and the budget-split A/B simulator (numpy, pandas and pydantic only)."""

from coldcast.evaluation.abtest import (
    ABResult,
    ArmStats,
    Lift,
    Scorer,
    Segment,
    oracle_scorer,
    random_scorer,
    simulate_ab,
)
from coldcast.evaluation.gate import GateCheck, GateVerdict, bless
from coldcast.evaluation.metrics import MetricSet, MetricValue, compute_metrics
from coldcast.evaluation.report import (
    EvaluationReport,
    Figure,
    Population,
    TaskReport,
    TrainingReference,
    evaluate_predictions,
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
    "Scorer",
    "Segment",
    "TaskReport",
    "TrainingReference",
    "bless",
    "compute_metrics",
    "evaluate_predictions",
    "oracle_scorer",
    "random_scorer",
    "simulate_ab",
    "training_reference",
]
