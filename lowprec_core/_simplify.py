"""Float-exact graph simplifications run before calibration: fewer ops, fewer places to quantize.

- BatchNormalization after a Conv, or after a Gemm (a Linear then BatchNorm1d: tabular MLPs,
  ArcFace's embedding head), folds into it. A Gemm's BatchNormalization left in place runs in
  float between the integer Gemm and the next layer's quantizer, where the ReLU after it cannot
  join that quantizer.
- Per-channel or scalar Mul/Add constants around a Conv fold into its weight and bias
  (PaddleOCR's PP-LCNet puts a learnable affine around every activation). Not the constant
  that ends a gated activation x * f(x) * c (GELU's 0.5): without it OpenVINO no longer sees a
  GELU to fuse into the conv before it. The U-Net `columns`, INT8 in OpenVINO on Zen 4: 1.42x ->
  1.52x of FP32 at batch 1 and 2.16x -> 2.37x at 32 (1 thread), 1.94x -> 2.14x at 32 on 2 threads;
  in ONNX Runtime level (1.52x / 1.86x against 1.49x / 1.83x).
- x * clip(x + 3, 0, 6) / 6, a decomposed HardSwish, becomes x * HardSigmoid(x) for ONNX
  Runtime. Not for OpenVINO: it fuses the decomposed form into its HSwish and that into the
  convolution before it, but runs a lone HardSigmoid with a reference kernel (PP-LCNet: 30 %
  of the INT8 model's time, with the layout reorders around it).
- 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), the tanh GELU that jax2tf and
  tf2onnx write out op by op, becomes ONNX Runtime's FastGelu (`fuse_for_runtime`). ORT fuses
  PyTorch's erf GELU itself, but none of the orders these exporters write the tanh form in.
  OpenVINO's ONNX frontend reads FastGelu too (Magika in OpenVINO: 2.27x -> 2.48x of FP32 at batch 1).
- A variance written as E[x^2] - E[x]^2 (jax2tf's LayerNorm), where the graph also computes
  x - E[x], becomes E[(x - E[x])^2], for OpenVINO (`fuse_for_runtime`). On a CPU with bf16 the
  plugin runs float in bf16, whose 8-bit mantissa loses the difference of two close squares:
  Magika's FP32 model read 0.77 agreement with itself at f32 there, 1.00 with the rewrite
  (2-core Zen 4; its second LayerNorm normalizes max-pooled GELU outputs, all positive).

Each rewrite keeps the FP32 function (up to float rounding); tests compare them in ORT.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ._graph import attribute, consumers, initializers, set_nodes, topological_sort

log = logging.getLogger(__name__)


class _Pass:
    """One sweep of a rewrite: a fresh reader map, and nodes already touched are left alone,
    so every match in the sweep sees the graph as it was. Sweeps repeat until nothing changes."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = initializers(graph)
        self.users = consumers(graph)
        self.producers = {out: node for node in graph.node for out in node.output}
        self.outputs = {o.name for o in graph.output}
        self.touched: set[int] = set()
        self.dropped: set[int] = set()
        self.replacements: dict[int, list[onnx.NodeProto]] = {}

    def free(self, *nodes: onnx.NodeProto) -> bool:
        return not any(id(n) in self.touched for n in nodes)

    def touch(self, *nodes: onnx.NodeProto) -> None:
        self.touched.update(id(n) for n in nodes)

    def drop(self, node: onnx.NodeProto) -> None:
        self.dropped.add(id(node))

    def finish(self) -> bool:
        if not self.touched:
            return False
        nodes = []
        for node in self.graph.node:
            nodes += self.replacements.get(id(node), [] if id(node) in self.dropped else [node])
        set_nodes(self.graph, nodes)
        return True


