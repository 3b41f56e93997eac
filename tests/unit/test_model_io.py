import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from lowprec_core._calibration.collect import collect
from lowprec_core._config import QuantConfig
from lowprec_core._errors import ConfigError, ModelError
from lowprec_core._float16 import computes_in_float16
from lowprec_core._model_io import at_input_sizes_of, fix_input_shapes, load_model, prepare, save_model
from lowprec_core._quantize.default import quantize_model
from lowprec_core._quantize.planner import statistic_requests
from lowprec_core._runtime import session
from tests import models


def test_constant_weights_become_initializers_and_old_opsets_upgrade():
    model = models.conv_relu_conv(as_constants=True, opset=12)
    prepared = prepare(model)
    assert not any(n.op_type == "Constant" for n in prepared.graph.node)
    assert {"w1", "b1", "w2", "b2"} <= {i.name for i in prepared.graph.initializer}
    assert prepared.opset_import[0].version == 13
    x = models.feeds(model)[0]
    np.testing.assert_allclose(ReferenceEvaluator(prepared).run(None, x)[0], ReferenceEvaluator(model).run(None, x)[0], rtol=1e-5, atol=1e-6)


def test_an_ir3_model_whose_weights_are_also_inputs_prepares_and_quantizes():
    """Failed with 'cannot upgrade the model from opset 9 to 13: Input w1 is undefined!'."""
    model = models.ir3_conv_relu_conv()
    prepared = prepare(model)
    assert prepared.opset_import[0].version == 13 and [i.name for i in prepared.graph.input] == ["x"]
    onnx.checker.check_model(prepared)
    x = models.feeds(model)[0]
    np.testing.assert_allclose(session(prepared).run(None, x)[0], session(model).run(None, x)[0], rtol=1e-5, atol=1e-5)
    int8, plan = quantize_model(prepared, collect(prepared, models.feeds(prepared), statistic_requests(prepared), model_sha256="t"), QuantConfig(min_reduction=0))
    onnx.checker.check_model(int8)
    assert plan.nodes == ["conv1", "conv2"]
    np.testing.assert_allclose(session(int8).run(None, x)[0], session(model).run(None, x)[0], atol=0.1)


