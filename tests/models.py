"""Small seeded ONNX graphs built by code, for the logic tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def _model(nodes, inputs, outputs, inits, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _two_convs(seed: int) -> dict[str, np.ndarray]:
    """Weights and biases of a 3x3 Conv(3 -> 8) and a 1x1 Conv(8 -> 4)."""
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 4).astype(np.float32),
    }


def conv_relu_conv(seed: int = 0, *, as_constants: bool = False, opset: int = OPSET) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv(8) -> Relu -> Conv(4) -> y; optionally weights as Constant nodes."""
    inits = _two_convs(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], "conv2"),
    ]
    if as_constants:
        nodes = [helper.make_node("Constant", [], [k], f"const_{k}", value=numpy_helper.from_array(v, k)) for k, v in inits.items()] + nodes
        inits = {}
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
        opset,
    )


def conv_bn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {
        "w": rng.normal(0, 0.5, (6, 2, 3, 3)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "beta": rng.normal(0, 0.2, 6).astype(np.float32),
        "mean": rng.normal(0, 0.2, 6).astype(np.float32),
        "var": rng.uniform(0.5, 2, 6).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], "conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], "bn", epsilon=1e-3),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 3, 3])],
        inits,
    )


def gemm_bn(seed: int = 0, *, trans_b: int = 1, bias: tuple[int, ...] | None = (32,), alpha: float = 1.0) -> onnx.ModelProto:
    """x[N,16] -> Gemm(32, transB, C of shape `bias` or none) -> BatchNormalization -> Relu ->
    Gemm(10) -> y: a Linear then BatchNorm1d, as torch exports it."""
    rng = np.random.default_rng(seed)
    inits = {
        "w": rng.normal(0, 0.4, (32, 16) if trans_b else (16, 32)).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 32).astype(np.float32),
        "beta": rng.normal(0, 0.2, 32).astype(np.float32),
        "mean": rng.normal(0, 0.2, 32).astype(np.float32),
        "var": rng.uniform(0.5, 2, 32).astype(np.float32),
        "w2": rng.normal(0, 0.3, (10, 32)).astype(np.float32),
    }
    gemm_inputs = ["x", "w"]
    if bias is not None:
        inits["b"] = rng.normal(0, 0.1, bias).astype(np.float32)
        gemm_inputs.append("b")
    nodes = [
        helper.make_node("Gemm", gemm_inputs, ["h"], "fc", transB=trans_b, alpha=alpha),
        helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["n"], "bn", epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"], "relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], "head", transB=1),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)


