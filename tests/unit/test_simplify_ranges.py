"""Float-exact simplifications, saturation-aware ranges and the range estimators."""

from __future__ import annotations

import numpy as np
import pytest

from lowprec_core._calibration.observers import TensorObserver
from lowprec_core._calibration.stats import TensorStats
from lowprec_core._config import QuantConfig
from lowprec_core._model_io import prepare
from lowprec_core._quantize.ranges import activation_range
from lowprec_core._runtime import serving_session, session
from tests import models
from tests.unit.test_planner_transform import _quantize


def test_affines_and_hardswish_fold_exactly():
    model = models.affine_hardswish_conv()
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Conv", "HardSigmoid", "Mul", "Conv"]
    x = {"x": np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-5, atol=1e-5)


def test_for_openvino_the_hardswish_keeps_its_ops_and_the_tanh_gelu_becomes_fastgelu():
    """OpenVINO fuses the decomposed HardSwish itself (and runs a lone HardSigmoid with a
    reference kernel): only the folds run, still float-exact. Its ONNX frontend reads ORT's
    FastGelu, and runs it as the op-by-op GELU computes."""
    model = models.affine_hardswish_conv()
    prepared = prepare(model, "openvino")
    assert [n.op_type for n in prepared.graph.node] == ["Conv", "Add", "Clip", "Mul", "Div", "Conv"]
    x = {"x": np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-5, atol=1e-5)
    model = models.tanh_gelu_mlp()
    gelu = prepare(model, "openvino")
    assert "FastGelu" in {n.op_type for n in gelu.graph.node}
    x = {"x": np.random.default_rng(4).normal(0, 2.0, size=(3, 6, 16)).astype(np.float32)}
    got = serving_session(gelu, runtime="openvino", precision="f32").run(None, x)[0]
    np.testing.assert_allclose(got, session(model).run(None, x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_gelu_keeps_its_half_and_a_plain_scale_still_folds(runtime):
    """Folding GELU's trailing 0.5 into the next conv is exact, but leaves x * (1 + erf(x/sqrt2)),
    which OpenVINO no longer recognizes as a GELU: it ran the Div and the product as separate
    layers instead of fusing the GELU into the conv before it (the U-Net `columns` INT8 model,
    2 threads, batch 32: 2.73 ms against 2.30 ms). A scalar Mul after a ReLU still folds."""
    model = models.erf_gelu_conv()
    prepared = prepare(model, runtime)
    assert [n.op_type for n in prepared.graph.node] == ["Conv", "Div", "Erf", "Add", "Mul", "Mul", "Conv", "Relu", "Conv"]
    x = {"x": np.random.default_rng(6).normal(0, 1.5, (2, 3, 16)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-5, atol=1e-5)
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(prepared.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        layers = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
        assert layers.count("Convolution") == 3 and "Eltwise" not in layers, layers  # the GELU runs inside conv1


def test_add_before_a_padded_conv_is_not_folded():
    model = models.affine_hardswish_conv()
    for node in model.graph.node:
        if node.name == "conv2":
            node.attribute.append(__import__("onnx").helper.make_attribute("pads", [1, 1, 1, 1]))
    prepared = prepare(model)
    assert any(n.op_type == "Add" for n in prepared.graph.node)  # the border would see 0, not d


@pytest.mark.parametrize("order", ["jax2tf", "torch"])
def test_tanh_gelu_becomes_fastgelu(order):
    model = models.tanh_gelu_mlp(order=order, one_shape=(1, 1, 1) if order == "jax2tf" else ())
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["MatMul", "Add", "FastGelu", "MatMul"]
    assert any(entry.domain == "com.microsoft" for entry in prepared.opset_import)
    # The shape of FastGelu's output survives: ONNX's shape inference does not know the op.
    assert any(v.name == "a" for v in prepared.graph.value_info)
    x = {"x": np.random.default_rng(4).normal(0, 2.0, size=(3, 6, 16)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-5, atol=1e-5)


def test_only_the_exact_tanh_gelu_is_fused():
    def fused(model) -> bool:
        return any(n.op_type == "FastGelu" for n in prepare(model).graph.node)

    assert not fused(models.tanh_gelu_mlp(cubic=0.0447))  # another function, however close
    assert not fused(models.tanh_gelu_mlp(one_shape=(1, 1, 1, 1)))  # broadcasts [N,6,32] up to rank 4
    read_inside = models.tanh_gelu_mlp()
    read_inside.graph.output.append(__import__("onnx").helper.make_tensor_value_info("t", 1, None))
    assert not fused(read_inside)  # the Tanh's output is a graph output: it must stay


def _layernorm_f64(model, x: np.ndarray) -> np.ndarray:
    """The model's function in float64: LayerNorm as (h - mean) / sqrt(var + eps)."""
    from onnx import numpy_helper

    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    h = x.astype(np.float64) @ w["w1"] + w["shift"]
    d = h - h.mean(-1, keepdims=True)
    return ((d / np.sqrt((d * d).mean(-1, keepdims=True) + 1e-6)) * w["g"] + w["b"]) @ w["w2"]


def test_for_openvino_a_square_difference_variance_is_centred():
    """jax2tf's LayerNorm variance E[h*h] - E[h]^2 becomes E[(h - E[h])^2] for OpenVINO (whose bf16
    loses the difference of two close squares), reusing the h - E[h] the graph computes: the
    same function in ORT, closer to the exact one; ORT's own preparation keeps the graph."""
    model = models.square_difference_layernorm()
    for_ort, for_openvino = prepare(model), prepare(model, "openvino")
    assert [n.op_type for n in for_ort.graph.node] == [n.op_type for n in model.graph.node]
    square = next(n for n in for_openvino.graph.node if n.output[0] == "hh")
    assert list(square.input) == ["d", "d"]
    assert not any(n.output[0] == "msq" for n in for_openvino.graph.node)
    assert next(n for n in for_openvino.graph.node if n.output[0] == "var0").op_type == "Identity"
    x = {"x": np.random.default_rng(5).normal(0, 1, (4, 6, 16)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    exact = _layernorm_f64(model, x["x"])
    np.testing.assert_allclose(run(for_openvino), exact, rtol=1e-3, atol=1e-3)
    assert np.abs(run(for_openvino) - exact).max() < np.abs(run(model) - exact).max()


def test_a_variance_centred_on_another_mean_is_left_alone():
    model = models.square_difference_layernorm(centre_on="other")
    assert [n.op_type for n in prepare(model, "openvino").graph.node] == [n.op_type for n in model.graph.node]


def test_hardswish_input_range_stops_at_minus_three():
    _, _, plan, data = _quantize(models.affine_hardswish_conv(), QuantConfig(activation_range="minmax"))
    conv_out = next(a for a in plan.activations if a.tensor == "h")  # Conv output read only by HardSwish
    low = (0 - conv_out.zero_point) * conv_out.scale
    assert low == pytest.approx(-3.0, abs=conv_out.scale)


def _stats(values: np.ndarray, channel_absmax=None) -> TensorStats:
    obs = TensorObserver()
    obs.update(values)
    return TensorStats(obs.minimum, obs.maximum, obs.count, radius=obs.radius, histogram=obs.histogram,
                       mean_min=obs.minimum, mean_max=obs.maximum, channel_absmax=channel_absmax)


def test_mse_and_quantile_clip_a_heavy_tail():
    values = np.random.default_rng(0).laplace(0, 1, 200_000).astype(np.float32)
    stats = _stats(values)
    assert activation_range(stats, "minmax", np.uint8, symmetric=False) == (stats.minimum, stats.maximum)
    # The MSE-optimal symmetric 8-bit clip of a Laplace(0, b) tensor is about 9.89 b (Banner et al., ACIQ).
    low, high = activation_range(stats, "mse", np.uint8, symmetric=True)
    assert high == pytest.approx(9.89, rel=0.1) and low == -high
    low, high = activation_range(stats, "mse", np.uint8, symmetric=False)
    assert 0.6 * stats.maximum < high < stats.maximum and stats.minimum < low < 0.6 * stats.minimum
    low, high = activation_range(stats, "quantile", np.uint8, symmetric=False)
    assert high == pytest.approx(-np.log(2e-4), rel=0.05)  # the 1 - 1e-4 quantile of Laplace(0, 1)


def test_mse_keeps_a_systematic_outlier_channel():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.laplace(0, 1, 200_000), [40.0]]).astype(np.float32)
    channels = np.full(384, 4.0, np.float32)
    channels[7] = 40.0  # one channel carries the large values in every sample
    low, high = activation_range(_stats(values, channels), "mse", np.uint8, symmetric=False)
    assert high == 40.0
