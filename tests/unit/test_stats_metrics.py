import numpy as np
import pytest

from lowprec_core.calibration.observers import MinMaxObserver
from lowprec_core.calibration.stats import Statistics, TensorStats, load_statistics
from lowprec_core.errors import StatsError
from lowprec_core.metrics import METRICS, agreement, cosine, drop, mse, top1


def test_observer_streams_and_merges_like_one_pass():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=100) for _ in range(5)]
    one = MinMaxObserver()
    one.update(np.concatenate(chunks))
    a, b = MinMaxObserver(), MinMaxObserver()
    for chunk in chunks[:2]:
        a.update(chunk)
    for chunk in chunks[2:]:
        b.update(chunk)
    assert a.merge(b) == one


def test_observer_counts_nonfinite_without_using_them():
    obs = MinMaxObserver()
    obs.update(np.array([1.0, np.nan, -np.inf, 3.0]))
    assert (obs.minimum, obs.maximum, obs.count, obs.nonfinite) == (1.0, 3.0, 2, 2)


def test_statistics_round_trip_and_identity(tmp_path):
    stats = Statistics("abc", 7, {"t": TensorStats(-1.5, 2.25, 10), "u/v": TensorStats(0.0, 1e-8, 3, 1)})
    stats.save(tmp_path)
    assert load_statistics(tmp_path, model_sha256="abc") == stats
    with pytest.raises(StatsError, match="belong to model"):
        load_statistics(tmp_path, model_sha256="def")
    with pytest.raises(StatsError, match="no entry for tensor 'w'"):
        stats.require("w")
    with pytest.raises(StatsError, match="not a statistics folder"):
        load_statistics(tmp_path / "nowhere")


def test_metrics_per_sample():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    cand = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    assert list(top1(cand, np.array([1, 0, 1]))) == [1, 0, 1]
    assert list(agreement(ref, cand)) == [1, 0, 1]
    assert cosine(ref, ref) == pytest.approx([1, 1, 1])
    assert mse(ref, cand)[2] == 0 and mse(ref, cand)[1] == pytest.approx(0.16)


def test_drop_direction_follows_the_metric():
    assert drop(0.9, 0.85, METRICS["top1"].higher_is_better) == pytest.approx(0.05)
    assert drop(0.0, 0.02, METRICS["mse"].higher_is_better) == pytest.approx(0.02)