def mlp(seed: int = 0, *, trans_b: int = 1, dropout: bool = False) -> onnx.ModelProto:
    """x[N,16] -> Gemm(32, transB) -> Relu -> [Dropout, as opset <= 11 exports keep it] -> MatMul(10) -> y."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.4, (32, 16) if trans_b else (16, 32)).astype(np.float32)
    inits = {"w1": w1, "b1": rng.normal(0, 0.1, 32).astype(np.float32), "w2": rng.normal(0, 0.3, (32, 10)).astype(np.float32)}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], "gemm", transB=trans_b),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("MatMul", ["d" if dropout else "r", "w2"], ["y"], "matmul"),
    ]
    if dropout:
        nodes.insert(2, helper.make_node("Dropout", ["r"], ["d", "mask"], "dropout"))
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )


def conv_transpose(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.5, (3, 5, 2, 2)).astype(np.float32), "b": rng.normal(0, 0.1, 5).astype(np.float32)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], "deconv", strides=[2, 2])]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 8, 8])],
        inits,
    )


def feeds(model: onnx.ModelProto, batches: int = 4, batch: int = 2, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    value = model.graph.input[0]
    dims = [batch if not d.dim_value else d.dim_value for d in value.type.tensor_type.shape.dim]
    return [{value.name: rng.normal(0, 1, dims).astype(np.float32)} for _ in range(batches)]


def affine_hardswish_conv(seed: int = 0) -> onnx.ModelProto:
    """PP-LCNet's block: Conv -> Mul(a) -> Add(b) -> x*clip(x+3,0,6)/6 -> Mul(c) -> Add(d) -> Conv(1x1)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 6).astype(np.float32),
        "a": np.array([1.7], np.float32),
        "b": rng.normal(0, 0.3, (6, 1, 1)).astype(np.float32),
        "three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
        "c": np.array([0.8], np.float32),
        "d": np.array([-0.05], np.float32),
        "w2": rng.normal(0, 0.3, (4, 6, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "c1"], ["m1"], "mul_a"),
        helper.make_node("Add", ["m1", "b"], ["h"], "add_b"),
        helper.make_node("Add", ["h", "three"], ["h3"], "hs_add"),
        helper.make_node("Clip", ["h3", "zero", "six"], ["hc"], "hs_clip"),
        helper.make_node("Mul", ["h", "hc"], ["hm"], "hs_mul"),
        helper.make_node("Div", ["hm", "six"], ["hs"], "hs_div"),
        helper.make_node("Mul", ["c", "hs"], ["m2"], "mul_c"),
        helper.make_node("Add", ["m2", "d"], ["z"], "add_d"),
        helper.make_node("Conv", ["z", "w2", "b2"], ["y"], "conv2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def erf_gelu_conv(seed: int = 0) -> onnx.ModelProto:
    """PyTorch's GELU between two convs, as torch.onnx writes it: x * (1 + erf(x / sqrt 2)) * 0.5,
    then a ReLU and a plain scalar Mul before a third conv."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.5, (8, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "root2": np.array(2.0**0.5, np.float32), "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32),
        "w2": rng.normal(0, 0.3, (8, 8, 3)).astype(np.float32), "b2": rng.normal(0, 0.1, 8).astype(np.float32),
        "k": np.array(0.25, np.float32),
        "w3": rng.normal(0, 0.3, (4, 8, 1)).astype(np.float32), "b3": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1]),
        helper.make_node("Div", ["c1", "root2"], ["g_div"], "gelu_div"),
        helper.make_node("Erf", ["g_div"], ["g_erf"], "gelu_erf"),
        helper.make_node("Add", ["g_erf", "one"], ["g_add"], "gelu_add"),
        helper.make_node("Mul", ["c1", "g_add"], ["g_mul"], "gelu_mul"),
        helper.make_node("Mul", ["g_mul", "half"], ["g"], "gelu_half"),
        helper.make_node("Conv", ["g", "w2", "b2"], ["c2"], "conv2", pads=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r"], "relu"),
        helper.make_node("Mul", ["r", "k"], ["rk"], "scale"),
        helper.make_node("Conv", ["rk", "w3", "b3"], ["y"], "conv3"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16])],
        inits,
    )


def conv_then_if(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> Relu -> r; If(flag) whose branches read r from the outer scope (silero VAD's
    shape: its LSTM sits in an If); then a 1x1 Conv on the If's output.

    The If's only explicit input is `flag`, a graph input, so an order that looks at explicit
    inputs alone would put the If before the Conv it reads."""
    inits = {**_two_convs(seed), "half": np.array(0.5, np.float32)}
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    # Squaring, not a monotonic op: a later quantizer's clamp cannot hide a branch that reads r unclamped.
    then_branch = helper.make_graph([helper.make_node("Mul", ["r", "r"], ["t_out"], "then_square")], "then", [], [value("t_out")])
    else_branch = helper.make_graph([helper.make_node("Mul", ["r", "half"], ["e_out"], "else_mul")], "else", [], [value("e_out")])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"], "relu1"),
        helper.make_node("If", ["flag"], ["picked"], "pick", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Conv", ["picked", "w2", "b2"], ["y"], "conv2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def conv_inside_if(seed: int = 0) -> onnx.ModelProto:
    """y = If(flag, Conv(x, w1, b1), Conv(x, w2, b2)): every layer inside a control-flow body,
    as silero VAD's main export keeps its whole network."""
    inits = _two_convs(seed)
    inits["w2"] = np.random.default_rng(seed + 1).normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    inits["b2"] = inits["b1"][::-1].copy()
    value = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    branch = lambda w, b: helper.make_graph(  # noqa: E731
        [helper.make_node("Conv", ["x", w, b], ["out"], f"conv_{w}", pads=[1, 1, 1, 1])], f"branch_{w}", [], [value])
    nodes = [helper.make_node("If", ["flag"], ["y"], "pick", then_branch=branch("w1", "b1"), else_branch=branch("w2", "b2"))]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        inits,
    )


def ir3_conv_relu_conv(seed: int = 0) -> onnx.ModelProto:
    """conv_relu_conv as the ONNX model zoo's opset 7-9 CNNs are stored: IR version 3, opset 9,
    every initializer also listed as a graph input."""
    model = conv_relu_conv(seed, opset=9)
    model.ir_version = 3
    model.graph.input.extend(
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)) for init in model.graph.initializer
    )
    onnx.checker.check_model(model)
    return model


