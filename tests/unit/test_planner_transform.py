"""Plans and QDQ graphs on small seeded models, checked against onnx's ReferenceEvaluator."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from lowprec_core._calibration.collect import collect
from lowprec_core._config import QuantConfig
from lowprec_core._errors import ConfigError
from lowprec_core._graph import all_nodes
from lowprec_core._model_io import prepare
from lowprec_core._quantize.default import quantize_model
from lowprec_core._quantize.plan import QuantPlan
from lowprec_core._quantize.planner import node_entries, resolve_ignored, statistic_requests
from lowprec_core._quantize.transform import apply, edited
from lowprec_core._runtime import optimized_graph, session
from tests import models


def _quantize(model: onnx.ModelProto, config: QuantConfig = QuantConfig(), batches=None):
    """Quantize a toy graph. Its dot products are shorter than any CPU target's min_reduction,
    so the floor is off here unless a test sets it: these tests check the plan's logic."""
    if config.min_reduction is None:
        config = config.model_copy(update={"min_reduction": 0})
    prepared = prepare(model, config.runtime)
    data = batches or models.feeds(prepared)
    stats = collect(prepared, data, statistic_requests(prepared, config.target), model_sha256="test")
    int8, plan = quantize_model(prepared, stats, config)
    onnx.checker.check_model(int8)
    return prepared, int8, plan, data


def _dq_axes(model: onnx.ModelProto) -> dict[str, int | None]:
    """Weight initializer -> the axis of its DequantizeLinear."""
    int8 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    axes = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in int8:
            attr = {a.name: a.i for a in node.attribute}
            axes[node.input[0].removesuffix("_quantized")] = attr.get("axis")
    return axes


def _layer_kernels(int8: onnx.ModelProto) -> list[tuple[str, str | None]]:
    """Each Gemm/MatMul kernel ORT runs, with the op that makes its weight (DequantizeLinear:
    a float kernel on dequantized weights)."""
    graph = optimized_graph(int8).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return [(n.op_type, producers.get(n.input[1])) for n in graph.node if "Gemm" in n.op_type or "MatMul" in n.op_type]


def _fake_quant(x, scale, zp, lo, hi):
    return (np.clip(np.rint(x / scale) + zp, lo, hi) - zp) * scale


def test_conv_relu_conv_plan_fuses_relu_and_keeps_output_name():
    prepared, int8, plan, data = _quantize(models.conv_relu_conv())
    assert plan.nodes == ["conv1", "conv2"]
    assert [(f.node, f.into) for f in plan.fused] == [("relu1", "conv1")]
    assert {a.tensor for a in plan.activations} == {"x", "r1", "y"}
    assert [o.name for o in int8.graph.output] == ["y"]
    assert all(n.op_type != "Relu" for n in int8.graph.node)
    relu_out = next(a for a in plan.activations if a.tensor == "r1")
    assert relu_out.zero_point == 0  # saturation at 0 is the ReLU


def test_qdq_graph_matches_a_numpy_simulation():
    # cpu-vnni: 8-bit weights on every channel (no int16 overflow guard) to keep the simulation short.
    prepared, int8, plan, data = _quantize(models.mlp(), QuantConfig(bias_correction="none", target="cpu-vnni"))
    x = data[0]["x"]
    # The reference evaluator implements QuantizeLinear/DequantizeLinear from opset 19 on.
    got = ReferenceEvaluator(onnx.version_converter.convert_version(int8, 19)).run(None, {"x": x})[0]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in prepared.graph.initializer}
    act = {a.tensor: a for a in plan.activations}

    def fq(name, value):
        return _fake_quant(value, np.float32(act[name].scale), act[name].zero_point, 0, 255)

    def wq(w, axis):
        s = np.abs(w).max(axis=1 - axis, keepdims=True) / 127
        return np.clip(np.rint(w / s), -127, 127) * s, s.reshape(-1)

    w1, s1 = wq(inits["w1"], 0)  # transB=1: output channels on axis 0
    xq = fq("x", x)
    b1 = np.rint(inits["b1"] / (np.float32(act["x"].scale) * s1)) * (np.float32(act["x"].scale) * s1)
    h = fq("r", np.maximum(xq @ w1.T + b1, 0))
    w2, _ = wq(inits["w2"], 1)  # MatMul: last axis of B
    expected = h @ w2  # the MatMul output feeds no quantized node: it stays float
    assert "y" not in act
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    reference = ReferenceEvaluator(prepared).run(None, {"x": x})[0]
    assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (models.conv_relu_conv, {"w1": 0, "w2": 0}),
        (lambda: models.mlp(trans_b=1), {"w1": 0, "w2": 1}),
        (lambda: models.mlp(trans_b=0), {"w1": 1, "w2": 1}),
    ],
)
def test_per_channel_axis_per_op(build, expected):
    _, int8, _, _ = _quantize(build())
    assert _dq_axes(int8) == expected


def test_a_constant_first_matmul_input_stays_float_and_the_plan_says_why():
    """A graph convolution's fixed adjacency times the features (A @ X): the constant is input 0.
    It was reported as 'weight is not a float32 constant', which it is."""
    model = models.mlp()
    adjacency = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32)[::-1].copy(), "adjacency")
    model.graph.initializer.append(adjacency)
    model.graph.node.append(onnx.helper.make_node("Reshape", ["y", "shape"], ["y4"], "to_nodes"))
    model.graph.node.append(onnx.helper.make_node("MatMul", ["adjacency", "y4"], ["mixed"], "propagate"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 4, 10], np.int64), "shape"))
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("mixed", onnx.TensorProto.FLOAT, ["N", 4, 10]))
    _, _, plan, _ = _quantize(model, QuantConfig(min_reduction=0), batches=models.feeds(model, batch=4))
    assert plan.skipped["propagate"] == "its constant is input 0, and input 1, where lowprec quantizes a weight, is computed: it stays float"
    assert "matmul" in plan.nodes


def test_targets_are_table_rows():
    # cpu: ORT has no integer ConvTranspose, so it stays float; gpu quantizes it on axis 1.
    _, _, plan, _ = _quantize(models.conv_transpose())
    assert plan.nodes == [] and "no integer ConvTranspose" in plan.skipped["deconv"]
    _, int8, plan, _ = _quantize(models.conv_transpose(), QuantConfig(target="gpu"))
    assert _dq_axes(int8) == {"w": 1}
    assert {(a.dtype, a.zero_point) for a in plan.activations} == {("int8", 0)}  # s8 symmetric everywhere
    _, int8, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(target="npu"))
    assert _dq_axes(int8) == {"w1": None, "w2": None} and {a.dtype for a in plan.activations} == {"uint8"}


def test_for_openvino_a_conv_transpose_input_takes_a_grid_without_zero_point():
    """OpenVINO runs a ConvTranspose on integers only from an input without a zero point (else in
    float behind a Subtract: the U-Net `columns` ran 0.87x of FP32 so, 1.43x without). An input
    crossing 0 takes a symmetric int8 grid; a non-negative one keeps u8, its zero point 0
    already; a Conv's input keeps its asymmetric u8 grid."""
    _, _, plan, _ = _quantize(models.conv_transpose(), QuantConfig(target="openvino"))
    assert [(a.tensor, a.dtype, a.zero_point) for a in plan.activations] == [("x", "int8", 0)]
    positive = [{name: np.abs(value) for name, value in feed.items()} for feed in models.feeds(models.conv_transpose())]
    _, _, plan, _ = _quantize(models.conv_transpose(), QuantConfig(target="openvino"), batches=positive)
    assert [(a.tensor, a.dtype, a.zero_point) for a in plan.activations] == [("x", "uint8", 0)]
    _, _, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(target="openvino"))
    assert next(a for a in plan.activations if a.tensor == "x").dtype == "uint8"
    assert next(a for a in plan.activations if a.tensor == "x").zero_point != 0


