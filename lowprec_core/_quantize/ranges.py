"""Range estimators: tensor statistics -> the (low, high) range a quantizer covers. One table row each."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from .._calibration.stats import TensorStats
from .._errors import ConfigError
from .._ops import integer_range

OUTLIER_PROB = 1e-4
_MSE_FACTORS = np.linspace(0.2, 1.0, 65)  # each end of a candidate range, as a share of the observed end


def _minmax(stats: TensorStats, levels: int, symmetric: bool) -> tuple[float, float]:
    return stats.minimum, stats.maximum


def _mean_minmax(stats: TensorStats, levels: int, symmetric: bool) -> tuple[float, float]:
    return stats.mean_min, stats.mean_max


def _bins(stats: TensorStats) -> tuple[np.ndarray, np.ndarray]:
    if stats.histogram is None:
        raise ConfigError("this range estimator needs histograms; recalibrate with this version of lowprec")
    return _centres(stats.radius, stats.histogram.size), stats.histogram.astype(np.float64)


@functools.lru_cache(maxsize=64)
def _centres(radius: float, bins: int) -> np.ndarray:
    """Bin centres over [-radius, radius] (read-only: shared by every tensor of that radius)."""
    edges = np.linspace(-radius, radius, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    centres.flags.writeable = False
    return centres


def _quantile(stats: TensorStats, levels: int, symmetric: bool, prob: float = OUTLIER_PROB) -> tuple[float, float]:
    centres, counts = _bins(stats)
    cdf = np.cumsum(counts) / counts.sum()
    low = centres[min(np.searchsorted(cdf, prob), len(centres) - 1)]
    high = centres[min(np.searchsorted(cdf, 1.0 - prob), len(centres) - 1)]
    return max(float(low), stats.minimum), min(float(high), stats.maximum)


def _mse(stats: TensorStats, levels: int, symmetric: bool) -> tuple[float, float]:
    """The clipping range with the least expected squared quantization error over the histogram.

    Candidates shrink each end of the observed range; inside the range the error is the
    rounding noise (step²/12), outside it is the clipping distance. Prefix sums of the
    histogram's moments make each candidate O(log bins).
    """
    centres, counts = _bins(stats)
    keep = counts > 0
    centres, counts = centres[keep], counts[keep]
    lo0, hi0 = min(stats.minimum, 0.0), max(stats.maximum, 0.0)
    if hi0 == lo0 or centres.size == 0:
        return stats.minimum, stats.maximum
    if symmetric:  # paired ends: candidate i is (-absmax, absmax) x factor i
        absmax = max(-lo0, hi0)
        lows, highs = -absmax * _MSE_FACTORS, absmax * _MSE_FACTORS
    else:  # every pair of ends: the grid [low i, high j], from terms of each end alone
        lows, highs = (lo0 * _MSE_FACTORS)[:, None], (hi0 * _MSE_FACTORS)[None, :]
    # Moments of the bins strictly below a bound: prefix[k][i] = sum over the first i bins of c*x^k.
    prefix = [np.concatenate([[0.0], np.cumsum(moment)]) for moment in (counts, counts * centres, counts * centres**2)]
    below = np.searchsorted(centres, lows, side="left")
    above = np.searchsorted(centres, highs, side="right")
    total = [p[-1] for p in prefix]
    s0l, s1l, s2l = (p[below] for p in prefix)
    s0r, s1r, s2r = (t - p[above] for t, p in zip(total, prefix))
    left = s2l - 2 * lows * s1l + lows**2 * s0l
    right = s2r - 2 * highs * s1r + highs**2 * s0r
    step = (highs - lows) / (levels - 1)
    inside = total[0] - s0l - s0r
    best = np.unravel_index(int(np.argmin(left + right + inside * step**2 / 12.0)), step.shape)
    low, high = float(lows.reshape(-1)[best[0]]), float(highs.reshape(-1)[best[-1]])  # (i,) paired, (i, j) on the grid
    guard = outlier_channel_max(stats)
    if guard is not None:  # a few channels are systematically large: never clip them
        low, high = min(low, max(stats.minimum, -guard)), max(high, min(stats.maximum, guard))
    return low, high


def two_levels(stats: TensorStats) -> float | None:
    """c when the tensor only ever held 0 and c > 0 (one-hot codes, masks), else None: every
    value the histogram saw lies in the bin of 0 or in the bin of the maximum."""
    if stats.histogram is None or stats.minimum != 0.0 or not stats.maximum > 0.0 or stats.nonfinite:
        return None
    bins = stats.histogram.size
    zero = bins // 2
    top = min(int(stats.maximum * bins / (2 * stats.radius) + zero), bins - 1)
    held = int(stats.histogram[zero]) + (int(stats.histogram[top]) if top != zero else 0)
    return stats.maximum if held == int(stats.histogram.sum()) else None  # counts are >= 0


def median(values: np.ndarray) -> float:
    """np.median without its first-call import of numpy.ma (40 ms, a fifth of a small model's run)."""
    ordered = np.sort(np.ravel(values))
    n = ordered.size
    return float((ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


OUTLIER_CHANNEL_FACTOR = 4.0
OUTLIER_CHANNEL_SHARE = 0.02


def outlier_channel_max(stats: TensorStats) -> float | None:
    """The largest per-channel |x| when a few channels (<= 2 %) reach over 4x the median channel.

    Such channels are features, not noise (transformer LayerNorm/GELU outputs): a histogram
    sees their values as a rare tail, but every sample carries them in the same place.
    """
    absmax = stats.channel_absmax
    if absmax is None or absmax.size < 8:
        return None
    median_channel = median(absmax)
    outliers = absmax > OUTLIER_CHANNEL_FACTOR * median_channel
    if not outliers.any() or outliers.sum() > max(1, OUTLIER_CHANNEL_SHARE * absmax.size):
        return None
    return float(absmax.max())


ESTIMATORS: dict[str, Callable[[TensorStats, int, bool], tuple[float, float]]] = {
    "minmax": _minmax,
    "mean_minmax": _mean_minmax,
    "quantile": _quantile,
    "mse": _mse,
}


def activation_range(stats: TensorStats, estimator: str, dtype: type, *, symmetric: bool) -> tuple[float, float]:
    """The range for one tensor. Without a histogram (a tensor made after calibration, such as
    a SmoothQuant-scaled input) the histogram estimators fall back to min/max."""
    lo, hi = integer_range(dtype)
    if stats.histogram is None and estimator in ("quantile", "mse"):
        estimator = "minmax"
    low, high = ESTIMATORS[estimator](stats, hi - lo + 1, symmetric)
    return low, high


def weight_clip(weight: np.ndarray, axis: int | None, estimator: str, levels: int = 255) -> np.ndarray | None:
    """Per-channel (or tensor) symmetric clip values for weights, or None for plain absmax."""
    if estimator == "minmax":
        return None
    if estimator != "mse":
        raise ConfigError(f"unknown weight range estimator {estimator!r}; expected one of: minmax, mse")
    w = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1) if axis is not None else weight.reshape(1, -1)
    absmax = np.abs(w).max(axis=1)
    best = absmax.copy()
    best_err = np.full(len(absmax), np.inf)
    for factor in np.linspace(0.5, 1.0, 26):
        clip = np.where(absmax > 0, absmax * factor, 1.0)
        scale = (clip / ((levels - 1) // 2))[:, None]
        err = ((np.clip(np.rint(w / scale), -(levels // 2), levels // 2) * scale - w) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better], err[better]
    return best.astype(np.float32)