def fire_module(seed: int = 0, stem: int = 32, shape_output: bool = False) -> onnx.ModelProto:
    """SqueezeNet's fire module: x -> Conv 3x3 (3 -> stem channels) -> Relu -> r, then a 1x1
    (stem -> 4) and a 3x3 (stem -> 4) Conv both read r, and a Concat joins them. Products per
    output: 27, stem, 9 x stem. `shape_output`: Shape(y) is a second output (a shape computed
    from an activation, as a PyTorch LSTM sizes its initial state)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.normal(0, 0.5, (stem, 3, 3, 3)).astype(np.float32),
        "b0": rng.normal(0, 0.1, stem).astype(np.float32),
        "w1": rng.normal(0, 0.3, (4, stem, 1, 1)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 4).astype(np.float32),
        "w3": rng.normal(0, 0.2, (4, stem, 3, 3)).astype(np.float32),
        "b3": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r"], "relu0"),
        helper.make_node("Conv", ["r", "w1", "b1"], ["e1"], "expand1x1"),
        helper.make_node("Conv", ["r", "w3", "b3"], ["e3"], "expand3x3", pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["e1", "e3"], ["y"], "concat", axis=1),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])]
    if shape_output:
        nodes.append(helper.make_node("Shape", ["y"], ["y_shape"], "shape"))
        outputs.append(helper.make_tensor_value_info("y_shape", TensorProto.INT64, [4]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])], outputs, inits)


def depthwise_then_conv(seed: int = 0) -> onnx.ModelProto:
    """x[N,8,8,8] -> depthwise 3x3 Conv (9 products, output no larger than input) -> Relu ->
    3x3 Conv (8 -> 4, 72 products) -> y: MobileNet's pattern."""
    rng = np.random.default_rng(seed)
    inits = {
        "wd": rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32),
        "bd": rng.normal(0, 0.1, 8).astype(np.float32),
        "w": rng.normal(0, 0.2, (4, 8, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wd", "bd"], ["d"], "depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["r"], "relu"),
        helper.make_node("Conv", ["r", "w", "b"], ["y"], "conv", pads=[1, 1, 1, 1]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def inverted_residuals(seed: int = 0, tail: bool = False) -> onnx.ModelProto:
    """MobileNetV2's pattern: x[N,64,8,8] -> Conv 1x1 (64 -> 16, 64 products) -> s; then two
    inverted residual blocks, each a 1x1 expand (16 -> 96, 16 products) -> Clip(0, 6) -> 3x3
    depthwise (9 products) -> Clip(0, 6) -> 1x1 project (96 -> 16, 96 products); the first reads
    s, the second the sum of s and the first's output; y is the second's output. Only the entry
    and the projects reach 64 products. `tail`: a depthwise 3x3 over y (float readers only
    after it) writes a second output z."""
    rng = np.random.default_rng(seed)
    inits = {"w0": rng.normal(0, 0.15, (16, 64, 1, 1)).astype(np.float32), "b0": rng.normal(0, 0.1, 16).astype(np.float32),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["s"], "entry")]
    block_input = "s"
    for i in (1, 2):
        inits |= {f"we{i}": rng.normal(0, 0.3, (96, 16, 1, 1)).astype(np.float32), f"be{i}": rng.normal(0.5, 0.1, 96).astype(np.float32),
                  f"wd{i}": rng.normal(0, 0.4, (96, 1, 3, 3)).astype(np.float32), f"bd{i}": rng.normal(0.2, 0.1, 96).astype(np.float32),
                  f"wp{i}": rng.normal(0, 0.1, (16, 96, 1, 1)).astype(np.float32), f"bp{i}": rng.normal(0, 0.1, 16).astype(np.float32)}
        nodes += [
            helper.make_node("Conv", [block_input, f"we{i}", f"be{i}"], [f"e{i}"], f"expand{i}"),
            helper.make_node("Clip", [f"e{i}", "lo", "hi"], [f"re{i}"], f"clip_e{i}"),
            helper.make_node("Conv", [f"re{i}", f"wd{i}", f"bd{i}"], [f"d{i}"], f"depthwise{i}", group=96, pads=[1, 1, 1, 1]),
            helper.make_node("Clip", [f"d{i}", "lo", "hi"], [f"rd{i}"], f"clip_d{i}"),
            helper.make_node("Conv", [f"rd{i}", f"wp{i}", f"bp{i}"], ["y" if i == 2 else f"p{i}"], f"project{i}"),
        ]
        if i == 1:
            nodes.append(helper.make_node("Add", ["s", "p1"], ["sum1"], "residual1"))
            block_input = "sum1"
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 8, 8])]
    if tail:
        inits |= {"wt": rng.normal(0, 0.4, (16, 1, 3, 3)).astype(np.float32), "bt": rng.normal(0, 0.1, 16).astype(np.float32)}
        nodes += [helper.make_node("Conv", ["y", "wt", "bt"], ["t"], "tail", group=16, pads=[1, 1, 1, 1]),
                  helper.make_node("Clip", ["t", "lo", "hi"], ["z"], "clip_t")]
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 16, 8, 8]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 8, 8])], outputs, inits)