def test_bias_is_int32_with_the_product_scale():
    _, int8, plan, _ = _quantize(models.conv_relu_conv())
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    assert inits["b1_quantized"].dtype == np.int32
    x_scale = np.float32(next(a.scale for a in plan.activations if a.tensor == "x"))
    np.testing.assert_array_equal(inits["b1_scale"], (x_scale * inits["w1_scale"]).astype(np.float32))


def test_a_node_named_like_an_op_type_is_ignored_alone_as_node_name():
    """skl2onnx names its MatMuls "MatMul", "MatMul1", ...: the accuracy-aware search reverted
    the node "MatMul" by name, and the name, read as an op type, sent every MatMul to float."""
    model = models.dense_mlp()
    for node in model.graph.node:
        node.name = {"dense1": "MatMul", "dense2": "MatMul1"}.get(node.name, node.name)
    prepared = prepare(model)
    assert node_entries(prepared, ["MatMul", "MatMul1"]) == ("node:MatMul", "MatMul1")
    assert resolve_ignored(prepared, ("node:MatMul",)) == {"MatMul"}
    assert resolve_ignored(prepared, ("MatMul",)) == {"MatMul", "MatMul1"}  # a bare entry is the op type
    _, _, plan, _ = _quantize(model, QuantConfig(ignore=node_entries(prepared, ["MatMul"]), min_reduction=0))
    assert plan.nodes == ["MatMul1"] and plan.skipped == {"MatMul": "ignored scope"}
    with pytest.raises(ConfigError, match="no node named 'Conv'"):
        resolve_ignored(prepared, ("node:Conv",))


def test_per_tensor_when_per_channel_is_off():
    _, int8, _, _ = _quantize(models.conv_relu_conv(), QuantConfig(per_channel=False))
    assert _dq_axes(int8) == {"w1": None, "w2": None}


def test_ignored_scope_by_name_op_type_and_pattern():
    _, _, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(ignore=("conv2",)))
    assert plan.nodes == ["conv1"] and plan.skipped == {"conv2": "ignored scope"}
    _, _, plan, _ = _quantize(models.mlp(), QuantConfig(ignore=("Gemm",)))
    assert plan.nodes == ["matmul"]
    _, _, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(ignore=("re:conv[0-9]",)))
    assert plan.nodes == []


def test_a_gemm_that_ort_fuses_with_its_activation_is_integer_or_entirely_float():
    """ORT fuses Gemm + Relu (Sigmoid, Tanh, ...) into a float FusedGemm before its QDQ fusions:
    without a quantizer between the two, the Gemm ran in float on dequantized weights."""
    # Symmetric activations cannot take the ReLU into the quantizer: the Gemm's own output is quantized.
    _, int8, plan, _ = _quantize(models.mlp(), QuantConfig(preset="performance"))
    assert plan.nodes == ["gemm", "matmul"] and {"h", "r"} <= {a.tensor for a in plan.activations}
    assert [k for k, _ in _layer_kernels(int8)] == ["QGemm", "MatMulIntegerToFloat"], _layer_kernels(int8)
    # A Dropout between the ReLU and the next layer is the identity at inference: the Gemm's
    # output quantizer still absorbs the ReLU (the zoo's AlexNet went 1.10x -> 1.56x of FP32).
    _, int8, plan, _ = _quantize(models.mlp(dropout=True))
    assert plan.nodes == ["gemm", "matmul"] and [(f.node, f.into) for f in plan.fused] == [("relu", "gemm")]
    assert [k for k, _ in _layer_kernels(int8)] == ["QGemm", "MatMulIntegerToFloat"], _layer_kernels(int8)
    # With the MatMul float, only float layers read the ReLU: the Gemm stays float too, on float weights.
    _, int8, plan, _ = _quantize(models.mlp(), QuantConfig(ignore=("MatMul",)))
    assert plan.nodes == [] and "feeds float layers only" in plan.skipped["gemm"]
    assert _layer_kernels(int8) == [("FusedGemm", None), ("MatMul", None)], _layer_kernels(int8)


def test_keras_dense_layers_written_as_matmul_add_relu_are_integer_or_entirely_float():
    """tf2onnx writes Dense(relu) as MatMul -> Add -> Relu; ORT folds MatMul + Add into a Gemm
    and then the Relu into a float FusedGemm, unless a quantizer it keeps sits in between."""
    # Asymmetric: the Relu before the next layer's u8 quantizer (zero point 0) is dropped by ORT.
    _, int8, plan, _ = _quantize(models.dense_mlp())
    assert "h" not in {a.tensor for a in plan.activations} and _layer_kernels(int8) == [("QGemm", None)] * 2
    # Symmetric: ORT keeps that Relu, so the Add's output (the folded Gemm's) is quantized.
    _, int8, plan, _ = _quantize(models.dense_mlp(), QuantConfig(preset="performance"))
    assert "h" in {a.tensor for a in plan.activations} and _layer_kernels(int8) == [("QGemm", None)] * 2
    # Only float layers read the Relu: the first Dense stays float too, on float weights.
    _, int8, plan, _ = _quantize(models.dense_mlp(), QuantConfig(ignore=("dense2",)))
    assert plan.nodes == [] and "feeds float layers only" in plan.skipped["dense1"]
    assert _layer_kernels(int8) == [("FusedGemm", None), ("Gemm", None)]
    # ORT fuses no other activation into the folded Gemm: a Sigmoid leaves the integer kernel be.
    _, int8, plan, _ = _quantize(models.dense_mlp(activation="Sigmoid"), QuantConfig(ignore=("dense2",)))
    assert plan.nodes == ["dense1"] and _layer_kernels(int8) == [("QGemm", None), ("Gemm", None)]


def test_unknown_ignored_entry_names_near_matches():
    with pytest.raises(ConfigError, match="did you mean: conv1"):
        _quantize(models.conv_relu_conv(), QuantConfig(ignore=("conv_1",)))


def test_symmetric_preset_does_not_fuse_relu():
    _, int8, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(preset="performance"))
    assert plan.fused == [] and any(n.op_type == "Relu" for n in int8.graph.node)
    assert {a.zero_point for a in plan.activations} == {128}