def test_a_constant_of_shape_weight_becomes_an_initializer():
    """onnx's light test CNNs make every weight with ConstantOfShape: left as nodes, no layer
    had a constant weight and nothing was quantized."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"], "fill", value=numpy_helper.from_array(np.array([0.02], np.float32))),
        helper.make_node("Conv", ["x", "w"], ["y"], "conv"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(np.array([4, 3, 3, 3], np.int64), "w_shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Conv"]
    weight = next(i for i in prepared.graph.initializer if i.name == "w")
    assert list(weight.dims) == [4, 3, 3, 3] and np.all(numpy_helper.to_array(weight) == np.float32(0.02))
    x = models.feeds(model)[0]
    np.testing.assert_allclose(session(prepared).run(None, x)[0], session(model).run(None, x)[0], rtol=1e-6)


def test_weights_behind_identity_cast_transpose_and_reshape_become_initializers():
    """Exporters leave value-moving ops on weights: fp16 storage behind a Cast, a transposed or
    reshaped copy, a tied weight behind an Identity. Left as nodes, those layers had no
    constant weight and stayed float."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {
        "w16": rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float16),  # HWIO, as TensorFlow keeps it
        "b": rng.normal(0, 0.1, (8, 1)).astype(np.float32),
        "keep": np.array([0, -1], np.int64),  # Reshape's 0 copies the input's dimension
        "axes": np.array([1], np.int64),
        "m": rng.normal(0, 0.3, (8, 8, 1)).astype(np.float32),
        "last": np.array([2], np.int64),
    }
    nodes = [
        helper.make_node("Cast", ["w16"], ["w32"], "to_float", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["w32"], ["w"], "hwio_to_oihw", perm=[3, 2, 0, 1]),
        helper.make_node("Reshape", ["b", "keep"], ["b2"], "bias_shape"),
        helper.make_node("Squeeze", ["b2", "axes"], ["bias"], "bias_flat"),
        helper.make_node("Identity", ["bias"], ["bias_out"], "bias_copy"),
        helper.make_node("Squeeze", ["m", "last"], ["m2"], "drop_axis"),
        helper.make_node("Identity", ["m2"], ["tied"], "tied_weight"),
        helper.make_node("Conv", ["x", "w", "bias"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flatten"),
        helper.make_node("MatMul", ["f", "tied"], ["y"], "head"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None), helper.make_tensor_value_info("bias_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    prepared = prepare(model)
    # bias_out is a graph output: it stays a node's output, so its Identity stays.
    assert [n.op_type for n in prepared.graph.node] == ["Identity", "Conv", "GlobalAveragePool", "Flatten", "MatMul"]
    assert numpy_helper.to_array(next(i for i in prepared.graph.initializer if i.name == "w")).shape == (8, 3, 3, 3)
    x = models.feeds(model)[0]
    for got, want in zip(session(prepared).run(None, x), session(model).run(None, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    _, plan = quantize_model(prepared, collect(prepared, models.feeds(prepared), statistic_requests(prepared), model_sha256="t"), QuantConfig(min_reduction=0))
    assert plan.nodes == ["conv", "head"], plan.skipped


def test_batchnorm_folds_into_conv_exactly():
    model = models.conv_bn()
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Conv"]
    x = {"x": np.random.default_rng(0).normal(size=(1, 2, 5, 5)).astype(np.float32)}
    # ONNX Runtime as the reference: onnx's ReferenceEvaluator BatchNormalization disagrees with it here.
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("trans_b, bias", [(1, (32,)), (0, (1, 32)), (1, None), (0, ())])
def test_batchnorm_folds_into_the_gemm_before_it_exactly(trans_b, bias):
    """A Linear then BatchNorm1d: left in place, the BatchNormalization ran in float between the
    integer Gemm and the next quantizer, and the ReLU after it could not join that quantizer."""
    model = models.gemm_bn(trans_b=trans_b, bias=bias)
    prepared = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Gemm", "Relu", "Gemm"]
    x = {"x": np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)}
    run = lambda m: session(m, optimization="disabled").run(None, x)[0]  # noqa: E731
    np.testing.assert_allclose(run(prepared), run(model), rtol=1e-4, atol=1e-5)
    _, plan = quantize_model(prepared, collect(prepared, [x], statistic_requests(prepared), model_sha256="t"), QuantConfig(min_reduction=0))
    assert plan.nodes == ["fc", "head"] and [f.node for f in plan.fused] == ["relu"]


def test_batchnorm_stays_after_a_gemm_it_cannot_fold_into():
    scaled = models.gemm_bn(alpha=0.5)  # alpha scales A·B but not C
    assert "BatchNormalization" in [n.op_type for n in prepare(scaled).graph.node]
    shared = models.gemm_bn()
    shared.graph.node[3].input[1] = "w"  # the head reads the same weight (transposed): it is not the fc's alone
    shared.graph.node[3].attribute[0].i = 0
    shared.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 16
    assert "BatchNormalization" in [n.op_type for n in prepare(shared).graph.node]


def test_shape_inference_sees_large_weights_without_their_payload_and_gives_them_back(monkeypatch):
    from lowprec_core import _model_io as model_io

    monkeypatch.setattr(model_io, "_WEIGHT_PAYLOAD", 0)  # every float weight goes round
    model = models.conv_relu_conv(seed=3)
    model.graph.initializer[0].float_data.extend(onnx.numpy_helper.to_array(model.graph.initializer[0]).ravel().tolist())
    model.graph.initializer[0].ClearField("raw_data")  # one weight in float_data, the rest raw
    before = {i.name: i.SerializeToString() for i in model.graph.initializer}
    seen = []
    infer = onnx.shape_inference.infer_shapes

    def spy(m, **kw):
        seen.extend((i.name, len(i.raw_data) + len(i.float_data)) for i in m.graph.initializer)
        return infer(m, **kw)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    prepared = prepare(model)
    assert seen and all(size == 0 for _, size in seen)
    assert {i.name: i.SerializeToString() for i in prepared.graph.initializer} == before
    assert {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in prepared.graph.value_info}["r1"] == ["N", 8, 8, 8]

    def failing(m, **kw):
        raise RuntimeError("inference failed")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", failing)
    unshaped = prepare(model)
    assert {i.name: i.SerializeToString() for i in unshaped.graph.initializer} == before
    assert not unshaped.graph.value_info


def test_prepare_is_deterministic_and_names_nodes():
    model = models.conv_relu_conv()
    for node in model.graph.node:
        node.name = ""
    a, b = prepare(model), prepare(model)
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    assert all(n.name for n in a.graph.node)


def test_load_rejects_garbage_empty_and_missing(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff" * 100)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="junk.onnx"):
        load_model(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="empty"):
        load_model(tmp_path / "empty.onnx")
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.onnx")


def test_load_rejects_a_model_the_checker_refuses(tmp_path):
    model = models.mlp()
    model.graph.node[0].input[1] = "no_such_tensor"
    (tmp_path / "bad.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="checker"):
        load_model(tmp_path / "bad.onnx")


def test_nodes_out_of_order_load_sorted_and_a_cycle_is_still_refused(tmp_path):
    """ORT's float16 converter (keep_io_types) writes the Casts of the inputs after their readers;
    ORT sorts on load, and lowprec does too. No order fixes a cycle."""
    model = models.mlp()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    (tmp_path / "unsorted.onnx").write_bytes(model.SerializeToString())
    loaded = load_model(tmp_path / "unsorted.onnx")
    assert [n.name for n in loaded.proto.graph.node] == [n.name for n in nodes]
    x = models.feeds(models.mlp())[0]
    np.testing.assert_allclose(ReferenceEvaluator(loaded.proto).run(None, x)[0], ReferenceEvaluator(models.mlp()).run(None, x)[0])
    cycle = models.mlp()
    cycle.graph.node[0].input[0] = cycle.graph.node[-1].output[0]
    (tmp_path / "cycle.onnx").write_bytes(cycle.SerializeToString())
    with pytest.raises(ModelError, match="checker"):
        load_model(tmp_path / "cycle.onnx")


def test_outputs_without_type_or_shape_take_them_from_inference_and_an_input_without_shape_is_named(tmp_path):
    """The usual way of exposing an intermediate tensor declares it by name alone or with a type
    and no shape; ORT runs such a model, the checker refuses it. lowprec types those outputs
    (nodes out of order as well: both mends apply) and quantizes the model with them kept."""
    model = models.mlp()
    model.graph.output.extend([onnx.helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, None), onnx.ValueInfoProto(name="r")])
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    (tmp_path / "exposed.onnx").write_bytes(model.SerializeToString())
    loaded = load_model(tmp_path / "exposed.onnx")
    shapes = {v.name: (v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
              for v in loaded.proto.graph.output}
    assert shapes == {"y": (onnx.TensorProto.FLOAT, ["N", 10]), "h": (onnx.TensorProto.FLOAT, ["N", 32]),
                      "r": (onnx.TensorProto.FLOAT, ["N", 32])}
    x = models.feeds(models.mlp())[0]
    want = ReferenceEvaluator(models.mlp()).run(["y"], x)[0]
    prepared = prepare(loaded.proto)
    int8, plan = quantize_model(prepared, collect(prepared, models.feeds(prepared), statistic_requests(prepared), model_sha256="t"),
                                QuantConfig(min_reduction=0))
    got = dict(zip([o.name for o in int8.graph.output], session(int8).run(None, x)))
    assert len(plan.layers()) == 2 and set(got) == {"y", "h", "r"} and np.all(got["r"] >= 0)
    np.testing.assert_allclose(got["y"], want, atol=0.1 * np.abs(want).max())
    shapeless = models.mlp()
    shapeless.graph.input[0].type.tensor_type.ClearField("shape")
    (tmp_path / "shapeless.onnx").write_bytes(shapeless.SerializeToString())
    with pytest.raises(ModelError, match="input 'x' declares no shape"):
        load_model(tmp_path / "shapeless.onnx")


def _half_conv_then_if() -> onnx.ModelProto:
    """models.conv_then_if stored in float16: weights, interface, and the If bodies' outputs."""
    model = models.conv_then_if()
    for index, init in enumerate(model.graph.initializer):
        model.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in (model.graph.input[0], *model.graph.output):
        value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    for node in model.graph.node:
        for body in (a.g for a in node.attribute if a.HasField("g")):
            body.output[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_float16_model_computes_in_float32_behind_its_float16_interface():
    model = _half_conv_then_if()
    assert computes_in_float16(model) and not computes_in_float16(models.conv_then_if())
    prepared = prepare(model)
    onnx.checker.check_model(prepared, full_check=True)
    assert not computes_in_float16(prepared)  # what quantizing it, and ORT's sessions of the result, rely on
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in prepared.graph.initializer)
    assert [v.type.tensor_type.elem_type for v in (*prepared.graph.input, *prepared.graph.output)] == [
        onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT16]
    casts = [n for n in prepared.graph.node if n.op_type == "Cast"]
    assert [(c.input[0], c.output[0]) for c in casts] == [("x", "x_float32"), ("y_float32", "y")]
    x = models.feeds(models.conv_then_if())[0]["x"].astype(np.float16)
    for flag in (True, False):  # both bodies read the widened outer tensor
        feed = {"x": x, "flag": np.array(flag)}
        got = ReferenceEvaluator(prepared).run(None, feed)[0]
        want = session(model).run(None, feed)[0]  # ORT runs the float16 model as given
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-2, atol=2e-2)
    assert prepare(model).SerializeToString() == prepared.SerializeToString()


def test_save_is_atomic_and_returns_the_sha(tmp_path):
    import hashlib

    digest = save_model(models.mlp(), tmp_path / "m.onnx").sha256
    assert digest == hashlib.sha256((tmp_path / "m.onnx").read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert load_model(tmp_path / "m.onnx").sha256 == digest


def _dims(model: onnx.ModelProto, name: str) -> list:
    value = next(v for v in model.graph.input if v.name == name)
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_input_shapes_fix_sizes_name_free_ones_and_reach_the_int8_model():
    model = models.conv_relu_conv()
    sized = prepare(model, input_shapes={"x": ("batch", 3, 8, 8)})
    assert _dims(sized, "x") == ["batch", 3, 8, 8] and _dims(model, "x") == ["N", 3, 8, 8]  # a copy: the source is untouched
    sized = prepare(model, input_shapes={"x": (2, 3, 8, 8)})
    assert _dims(sized, "x") == [2, 3, 8, 8]
    # Shape inference carries the fixed batch on: the output's size is known, not N.
    assert [d.dim_value for d in sized.graph.output[0].type.tensor_type.shape.dim] == [2, 4, 8, 8]
    stats = collect(sized, models.feeds(model, batch=2), statistic_requests(sized), model_sha256="t")
    int8, _ = quantize_model(sized, stats, QuantConfig(input_shapes={"x": (2, 3, 8, 8)}))
    assert _dims(int8, "x") == [2, 3, 8, 8]


@pytest.mark.parametrize("shapes, message", [
    ({"image": (1, 3, 8, 8)}, "input shape for 'image': the model has no such input; its inputs: x, flag"),
    ({"x": (1, 3, 8)}, r"'x': 3 sizes given \(\[1, 3, 8\]\); the model's input \[N, 3, 8, 8\] has 4"),
    ({"x": ("N", 4, 8, 8)}, r"'x': 4 at axis 1, where the model's input \[N, 3, 8, 8\] has the fixed size 3"),
    ({"x": ("N", "channels", 8, 8)}, r"'x': channels at axis 1, where the model's input \[N, 3, 8, 8\] has the fixed size 3"),
])
def test_input_shapes_that_do_not_fit_the_model_are_a_config_error_naming_them(shapes, message):
    with pytest.raises(ConfigError, match=message):
        fix_input_shapes(models.conv_then_if(), shapes)


def test_input_sizes_are_positive_integers_or_names():
    assert QuantConfig(input_shapes={"x": ["N", 3, 8, 8]}).input_shapes == {"x": ("N", 3, 8, 8)}
    for bad in (0, -1, "two words", 1.5):
        with pytest.raises(ValueError, match="input_shapes"):
            QuantConfig(input_shapes={"x": [bad, 3, 8, 8]})
    assert "input_shapes" not in QuantConfig().model_dump()  # stamped configs keep their bytes
    assert hash(QuantConfig(input_shapes={"x": ["N", 3, 8, 8]})) == hash(QuantConfig(input_shapes={"x": ("N", 3, 8, 8)}))


def test_the_fp32_reference_takes_the_sizes_its_int8_model_fixes():
    model = models.conv_then_if()
    assert at_input_sizes_of(model, model) is None
    int8 = fix_input_shapes(model, {"x": (2, 3, 8, 8)})
    sized = at_input_sizes_of(model, int8)
    assert _dims(sized, "x") == [2, 3, 8, 8] and _dims(model, "x") == ["N", 3, 8, 8]


def test_input_shapes_give_an_input_of_unknown_rank_its_sizes():
    model = models.conv_relu_conv()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    assert _dims(fix_input_shapes(model, {"x": ["N", 3, 8, 8]}), "x") == ["N", 3, 8, 8]