def pooled_linear_head(seed: int = 0, batch: int | str = "N", bias_shape: tuple[int, ...] = (5,)) -> onnx.ModelProto:
    """x[batch,16,4,4] -> GlobalAveragePool -> Reshape to (batch, -1) with a shape computed from
    Shape(x) -> MatMul(16 -> 5) -> Add(b) -> y: PP-OCR's classifier head. onnx's shape inference
    cannot tell the Reshape's rank, so only calibration knows the MatMul reads a 2-D tensor; ORT
    knows it when the batch is fixed (it folds the Shape) and fuses MatMul + Add into a Gemm.
    `bias_shape` (1, 5) is the broadcast bias that jax2tf and tf2onnx write."""
    rng = np.random.default_rng(seed)
    inits = {
        "w": rng.normal(0, 0.3, (16, 5)).astype(np.float32),
        "b": rng.normal(0, 0.2, 5).astype(np.float32).reshape(bias_shape),
        "starts": np.array([0], np.int64),
        "ends": np.array([1], np.int64),
        "rest": np.array([-1], np.int64),
    }
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"], "pool"),
        helper.make_node("Shape", ["p"], ["s"], "shape"),
        helper.make_node("Slice", ["s", "starts", "ends"], ["n"], "slice"),
        helper.make_node("Concat", ["n", "rest"], ["target"], "concat", axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"], "flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["logits"], "matmul"),
        helper.make_node("Add", ["logits", "b"], ["y"], "add"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits,
    )


def matmul_add_3d(seed: int = 0) -> onnx.ModelProto:
    """x[N,6,16] -> MatMul(16 -> 5) -> Add(b) -> y: a transformer's projection."""
    rng = np.random.default_rng(seed)
    inits = {"w": rng.normal(0, 0.3, (16, 5)).astype(np.float32), "b": rng.normal(0, 0.2, 5).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], "matmul"), helper.make_node("Add", ["m", "b"], ["y"], "add")]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 5])],
        inits,
    )