def simplify(graph: onnx.GraphProto, runtime: str = "onnxruntime") -> None:
    """The float-exact rewrites above, those that pay in `runtime`."""
    rewrites = (_fold_batchnorm, _fold_affine_after_conv, _fold_affine_before_conv)
    _sweep(graph, (*rewrites, _fuse_hardswish) if runtime == "onnxruntime" else rewrites)


RUNTIME_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops


def fuse_for_runtime(model: onnx.ModelProto, runtime: str = "onnxruntime") -> None:
    """Rewrites into ONNX Runtime's contrib ops, and for OpenVINO the centred variance, run
    after shape inference (the rewrites read ranks and shapes, and ONNX's shape inference does
    not know these ops, so their outputs keep the shapes inferred before). The model then
    imports the contrib domain where it uses it."""
    if runtime == "openvino" and _sweep(model.graph, (_center_variance,)):
        topological_sort(model.graph)  # x - E[x] may come after the square it now feeds
    if not _sweep(model.graph, (_fuse_tanh_gelu,)):
        return
    produced = {out for node in model.graph.node for out in node.output}
    kept = [v for v in model.graph.value_info if v.name in produced]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    if not any(entry.domain == RUNTIME_DOMAIN for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid(RUNTIME_DOMAIN, 1))


def _sweep(graph: onnx.GraphProto, rewrites) -> bool:
    changed = False
    sweep = None
    for rewrite in rewrites:
        while True:
            sweep = sweep or _Pass(graph)
            for node in list(graph.node):
                if sweep.free(node):
                    rewrite(sweep, node)
            if not sweep.finish():
                break  # nothing touched: the graph and the pass's maps still agree, for the next rewrite too
            sweep = None
            changed = True
    return changed


