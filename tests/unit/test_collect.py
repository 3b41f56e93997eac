"""collect: one streaming ORT pass, a batch at a time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from lowprec_core import _runtime as runtime
from lowprec_core._calibration.collect import collect
from lowprec_core._calibration.observers import ChannelObserver, TensorObserver
from lowprec_core._errors import DataError
from tests.models import conv_relu_conv, feeds

REQUESTS = {"x": 1, "r1": 1, "y": None}


def test_statistics_equal_running_and_observing_each_batch_in_turn():
    model = conv_relu_conv()
    batches = feeds(model, batches=5, batch=3)
    stats = collect(model, iter(batches), REQUESTS, model_sha256="m")

    probe = conv_relu_conv()
    probe.graph.output.append(onnx.ValueInfoProto(name="r1"))
    sess = runtime.session(probe)
    tensors = {name: TensorObserver() for name in REQUESTS}
    channels = {name: ChannelObserver(axis) for name, axis in REQUESTS.items() if axis is not None}
    for feed in batches:
        y, r1 = sess.run(["y", "r1"], feed)
        for name, value in (("x", feed["x"]), ("r1", r1), ("y", y)):
            tensors[name].update(value, bounds=channels[name].update(value) if name in channels else None)
    assert stats.samples == 15
    for name, observer in tensors.items():
        got = stats.tensors[name]
        assert (got.minimum, got.maximum, got.count) == (observer.minimum, observer.maximum, observer.count)
        assert got.mean_min == observer.sum_batch_min / 5 and got.mean_max == observer.sum_batch_max / 5
        assert np.array_equal(got.histogram, observer.histogram)
        if name in channels:
            assert np.array_equal(got.channel_mean, channels[name].mean)
            assert np.array_equal(got.channel_max, channels[name].maximum)


def test_a_feed_ort_rejects_is_named_by_its_index():
    model = conv_relu_conv()
    batches = feeds(model, batches=3, batch=2)
    batches[1] = {"x": np.zeros((2, 5, 8, 8), np.float32)}  # 5 channels where the Conv takes 3
    with pytest.raises(DataError, match="calibration feed 1 failed in ONNX Runtime"):
        collect(model, iter(batches), REQUESTS, model_sha256="m")