def channel_shuffle(seed: int = 0) -> onnx.ModelProto:
    """x[N,8,6,6] -> Conv 1x1 (group 2) -> Relu -> Reshape [N,2,4,6,6] -> Transpose -> Reshape
    [N,8,6,6] -> Conv 1x1 -> y: ShuffleNet's channel shuffle between two convolutions."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.5, (8, 4, 1, 1)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 8).astype(np.float32),
        "split": np.array([0, 2, 4, 6, 6], np.int64),
        "merge": np.array([0, 8, 6, 6], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "gconv", group=2),
        helper.make_node("Relu", ["c1"], ["r1"], "relu"),
        helper.make_node("Reshape", ["r1", "split"], ["groups"], "split_channels"),
        helper.make_node("Transpose", ["groups"], ["swapped"], "shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["swapped", "merge"], ["shuffled"], "merge_channels"),
        helper.make_node("Conv", ["shuffled", "w2", "b2"], ["y"], "conv"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])],
        inits,
    )


def one_hot_embedding(seed: int = 0) -> onnx.ModelProto:
    """x[N,6,16] (one-hot codes of 16 tokens) -> MatMul(16 -> 8) -> y: an embedding as a
    byte-sequence classifier (Magika) computes it."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], "embed")]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 8])],
        {"w": rng.normal(0, 1.0, (16, 8)).astype(np.float32)},
    )


def token_embedding(seed: int = 0, rows: int = 2048, *, tied: bool = False) -> onnx.ModelProto:
    """ids[N,6] -> Gather(table [rows, 128]) -> tokens (an output) -> MatMul(128 -> 64) -> y, as a
    transformer's word embeddings start it. `tied`: a Gemm reads the table as its weight instead
    (a language model's output projection shares its input embedding): y [N*6, rows]."""
    rng = np.random.default_rng(seed)
    inits = {"table": rng.normal(0, 0.05, (rows, 128)).astype(np.float32)}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["tokens"], "embed")]
    if tied:
        inits["rows_of_128"] = np.array([-1, 128], np.int64)
        nodes.append(helper.make_node("Reshape", ["tokens", "rows_of_128"], ["flat"], "flatten"))
        nodes.append(helper.make_node("Gemm", ["flat", "table"], ["y"], "project", transB=1))
    else:
        inits["w"] = rng.normal(0, 0.1, (128, 64)).astype(np.float32)
        nodes.append(helper.make_node("MatMul", ["tokens", "w"], ["y"], "project"))
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", rows] if tied else ["N", 6, 64]),
         helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", 6, 128])],
        inits,
    )


def dense_mlp(seed: int = 0, activation: str = "Relu") -> onnx.ModelProto:
    """x[N,16] -> MatMul(32) -> Add(b1) -> activation -> MatMul(10) -> Add(b2) -> y: two Keras
    Dense layers as tf2onnx writes them (MatMul + Add, the activation after the Add)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.4, (16, 32)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 32).astype(np.float32),
        "w2": rng.normal(0, 0.3, (32, 10)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 10).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], "dense1"),
        helper.make_node("Add", ["m1", "b1"], ["h"], "bias1"),
        helper.make_node(activation, ["h"], ["a"], "act"),
        helper.make_node("MatMul", ["a", "w2"], ["m2"], "dense2"),
        helper.make_node("Add", ["m2", "b2"], ["y"], "bias2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )


def tanh_gelu_mlp(seed: int = 0, *, order: str = "jax2tf", cubic: float = 0.044715, one_shape: tuple[int, ...] = ()) -> onnx.ModelProto:
    """x[N,6,16] -> MatMul(32) -> Add(b1) -> tanh GELU, op by op -> MatMul(10) -> y.

    order "jax2tf" writes the GELU as Magika's export does (c*h, then *h *h; 0.5 * (1 + t) * h);
    "torch" as PyTorch's tanh GELU exported below opset 20 (Pow(h, 3); h * 0.5 * (1 + t)).
    `one_shape` is the shape of the constant 1 (jax2tf folds it to [1, 1, 1])."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.4, (16, 32)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 32).astype(np.float32),
        "w2": rng.normal(0, 0.3, (32, 10)).astype(np.float32),
        "cubic": np.array(cubic, np.float32),
        "scale": np.array(np.sqrt(2 / np.pi), np.float32),
        "one": np.ones(one_shape, np.float32),
        "half": np.array(0.5, np.float32),
        "three": np.array(3.0, np.float32),
    }
    if order == "jax2tf":
        gelu = [
            helper.make_node("Mul", ["cubic", "h"], ["g1"], "gelu_mul"),
            helper.make_node("Mul", ["h", "g1"], ["g2"], "gelu_mul_1"),
            helper.make_node("Mul", ["h", "g2"], ["g3"], "gelu_mul_2"),
            helper.make_node("Add", ["h", "g3"], ["g4"], "gelu_add"),
            helper.make_node("Mul", ["scale", "g4"], ["g5"], "gelu_mul_3"),
            helper.make_node("Tanh", ["g5"], ["t"], "gelu_tanh"),
            helper.make_node("Add", ["one", "t"], ["g6"], "gelu_add_1"),
            helper.make_node("Mul", ["half", "g6"], ["g7"], "gelu_mul_4"),
            helper.make_node("Mul", ["h", "g7"], ["a"], "gelu_mul_5"),
        ]
    else:
        gelu = [
            helper.make_node("Mul", ["h", "half"], ["g0"], "gelu_half"),
            helper.make_node("Pow", ["h", "three"], ["g1"], "gelu_pow"),
            helper.make_node("Mul", ["g1", "cubic"], ["g3"], "gelu_mul"),
            helper.make_node("Add", ["h", "g3"], ["g4"], "gelu_add"),
            helper.make_node("Mul", ["g4", "scale"], ["g5"], "gelu_mul_1"),
            helper.make_node("Tanh", ["g5"], ["t"], "gelu_tanh"),
            helper.make_node("Add", ["t", "one"], ["g6"], "gelu_add_1"),
            helper.make_node("Mul", ["g0", "g6"], ["a"], "gelu_mul_2"),
        ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], "dense1"),
        helper.make_node("Add", ["m1", "b1"], ["h"], "bias1"),
        *gelu,
        helper.make_node("MatMul", ["a", "w2"], ["y"], "dense2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 10])],
        inits,
    )