def test_statistics_for_one_config_skip_what_it_never_quantizes_and_quantize_the_same():
    prepared = prepare(models.conv_relu_conv())
    every = statistic_requests(prepared)
    assert "c1" in every  # the symmetric preset quantizes the Conv output before its Relu
    fused = QuantConfig(min_reduction=0)
    assert set(every) - set(statistic_requests(prepared, config=fused)) == {"c1"}
    for config in (QuantConfig(preset="performance", min_reduction=0), fused.model_copy(update={"ignore": ("relu1",)})):
        assert statistic_requests(prepared, config=config) == every  # Relu not fused: c1 is quantized
    data = models.feeds(prepared)
    full = collect(prepared, data, every, model_sha256="test")
    served = collect(prepared, data, statistic_requests(prepared, config=fused), model_sha256="test")
    assert "c1" not in served.tensors
    for config in (fused, fused.model_copy(update={"ignore": ("conv2",)})):  # the accuracy-aware search adds ignores
        (a, plan_a), (b, plan_b) = quantize_model(prepared, full, config), quantize_model(prepared, served, config)
        assert plan_a == plan_b and a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_statistics_for_one_config_leave_out_the_layers_its_plan_keeps_float():
    prepared = prepare(models.depthwise_then_conv())
    every = statistic_requests(prepared)
    served_requests = statistic_requests(prepared, config=QuantConfig())
    # The depthwise conv sums 9 products, under the cpu target's floor: it stays float, and
    # nothing reads its input; the 3x3 conv after it reads the Relu's output.
    assert {"x", "r", "y"} <= set(every) and set(served_requests) == {"r", "y"}
    assert "x" in statistic_requests(prepared, config=QuantConfig(min_reduction=0))
    aligning = statistic_requests(prepared, config=QuantConfig(channel_alignment=True))
    assert {"x", "r"} <= set(aligning)  # alignment reads Conv pairs the plan may leave float
    data = models.feeds(prepared)
    full = collect(prepared, data, every, model_sha256="test")
    served = collect(prepared, data, served_requests, model_sha256="test")
    for config in (QuantConfig(), QuantConfig(ignore=("conv",))):
        (a, plan_a), (b, plan_b) = quantize_model(prepared, full, config), quantize_model(prepared, served, config)
        assert plan_a == plan_b and a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_statistics_for_a_transformer_config_hold_what_smooth_quant_reads():
    prepared = prepare(models.mlp())
    x = np.random.default_rng(0).normal(0, 1, (64, 16)).astype(np.float32)
    x[:, 3] *= 30.0  # an outlier channel for SmoothQuant to move into the weights
    # Every layer under the reduction floor: the plan quantizes nothing, SmoothQuant still runs.
    config = QuantConfig(model_type="transformer", smooth_quant_alpha=0.5, min_reduction=10**6)
    served_requests = statistic_requests(prepared, config=config)
    assert "x" in served_requests and "x" not in statistic_requests(prepared, config=config.model_copy(update={"model_type": "cnn"}))
    full = collect(prepared, [{"x": x}], statistic_requests(prepared), model_sha256="test")
    served = collect(prepared, [{"x": x}], served_requests, model_sha256="test")
    (a, plan_a), (b, plan_b) = quantize_model(prepared, full, config), quantize_model(prepared, served, config)
    assert plan_a.smoothed == ["x"] and plan_a == plan_b
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_output_quantizers_only_where_an_integer_kernel_or_a_quantized_reader_needs_them():
    _, _, plan, _ = _quantize(models.conv_relu_conv())
    assert "y" in {a.tensor for a in plan.activations}  # Conv has no float-output integer kernel
    _, _, plan, _ = _quantize(models.mlp())
    assert {a.tensor for a in plan.activations} == {"x", "r"}  # Gemm->Relu feeds the MatMul; logits stay float


def test_smooth_quant_keeps_the_float_function_and_flattens_channels():
    from lowprec_core._quantize.algorithms import smooth_quant
    from lowprec_core._quantize.default import resolve_model_type

    model = models.mlp()
    prepared = prepare(model)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 16)).astype(np.float32)
    x[:, 3] *= 30.0  # one systematic outlier channel
    stats = collect(prepared, [{"x": x}], statistic_requests(prepared), model_sha256="test")
    config = QuantConfig(model_type="transformer", smooth_quant_alpha=0.5)
    edits, inserted, new_stats, done = smooth_quant(prepared, stats, config)
    smoothed = edited(prepared, edits, inserted)
    assert done == ["x"]  # only the input with an outlier channel; "r" is flat and gets no Mul
    run = lambda m: ReferenceEvaluator(m).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(smoothed), run(prepared), rtol=1e-4, atol=1e-4)
    before, after = stats.tensors["x"].channel_absmax, new_stats.tensors["x_smoothed"].channel_absmax
    assert after.max() / np.median(after) < before.max() / np.median(before) / 3
    assert resolve_model_type(prepared, "auto") == "cnn"
    _, int8, plan, _ = _quantize(model, config, batches=[{"x": x}])
    assert plan.smoothed == ["x"] and [n.op_type for n in int8.graph.node].count("Mul") == 1


def test_full_bias_correction_pulls_output_means_back_to_fp32():

    model = models.conv_relu_conv(seed=4)
    prepared = prepare(model)
    data = models.feeds(prepared, batches=6, batch=4, seed=7)
    stats = collect(prepared, data, statistic_requests(prepared), model_sha256="test")

    def mean_error(config):
        int8, plan = quantize_model(prepared, stats, config, feeds=lambda: iter(data))
        ref = np.concatenate([session(prepared).run(None, f)[0] for f in data])
        got = np.concatenate([session(int8).run(None, f)[0] for f in data])
        return np.abs((got - ref).mean(axis=(0, 2, 3))).mean(), plan

    none, _ = mean_error(QuantConfig(bias_correction="none", min_reduction=0))  # toy convs: see _quantize
    full, plan = mean_error(QuantConfig(bias_correction="full", min_reduction=0))
    assert plan.corrected_biases == ["b1", "b2"]
    assert full < 0.9 * none  # what is left is the output quantizer's own rounding


def test_channel_alignment_keeps_the_function_and_evens_the_channels():
    from lowprec_core._quantize.algorithms import align_channels

    prepared = prepare(_linear_conv_pair())
    data = models.feeds(prepared, batches=3, batch=4)
    stats = collect(prepared, data, statistic_requests(prepared), model_sha256="test")
    edits, new_stats, done = align_channels(prepared, stats)
    aligned = edited(prepared, edits)
    assert done == ["c1"]
    run = lambda m: ReferenceEvaluator(m).run(None, data[0])[0]  # noqa: E731
    np.testing.assert_allclose(run(aligned), run(prepared), rtol=1e-4, atol=1e-4)
    spread = lambda s: s.channel_max - s.channel_min  # noqa: E731
    before, after = spread(stats.tensors["c1"]), spread(new_stats.tensors["c1"])
    assert after.max() / after.min() < before.max() / before.min() / 10


def test_matmul_then_add_on_2d_input_gets_an_int32_bias_and_runs_as_qgemm():
    """ORT folds MatMul + Add on 2-D input into a Gemm before its QDQ fusions; with a float bias
    that Gemm ran in float on dequantized weights (PP-OCR's classifier head). The rank here
    comes from calibration: shape inference cannot tell a Reshape to a computed shape."""
    for batch, bias_shape in ((2, (5,)), ("N", (5,)), (2, (1, 5))):
        prepared, int8, plan, data = _quantize(models.pooled_linear_head(batch=batch, bias_shape=bias_shape))
        assert not any(v.name == "flat" and v.type.tensor_type.HasField("shape") for v in prepared.graph.value_info)
        assert [(b.node, b.reader, b.initializer) for b in plan.biases] == [("matmul", "add", "b")]
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
        assert inits["b_quantized"].dtype == np.int32 and inits["b_quantized"].shape == bias_shape
        assert "b" in plan.corrected_biases  # fast bias correction reaches it too
        reference, quantized = (session(m).run(None, data[0])[0] for m in (prepared, int8))
        assert np.abs(quantized - reference).max() < 0.05 * np.abs(reference).max()
        # A fixed batch lets ORT fold the shape and fuse a Gemm; a symbolic one keeps MatMul and
        # Add apart (an integer MatMul, then the Add). Either way no float layer remains.
        kernels = [n.op_type for n in optimized_graph(int8).graph.node]
        assert ("QGemm" if batch == 2 else "MatMulIntegerToFloat") in kernels, kernels
        assert not {"Gemm", "MatMul", "FusedGemm"} & set(kernels), kernels
    # Where the MatMul's input is 3-D, ORT never fuses: the Add keeps its float bias.
    _, _, plan, _ = _quantize(models.matmul_add_3d())
    assert plan.nodes == ["matmul"] and plan.biases == []


def test_layers_with_short_dot_products_stay_float_on_cpu():
    # conv1 sums 3x3x3 = 27 products per output, conv2 8x1x1 = 8: both below the CPU floor.
    _, int8, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(min_reduction=64))
    assert plan.nodes == [] and set(plan.skipped) == {"conv1", "conv2"}
    assert "sums 27 products per output, fewer than 64" in plan.skipped["conv1"]
    _, int8, plan, _ = _quantize(models.conv_relu_conv(), QuantConfig(min_reduction=10))
    assert plan.nodes == ["conv1"] and "sums 8 products" in plan.skipped["conv2"]
    assert QuantConfig().reduction_floor == 64 and QuantConfig(target="gpu").reduction_floor == 0
    # Gemm contracts over the weight's last axis when transB, over its first otherwise; MatMul over its first.
    for trans_b in (1, 0):
        _, _, plan, _ = _quantize(models.mlp(trans_b=trans_b), QuantConfig(min_reduction=33))
        assert "sums 16 products" in plan.skipped["gemm"] and "sums 32 products" in plan.skipped["matmul"]
    _, _, plan, _ = _quantize(models.mlp(trans_b=0), QuantConfig(min_reduction=16))
    assert plan.nodes == ["gemm", "matmul"]


