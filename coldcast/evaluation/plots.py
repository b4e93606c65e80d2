"""Static report plots (matplotlib, no pyplot state): each function returns the PNG bytes of one figure."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
_DPI = 100


@dataclass(frozen=True)
class Point:
    """One estimate with an optional 95% interval."""

    value: float | None
    low: float | None = None
    high: float | None = None


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="tight")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _log_axes(ax: Any) -> None:
    """Log scales with plain-number labels and no minor ticks (mathtext labels and minor ticks make a log panel
    several times slower to draw)."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_locator(NullLocator())
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _err(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([np.nan if p.value is None else p.value for p in points], dtype=float)
    low = np.array([np.nan if p.low is None else p.low for p in points], dtype=float)
    high = np.array([np.nan if p.high is None else p.high for p in points], dtype=float)
    err = np.vstack([np.where(np.isnan(low), 0, values - low), np.where(np.isnan(high), 0, high - values)])
    return values, np.nan_to_num(np.maximum(err, 0))


def slice_panels(
    panels: Mapping[str, Mapping[str, Mapping[str, Point]]],
    *,
    title: str,
    xlabel: str,
) -> bytes:
    """One panel per slice: a row per slice value, a marker with its interval per series (model, ceiling, ...)."""
    names = list(panels)
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    heights = [max(len(v) for v in panels.values()) if panels else 1]
    fig = _figure(4.2 * cols, max(2.2, 0.28 * heights[0] + 1.2) * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        series = panels[name]
        labels = list(dict.fromkeys(v for s in series.values() for v in s))
        y = np.arange(len(labels))
        offsets = np.linspace(-0.15, 0.15, len(series)) if len(series) > 1 else [0.0]
        for k, (label, values) in enumerate(series.items()):
            pts = [values.get(v, Point(None)) for v in labels]
            x, err = _err(pts)
            ax.errorbar(x, y + offsets[k], xerr=err, fmt="o", ms=4, capsize=2, color=_COLORS[k % 8], label=label)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    if names:
        axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def calibration(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float, int]]]],
    *,
    title: str,
) -> bytes:
    """Reliability diagrams: per panel (task), observed rate against mean prediction per bin, on log axes
    (positive rates of 1-4% crowd a linear plot into one corner)."""
    names = list(curves)
    cols = min(3, max(1, len(names)))
    rows = math.ceil(max(1, len(names)) / cols)
    fig = _figure(4.0 * cols, 3.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        lo, hi = 1.0, 0.0
        for k, (label, bins) in enumerate(curves[name].items()):
            pts = [(p, o, n) for p, o, n in bins if n > 0 and p > 0 and o > 0]
            if not pts:
                continue
            p, o, _ = map(np.array, zip(*pts, strict=True))
            ax.plot(p, o, "o-", ms=4, color=_COLORS[k % 8], label=label)
            lo, hi = min(lo, p.min(), o.min()), max(hi, p.max(), o.max())
        if hi > lo:
            ax.plot([lo, hi], [lo, hi], "--", color="#999", lw=1, label="perfect")
            _log_axes(ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("mean predicted", fontsize=9)
        ax.set_ylabel("observed rate", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def grouped_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    ylabel: str,
    percent: bool = False,
    panels: Mapping[str, Mapping[str, Sequence[Point]]] | None = None,
) -> bytes:
    """Bars per group (e.g. popularity tier) and series, with interval whiskers; `panels` draws several side by
    side (e.g. i2s and eCPS lift), each a mapping like `series`."""
    sets = dict(panels) if panels else {"": series}
    fig = _figure(max(5.0, 0.55 * len(groups) * max(1, len(next(iter(sets.values())))) + 2) * len(sets) / 1.4, 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(sets), squeeze=False)).ravel()
    for ax, (panel, data) in zip(axes, sets.items(), strict=True):
        x = np.arange(len(groups))
        width = 0.8 / max(1, len(data))
        for k, (label, pts) in enumerate(data.items()):
            v, err = _err(pts)
            scale = 100.0 if percent else 1.0
            ax.bar(
                x + (k - (len(data) - 1) / 2) * width,
                np.nan_to_num(v) * scale,
                width,
                yerr=err * scale,
                capsize=2,
                color=_COLORS[k % 8],
                label=label,
                alpha=0.85,
            )
        ax.axhline(0, color="#444", lw=0.8)
        ax.set_xticks(x, list(groups), fontsize=8)
        ax.set_ylabel(ylabel + (" (%)" if percent else ""), fontsize=9)
        if panel:
            ax.set_title(panel, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
        if len(data) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    xticks: Sequence[str] | None = None,
) -> bytes:
    """Lines with interval bands (e.g. a learning curve, a sweep)."""
    fig = _figure(6.0, 3.8)
    ax = fig.subplots()
    xs = np.asarray(x, dtype=float)
    for k, (label, pts) in enumerate(series.items()):
        v, err = _err(pts)
        ok = ~np.isnan(v)
        color = _COLORS[k % 8]
        ax.plot(xs[ok], v[ok], "o-", color=color, label=label, ms=4)
        ax.fill_between(xs[ok], (v - err[0])[ok], (v + err[1])[ok], color=color, alpha=0.15)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(_null_locator())
    if xticks is not None:
        ax.set_xticks(xs, list(xticks))
        ax.minorticks_off()
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=11)
    return _png(fig)
