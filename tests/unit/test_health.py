"""Calibration health warnings from real observer statistics."""

from __future__ import annotations

import numpy as np

from lowprec_core._calibration.health import check, tail_bound
from lowprec_core._calibration.observers import TensorObserver
from lowprec_core._calibration.stats import Statistics, TensorStats


def _stats(values: np.ndarray) -> TensorStats:
    obs = TensorObserver()
    obs.update(values)
    return TensorStats(obs.minimum, obs.maximum, obs.count, obs.nonfinite, radius=obs.radius, histogram=obs.histogram)


def test_each_kind_of_trouble_is_named_and_a_healthy_tensor_is_not():
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, 100_000).astype(np.float32)
    spiky = normal.copy()
    spiky[:3] = 200.0  # three values set the max
    broken = normal.copy()
    broken[:5] = np.nan
    stats = Statistics("sha", 64, {
        "healthy": _stats(normal), "spiky": _stats(spiky), "broken": _stats(broken), "flat": _stats(np.zeros(10, np.float32)),
    })
    warnings = check(stats, ["healthy", "spiky", "broken", "flat", "missing"], "mse")
    kinds = {(w.tensor, w.kind) for w in warnings}
    assert kinds == {("spiky", "outliers"), ("broken", "nonfinite"), ("flat", "constant"), ("missing", "never_seen")}
    spike = next(w for w in warnings if w.kind == "outliers")
    assert "200" in spike.message
    assert 3.0 < tail_bound(stats.tensors["healthy"]) < 5.0  # N(0, 1): 99.99 % within about ±3.9


def test_too_few_samples_for_the_estimator():
    stats = Statistics("sha", 20, {})
    assert [w.kind for w in check(stats, [], "quantile")] == ["small_set"]
    assert check(stats, [], "minmax") == []