def test_short_layers_are_quantized_where_float_would_cost_a_requantization_anyway():
    """SqueezeNet: with the 8-product 1x1 expand float beside the integer 3x3, each Concat ran
    in float between DQs and a Q; with the 27-product first conv float, its 64-channel output
    needed a Q for the integer layers after it. INT8 ran at 0.54x of FP32 (onnx's light
    SqueezeNet, batch 1); with the first rule 0.77x, with both 1.31x."""
    _, int8, plan, _ = _quantize(models.fire_module(), QuantConfig(min_reduction=64))
    # expand1x1 reads what expand3x3 reads; conv0's output (32 channels from 3) feeds them both.
    assert plan.nodes == ["conv0", "expand1x1", "expand3x3"] and not plan.skipped
    assert [n.op_type for n in optimized_graph(int8).graph.node].count("QLinearConv") == 3
    # With 8 channels out, conv0's integer kernel costs more than the Q on its output it would
    # spare (a 1 -> 8 first conv ran a digits CNN at 0.79x of FP32 quantized, 0.90x float).
    for target in ("cpu", "cpu-vnni"):
        _, int8, plan, _ = _quantize(models.fire_module(stem=8), QuantConfig(target=target, min_reduction=64))
        assert plan.nodes == ["expand1x1", "expand3x3"] and "sums 27 products" in plan.skipped["conv0"], target
        assert [n.op_type for n in optimized_graph(int8).graph.node].count("QLinearConv") == 2
    # OpenVINO's int8 kernel for such a first conv beats its bf16 one (light SqueezeNet 2.67x ->
    # 2.81x of FP32), but where an input has a free size and the graph computes a shape from an
    # activation, OpenVINO 2026.4 shifts that conv's output (the CRNN `strips`, whose LSTM state
    # is sized from Shape: exact match 0.9225 -> 0.85): there it stays float.
    _, _, plan, _ = _quantize(models.fire_module(), QuantConfig(target="openvino", min_reduction=64))
    assert plan.nodes == ["conv0", "expand1x1", "expand3x3"] and not plan.skipped
    _, _, plan, _ = _quantize(models.fire_module(shape_output=True), QuantConfig(target="openvino", min_reduction=64))
    assert plan.nodes == ["expand1x1", "expand3x3"] and "sums 27 products" in plan.skipped["conv0"]
    _, _, plan, _ = _quantize(models.fire_module(shape_output=True), QuantConfig(min_reduction=64))  # ORT computes it right
    assert plan.nodes == ["conv0", "expand1x1", "expand3x3"]
    # A depthwise conv's output is no larger than its input: quantizing it would not spare a Q.
    _, _, plan, _ = _quantize(models.depthwise_then_conv(), QuantConfig(min_reduction=64))
    assert plan.nodes == ["conv"] and "sums 9 products" in plan.skipped["depthwise"]


def test_short_layers_between_integer_layers_are_quantized_as_a_chain():
    """MobileNetV2: its depthwise 3x3s (9 products) and thin expands (16-32) sit between integer
    1x1s with ReLU6 fused. Float, each needed a DQ before it and a Q after it, and ORT's
    channels-last integer convs handed them NCHW floats: a MobileNetV2 (224 x 224, ORT 1.31, Zen 4,
    1 thread) ran at 1.48x / 1.39x of FP32 at batch 1 / 8 against ORT per-tensor's 2.08x / 2.37x;
    quantized as chains, 2.04x / 2.30x."""
    _, int8, plan, _ = _quantize(models.inverted_residuals(), QuantConfig(min_reduction=64))
    # The first block reads the entry conv's integer output; the second the residual sum, whose
    # 16 channels are fewer to quantize than the 96 its depthwise conv hands the integer project.
    assert plan.nodes == ["entry", "expand1", "depthwise1", "project1", "expand2", "depthwise2", "project2"] and not plan.skipped
    assert [n.op_type for n in optimized_graph(int8).graph.node].count("QLinearConv") == 7
    # A chain whose output feeds no quantized layer stays float: it would only move the DQ.
    _, _, plan, _ = _quantize(models.inverted_residuals(tail=True), QuantConfig(min_reduction=64))
    assert "tail" not in plan.nodes and "sums 9 products" in plan.skipped["tail"]
    assert plan.nodes == ["entry", "expand1", "depthwise1", "project1", "expand2", "depthwise2", "project2"]
    # Without the entry conv's and projects' integer kernels there is no chain to join.
    _, _, plan, _ = _quantize(models.inverted_residuals(), QuantConfig(min_reduction=64, ignore=("entry", "project1", "project2")))
    assert plan.nodes == []
    # With project1 reverted to float, the first block's chain feeds nothing integer and goes
    # float with it; the second still starts from the residual sum (16 channels in, 96 out).
    _, _, plan, _ = _quantize(models.inverted_residuals(), QuantConfig(min_reduction=64, ignore=("project1",)))
    assert plan.nodes == ["entry", "expand2", "depthwise2", "project2"]


def test_a_conv_whose_output_is_channel_shuffled_stays_float_on_cpu():
    """ORT's integer convs run channels-last; a Reshape splitting the channels forces a full
    transpose each way (light ShuffleNet ran at 0.74x of FP32, 1.02x with these convs float)."""
    _, _, plan, _ = _quantize(models.channel_shuffle(), QuantConfig(min_reduction=1))
    assert plan.nodes == ["conv"] and "'split_channels' splits its output into channel groups" in plan.skipped["gconv"]
    # The rule is a cost rule of the CPU targets: off with min_reduction 0 and on other targets.
    for config in (QuantConfig(min_reduction=0), QuantConfig(target="gpu"), QuantConfig(target="npu")):
        _, _, plan, _ = _quantize(models.channel_shuffle(), config)
        assert plan.nodes == ["gconv", "conv"], config


def test_a_one_hot_input_takes_0_and_127_so_no_weight_channel_needs_7_bits():
    """On AVX2 u8 x s8 pairs of 255 x 127 overflow int16, so the guard narrowed 62 of the 64
    channels of Magika's byte embedding; a two-level input is exact at 0 and 127 instead."""
    rng = np.random.default_rng(3)
    one_hot = [{"x": np.eye(16, dtype=np.float32)[rng.integers(0, 16, (4, 6))]} for _ in range(3)]
    prepared, int8, plan, _ = _quantize(models.one_hot_embedding(), QuantConfig(target="cpu"), batches=one_hot)
    x = next(a for a in plan.activations if a.tensor == "x")
    assert (x.zero_point, x.scale) == (0, pytest.approx(1 / 127)) and plan.weights[0].narrow == []
    reference, quantized = (session(m).run(None, one_hot[0])[0] for m in (prepared, int8))
    # Weight rounding only (half a step of each channel's scale): the input itself is exact.
    w = onnx.numpy_helper.to_array(next(i for i in prepared.graph.initializer if i.name == "w"))
    assert (np.abs(quantized - reference) <= np.abs(w).max(axis=0) / 127 / 2 + 1e-6).all()
    # Any other value in the input (here 0.5) and it takes the full u8 grid, with the guard.
    halves = [{"x": feed["x"] * rng.choice([0.5, 1.0], feed["x"].shape).astype(np.float32)} for feed in one_hot]
    _, _, plan, _ = _quantize(models.one_hot_embedding(), QuantConfig(target="cpu"), batches=halves)
    x = next(a for a in plan.activations if a.tensor == "x")
    assert x.scale == pytest.approx(1 / 255) and plan.weights[0].narrow


