"""int16 pair-sum overflow (VPMADDUBSW on x86 without VNNI): which channels get 7-bit weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lowprec_core import _runtime as runtime
from lowprec_core._calibration.collect import collect
from lowprec_core._config import QuantConfig
from lowprec_core._model_io import prepare
from lowprec_core._quantize.default import quantize_model
from lowprec_core._quantize.overflow import overflow_channels
from lowprec_core._quantize.params import quantize_weight
from lowprec_core._quantize.planner import statistic_requests

FULL = np.full(4, 255.0)


def test_adjacent_pairs_over_int16_are_flagged_and_others_are_not():
    # Columns: two big weights side by side (overflows); big weights apart (fits:
    # 255 * 127 = 32385 alone); both negative side by side (overflows downwards).
    q = np.array([[127, 127, -127], [127, 0, -127], [0, 127, 0], [0, 0, 0]], dtype=np.int8)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    assert overflow_channels(node, q, FULL) == [0, 2]
    # The same weights cannot overflow when the activation stays small.
    assert overflow_channels(node, q, np.full(4, 120.0)) == []


def test_gemm_trans_b_and_conv_layouts():
    q = np.array([[127, 127, 0, 0], [127, 0, 127, 0]], dtype=np.int8)  # [N, K]
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    assert overflow_channels(gemm, q, FULL) == [0]
    # Conv [N=1, C=2, 1, 2]: NCHW im2col pairs (c0k0, c0k1), NHWC pairs (k0c0, k0c1).
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    by_tap = np.array([[[[127, 127]], [[0, 0]]]], dtype=np.int8)
    by_channel = np.array([[[[127, 0]], [[127, 0]]]], dtype=np.int8)
    assert overflow_channels(conv, by_tap, np.full(2, 255.0)) == [0]
    assert overflow_channels(conv, by_channel, np.full(2, 255.0)) == [0]


def test_narrow_channels_use_half_the_range():
    w = np.array([[1.0, 0.5], [-2.0, 0.25]], dtype=np.float32)  # channels on axis 1
    q, scale = quantize_weight(w, 1, np.int8, narrow=[0])
    assert np.abs(q[:, 0]).max() == 63 and np.abs(q[:, 1]).max() == 127
    np.testing.assert_allclose(scale, [2.0 / 63, 0.5 / 127], rtol=1e-6)


def _big_column_matmul() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (64, 8)).astype(np.float32)
    w[:, 0] = 1.0  # every product large: any pair of u8 activations near 255 overflows
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], "matmul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return prepare(model)


def test_ort_integer_kernel_matches_the_qdq_reference_on_overflowing_inputs():
    model = _big_column_matmul()
    rng = np.random.default_rng(1)
    calib = [{"x": rng.uniform(0, 10, (16, 64)).astype(np.float32)} for _ in range(4)]
    stats = collect(model, calib, statistic_requests(model, "cpu"), model_sha256="test")
    int8, plan = quantize_model(model, stats, QuantConfig(target="cpu"))
    assert plan.weights[0].narrow and 0 in plan.weights[0].narrow
    assert len(plan.weights[0].narrow) < 8  # the small columns keep 8 bits
    _, vnni_plan = quantize_model(model, stats, QuantConfig(target="cpu-vnni"))
    assert vnni_plan.weights[0].narrow == []

    x = {"x": np.full((2, 64), 9.9, dtype=np.float32)}  # every activation near the top of its range
    simulated = runtime.session(int8, optimization="disabled").run(None, x)[0]  # DQ -> float MatMul
    kernel = runtime.session(int8).run(None, x)[0]  # fused to an integer MatMul by ORT
    np.testing.assert_allclose(kernel, simulated, rtol=1e-3, atol=1e-3)
