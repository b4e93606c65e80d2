"""Binary-outcome metrics (AP, ROC-AUC, log loss, calibration) with vectorised, seeded bootstrap intervals."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from coldcast.core.records import Record

Strategy = Literal["quantile", "uniform"]

# Whether a larger value of each gateable metric is better (log loss and ECE are errors).
HIGHER_IS_BETTER: dict[str, bool] = {"average_precision": True, "auc": True, "log_loss": False, "ece": False}
# Metrics a MetricSet carries, with an interval each.
ALL_METRICS: tuple[str, ...] = ("average_precision", "auc", "log_loss", "ece", "predicted_observed")
# Same clipping as scikit-learn's log_loss for float64 predictions.
_EPS = float(np.finfo(np.float64).eps)
# Bootstrap replicates are computed in chunks so that a (replicates x rows) array stays under ~32 MB.
_CHUNK_CELLS = 4_000_000
_POISSON_LEVELS = 2**16
# An interval needs this share of replicates where the metric is defined (a tiny slice may resample no positives).
_MIN_DEFINED_SHARE = 0.9


class MetricValue(Record):
    """One metric: its value (None when undefined, with the reason) and a bootstrap 95% interval."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.value is not None


class CalibrationBin(Record):
    """One equal-width bin of predicted probability."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


class MetricSet(Record):
    """Every metric of one score vector on one set of rows."""

    rows: int
    positives: int
    mean_predicted: float | None
    observed_rate: float | None
    average_precision: MetricValue
    auc: MetricValue
    log_loss: MetricValue
    ece: MetricValue
    predicted_observed: MetricValue
    calibration: list[CalibrationBin]

    def metric(self, name: str) -> MetricValue:
        """The metric called `name` (one of ALL_METRICS)."""
        if name not in ALL_METRICS:
            raise KeyError(f"unknown metric {name!r}; metrics are {list(ALL_METRICS)}")
        value: MetricValue = getattr(self, name)
        return value


# --------------------------------------------------------------------------------------------------- point metrics
def average_precision(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Average precision as scikit-learn defines it (step-wise, ties grouped); NaN without positives."""
    return float(_ranking(*_prepare(y, p), _weights_row(weights, len(y)))[0][0])


def roc_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC-AUC (ties count one half); NaN unless both classes are present."""
    return float(_ranking(*_prepare(y, p), _weights_row(weights, len(y)))[1][0])


def log_loss(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean binary cross-entropy with scikit-learn's clipping; NaN on no rows."""
    y, p = _prepare(y, p)
    return float(_all(y, p, 2, _weights_row(weights, len(y)))["log_loss"][0])


def expected_calibration_error(
    y: np.ndarray,
    p: np.ndarray,
    bins: int,
    weights: np.ndarray | None = None,
    *,
    strategy: Strategy = "uniform",
) -> float:
    """Sum over calibration bins of (share of rows) x |mean prediction - observed rate|."""
    y, p = _prepare(y, p)
    return float(_all(y, p, bin_edges(p, bins, strategy), _weights_row(weights, len(y)))["ece"][0])