def _ids(rows: int, batches: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"ids": rng.integers(0, rows, (2, 6))} for _ in range(batches)]


@pytest.mark.parametrize("target", ["cpu", "openvino"])
def test_an_embedding_table_is_stored_in_8_bits_and_the_runtime_gathers_bytes(target):
    """MiniLM's word embeddings were two thirds of its INT8 model, in float. Stored as bytes on
    one grid, with the same Q/DQ pair after the Gather, each gathered value is the table's own
    value rounded to that grid, and ORT gathers the bytes without dequantizing the table."""
    prepared, int8, plan, feeds = _quantize(models.token_embedding(), QuantConfig(target=target), batches=_ids(2048))
    assert [t.model_dump() for t in plan.tables] == [{"initializer": "table", "readers": ["embed"]}]
    table = onnx.numpy_helper.to_array(next(i for i in prepared.graph.initializer if i.name == "table"))
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in int8.graph.initializer}
    assert stored["table_quantized"].dtype == np.uint8 and int(stored["table_zero_point"]) == 128
    scale = np.float32(np.abs(table).max() / 127)
    assert stored["table_scale"] == scale
    reference, quantized = (session(m).run(["tokens"], feeds[0])[0] for m in (prepared, int8))
    np.testing.assert_array_equal(quantized, np.rint(reference / scale).astype(np.float32) * scale)
    if target == "cpu":
        runs = optimized_graph(int8).graph
        (gather,) = [n for n in runs.node if n.op_type == "Gather"]
        assert gather.input[0] == "table_quantized"  # bytes gathered; no DequantizeLinear reads the table
        assert not [n for n in runs.node if n.op_type == "DequantizeLinear" and n.input[0] == "table_quantized"]
    else:
        ov = pytest.importorskip("openvino")
        compiled = ov.Core().compile_model(ov.Core().read_model(int8.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        np.testing.assert_allclose(compiled(feeds[0])[compiled.output("tokens")], quantized, atol=1e-6)


def test_small_tied_ignored_or_constant_index_tables_stay_float():
    assert _quantize(models.token_embedding(rows=2047), batches=_ids(2047))[2].tables == []  # under 1 MiB
    assert _quantize(models.token_embedding(tied=True), batches=_ids(2048))[2].tables == []  # a Gemm reads it too
    assert _quantize(models.token_embedding(), QuantConfig(ignore=("embed",)), batches=_ids(2048))[2].tables == []
    assert _quantize(models.token_embedding(), QuantConfig(target="gpu"), batches=_ids(2048))[2].tables == []
    fixed = models.token_embedding()
    fixed.graph.initializer.append(onnx.numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(1, 6), "positions"))
    fixed.graph.node[0].input[1] = "positions"
    assert _quantize(fixed, batches=_ids(2048))[2].tables == []  # constant indices: the runtime folds the Gather
    outlier = models.token_embedding()
    values = onnx.numpy_helper.to_array(outlier.graph.initializer[0]).copy()
    values[7, 3] = 10.0  # one value sets the grid's scale: the rest round to a few steps
    outlier.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(values, "table"))
    plan = _quantize(outlier, batches=_ids(2048))[2]
    assert plan.tables == [] and "embedding table 'table': 8 bits on one grid keep 7." in plan.skipped["embed"]


def test_a_node_whose_subgraph_reads_an_outer_tensor_stays_after_its_producer():
    model = models.conv_then_if()
    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "flag": np.array(flag)} for flag in (True, False) * 2]
    _, int8, plan, _ = _quantize(model, batches=batches)  # onnx.checker requires the order
    order = [n.name for n in int8.graph.node]
    assert order.index("pick") > order.index("conv1")
    assert plan.nodes == ["conv1", "conv2"]
    for flag in (True, False):
        feed = {"x": batches[0]["x"], "flag": np.array(flag)}
        want = ReferenceEvaluator(model).run(None, feed)[0]
        got = ReferenceEvaluator(onnx.version_converter.convert_version(int8, 19)).run(None, feed)[0]
        assert np.abs(got - want).max() < 0.2 * np.abs(want).max()  # 8 % here; a branch reading the unclamped Conv output: 100 %


def test_layers_inside_if_bodies_are_quantized_as_models_of_their_own():
    """silero VAD's export keeps its whole network in an If: each body is planned and quantized
    alone, its tensors calibrated through the If. Both bodies here name their output `out`."""
    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "flag": np.array(flag)} for flag in (True, False, True, False)]
    model = models.conv_inside_if()
    prepared, int8, plan, _ = _quantize(model, batches=batches)
    assert plan.nodes == [] and sorted(plan.bodies) == ["pick/else_branch", "pick/then_branch"]
    assert sorted(plan.layers()) == ["conv_w1", "conv_w2"]
    # prepare() renamed one `out`: each body's output quantizer has statistics of its own.
    outputs = [{a.tensor for a in body.activations} - {"x"} for body in plan.bodies.values()]
    assert sorted(map(sorted, outputs)) == [["out"], ["out__1"]]
    optimized = optimized_graph(int8)
    kernels = [n.op_type for n in all_nodes(optimized.graph) if n.op_type in ("QLinearConv", "Conv")]
    assert kernels == ["QLinearConv", "QLinearConv"], kernels
    # A body's output quantizer is the one the same Conv gets in a main graph calibrated on
    # the batches that ran the body (its input, an outer value, is calibrated on every batch).
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for flag, w, b in ((True, "w1", "b1"), (False, "w2", "b2")):
        alone = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Conv", ["x", w, b], ["out"], f"conv_{w}", pads=[1, 1, 1, 1])], "alone",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
            [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(weights[w], w), onnx.numpy_helper.from_array(weights[b], b)],
        ), opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=7)
        _, _, alone_plan, _ = _quantize(alone, batches=[{"x": f["x"]} for f in batches if bool(f["flag"]) == flag])
        body = next(p for p in plan.bodies.values() if p.nodes == [f"conv_{w}"])
        (want,) = [(a.scale, a.zero_point) for a in alone_plan.activations if a.tensor == "out"]
        assert [(a.scale, a.zero_point) for a in body.activations if a.tensor != "x"] == [want]
        feed = {"x": batches[1]["x"], "flag": np.array(flag)}
        got = session(int8).run(None, feed)[0]
        fp32 = session(model).run(None, feed)[0]
        assert np.sqrt(np.mean((got - fp32) ** 2)) < 0.02 * np.sqrt(np.mean(fp32**2))


def test_layers_two_if_levels_deep_are_quantized():
    rng = np.random.default_rng(5)
    flags = [(True, True), (True, False), (False, False)] * 2
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "outer": np.array(o), "inner": np.array(i)} for o, i in flags]
    model = models.nested_ifs()
    _, int8, plan, _ = _quantize(model, batches=batches)
    assert sorted(plan.layers()) == ["conv_w1", "conv_w2", "conv_w3", "conv_w4"]
    assert sorted(plan.bodies["outer_if/then_branch"].bodies) == ["inner_if/else_branch", "inner_if/then_branch"]
    kernels = [n.op_type for n in all_nodes(optimized_graph(int8).graph) if n.op_type in ("QLinearConv", "Conv", "FusedConv")]
    assert kernels.count("QLinearConv") == 4, kernels
    for outer, inner in set(flags):
        feed = {"x": batches[0]["x"], "outer": np.array(outer), "inner": np.array(inner)}
        got, want = (session(m).run(None, feed)[0] for m in (int8, model))
        # Measured 2.2 / 4.2 / 3.0 %; the same Conv -> Relu -> Conv flat, on its body's batches: 3.8 %.
        assert np.sqrt(np.mean((got - want) ** 2)) < 0.06 * np.sqrt(np.mean(want**2)), (outer, inner)


