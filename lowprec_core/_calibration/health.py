"""Calibration health: what in the statistics makes a quantized range untrustworthy.

Warnings go into the quantization report (and the log), one per tensor and kind, worst first.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .._reports import CalibrationWarning
from .stats import Statistics, TensorStats

# Fewest calibration samples each activation estimator can work from.
MIN_SAMPLES = {"minmax": 1, "mean_minmax": 8, "quantile": 100, "mse": 32}
TAIL = 1e-4  # share of values beyond which a range counts as "set by very few values"
TAIL_REACH = 4.0  # extremes this many times beyond the 99.99 % |x| bound


def check(stats: Statistics, tensors: Iterable[str], activation_range: str) -> list[CalibrationWarning]:
    warnings = []
    need = MIN_SAMPLES.get(activation_range, 1)
    if stats.samples < need:
        warnings.append(CalibrationWarning(
            tensor=None, kind="small_set",
            message=f"{stats.samples} calibration samples; the {activation_range!r} estimator wants at least {need}",
        ))
    for name in tensors:
        entry = stats.tensors.get(name)
        if entry is None:
            warnings.append(CalibrationWarning(tensor=name, kind="never_seen", message="never saw a finite value"))
            continue
        if entry.nonfinite:
            warnings.append(CalibrationWarning(
                tensor=name, kind="nonfinite",
                message=f"{entry.nonfinite} NaN/Inf values of {entry.count + entry.nonfinite}; they are left out of its range",
            ))
        if entry.maximum == entry.minimum:
            warnings.append(CalibrationWarning(tensor=name, kind="constant", message=f"constant {entry.minimum:g} over the whole set"))
            continue
        bound = tail_bound(entry)
        extreme = max(abs(entry.minimum), abs(entry.maximum))
        if bound is not None and bound > 0 and extreme > TAIL_REACH * bound:
            warnings.append(CalibrationWarning(
                tensor=name, kind="outliers",
                message=f"99.99 % of values lie within ±{bound:.4g} but the extremes reach {extreme:.4g} "
                f"({extreme / bound:.0f}x): a min/max range would waste most of its steps",
            ))
    order = {"small_set": 0, "never_seen": 1, "nonfinite": 2, "outliers": 3, "constant": 4}
    return sorted(warnings, key=lambda w: (order[w.kind], w.tensor or ""))


def tail_bound(entry: TensorStats) -> float | None:
    """The |x| below which all but a 1e-4 share of the sampled values lie, from the histogram."""
    if entry.histogram is None or entry.radius <= 0 or not entry.histogram.sum():
        return None
    bins = entry.histogram.size
    folded = entry.histogram[bins // 2 :][::-1] + entry.histogram[: bins // 2]  # |x| bins, outermost first
    outside = np.cumsum(folded) / entry.histogram.sum()  # share beyond each bin's inner edge
    inner = int(np.searchsorted(outside, TAIL, side="right"))  # bins from the outside holding <= TAIL
    width = entry.radius / (bins // 2)
    return float(entry.radius - inner * width)