def _const(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    tensor = inits.get(name)
    return numpy_helper.to_array(tensor) if tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT else None


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> float | None:
    value = _const(inits, name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _sole_reader(sweep: _Pass, tensor: str) -> onnx.NodeProto | None:
    if tensor in sweep.outputs:
        return None
    readers = sweep.users.get(tensor, [])
    return readers[0] if len(readers) == 1 and sweep.free(readers[0]) else None


def _conv_params(sweep: _Pass, conv) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(weight, bias, bias name) of a Conv whose weight (and bias) are private constants."""
    users, inits = sweep.users, sweep.inits
    weight = _const(inits, conv.input[1])
    if weight is None or len(users.get(conv.input[1], [])) != 1:
        return None
    if len(conv.input) > 2 and conv.input[2]:
        bias = _const(inits, conv.input[2])
        if bias is None or len(users.get(conv.input[2], [])) != 1:
            return None
        return weight, bias, conv.input[2]
    return weight, np.zeros(weight.shape[0], np.float32), f"{conv.name}_bias"


def _set_conv_params(sweep: _Pass, conv, weight: np.ndarray, bias: np.ndarray, bias_name: str) -> None:
    graph, inits = sweep.graph, sweep.inits
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(weight.astype(np.float32), conv.input[1]))
    tensor = numpy_helper.from_array(bias.astype(np.float32), bias_name)
    if bias_name in inits:
        inits[bias_name].CopyFrom(tensor)
    else:
        graph.initializer.append(tensor)
        inits[bias_name] = graph.initializer[-1]
        if len(conv.input) == 2:
            conv.input.append(bias_name)
        else:
            conv.input[2] = bias_name


def _channel_vector(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """A constant that broadcasts over an NC... tensor as one value per channel (or a scalar)."""
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]), np.float64)
    shape = value.shape
    squeezed = [d for d in shape]
    if len(shape) > rank or value.size != channels:
        return None
    padded = [1] * (rank - len(shape)) + squeezed
    if padded[1] != channels or any(d != 1 for i, d in enumerate(padded) if i != 1):
        return None
    return value.reshape(-1).astype(np.float64)


def _other_input(node: onnx.NodeProto, tensor: str) -> str | None:
    if len(node.input) != 2 or list(node.input).count(tensor) != 1:
        return None
    return node.input[1] if node.input[0] == tensor else node.input[0]


def _gemm_params(sweep: _Pass, gemm) -> tuple[np.ndarray, int, np.ndarray, str] | None:
    """(weight, its output-channel axis, bias [N], bias name) of a Gemm A·B + C (alpha and beta
    1) whose B and C are private constants, C one value or one per output channel."""
    users, inits = sweep.users, sweep.inits
    if attribute(gemm, "alpha", 1.0) != 1.0 or attribute(gemm, "beta", 1.0) != 1.0:
        return None
    weight = _const(inits, gemm.input[1])
    if weight is None or weight.ndim != 2 or len(users.get(gemm.input[1], [])) != 1:
        return None
    axis = 0 if attribute(gemm, "transB", 0) else 1
    channels = weight.shape[axis]
    if len(gemm.input) < 3 or not gemm.input[2]:
        return weight, axis, np.zeros(channels, np.float32), f"{gemm.name}_bias"
    bias = _const(inits, gemm.input[2])
    if bias is None or len(users.get(gemm.input[2], [])) != 1 or bias.shape not in ((), (1,), (channels,), (1, channels)):
        return None
    return weight, axis, np.broadcast_to(bias.reshape(-1), (channels,)), gemm.input[2]


def _fold_batchnorm(sweep: _Pass, node: onnx.NodeProto) -> None:
    if node.op_type not in ("Conv", "Gemm"):
        return
    bn = _sole_reader(sweep, node.output[0])
    if bn is None or bn.op_type != "BatchNormalization" or len(bn.output) != 1:
        return
    params = [_const(sweep.inits, name) for name in bn.input[1:5]]
    if any(p is None for p in params):
        return
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)
    factor = gamma / np.sqrt(var + attribute(bn, "epsilon", 1e-5))
    if node.op_type == "Conv":
        conv_params = _conv_params(sweep, node)
        if conv_params is None:
            return
        weight, bias, bias_name = conv_params
        shape = (-1,) + (1,) * (weight.ndim - 1)
    else:  # a Gemm's output [M, N]: BatchNormalization's channels are its N
        gemm_params = _gemm_params(sweep, node)
        if gemm_params is None or gemm_params[2].size != factor.size:
            return
        weight, axis, bias, bias_name = gemm_params
        shape = (-1, 1) if axis == 0 else (1, -1)
    _set_conv_params(sweep, node, weight * factor.reshape(shape), (bias - mean) * factor + beta, bias_name)
    node.output[0] = bn.output[0]
    sweep.touch(node, bn)
    sweep.drop(bn)


def _fold_affine_after_conv(sweep: _Pass, conv: onnx.NodeProto) -> None:
    """Conv -> Mul(c) or Add(c) with c per output channel: fold c into the Conv."""
    if conv.op_type != "Conv":
        return
    follower = _sole_reader(sweep, conv.output[0])
    if follower is None or follower.op_type not in ("Mul", "Add"):
        return
    other = _other_input(follower, conv.output[0])
    value = _const(sweep.inits, other) if other else None
    conv_params = _conv_params(sweep, conv)
    if value is None or conv_params is None:
        return
    weight, bias, bias_name = conv_params
    vector = _channel_vector(value, weight.shape[0], weight.ndim)
    if vector is None:
        return
    if follower.op_type == "Mul":
        weight = weight * vector.reshape((-1,) + (1,) * (weight.ndim - 1))
        bias = bias * vector
    else:
        bias = bias + vector
    _set_conv_params(sweep, conv, weight, bias, bias_name)
    conv.output[0] = follower.output[0]
    sweep.touch(conv, follower)
    sweep.drop(follower)


def _fold_affine_before_conv(sweep: _Pass, node: onnx.NodeProto) -> None:
    """Mul(c) or Add(c) -> Conv: fold into the Conv when exact (an Add only without padding)."""
    if node.op_type not in ("Mul", "Add") or len(node.input) != 2:
        return
    conv = _sole_reader(sweep, node.output[0])
    if conv is None or conv.op_type != "Conv" or conv.input[0] != node.output[0] or attribute(conv, "group", 1) != 1:
        return
    const_side = [name for name in node.input if name in sweep.inits]
    if len(const_side) != 1:
        return
    activation = node.input[1] if node.input[0] == const_side[0] else node.input[0]
    if node.op_type == "Mul" and _gated(sweep, activation):
        return  # the constant ends a gated activation x * f(x) * c the runtime fuses as written
    value = _const(sweep.inits, const_side[0])
    conv_params = _conv_params(sweep, conv)
    if value is None or conv_params is None:
        return
    weight, bias, bias_name = conv_params
    vector = _channel_vector(value, weight.shape[1], weight.ndim)
    if vector is None:
        return
    if node.op_type == "Mul":
        weight = weight * vector.reshape((1, -1) + (1,) * (weight.ndim - 2))
    else:
        if any(attribute(conv, "pads", [0]) or [0]) or attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            return  # padded borders would see 0, not the shifted value
        bias = bias + weight.astype(np.float64).reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2) @ vector
    _set_conv_params(sweep, conv, weight, bias, bias_name)
    conv.input[0] = activation
    sweep.touch(node, conv)
    sweep.drop(node)


GATE_DEPTH = 4  # nodes from a gate f(x) back to x: Add <- Erf <- Div (erf GELU), 4 for the tanh GELU, Clip <- Add (HardSwish)


def _gated(sweep: _Pass, tensor: str) -> bool:
    """Whether `tensor` is a product x * f(x): an activation such as GELU or HardSwish. Their
    exports end in a constant factor (0.5, 1/6) that runtimes look for to fuse the whole
    pattern into one kernel, and into the convolution before it."""
    factors, _, _ = _product(sweep, tensor, root=True)
    if len(factors) != 2:
        return False
    first, second = factors
    return _reads(sweep, second, first) or _reads(sweep, first, second)


def _reads(sweep: _Pass, tensor: str, source: str) -> bool:
    """Whether `tensor` is computed from `source` within GATE_DEPTH nodes."""
    frontier = {tensor}
    for _ in range(GATE_DEPTH):
        nodes = [sweep.producers[name] for name in frontier if name in sweep.producers]
        frontier = {name for node in nodes for name in node.input if name and name not in sweep.inits}
        if source in frontier:
            return True
    return False


def _fuse_hardswish(sweep: _Pass, add: onnx.NodeProto) -> None:
    """Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(6) | Mul(1/6)  ==>  Mul(x, HardSigmoid(x))."""
    if add.op_type != "Add" or len(add.input) != 2:
        return

    def scalar(name: str) -> float | None:
        return _scalar(sweep.inits, name)

    x = next((n for n in add.input if scalar(n) is None), None)
    three = next((n for n in add.input if n != x), None)
    if x is None or three is None or scalar(three) != 3.0:
        return
    clip = _sole_reader(sweep, add.output[0])
    if clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
        return
    if scalar(clip.input[1]) != 0.0 or scalar(clip.input[2]) != 6.0:
        return
    mul = _sole_reader(sweep, clip.output[0])
    if mul is None or mul.op_type != "Mul" or sorted(mul.input) != sorted([x, clip.output[0]]):
        return
    last = _sole_reader(sweep, mul.output[0])
    if last is None or len(last.input) != 2 or last.input[0] != mul.output[0]:
        return
    divisor = scalar(last.input[1])
    if not ((last.op_type == "Div" and divisor == 6.0) or (last.op_type == "Mul" and divisor is not None and abs(divisor * 6 - 1) < 1e-6)):
        return
    gate = f"{add.name}_hardsigmoid"
    sweep.replacements[id(add)] = [
        helper.make_node("HardSigmoid", [x], [gate], gate, alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Mul", [x, gate], [last.output[0]], f"{add.name}_hardswish"),
    ]
    sweep.touch(add, clip, mul, last)
    for node in (clip, mul, last):
        sweep.drop(node)


GELU_CUBIC = 0.044715
GELU_SCALE = math.sqrt(2.0 / math.pi)


def _close(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) <= 1e-5 * abs(expected)


def _product(sweep: _Pass, tensor: str, *, root: bool = False) -> tuple[Counter, float, list[onnx.NodeProto]]:
    """`tensor` as a product: its factors (tensor names, with multiplicity), the constant
    factor, and the Mul/Pow nodes it was read through. Only nodes whose output nothing else
    reads are opened (the root's excepted), so every node returned can be dropped."""
    constant = _scalar(sweep.inits, tensor)
    if constant is not None:
        return Counter(), constant, []
    node = sweep.producers.get(tensor)
    private = root or (tensor not in sweep.outputs and len(sweep.users.get(tensor, [])) == 1)
    if node is None or not private or not sweep.free(node):
        return Counter({tensor: 1}), 1.0, []
    if node.op_type == "Mul" and len(node.input) == 2:
        (fa, ca, na), (fb, cb, nb) = (_product(sweep, name) for name in node.input)
        return fa + fb, ca * cb, [*na, *nb, node]
    if node.op_type == "Pow" and len(node.input) == 2 and _scalar(sweep.inits, node.input[1]) in (2.0, 3.0):
        power = int(_scalar(sweep.inits, node.input[1]))
        factors, constant, nodes = _product(sweep, node.input[0])
        return Counter({k: v * power for k, v in factors.items()}), constant**power, [*nodes, node]
    return Counter({tensor: 1}), 1.0, []


def _fuse_tanh_gelu(sweep: _Pass, tanh: onnx.NodeProto) -> None:
    """Tanh -> ... ==> FastGelu(x), where the nodes around the Tanh compute, in any order of
    operands, 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    if tanh.op_type != "Tanh":
        return
    factors, scale, scale_nodes = _product(sweep, tanh.input[0])
    if len(factors) != 1 or sum(factors.values()) != 1 or not _close(scale, GELU_SCALE):
        return
    (inner,) = factors
    add = sweep.producers.get(inner)
    if add is None or add.op_type != "Add" or len(add.input) != 2 or not sweep.free(add) or _sole_reader(sweep, inner) is None:
        return
    x = cube_nodes = None
    left, right = add.input
    for first, second in ((left, right), (right, left)):
        cube, cubic, nodes = _product(sweep, second)
        if cube == Counter({first: 3}) and _close(cubic, GELU_CUBIC):
            x, cube_nodes = first, nodes
    plus = _sole_reader(sweep, tanh.output[0])
    if x is None or plus is None or plus.op_type != "Add" or _other_input(plus, tanh.output[0]) is None:
        return
    if _scalar(sweep.inits, _other_input(plus, tanh.output[0])) != 1.0:
        return
    reader = plus
    for _ in range(3):  # 0.5 * x * (1 + t), grouped any way: a chain of up to three Muls
        reader = _sole_reader(sweep, reader.output[0])
        if reader is None or reader.op_type != "Mul":
            return
        factors, half, product_nodes = _product(sweep, reader.output[0], root=True)
        if factors == Counter({x: 1, plus.output[0]: 1}) and _close(half, 0.5):
            break
    else:
        return
    pattern = [*scale_nodes, add, *cube_nodes, tanh, plus, *product_nodes]
    rank = _rank(sweep.graph, x)
    if any(len(sweep.inits[name].dims) > rank for node in pattern for name in node.input if name in sweep.inits):
        return  # a constant of higher rank than x broadcasts the result to a larger shape
    fused = helper.make_node("FastGelu", [x], [reader.output[0]], f"{tanh.name}_fastgelu", domain=RUNTIME_DOMAIN)
    sweep.touch(*pattern)
    for node in pattern:
        if node is not reader:
            sweep.drop(node)
    sweep.replacements[id(reader)] = [fused]


_PASS_THROUGH = frozenset({"Reshape", "Expand", "Unsqueeze", "Identity"})  # a mean broadcast back to x's shape


def _reduction(sweep: _Pass, tensor: str) -> tuple[str, tuple, float] | None:
    """`tensor` as a mean over some axes: (the tensor reduced, the reduction's op, axes and
    keepdims, and the constant it is scaled by to make it a mean), for ReduceMean(x) or
    ReduceSum(x) times a constant."""
    factors, constant, _ = _product(sweep, tensor, root=True)
    if len(factors) != 1 or sum(factors.values()) != 1:
        return None
    (reduced,) = factors
    node = sweep.producers.get(reduced)
    if node is None or node.op_type not in ("ReduceMean", "ReduceSum"):
        return None
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = sweep.inits.get(node.input[1])
        if value is None:
            return None
        axes = numpy_helper.to_array(value).tolist()
    return node.input[0], (node.op_type, tuple(axes or ()), attribute(node, "keepdims", 1)), constant


def _shape(graph: onnx.GraphProto, tensor: str) -> tuple | None:
    """The shape inference found for `tensor`: a size per dim, or "?" for a dim it named but
    could not size (its names differ from tensor to tensor); None where it found none."""
    for value in (*graph.value_info, *graph.input, *graph.output):
        if value.name == tensor and value.type.tensor_type.HasField("shape"):
            return tuple(d.dim_value or "?" for d in value.type.tensor_type.shape.dim)
    return None


def _center_variance(sweep: _Pass, sub: onnx.NodeProto) -> None:
    """Sub(E[x*x], E[x]^2) ==> E[d*d], d = x - E[x] (a Sub the graph already computes, E[x]
    broadcast back through Reshape/Expand/Unsqueeze); the square of x and of E[x] go. The
    reductions must be alike (op, axes, keepdims, scale) and d must have x's inferred shape
    (its rank, and the same size where either is sized)."""
    if sub.op_type != "Sub" or len(sub.input) != 2:
        return
    second, _, second_nodes = _product(sweep, sub.input[1])
    if len(second) != 1 or sum(second.values()) != 2 or not second_nodes:
        return
    (mean,) = second
    first, square = _reduction(sweep, sub.input[0]), _reduction(sweep, mean)
    if first is None or square is None or first[1:] != square[1:]:
        return
    x = square[0]
    factors, constant, square_nodes = _product(sweep, first[0])
    if factors != Counter({x: 2}) or constant != 1.0 or not square_nodes:  # opened only where the square is private
        return
    shape = _shape(sweep.graph, x)
    if shape is None:
        return
    for centred in sweep.users.get(x, []):
        if centred.op_type != "Sub" or centred.input[0] != x or not sweep.free(centred):
            continue
        source = centred.input[1]
        while source != mean and source in sweep.producers and sweep.producers[source].op_type in _PASS_THROUGH:
            source = sweep.producers[source].input[0]
        if source == mean and _shape(sweep.graph, centred.output[0]) == shape:
            break
    else:
        return
    squared = square_nodes[-1]
    sweep.touch(sub, *second_nodes, *square_nodes)
    for node in (*second_nodes, *square_nodes):
        if node is not squared:
            sweep.drop(node)
    sweep.replacements[id(squared)] = [helper.make_node("Mul", [centred.output[0]] * 2, [first[0]], f"{squared.name}_centred")]
    sweep.replacements[id(sub)] = [helper.make_node("Identity", [sub.input[0]], [sub.output[0]], sub.name)]


def _rank(graph: onnx.GraphProto, tensor: str) -> int:
    """The rank shape inference found for `tensor`; 0 when it found none (then only true scalar
    constants can be told apart from ones that broadcast)."""
    return len(_shape(graph, tensor) or ())