def test_the_per_layer_analysis_reaches_into_if_bodies():
    from lowprec_core._layer_error import inspect_layers

    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "flag": np.array(flag)} for flag in (True, False, True, False)]
    prepared, int8, _, _ = _quantize(models.conv_inside_if(), batches=batches)
    rows = {row.layer: row for row in inspect_layers(prepared, int8, batches).layers}
    assert sorted(rows) == ["conv_w1", "conv_w2"]
    for row in rows.values():  # each seen on the batches that ran its body: a real error, not the cap
        assert 15 < row.output_sqnr_db < 60 and row.weight_sqnr_db is not None, row


def test_an_ignored_layer_inside_an_if_body_stays_float():
    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "flag": np.array(flag)} for flag in (True, False)]
    _, _, plan, _ = _quantize(models.conv_inside_if(), QuantConfig(ignore=("conv_w2",)), batches=batches)
    assert plan.layers() == ["conv_w1"]
    assert "ignored" in plan.left_float()["conv_w2"]  # the reason comes from the body's own plan
    with pytest.raises(ConfigError, match="conv_w3"):
        _quantize(models.conv_inside_if(), QuantConfig(ignore=("conv_w3",)), batches=batches)


def test_the_accuracy_aware_search_can_revert_a_layer_inside_an_if_body():
    from lowprec_core._accuracy import ModelBackend

    rng = np.random.default_rng(3)
    batches = [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32), "flag": np.array(flag)} for flag in (True, False)]
    prepared = prepare(models.conv_inside_if())
    stats = collect(prepared, batches, statistic_requests(prepared), model_sha256="test")
    backend = ModelBackend(prepared, stats, QuantConfig(min_reduction=0), evaluator=None, speed_feed={})  # build() only
    assert sorted(backend.candidates) == ["conv_w1", "conv_w2"]
    _, plan = backend.build(("conv_w1",))
    assert plan.layers() == ["conv_w2"] and "conv_w1" in plan.left_float()


def test_layers_inside_loop_bodies_are_listed_as_float_with_the_reason(caplog):
    model = models.conv_inside_loop()
    _, int8, plan, data = _quantize(model, batches=[{"x": np.random.default_rng(2).normal(size=(2, 8, 8, 8)).astype(np.float32)}])
    assert plan.layers() == []
    assert list(plan.skipped) == ["conv_in_loop"]
    assert "'repeat'" in plan.skipped["conv_in_loop"] and "If bodies only" in plan.skipped["conv_in_loop"]
    assert "1 layers inside Loop/Scan bodies stay float" in caplog.text
    np.testing.assert_array_equal(session(int8).run(None, data[0])[0], session(model).run(None, data[0])[0])


def test_a_target_with_integer_ops_keeps_a_residual_add_between_quantized_layers_on_integers(monkeypatch):
    """Target.integer_ops: the Add whose inputs are both quantized layer outputs, and whose output
    a quantized layer reads, gets an output quantizer for every reader (the float Sigmoid too),
    and ORT runs QLinearAdd (the CPU rows: a MobileNetV2's residual sums). Off (a row without
    it), the quantizer serves the conv alone, the Sigmoid reads the float sum, and the Add stays
    float between DQs and a Q."""
    from lowprec_core import _ops as ops

    def kernels(int8):
        return {node.op_type for node in optimized_graph(int8).graph.node}

    model = models.residual_block()
    assert ops.TARGETS["cpu"].integer_ops == ops.TARGETS["cpu-vnni"].integer_ops == frozenset({"Add"})
    prepared, on, plan_on, data = _quantize(model)
    monkeypatch.setitem(ops.TARGETS, "cpu", ops.TARGETS["cpu"].replace(integer_ops=frozenset()))
    _, off, plan_off, _ = _quantize(model)
    assert plan_off.integer_ops == [] and "QLinearAdd" not in kernels(off)
    assert plan_on.integer_ops == ["add"]
    assert "QLinearAdd" in kernels(on)
    (entry,) = [a for a in plan_on.activations if a.tensor == "s"]
    assert entry.readers is None  # every reader of the sum sees it quantized: no float copy is left
    feed = data[0]
    reference = session(prepared).run(None, feed)
    for int8 in (off, on):
        for result, expected in zip(session(int8).run(None, feed), reference):
            assert np.abs(result - expected).max() < 0.05 * np.abs(expected).max()


def test_integer_ops_all_turns_on_the_runtimes_integer_ops_and_none_turns_off_the_targets(monkeypatch):
    """QuantConfig.integer_ops: "all" runs the residual Add as QLinearAdd on a target row that
    has none; "none" keeps it float on a row that has it."""
    from lowprec_core import _ops as ops
    model = models.residual_block()
    monkeypatch.setitem(ops.TARGETS, "cpu", ops.TARGETS["cpu"].replace(integer_ops=frozenset()))
    config = QuantConfig(min_reduction=0, integer_ops="all")
    _, on, plan_on, _ = _quantize(model, config)
    assert plan_on.integer_ops == ["add"] and "QLinearAdd" in {n.op_type for n in optimized_graph(on).graph.node}
    # At the default floor conv0 (27 products per output) is float: the Add reads a float input.
    assert _quantize(model, QuantConfig(min_reduction=64, integer_ops="all"))[2].integer_ops == []
    monkeypatch.setitem(ops.TARGETS, "cpu", ops.TARGETS["cpu"].replace(integer_ops=frozenset({"Add"})))
    assert _quantize(model, QuantConfig(min_reduction=0))[2].integer_ops == ["add"]
    assert _quantize(model, QuantConfig(min_reduction=0, integer_ops="none"))[2].integer_ops == []


def test_integer_ops_read_values_a_slice_or_maxpool_moved_from_quantized_outputs():
    """A C2f block: the residual Add reads a Slice of a quantized conv output, the Concat two
    Slices and a MaxPool of it. Those keep the conv output's grid, so with integer_ops "all" the
    Add and the Concat run as QLinearAdd and QLinearConcat (ORT runs the Slices and the MaxPool on
    the integers between), not as float ops between DQs and a Q."""
    model = models.split_residual_block()
    prepared, int8, plan, data = _quantize(model, QuantConfig(min_reduction=0, integer_ops="all"))
    assert plan.integer_ops == ["add", "concat"]
    grid = {a.tensor: (a.scale, a.zero_point) for a in plan.activations}
    assert grid["a"] == grid["b"] == grid["p"] == grid["r"]  # moved values keep their source's grid
    kernels = [node.op_type for node in optimized_graph(int8).graph.node]
    assert {"QLinearAdd", "QLinearConcat"} <= set(kernels) and "Add" not in kernels and "Concat" not in kernels
    reference = session(prepared).run(None, data[0])[0]
    assert np.abs(session(int8).run(None, data[0])[0] - reference).max() < 0.05 * np.abs(reference).max()


def test_a_config_dump_leaves_out_fields_newer_than_published_models_at_their_defaults():
    """The config stamped into a model stays what older versions wrote, so their bytes stay."""
    assert "integer_ops" not in QuantConfig().model_dump()
    assert QuantConfig(integer_ops="all").model_dump()["integer_ops"] == "all"
    assert QuantConfig.model_validate(QuantConfig(integer_ops="none").model_dump()).integer_ops == "none"


