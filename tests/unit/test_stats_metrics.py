import numpy as np
import pytest

from lowprec_core._calibration.observers import ChannelObserver, TensorObserver
from lowprec_core._calibration.stats import Statistics, TensorStats, load_statistics
from lowprec_core._errors import ConfigError, StatsError
from lowprec_core._metrics import METRICS, agreement, cosine, drop, mse, top1


def test_observer_streams_and_merges_like_one_pass():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(scale=s, size=1000).astype(np.float32) for s in (0.1, 3.0, 0.5, 40.0, 1.0)]
    one = TensorObserver()
    for chunk in chunks:
        one.update(chunk)
    a, b = TensorObserver(), TensorObserver()
    for chunk in chunks[:2]:
        a.update(chunk)
    for chunk in chunks[2:]:
        b.update(chunk)
    merged = a.merge(b)
    assert (merged.minimum, merged.maximum, merged.count) == (one.minimum, one.maximum, one.count)
    assert merged.radius == one.radius == 256.0  # the smallest power of two over max |x|
    np.testing.assert_array_equal(merged.histogram, one.histogram)
    assert one.histogram.sum() == 5000
    assert merged.rank == one.rank == 1 and a.merge(TensorObserver()).rank == 1


def test_observer_keeps_the_rank_only_while_batches_agree():
    obs = TensorObserver()
    obs.update(np.ones((2, 3), np.float32))
    obs.update(np.ones((5, 3), np.float32))
    assert obs.rank == 2
    obs.update(np.ones((2, 3, 1), np.float32))
    assert obs.rank == -1
    other = TensorObserver()
    other.update(np.ones(4, np.float32))
    assert TensorObserver(rank=2, batches=1).merge(other).rank == -1


def test_histogram_bins_hold_the_right_values():
    obs = TensorObserver()
    obs.update(np.array([0.3, 0.3, -0.9], np.float32))
    edges = np.linspace(-obs.radius, obs.radius, obs.histogram.size + 1)
    filled = {round(float(edges[i]), 3): int(c) for i, c in enumerate(obs.histogram) if c}
    assert obs.radius == 1.0 and sum(filled.values()) == 3
    assert filled[max(k for k in filled if k <= 0.3)] == 2 and filled[max(k for k in filled if k <= -0.9)] == 1


@pytest.mark.parametrize("steps, channels", [(50, 256), (50, 384), (300, 63)])  # strides 2, 3 and 3 wanted
def test_a_sampled_histogram_sees_every_channel_alike(steps, channels):
    """A batch over the histogram's sample size feeds it every k-th value: k must not lock onto
    the channel period of a channels-last tensor ([N, T, C], a MatMul's input). One channel
    sits at -1 in every sample, the rest at +1: the histogram holds it at its share."""
    values = np.ones((16, steps, channels), np.float32)
    values[..., 1] = -1.0
    obs = TensorObserver()
    obs.update(values)
    assert obs.histogram.sum() < values.size  # sampled
    low = obs.histogram[: obs.histogram.size // 2].sum() / obs.histogram.sum()
    assert low == pytest.approx(1 / channels, rel=0.1)


def test_observer_counts_nonfinite_without_using_them():
    obs = TensorObserver()
    obs.update(np.array([1.0, np.nan, -np.inf, 3.0]))
    assert (obs.minimum, obs.maximum, obs.count, obs.nonfinite) == (1.0, 3.0, 2, 2)


def test_channel_observer_reduces_every_axis_but_one():
    obs = ChannelObserver(axis=1)
    obs.update(np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 12)
    np.testing.assert_array_equal(obs.absmax, [12, 8, 11])
    np.testing.assert_allclose(obs.mean, [-4.5, -0.5, 3.5])


def test_statistics_round_trip_and_identity(tmp_path):
    stats = Statistics("abc", 7, {
        "t": TensorStats(-1.5, 2.25, 10, radius=4.0, histogram=np.arange(8), channel_absmax=np.ones(3, np.float32)),
        "u/v": TensorStats(0.0, 1e-8, 3, 1, mean_min=0.5, mean_max=0.75, rank=3),
    })
    stats.save(tmp_path)
    assert load_statistics(tmp_path, model_sha256="abc") == stats
    # Files written before ranks were kept load with the rank unknown.
    with np.load(tmp_path / "stats.npz") as archive:
        older = {k: archive[k] for k in archive.files if k != "rank"}
    np.savez_compressed(tmp_path / "stats.npz", **older)
    assert {name: s.rank for name, s in load_statistics(tmp_path).tensors.items()} == {"t": -1, "u/v": -1}
    stats.save(tmp_path)
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


def test_class_metrics_read_class_ids_and_refuse_one_value_per_sample():
    ids = np.array([3, 1, 1, 0], dtype=np.int64)  # a classifier's labels, as skl2onnx puts them first
    np.testing.assert_array_equal(top1(ids, np.array([3, 1, 2, 0])), [1, 1, 0, 1])
    np.testing.assert_array_equal(agreement(ids, np.array([3, 2, 1, 0])), [1, 0, 1, 1])
    np.testing.assert_array_equal(agreement(np.array([True, False]), np.array([True, True])), [1, 0])
    scores = np.eye(4)[[3, 1, 1, 0]]
    np.testing.assert_array_equal(agreement(scores, ids), [1, 1, 1, 1])  # scores and ids compare alike
    # One probability per sample (a detector's score, silero VAD's speech [batch, 1]): arg-max
    # over it read every sample as class 0, and agreement was 1.0 whatever the models said.
    for one in (np.array([0.1, 0.9, 0.4]), np.array([[0.1], [0.9], [0.4]])):
        with pytest.raises(ConfigError, match="one value per sample picks no class"):
            agreement(one, one)
    with pytest.raises(ConfigError, match="'top5' ranks class scores"):
        METRICS["top5"].score(None, [ids], np.array([3, 1, 1, 0]))