def predicted_observed(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Sum of predictions over sum of outcomes (1 is calibrated on average); NaN without positives."""
    y, p = _prepare(y, p)
    return float(_all(y, p, bin_edges(p, 2, "uniform"), _weights_row(weights, len(y)))["predicted_observed"][0])


def bin_edges(p: np.ndarray, bins: int, strategy: Strategy) -> np.ndarray:
    """Calibration bin edges as scikit-learn's calibration_curve draws them: equal width, or equal row counts
    (quantiles of the predictions, tied edges merged)."""
    if bins < 2:
        raise ValueError(f"calibration needs at least 2 bins, not {bins}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, bins + 1)
    if strategy != "quantile":
        raise ValueError(f"unknown calibration strategy {strategy!r}; use 'quantile' or 'uniform'")
    if len(p) == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    edges = np.unique(np.percentile(np.asarray(p, dtype=np.float64), np.linspace(0, 100, bins + 1)))
    return edges if len(edges) > 1 else np.array([edges[0], edges[0]])


def calibration_curve(
    y: np.ndarray, p: np.ndarray, bins: int, *, strategy: Strategy = "uniform"
) -> list[CalibrationBin]:
    """Mean prediction and observed rate per calibration bin (for reliability plots); empty bins included."""
    y, p = _prepare(y, p)
    edges = bin_edges(p, bins, strategy)
    k = len(edges) - 1
    idx = _bin_index(p, edges)
    count = np.bincount(idx, minlength=k)
    sum_p = np.bincount(idx, weights=p, minlength=k)
    sum_y = np.bincount(idx, weights=y, minlength=k)
    return [
        CalibrationBin(
            lower=float(edges[b]),
            upper=float(edges[b + 1]),
            count=int(count[b]),
            mean_predicted=float(sum_p[b] / count[b]) if count[b] else None,
            observed_rate=float(sum_y[b] / count[b]) if count[b] else None,
        )
        for b in range(k)
    ]


# --------------------------------------------------------------------------------------------------- with intervals
def compute_metrics(
    y: np.ndarray,
    p: np.ndarray,
    *,
    bins: int = 10,
    strategy: Strategy = "uniform",
    bootstrap: int = 0,
    seed: int | Sequence[int] = 0,
) -> MetricSet:
    """All metrics of scores `p` against 0/1 outcomes `y`, with percentile 95% intervals from `bootstrap` resamples.

    Resampling is the Poisson bootstrap: every row gets a Poisson(1) count per replicate (the large-sample
    limit of drawing rows with replacement), used as weights, so every metric of every replicate comes from one
    sort and a few cumulative sums, and no replicate needs the others' draws. The counts depend only on the
    seed and the row's position in `y`, so two score vectors on the same rows with the same seed see exactly
    the same resamples (a model and the ground truth, a candidate and the promoted model).
    """
    y, p = _prepare(y, p)
    n, positives = len(y), int(y.sum())
    reasons = _reasons(n, positives)
    edges = bin_edges(p, bins, strategy)
    order = np.argsort(-p, kind="mergesort")
    point = _all(y[order], p[order], edges, np.ones((1, n)), presorted=True)
    intervals: dict[str, tuple[float | None, float | None]] = dict.fromkeys(ALL_METRICS, (None, None))
    if bootstrap > 0 and n > 0:
        reps = _replicates(y, p, edges, bootstrap, seed, order=order)
        for name in ALL_METRICS:
            values = reps[name]
            finite = values[np.isfinite(values)]
            if len(finite) >= _MIN_DEFINED_SHARE * len(values) and np.isfinite(point[name][0]):
                low, high = np.percentile(finite, [2.5, 97.5])
                intervals[name] = (float(low), float(high))
    values = {}
    for name in ALL_METRICS:
        v = float(point[name][0])
        low, high = intervals[name]
        if np.isfinite(v):
            values[name] = MetricValue(value=v, low=low, high=high)
        else:
            values[name] = MetricValue(value=None, reason=reasons.get(name, "undefined"))
    return MetricSet(
        rows=n,
        positives=positives,
        mean_predicted=float(p.mean()) if n else None,
        observed_rate=float(y.mean()) if n else None,
        calibration=calibration_curve(y, p, bins, strategy=strategy),
        **values,
    )


def paired_lift(
    y: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    metric: str = "average_precision",
    bootstrap: int = 200,
    seed: int | Sequence[int] = 0,
) -> MetricValue:
    """Relative change of `metric` from `reference` to `candidate` scores on the same rows, (c - r) / r, with a
    paired bootstrap 95% interval: both score vectors are judged on identical resamples, so the interval shows
    what the test rows can resolve, not the two figures' separate noise."""
    if metric not in ALL_METRICS:
        raise KeyError(f"unknown metric {metric!r}; metrics are {list(ALL_METRICS)}")
    y, c = _prepare(y, candidate)
    _, r = _prepare(y, reference)
    edges_c, edges_r = bin_edges(c, 10, "uniform"), bin_edges(r, 10, "uniform")
    ones = np.ones((1, len(y)))
    point_c, point_r = _all(y, c, edges_c, ones)[metric][0], _all(y, r, edges_r, ones)[metric][0]
    if not (np.isfinite(point_c) and np.isfinite(point_r)) or point_r == 0:
        return MetricValue(value=None, reason=_reasons(len(y), int(y.sum())).get(metric, "undefined"))
    value = float((point_c - point_r) / abs(point_r))
    if bootstrap <= 0:
        return MetricValue(value=value)
    rep_c = _replicates(y, c, edges_c, bootstrap, seed)[metric]
    rep_r = _replicates(y, r, edges_r, bootstrap, seed)[metric]
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = (rep_c - rep_r) / np.abs(rep_r)
    finite = lifts[np.isfinite(lifts)]
    if len(finite) < _MIN_DEFINED_SHARE * len(lifts):
        return MetricValue(value=value, reason="too few resamples where the metric is defined for an interval")
    low, high = np.percentile(finite, [2.5, 97.5])
    return MetricValue(value=value, low=float(low), high=float(high))


def stable_seed(*parts: object) -> list[int]:
    """A seed sequence from strings / numbers that does not depend on Python's hash randomisation."""
    return [zlib.crc32(str(part).encode()) for part in parts]


def _reasons(n: int, positives: int) -> dict[str, str]:
    if n == 0:
        return dict.fromkeys(ALL_METRICS, "no rows")
    out = {}
    if positives == 0:
        out.update(
            average_precision="no positives", auc="one class only (no positives)", predicted_observed="no positives"
        )
    elif positives == n:
        out["auc"] = "one class only (no negatives)"
    return out


def _replicates(
    y: np.ndarray,
    p: np.ndarray,
    edges: np.ndarray,
    bootstrap: int,
    seed: int | Sequence[int],
    *,
    order: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(y)
    # Sort once. Counts are drawn in the caller's row order and then permuted with the rows, so that other
    # scores of the same rows under the same seed get the same resamples (paired comparisons).
    order = np.argsort(-p, kind="mergesort") if order is None else order
    y, p = y[order], p[order]
    terms = _terms(y, p, edges).astype(np.float32)
    chunk = max(1, _CHUNK_CELLS // n)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ALL_METRICS}
    for start in range(0, bootstrap, chunk):
        b = min(chunk, bootstrap - start)
        # Small integer counts keep the cumulative sums exact and their memory traffic low.
        draws = rng.integers(0, _POISSON_LEVELS, size=(b, n), dtype=np.uint16)
        counts = np.take(_poisson_table()[draws], order, axis=1)
        for name, values in _all(y, p, edges, counts, terms=terms, presorted=True).items():
            parts[name].append(values)
    return {name: np.concatenate(v) for name, v in parts.items()}


def _all(
    y: np.ndarray,
    p: np.ndarray,
    edges: np.ndarray,
    w: np.ndarray,
    *,
    terms: np.ndarray | None = None,
    presorted: bool = False,
) -> dict[str, np.ndarray]:
    """Every metric for each row of the weight matrix w (replicates x rows)."""
    b = w.shape[0]
    if len(y) == 0:
        return {name: np.full(b, np.nan) for name in ALL_METRICS}
    ap, auc = _ranking(y, p, w, presorted=presorted)
    terms = _terms(y, p, edges) if terms is None else terms
    # Replicates (integer counts) sum in float32: ample for 4-digit metrics and twice as fast; the point
    # estimate (float weights) stays in float64 so that it matches scikit-learn to rounding.
    if w.dtype.kind == "f":
        sums = w.astype(np.float64, copy=False) @ terms
    else:
        sums = (w.astype(np.float32) @ terms.astype(np.float32, copy=False)).astype(np.float64)
    total, loss, observed, predicted = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "average_precision": ap,
            "auc": auc,
            "log_loss": np.where(total > 0, loss / total, np.nan),
            "ece": np.where(total > 0, np.abs(sums[:, 4:]).sum(axis=1) / total, np.nan),
            "predicted_observed": np.where(observed > 0, predicted / observed, np.nan),
        }


def _ranking(y: np.ndarray, p: np.ndarray, w: np.ndarray, *, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """AP and ROC-AUC per weight row (replicates x rows), with tied scores forming one threshold.

    Both only need cumulative weights at the positives' tie groups: AP is the weighted mean over positives of
    the precision at their group's end, AUC the weighted mean over positives of the negative weight ranked
    below them (half of the tied one). The weights are summed once per segment between those group boundaries
    (one pass, nothing of size replicates x rows written); the rest runs over positives.
    """
    if not presorted:
        order = np.argsort(-p, kind="mergesort")
        y, p, w = y[order], p[order], w[:, order]
    b, n = w.shape
    pos_rows = np.flatnonzero(y == 1)
    if n == 0 or len(pos_rows) == 0:
        nan = np.full(b, np.nan)
        return nan, nan
    starts = np.r_[0, np.flatnonzero(np.diff(p)) + 1]
    ends = np.r_[starts[1:] - 1, n - 1]
    group = np.searchsorted(starts, pos_rows, side="right") - 1
    lo, hi = starts[group], ends[group]
    # prefix(x) = weight of rows [0, x): needed at every lo and hi + 1
    cuts = np.unique(np.r_[0, lo, hi + 1])
    cuts = cuts[cuts < n]
    sums = np.add.reduceat(w, cuts, axis=1, dtype=np.float64 if w.dtype.kind == "f" else np.int64)
    prefix = np.concatenate([np.zeros((b, 1)), np.cumsum(sums, axis=1, dtype=np.float64)], axis=1)
    cuts = np.r_[cuts, n]
    wp = w[:, pos_rows].astype(np.float64)
    tp = np.cumsum(wp, axis=1)
    k_hi = np.searchsorted(pos_rows, hi, side="right") - 1
    k_lo = np.searchsorted(pos_rows, lo, side="left") - 1
    tp_hi = tp[:, k_hi]
    tp_lo = np.where(k_lo >= 0, tp[:, np.maximum(k_lo, 0)], 0.0)
    cw_hi = prefix[:, np.searchsorted(cuts, hi + 1)]
    cw_lo = prefix[:, np.searchsorted(cuts, lo)]
    total = prefix[:, -1]
    pos = tp[:, -1]
    neg = total - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.divide(tp_hi, cw_hi, out=np.zeros_like(tp_hi), where=cw_hi > 0)
        ap = np.where(pos > 0, (wp * precision).sum(axis=1) / pos, np.nan)
        neg_hi, neg_lo = cw_hi - tp_hi, cw_lo - tp_lo
        below = neg[:, None] - neg_hi + 0.5 * (neg_hi - neg_lo)
        auc = np.where((pos > 0) & (neg > 0), (wp * below).sum(axis=1) / (pos * neg), np.nan)
    return ap, auc


def _terms(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-row terms whose weighted sums give every metric but AP and AUC: one matrix product per chunk.

    Columns: 1, log loss, y, p, then (p - y) in the row's calibration bin, because
    share_b x |mean_p_b - rate_b| == |sum over bin b of (p - y)| / total.
    """
    pc = np.clip(p, _EPS, 1 - _EPS)
    gap = np.zeros((len(y), len(edges) - 1))
    gap[np.arange(len(y)), _bin_index(p, edges)] = p - y
    return np.column_stack([np.ones(len(y)), -(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc)), y, p, gap])


def poisson_weights(replicates: int, n: int, *, seed: int | Sequence[int] = 0) -> np.ndarray:
    """Poisson(1) bootstrap weights, one row per replicate and one column per row resampled (uint8)."""
    rng = np.random.default_rng(seed)
    return _poisson_table()[rng.integers(0, _POISSON_LEVELS, size=(replicates, n), dtype=np.uint16)]


@functools.cache
def _poisson_table() -> np.ndarray:
    """Poisson(1) quantiles at 2**16 equally spaced levels: a uniform 16-bit draw indexes a Poisson(1) count.

    Four times faster than numpy's Poisson sampler; the discretisation moves each probability by < 2**-16.
    """
    pmf = np.array([math.exp(-1.0) / math.factorial(k) for k in range(20)])
    levels = (np.arange(_POISSON_LEVELS) + 0.5) / _POISSON_LEVELS
    return np.searchsorted(np.cumsum(pmf), levels).astype(np.uint8)


def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each prediction, as scikit-learn assigns it (a value on an inner edge falls in the lower bin)."""
    return np.searchsorted(edges[1:-1], p, side="left").astype(np.int64)


def _weights_row(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64).reshape(1, -1)
    if w.shape[1] != n:
        raise ValueError(f"weights have {w.shape[1]} entries for {n} rows")
    return w


def _prepare(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} outcomes but {len(p)} predictions")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 or 1 (drop unlabelled rows first)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("predictions must be finite probabilities in [0, 1]")
    return y, p