def test_the_openvino_target_quantizes_layer_inputs_and_leaves_outputs_to_the_runtime():
    """OpenVINO fuses the quantizer after a layer into the layer's kernel: a layer's output gets
    a quantizer only where a quantized layer reads it (ORT's QLinearConv always needs one), the
    bias stays float (the kernel adds it), and the same layers are quantized."""
    model = models.conv_relu_conv()
    _, _, cpu, _ = _quantize(model)
    prepared, int8, ov, data = _quantize(model, QuantConfig(target="openvino"))
    assert cpu.layers() == ov.layers() == ["conv1", "conv2"]
    assert "y" in {a.tensor for a in cpu.activations} and "y" not in {a.tensor for a in ov.activations}
    assert "r1" in {a.tensor for a in ov.activations}  # conv2 reads it
    assert cpu.biases and not ov.biases
    assert {i.name for i in int8.graph.initializer if i.data_type == onnx.TensorProto.INT32} == set()
    feed = data[0]
    expected = session(prepared).run(None, feed)[0]
    assert np.abs(session(int8).run(None, feed)[0] - expected).max() < 0.05 * np.abs(expected).max()


def test_the_openvino_target_quantizes_a_layer_output_that_a_global_pool_reads():
    """Target.quantized_output_readers: OpenVINO misplaces an integer conv's dequantization
    across the squeeze-excite pool behind it, so that output is quantized though the pool and
    the gate's Mul run in float. The ORT target quantizes it anyway (an integer conv output)."""
    model = models.squeeze_excite()
    _, _, ov, _ = _quantize(model, QuantConfig(target="openvino"))
    (entry,) = [a for a in ov.activations if a.tensor == "c1"]
    assert entry.readers is None  # every reader, the pool and the Mul, sees the quantized output
    plain = models.squeeze_excite(pooled=False)  # the same block without the pool: no quantizer
    _, _, ov_plain, _ = _quantize(plain, QuantConfig(target="openvino"))
    assert "c1" not in {a.tensor for a in ov_plain.activations}


def _linear_conv_pair(seed: int = 2) -> onnx.ModelProto:
    """conv_relu_conv without its Relu, one channel of the first conv scaled: a pair channel alignment takes."""
    model = models.conv_relu_conv(seed=seed)
    graph = model.graph
    graph.node.remove(next(n for n in graph.node if n.op_type == "Relu"))
    graph.node[-1].input[0] = "c1"
    w1 = next(i for i in graph.initializer if i.name == "w1")
    scaled = onnx.numpy_helper.to_array(w1) * np.array([1, 8, 0.5, 3, 1, 20, 1, 0.2], np.float32).reshape(-1, 1, 1, 1)
    w1.CopyFrom(onnx.numpy_helper.from_array(scaled.astype(np.float32), "w1"))
    return model


def _edited_case(case: str) -> tuple[onnx.ModelProto, QuantConfig, list[dict], object]:
    """(prepared model, config, calibration feeds, statistics) of a model whose plan carries
    float edits: a Linear -> Conv pair aligned with full bias correction, or a smoothed MLP."""
    if case == "smoothed transformer":
        model, config = models.mlp(), QuantConfig(model_type="transformer", smooth_quant_alpha=0.5, min_reduction=0)
        x = np.random.default_rng(0).normal(0, 1, (64, 16)).astype(np.float32)
        x[:, 3] *= 30.0
        data = [{"x": x}]
    else:
        model, config = _linear_conv_pair(), QuantConfig(channel_alignment=True, bias_correction="full", min_reduction=0)
        data = None
    prepared = prepare(model)
    data = data or models.feeds(prepared, batches=3, batch=4)
    stats = collect(prepared, data, statistic_requests(prepared), model_sha256="test")
    return prepared, config, data, stats


@pytest.mark.parametrize("case", ["aligned, full bias correction", "smoothed transformer"])
def test_the_plan_alone_rebuilds_the_int8_model_byte_for_byte(case):
    """Every edit (alignment, SmoothQuant, both bias corrections) is in the plan with its values:
    the plan, read back from its JSON, applied to the prepared model gives the same bytes."""
    prepared, config, data, stats = _edited_case(case)
    int8, plan = quantize_model(prepared, stats, config, feeds=lambda: iter(data))
    by = {e.by for e in plan.edits}
    assert by == ({"smooth_quant", "bias_correction"} if case == "smoothed transformer"
                  else {"alignment", "bias_correction", "full_bias_correction"})
    assert bool(plan.inserted) == (case == "smoothed transformer")
    again = apply(prepared, QuantPlan.model_validate_json(plan.model_dump_json()))
    assert again.SerializeToString() == int8.SerializeToString()
    # Without its float edits, the same quantizers give another model: the edits carry values.
    assert apply(prepared, plan.model_copy(update={"edits": [e for e in plan.edits if e.by != "bias_correction"]})
                 ).SerializeToString() != int8.SerializeToString()


@pytest.mark.parametrize("case", ["aligned, full bias correction", "smoothed transformer"])
def test_one_quantizer_serves_many_configs_with_the_bytes_of_each_alone(case, monkeypatch):
    """The searches build every candidate with one Quantizer: a model for a config, built after
    others, has the bytes quantize_model gives that config alone; a layer reverted to float costs
    no weight quantized again (each is kept), and a config seen before costs none at all."""
    from lowprec_core._quantize import default, params

    prepared, base, data, stats = _edited_case(case)
    feeds = lambda: iter(data)  # noqa: E731
    layers = quantize_model(prepared, stats, base)[1].layers()
    assert len(layers) == 2
    configs = [base, *(base.model_copy(update={"ignore": (layer,)}) for layer in layers), base.model_copy(update={"bias_correction": "none"}), base]
    alone = [quantize_model(prepared, stats, config, feeds=feeds)[0].SerializeToString() for config in configs]
    assert len(set(alone)) == len(configs) - 1  # each config its own model; the last repeats the first

    quantized: list[str] = []
    counted = params.quantize_planned_weight
    monkeypatch.setattr(params, "quantize_planned_weight", lambda weight, *args: (quantized.append(weight.shape), counted(weight, *args))[1])
    quantizer = default.Quantizer(prepared, stats)
    shared, new_weights = [], []
    for config in configs:
        before = len(quantized)
        shared.append(quantizer(config, feeds=feeds)[0].SerializeToString())
        new_weights.append(len(quantized) - before)
    assert shared == alone
    # The first model quantizes both weights at 8 bits (the overflow check reads them; the
    # transform reuses those without a narrowed channel) and again those with some. The config
    # seen before and the one without bias correction quantize none. Reverting a layer quantizes
    # none either, even where SmoothQuant runs and its group for x then leaves the reverted Gemm
    # out: the other float model it starts from differs only in what SmoothQuant edits, and a
    # weight no edit touched (the MatMul's) is quantized once for every such starting point.
    narrowed = sum(bool(w.narrow) for w in quantize_model(prepared, stats, base)[1].weights)
    assert narrowed >= 1
    assert new_weights == [2 + narrowed, 0, 0, 0, 0]


def test_the_openvino_default_row_follows_the_cpus_integer_isa():
    """ops.DEFAULT_ROWS: OpenVINO's integer MatMul/Gemm runs slower than f32 without VNNI or
    AMX, so there the default row leaves them float; an explicit target always wins, and ONNX
    Runtime keeps `cpu` on every ISA."""
    from lowprec_core._config import runtime_target

    avx2, vnni, amx = frozenset({"avx2", "fma"}), frozenset({"avx2", "avx512f", "avx512_vnni"}), frozenset({"avx2", "amx_int8"})
    assert [runtime_target("openvino", flags=f) for f in (avx2, vnni, amx, frozenset())] == [
        "openvino-avx2", "openvino", "openvino", "openvino-avx2"]
    assert {runtime_target("onnxruntime", flags=f) for f in (avx2, vnni, amx)} == {"cpu"}
    assert runtime_target("openvino", "openvino", flags=avx2) == "openvino"
    assert runtime_target(None, "openvino-avx2", flags=vnni) == "openvino-avx2"
    with pytest.raises(ConfigError, match="with --runtime openvino use: openvino, openvino-avx2"):
        runtime_target("openvino", "cpu", flags=avx2)