def conv_inside_loop(seed: int = 0) -> onnx.ModelProto:
    """y = Loop(2 times: v <- Conv(v)), v starting at x: a layer inside a Loop body."""
    rng = np.random.default_rng(seed)
    inits = {
        "trips": np.array(2, np.int64),
        "keep_going": np.array(True),
        "w": rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, 8).astype(np.float32),
    }
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], "keep"),
            helper.make_node("Conv", ["v_in", "w", "b"], ["v_out"], "conv_in_loop", pads=[1, 1, 1, 1]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )
    return _model(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], "repeat", body=body)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        inits,
    )


def nested_ifs(seed: int = 0) -> onnx.ModelProto:
    """y = If(outer, then: If(inner, Conv(x, w1), Conv(x, w2)) -> Relu -> Conv(w3), else: Conv(x, w4)):
    layers one and two If levels deep, the inner If reading `outer`'s scope."""
    rng = np.random.default_rng(seed)
    inits = {f"w{i}": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32) for i in (1, 2, 4)}
    inits["w3"] = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    conv = lambda w, out, x="x": helper.make_node("Conv", [x, w], [out], f"conv_{w}", pads=[0, 0, 0, 0] if w == "w3" else [1, 1, 1, 1])  # noqa: E731
    inner = helper.make_node("If", ["inner"], ["picked"], "inner_if",
                             then_branch=helper.make_graph([conv("w1", "a")], "inner_then", [], [value("a")]),
                             else_branch=helper.make_graph([conv("w2", "b")], "inner_else", [], [value("b")]))
    then_body = helper.make_graph([inner, helper.make_node("Relu", ["picked"], ["r"], "relu"), conv("w3", "t", "r")], "outer_then", [], [value("t")])
    else_body = helper.make_graph([conv("w4", "e")], "outer_else", [], [value("e")])
    return _model(
        [helper.make_node("If", ["outer"], ["y"], "outer_if", then_branch=then_body, else_branch=else_body)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
         helper.make_tensor_value_info("outer", TensorProto.BOOL, []), helper.make_tensor_value_info("inner", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])],
        inits,
    )


