"""An EfficientNet-B0-style classifier (MBConv blocks: 1x1 expand, 3x3 or 5x5 depthwise,
squeeze-excite on the pooled tensor, 1x1 projection; SiLU written as Sigmoid and Mul) of
handwritten digits (examples/digit_efficientnet.py), in ONNX Runtime and in OpenVINO. Its
depthwise convs read float SiLU outputs, so unlike the MobileNetV2's ReLU6 ones they form no
integer chain and stay float; every layer quantized runs in an integer kernel."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from examples import digit_efficientnet
from tests.strip_models import quantized
from lowprec_core._runtime import optimized_graph

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    return digit_efficientnet.images()


def _top1(session, data) -> float:
    return float(np.mean(session.run(None, {"image": data["eval_x"]})[0].argmax(1) == data["eval_y"]))


def _depthwise() -> set[str]:
    model = onnx.load(str(digit_efficientnet.MODEL))
    return {node.name for node in model.graph.node if node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)}


def test_the_efficientnet_runs_every_quantized_layer_in_an_integer_kernel_in_onnx_runtime(tmp_path, data):
    fp32 = _top1(runtime.serving_session(str(digit_efficientnet.MODEL)), data)
    assert fp32 >= 0.98  # measured 0.9975 on the 400 held-out digits
    out, report = quantized(tmp_path, data, digit_efficientnet.MODEL, lp.QuantConfig())
    depthwise = _depthwise()
    assert len(depthwise) == 16 and depthwise <= set(report.plan.skipped)
    # The squeeze-excite convs over the floor (14 of 16) and the 640 -> 10 classifier read pooled
    # tensors quantized for them alone and feed float ops: 384-13824 products a sample, lone.
    lone = {name for name, why in report.plan.skipped.items() if "quantized for it alone" in why}
    assert len(lone) == 15 and {name for name in lone if "reduce" in name} | {"/net/net.21/Gemm"} == lone, lone
    kernels = collections.Counter(node.op_type for node in optimized_graph(str(out)).graph.node)
    # No quantized conv is left as a float Conv between a DequantizeLinear and its reader.
    assert kernels["QLinearConv"] == len(report.plan.nodes) == 19 and kernels["QGemm"] == 0, kernels
    int8 = _top1(runtime.serving_session(str(out)), data)
    assert int8 >= fp32 - 0.01, (int8, fp32)  # measured 0.9975
    # With the floor off (every layer quantized: the latency search's floor 0) they are quantized.
    _, every = quantized(tmp_path, data, digit_efficientnet.MODEL, lp.QuantConfig(min_reduction=0))
    assert lone <= set(every.plan.nodes)


def test_the_efficientnet_keeps_fp32s_top1_in_openvino(tmp_path, data):
    pytest.importorskip("openvino")
    fp32 = _top1(runtime.serving_session(str(digit_efficientnet.MODEL), runtime="openvino", precision="f32"), data)
    out, report = quantized(tmp_path, data, digit_efficientnet.MODEL, lp.QuantConfig(target="openvino"))
    assert len(report.plan.nodes) >= 30, report.plan.skipped
    int8 = _top1(runtime.serving_session(str(out), runtime="openvino"), data)
    assert int8 >= fp32 - 0.01, (int8, fp32)  # measured 0.9975 on Zen 4 (FP32 0.9975)