def test_the_openvino_avx2_row_keeps_matmul_and_gemm_float_and_shares_openvinos_statistics():
    model = models.mlp()
    _, _, full, _ = _quantize(model, QuantConfig(target="openvino"))
    _, _, avx2, _ = _quantize(model, QuantConfig(target="openvino-avx2"))
    assert full.layers() == ["gemm", "matmul"] and avx2.layers() == []
    assert "has no integer Gemm" in avx2.skipped["gemm"] and "has no integer MatMul" in avx2.skipped["matmul"]
    _, _, convs, _ = _quantize(models.conv_relu_conv(), QuantConfig(target="openvino-avx2"))
    assert convs.layers() == ["conv1", "conv2"]
    # A statistics file (no config) is collected for `openvino`'s layers: either row can use it.
    prepared = prepare(model, "openvino")
    assert statistic_requests(prepared, "openvino-avx2") == statistic_requests(prepared, "openvino") != {}


def test_auto_model_type_reads_attention_not_any_softmax():
    """A Softmax that only turns logits into probabilities (a classifier's or a CTC reader's
    head) leaves the model a cnn; one whose probabilities a MatMul reads, through pass-through
    ops, is attention, and so is LayerNormalization."""
    from onnx import TensorProto, helper, numpy_helper

    from lowprec_core._quantize.planner import resolve_model_type

    def with_head(*tail, outputs=("p",), extra=None):
        model = models.mlp()
        graph = model.graph
        graph.node.extend(tail)
        graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in (extra or {}).items())
        del graph.output[:]
        graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs)
        return model

    softmax = helper.make_node("Softmax", ["y"], ["p"], "softmax", axis=-1)
    values = {"v": np.ones((10, 4), np.float32)}
    assert resolve_model_type(with_head(softmax), "auto") == "cnn"
    assert resolve_model_type(with_head(softmax, helper.make_node("ArgMax", ["p"], ["k"], "argmax"), outputs=("k",)), "auto") == "cnn"
    attention = with_head(softmax, helper.make_node("Dropout", ["p"], ["d"], "dropout"),
                          helper.make_node("MatMul", ["d", "v"], ["a"], "weigh"), outputs=("a",), extra=values)
    assert resolve_model_type(attention, "auto") == "transformer"
    assert resolve_model_type(attention, "cnn") == "cnn"
    norm = with_head(helper.make_node("LayerNormalization", ["y", "g"], ["p"], "norm"), extra={"g": np.ones(10, np.float32)})
    assert resolve_model_type(norm, "auto") == "transformer"


def test_openvino_reads_a_residual_add_through_quantizers_so_its_plugin_fuses_the_add_into_the_conv():
    """Target.integer_joins: OpenVINO's plugin fuses a residual Add into the integer conv writing
    one input (an int8 sum post-op) where both inputs come through Q/DQ, as NNCF places them.
    Reading the conv's float output, the Add ran on its own in bf16 (onnx's light ResNet-50:
    3.60x of FP32 at f32 with it so, 3.72x fused; NNCF 3.78x)."""
    def add_inputs(int8):
        producers = {o: n for n in int8.graph.node for o in n.output}
        return [producers[i].op_type for i in next(n for n in int8.graph.node if n.name == "add").input]

    # conv0 float: its Relu's output r is quantized for conv1 alone, the Add read the float r.
    _, int8, plan, _ = _quantize(models.residual_block(), QuantConfig(target="openvino", ignore=["conv0"]))
    entries = {a.tensor: a for a in plan.activations}
    assert entries["a"].readers is None  # conv1's own output, quantized for the Add
    assert entries["r"].readers == ["add", "conv1"]  # the shortcut, through the quantizer conv1 reads
    assert add_inputs(int8) == ["DequantizeLinear", "DequantizeLinear"]
    # conv0 quantized: r is its output, quantized for every reader already.
    _, int8, plan, _ = _quantize(models.residual_block(), QuantConfig(target="openvino"))
    entries = {a.tensor: a for a in plan.activations}
    assert entries["a"].readers is None and entries["r"].readers is None
    assert add_inputs(int8) == ["DequantizeLinear", "DequantizeLinear"]
    # A sum only float ops read gains nothing from integer inputs: the Add reads conv1's float output.
    _, int8, plan, _ = _quantize(models.residual_block(), QuantConfig(target="openvino", ignore=["conv0", "conv2"]))
    entries = {a.tensor: a for a in plan.activations}
    assert "a" not in entries and entries["r"].readers == ["conv1"] and add_inputs(int8) == ["Conv", "Relu"]


def test_openvino_reads_a_concat_of_conv_branches_through_quantizers_so_its_plugin_joins_integers():
    """Target.integer_joins: the branch outputs an Inception block concatenates for a quantized
    conv are quantized, the Relus after the branch convs included, so OpenVINO's plugin
    concatenates integers (onnx's light Inception-v2: 2.97x -> 3.09x of FP32 at f32, NNCF 3.09x),
    where it had concatenated in bf16 and quantized the result on its own."""
    def concat_inputs(int8):
        producers = {o: n for n in int8.graph.node for o in n.output}
        return [producers[i].op_type for i in next(n for n in int8.graph.node if n.name == "concat").input]

    _, int8, plan, _ = _quantize(models.branch_concat(), QuantConfig(target="openvino"))
    entries = {a.tensor: a for a in plan.activations}
    assert entries["a"].readers is None and entries["b"].readers is None and entries["cat"].readers == ["conv2"]
    assert concat_inputs(int8) == ["DequantizeLinear", "DequantizeLinear"]
    # A Concat only float ops read is left reading the float branches.
    _, int8, plan, _ = _quantize(models.branch_concat(), QuantConfig(target="openvino", ignore=["conv2"]))
    assert not {"a", "b"} & {a.tensor for a in plan.activations} and concat_inputs(int8) == ["Relu", "Relu"]


def _lone(model: onnx.ModelProto, chosen: dict[str, tuple[list[str], int]], min_work: int) -> set[str]:
    from lowprec_core._graph import consumers
    from lowprec_core._quantize.placement import lone_layers, sample_sizes

    prepared = onnx.shape_inference.infer_shapes(prepare(model))
    nodes = {node.name: node for node in prepared.graph.node}
    entries = [(nodes[name], inputs, length) for name, (inputs, length) in chosen.items()]
    return set(lone_layers(entries, prepared.graph, consumers(prepared.graph), sample_sizes(prepared), min_work))


def test_a_small_layer_on_a_pooled_tensor_no_other_quantized_layer_shares_stays_float():
    """The squeeze-excite conv reads the pooled tensor (8 values a sample) that no other layer
    reads and feeds the float gate: 64 products a sample, lone under a floor above that. conv2
    (72 products per output, 256 outputs) reads the gated map, not a pooled tensor: never lone."""
    model = models.squeeze_excite()
    chosen = {"conv_se": (["p"], 8), "conv2": (["m"], 72)}
    assert _lone(model, chosen, 1000) == _lone(model, chosen, 10**9) == {"conv_se"}
    assert _lone(model, chosen, 64) == set()  # not fewer than 64


def test_a_layer_on_a_pooled_tensor_that_another_layer_shares_is_not_lone():
    """A second conv on the same pooled tensor (as a second SE branch would): the tensor is
    quantized for both, so neither is quantized for itself alone."""
    model = models.squeeze_excite()
    model.graph.node.insert(3, onnx.helper.make_node("Conv", ["p", "ws"], ["s2"], "conv_se2"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("s2", onnx.TensorProto.FLOAT, None))
    assert _lone(model, {"conv_se": (["p"], 8), "conv_se2": (["p"], 8)}, 1000) == set()
    assert _lone(model, {"conv_se": (["p"], 8)}, 1000) == {"conv_se"}  # conv_se2 float (ignored): conv_se is lone again