def residual_block(seed: int = 0, width: int = 8) -> onnx.ModelProto:
    """x -> Conv 3x3 (3 -> width) -> Relu -> r; Conv 3x3 (width -> width) reads r; Add(that, r)
    -> s; Conv 1x1 (width -> 4) reads s, and so does a float Sigmoid (a second output). Both
    inputs of the Add are quantized layer outputs. At width 32 the ORT rows quantize the
    27-product first conv by default, as its output is quantized anyway (at 8 they keep it
    float: Target.requantize_min_channels)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.normal(0, 0.5, (width, 3, 3, 3)).astype(np.float32),
        "b0": rng.normal(0, 0.1, width).astype(np.float32),
        "w1": rng.normal(0, 0.2 * (8 / width) ** 0.5, (width, width, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, width).astype(np.float32),
        "w2": rng.normal(0, 0.3 * (8 / width) ** 0.5, (4, width, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r"], "relu0"),
        helper.make_node("Conv", ["r", "w1", "b1"], ["a"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "r"], ["s"], "add"),
        helper.make_node("Conv", ["s", "w2", "b2"], ["y"], "conv2"),
        helper.make_node("Sigmoid", ["s"], ["z"], "gate"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", width, 8, 8])],
        inits,
    )


def branch_concat(seed: int = 0) -> onnx.ModelProto:
    """An Inception block in small: x -> Conv 3x3 (3 -> 8) -> Relu -> r; branch a: Conv 1x1
    (8 -> 8) -> Relu; branch b: Conv 3x3 (8 -> 8) -> Relu; Concat(a, b) -> Conv 1x1 (16 -> 4) -> y."""
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "wa": rng.normal(0, 0.4, (8, 8, 1, 1)).astype(np.float32),
        "wb": rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 16, 1, 1)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r"], "relu0"),
        helper.make_node("Conv", ["r", "wa"], ["ca"], "conv_a"),
        helper.make_node("Relu", ["ca"], ["a"], "relu_a"),
        helper.make_node("Conv", ["r", "wb"], ["cb"], "conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["cb"], ["b"], "relu_b"),
        helper.make_node("Concat", ["a", "b"], ["cat"], "concat", axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["y"], "conv2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def split_residual_block(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8's C2f, in small: x -> Conv 3x3 (3 -> 8) -> Relu -> r; r's channels sliced in two
    halves a, b; Conv 3x3 (4 -> 4) -> Relu reads b, Add(b, that) -> s; Concat(a, b, s, MaxPool(r)
    -> 20 channels) -> Conv 1x1 (20 -> 4). The Add and the Concat read values moved by a Slice or a
    MaxPool from quantized layer outputs."""
    rng = np.random.default_rng(seed)
    inits = {
        "w0": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
        "b0": rng.normal(0, 0.1, 8).astype(np.float32),
        "w1": rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 4).astype(np.float32),
        "w2": rng.normal(0, 0.3, (4, 20, 1, 1)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 4).astype(np.float32),
        "axis": np.array([1], np.int64), "zero": np.array([0], np.int64), "four": np.array([4], np.int64),
        "eight": np.array([8], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r"], "relu0"),
        helper.make_node("Slice", ["r", "zero", "four", "axis"], ["a"], "slice_a"),
        helper.make_node("Slice", ["r", "four", "eight", "axis"], ["b"], "slice_b"),
        helper.make_node("Conv", ["b", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["h"], "relu1"),
        helper.make_node("Add", ["b", "h"], ["s"], "add"),
        helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Concat", ["a", "b", "s", "p"], ["cat"], "concat", axis=1),
        helper.make_node("Conv", ["cat", "w2", "b2"], ["y"], "conv2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def squeeze_excite(seed: int = 0, *, pooled: bool = True) -> onnx.ModelProto:
    """x -> Conv(8) = c1 -> GlobalAveragePool -> Conv(8, 1x1) -> HardSigmoid = gate; c1 * gate
    -> Conv(4) -> y. pooled=False: gate = HardSigmoid(c1) (only float ops read c1)."""
    inits = _two_convs(seed)
    if pooled:
        inits["ws"] = np.random.default_rng(seed + 1).normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        *([helper.make_node("GlobalAveragePool", ["c1"], ["p"], "pool"), helper.make_node("Conv", ["p", "ws"], ["s"], "conv_se")]
          if pooled else []),
        helper.make_node("HardSigmoid", ["s" if pooled else "c1"], ["gate"], "gate"),
        helper.make_node("Mul", ["c1", "gate"], ["m"], "scale"),
        helper.make_node("Conv", ["m", "w2", "b2"], ["y"], "conv2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        inits,
    )


def square_difference_layernorm(seed: int = 0, *, centre_on: str = "mean", shift: float = 40.0) -> onnx.ModelProto:
    """x[N,6,16] -> MatMul(32) -> Add(shift: every channel far from 0, as Magika's max-pooled
    GELUs are, so E[h]^2 dwarfs the variance) -> a LayerNorm over the last axis written as jax2tf writes it
    (Magika's): var = E[h*h] - E[h]^2, clamped at 0, and (h - E[h]) * rsqrt(var + eps) * g + b,
    the means as ReduceSum (keepdims 0) times 1/32, broadcast back through Reshape -> Expand ->
    MatMul(10) -> y. `centre_on` "other": h is centred on another tensor's mean instead (not a
    variance of h: it must not be rewritten)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.normal(0, 0.4, (16, 32)).astype(np.float32),
        "shift": np.full(32, shift, np.float32),
        "axis": np.array([2], np.int64),
        "inv": np.array(1 / 32, np.float32),
        "zero": np.array(0.0, np.float32),
        "eps": np.array(1e-6, np.float32),
        "keep": np.array([0, 0, 1], np.int64),  # Reshape: N, 6, 1
        "g": rng.normal(1, 0.1, 32).astype(np.float32),
        "b": rng.normal(0, 0.1, 32).astype(np.float32),
        "w2": rng.normal(0, 0.3, (32, 10)).astype(np.float32),
    }
    centred_on = "mean" if centre_on == "mean" else "mean_x"
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], "dense1"),
        helper.make_node("Add", ["h0", "shift"], ["h"], "shift"),
        helper.make_node("ReduceSum", ["h", "axis"], ["sum"], "ln_sum", keepdims=0),
        helper.make_node("Mul", ["sum", "inv"], ["mean"], "ln_mean"),
        helper.make_node("Mul", ["h", "h"], ["hh"], "ln_square"),
        helper.make_node("ReduceSum", ["hh", "axis"], ["sum2"], "ln_sum2", keepdims=0),
        helper.make_node("Mul", ["sum2", "inv"], ["mean2"], "ln_mean2"),
        helper.make_node("Mul", ["mean", "mean"], ["msq"], "ln_mean_square"),
        helper.make_node("Sub", ["mean2", "msq"], ["var0"], "ln_var"),
        helper.make_node("Max", ["zero", "var0"], ["var"], "ln_clamp"),
        helper.make_node("ReduceSum", ["x", "axis"], ["sum_x"], "other_sum", keepdims=0),
        helper.make_node("Mul", ["sum_x", "inv"], ["mean_x"], "other_mean"),
        helper.make_node("Shape", ["h"], ["shape"], "ln_shape"),
        helper.make_node("Reshape", [centred_on, "keep"], ["mean_r"], "ln_mean_reshape"),
        helper.make_node("Expand", ["mean_r", "shape"], ["mean_b"], "ln_mean_expand"),
        helper.make_node("Sub", ["h", "mean_b"], ["d"], "ln_centre"),
        helper.make_node("Add", ["var", "eps"], ["ve"], "ln_eps"),
        helper.make_node("Sqrt", ["ve"], ["sd"], "ln_sqrt"),
        helper.make_node("Reciprocal", ["sd"], ["rs"], "ln_rsqrt"),
        helper.make_node("Reshape", ["rs", "keep"], ["rs_r"], "ln_rs_reshape"),
        helper.make_node("Mul", ["d", "rs_r"], ["n"], "ln_norm"),
        helper.make_node("Mul", ["n", "g"], ["ng"], "ln_scale"),
        helper.make_node("Add", ["ng", "b"], ["ln"], "ln_shift"),
        helper.make_node("MatMul", ["ln", "w2"], ["y0"], "dense2"),
        helper.make_node("Mul", ["sum_x", "zero"], ["nothing"], "other_zero"),  # keeps mean_x's sum read in either form
        helper.make_node("Reshape", ["nothing", "keep"], ["nothing_r"], "other_reshape"),
        helper.make_node("Add", ["y0", "nothing_r"], ["y"], "other_add"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 10])],
        inits,
    )
