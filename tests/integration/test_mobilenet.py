"""A MobileNetV2-style classifier (inverted residual blocks: 1x1 expand, 3x3 depthwise, 1x1
projection, ReLU6, residual sums) of handwritten digits (examples/digit_mobilenet.py), in ONNX
Runtime and in OpenVINO. Its depthwise convs (9 products) and thin expands sit below the CPU
rows' reduction floor and between integer 1x1s: they are quantized as integer chains."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from examples import digit_mobilenet
from tests.strip_models import quantized
from lowprec_core._runtime import optimized_graph

pytestmark = pytest.mark.slow

# The stem (1 -> 16 channels, 9 products) and the first block's depthwise conv and projection
# (16 -> 8) read no quantized tensor: fewer than requantize_min_channels out of the image.
LEADING = {"/net/net.0/net.0.0/Conv", "/net/net.1/body/body.0/body.0.0/Conv", "/net/net.1/body/body.1/body.1.0/Conv"}
CLASSIFIER = "/net/net.22/Gemm"


@pytest.fixture(scope="module")
def data():
    return digit_mobilenet.images()


def _top1(session, data) -> float:
    return float(np.mean(session.run(None, {"image": data["eval_x"]})[0].argmax(1) == data["eval_y"]))


def _quantized(tmp_path, data, runtime_name: str):
    return quantized(tmp_path, data, digit_mobilenet.MODEL, lp.QuantConfig(target=lp.runtime_target(runtime_name)))


def test_the_mobilenet_runs_its_depthwise_chains_in_integer_kernels_in_onnx_runtime(tmp_path, data):
    fp32 = _top1(runtime.serving_session(str(digit_mobilenet.MODEL)), data)
    assert fp32 >= 0.98  # measured 0.995 on the 400 held-out digits
    out, report = _quantized(tmp_path, data, "onnxruntime")
    # Every layer after the leading three, depthwise convs and 8- to 16-channel expands included,
    # but the 640 -> 10 classifier: it reads the pooled tensor, quantized for it alone, into the
    # float logits (6400 products a sample: lone, see placement.lone_layers).
    assert set(report.plan.skipped) == LEADING | {CLASSIFIER}, report.plan.skipped
    assert "quantized for it alone" in report.plan.skipped[CLASSIFIER]
    kernels = collections.Counter(node.op_type for node in optimized_graph(str(out)).graph.node)
    assert kernels["QLinearConv"] == 52 - len(LEADING) and kernels["QGemm"] == 0, kernels
    # The ten residual sums join integer convs and feed integer expands: QLinearAdd (the CPU
    # rows' integer_ops), not float sums between DQs and a Q.
    assert kernels["QLinearAdd"] == 10 and kernels["Add"] == 0 and len(report.plan.integer_ops) == 10, kernels
    int8 = _top1(runtime.serving_session(str(out)), data)
    assert int8 >= fp32 - 0.01, (int8, fp32)  # measured 0.995


def test_the_mobilenet_keeps_fp32s_top1_in_openvino(tmp_path, data):
    pytest.importorskip("openvino")
    fp32 = _top1(runtime.serving_session(str(digit_mobilenet.MODEL), runtime="openvino", precision="f32"), data)
    out, report = _quantized(tmp_path, data, "openvino")
    assert LEADING <= set(report.plan.skipped) and len(report.plan.nodes) >= 45, report.plan.skipped
    int8 = _top1(runtime.serving_session(str(out), runtime="openvino"), data)
    assert int8 >= fp32 - 0.01, (int8, fp32)  # measured 0.995 on Zen 4 (FP32 0.995)
