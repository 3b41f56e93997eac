"""Where an INT8 model's error comes from: per quantized layer, FP32 against INT8 on real data.

For each Conv/MatMul/Gemm that runs on dequantized weights in the INT8 graph, and each Gather
of an embedding table stored in 8 bits (its weight is the table, its output the rows gathered):
- output SQNR: the layer's output in INT8 against FP32, everything upstream included;
- own SQNR: the error this layer adds itself, the ranking key, lowest first: the layer's INT8
  nodes (input Q/DQ, weights, output Q/DQ) run alone on FP32's input. Where they cannot be cut
  out (an input that is not one quantized tensor), the output's error minus what its input
  already carried, which also charges the layer with error it amplifies but did not make;
- weight SQNR: the dequantized weight against the FP32 weight (static);
- input SQNR: what the layer reads (after its input's Q/DQ) against FP32's tensor.
A quantized output is read after its Q/DQ pair: with a fused ReLU that is where the ReLU happens.
One streaming pass over the data; memory holds one batch of the exposed tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from . import _runtime as runtime
from ._calibration.collect import with_outputs
from ._data import Feed
from ._graph import all_graphs, all_nodes, consumers
from ._reports import InspectReport, LayerError

LAYER_OPS = ("Conv", "MatMul", "Gemm", "Gather")
_WEIGHT_INPUT = {"Gather": 0}  # the input holding an op's weight where it is not input 1 (a Gather's table)
WEAK_WEIGHT_DB = 30.0  # below this a weight's own rounding is a visible share of the error
WEAK_ACTIVATION_DB = 20.0
QUIET_LAYER_DB = 40.0  # a layer whose own error sits this far below its signal needs nothing
SQNR_CAP_DB = 200.0  # what no measurable error reports as


def sqnr_db(power: float, error: float) -> float:
    if error <= 0:
        return math.inf
    return 10.0 * math.log10(max(power, 1e-30) / error)


def settled(readers: dict[str, list[onnx.NodeProto]], tensor: str) -> str:
    """The tensor holding `tensor`'s value as its readers see it: the DequantizeLinear output
    when a Q/DQ pair follows it (a fused ReLU lives in that pair's clamp), else itself.
    `readers`: graph.consumers of the model."""
    for q in readers.get(tensor, []):
        if q.op_type == "QuantizeLinear" and q.input[0] == tensor:
            for dq in readers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def representable(dq: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> tuple[float, float] | None:
    """The float range a DequantizeLinear's output can take (per-tensor grids), or None.

    The planner may clamp a tensor to the range its readers can tell apart (ReLU below 0,
    HardSigmoid beyond ±3): FP32 values outside it differ from INT8 invisibly to those readers,
    so comparisons clip the FP32 side to it."""
    if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[1] not in inits or dq.input[2] not in inits:
        return None
    scale, zero = numpy_helper.to_array(inits[dq.input[1]]), numpy_helper.to_array(inits[dq.input[2]])
    if scale.size != 1:
        return None
    info = np.iinfo(zero.dtype)
    return float((info.min - int(zero)) * float(scale)), float((info.max - int(zero)) * float(scale))


Layer = tuple[onnx.NodeProto, tuple[str, str], tuple[str, str] | None]


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor -> the node that makes it, in If/Loop/Scan bodies too (names are unique across
    scopes once prepare() has run: see model_io._unique_body_names)."""
    return {out: node for node in all_nodes(model.graph) for out in node.output}


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for graph in all_graphs(model.graph) for init in graph.initializer}


def weight_input(node: onnx.NodeProto) -> int:
    """The index of a layer's weight among its inputs; its activation is the first other one."""
    return _WEIGHT_INPUT.get(node.op_type, 1)


def _activation_input(node: onnx.NodeProto) -> str:
    return node.input[1 if weight_input(node) == 0 else 0]


def layer_tensors(fp32: onnx.ModelProto, int8: onnx.ModelProto) -> list[Layer]:
    """Quantized layers of `int8` (weights read through DequantizeLinear), those inside If
    bodies included, with (FP32 name, INT8 name) for their output and their activation input;
    only tensors both graphs hold."""
    producers = _producers(int8)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for graph in all_graphs(int8.graph):
        for name, nodes in consumers(graph).items():
            readers.setdefault(name, []).extend(nodes)
    inits = _initializers(int8)
    fp32_tensors = set(_producers(fp32)) | {i.name for i in fp32.graph.input}
    rows = []
    for node in all_nodes(int8.graph):
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        weight = producers.get(node.input[weight_input(node)])
        if weight is None or weight.op_type != "DequantizeLinear":
            continue
        if node.op_type == "Gather" and weight.input[0] not in inits:  # rows of a quantized activation, not a table
            continue
        output = node.output[0]
        shown = settled(readers, output)
        if output in fp32_tensors:
            pair = (output, shown)
        elif shown in fp32_tensors:  # a graph output (an If body's result): its Q/DQ pair keeps the name
            pair = (shown, shown)
        else:
            continue
        activation = _activation_input(node)
        source = _quantized_source(activation, producers, inits)
        reads = (source, activation) if source in fp32_tensors else None
        rows.append((node, pair, reads))
    return rows


def layer_errors(
    fp32: onnx.ModelProto, int8: onnx.ModelProto, feeds: Iterable[Feed], *, alone: bool = False
) -> tuple[list[Layer], dict[tuple[str, str], float], dict[str, float], int]:
    """The quantized layers, the normalized MSE of each one's output and input, with `alone`
    of each layer run alone on FP32's input (by node name, where it can be cut out), and the
    samples seen."""
    layers = layer_tensors(fp32, int8)
    pairs = sorted({pair for _, out, reads in layers for pair in ([out, reads] if reads else [out])})
    main = {node.name for node in int8.graph.node}  # a layer in a body is not cut out alone
    cut = {node.name: (reads[0], out) for node, out, reads in layers if reads and node.name in main} if alone else {}
    nmse, own, samples = tensor_errors(fp32, int8, pairs, feeds, cut)
    return layers, nmse, own, samples


def isolate(
    int8: onnx.ModelProto, source: str, output: str, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]
) -> onnx.ModelProto | None:
    """The nodes of `int8` that compute `output` from `source` and constants alone, as a model
    with `source` as its input; None when `output` needs any other tensor. `producers` and
    `inits`: the graph's output -> node and initializer maps."""
    kept, stack = set(), [output]
    while stack:
        tensor = stack.pop()
        if not tensor or tensor == source or tensor in inits or tensor in kept:
            continue
        node = producers.get(tensor)
        if node is None or len(kept) > 16:  # a graph input, or far more than one layer's Q/DQ
            return None
        kept.update(node.output)
        stack.extend(node.input)
    nodes = [node for node in int8.graph.node if kept & set(node.output)]
    used = {name for node in nodes for name in node.input}
    graph = onnx.helper.make_graph(
        nodes, "layer", [onnx.helper.make_tensor_value_info(source, onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)],
        [inits[name] for name in sorted(used & set(inits))],
    )
    return onnx.helper.make_model(graph, opset_imports=int8.opset_import, ir_version=int8.ir_version)


def tensor_errors(
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    pairs: list[tuple[str, str]],
    feeds: Iterable[Feed],
    alone: dict[str, tuple[str, tuple[str, str]]] | None = None,
) -> tuple[dict[tuple[str, str], float], dict[str, float], int]:
    """Normalized MSE of each (FP32 tensor, INT8 tensor) pair over `feeds`; of each layer in
    `alone` (name -> (FP32 input, output pair), both among `pairs`) run by itself on FP32's
    input; and the sample count."""
    fp32_names = sorted({a for a, _ in pairs})
    int8_names = sorted({b for _, b in pairs})
    producers = _producers(int8)
    inits = _initializers(int8)
    visible = {pair: representable(producers.get(pair[1]), inits) for pair in pairs}
    smoothing = {pair: _smoothing(pair[1], producers, inits) for pair in pairs}
    fp32_probe, fp32_lifted = with_outputs(fp32, [t for t in fp32_names if t not in _inputs(fp32)])
    int8_probe, int8_lifted = with_outputs(int8, [t for t in int8_names if t not in _inputs(int8)])
    fp32_sess = runtime.session(fp32_probe, optimization="basic")
    int8_sess = runtime.session(int8_probe, optimization="basic")
    layer_sessions = {}
    for name, (source, (_, output)) in (alone or {}).items():
        model = isolate(int8, source, output, producers, inits)
        if model is not None:
            layer_sessions[name] = runtime.session(model, threads=1)

    def expect(pair: tuple[str, str], value: np.ndarray) -> np.ndarray:
        expected = value.astype(np.float64)
        if smoothing[pair] is not None:
            expected = expected * smoothing[pair]
        if visible[pair] is not None:
            expected = np.clip(expected, *visible[pair])
        return expected

    error = dict.fromkeys([*pairs, *layer_sessions], 0.0)
    power = dict.fromkeys([*pairs, *layer_sessions], 0.0)

    def add(key, expected: np.ndarray, value: np.ndarray) -> None:
        if not value.size:  # a tensor of an If body this batch did not run
            return
        diff = value.astype(np.float64) - expected
        error[key] += float(np.sum(diff * diff))
        power[key] += float(np.sum(expected**2))

    samples = 0
    for feed in feeds:
        ref = dict(zip(fp32_names, _run(fp32_sess, fp32_names, feed, fp32_lifted)))
        got = dict(zip(int8_names, _run(int8_sess, int8_names, feed, int8_lifted)))
        for pair in pairs:
            add(pair, expect(pair, ref[pair[0]]), got[pair[1]])
        for name, sess in layer_sessions.items():
            source, out = alone[name]
            add(name, expect(out, ref[out[0]]), sess.run(None, {source: ref[source]})[0])
        samples += int(next(iter(feed.values())).shape[0])
    nmse = {key: error[key] / max(power[key], 1e-30) for key in error}
    return {pair: nmse[pair] for pair in pairs}, {name: nmse[name] for name in layer_sessions}, samples


def inspect_layers(fp32: onnx.ModelProto, int8: onnx.ModelProto, feeds: Iterable[Feed]) -> InspectReport:
    fp32_inits = _initializers(fp32)
    fp32_nodes = {node.name: node for node in all_nodes(fp32.graph)}
    inits = _initializers(int8)
    producers = _producers(int8)
    layers, nmse, isolated, samples = layer_errors(fp32, int8, feeds, alone=True)
    rows = []
    for node, out, reads in layers:
        in_nmse = nmse[reads] if reads else 0.0
        weight_db = _weight_sqnr(node, producers[node.input[weight_input(node)]], inits, fp32_nodes, fp32_inits,
                                 _smoothing(_activation_input(node), producers, inits))
        own_db = sqnr_db(1.0, max(isolated[node.name] if node.name in isolated else nmse[out] - in_nmse, 1e-20))
        input_db = sqnr_db(1.0, in_nmse) if reads else None
        rows.append(
            LayerError(
                layer=node.name,
                op_type=node.op_type,
                output=out[0],
                output_sqnr_db=_db(sqnr_db(1.0, nmse[out])),
                own_sqnr_db=_db(own_db),
                weight_sqnr_db=None if weight_db is None else _db(weight_db),
                input_sqnr_db=None if input_db is None else _db(input_db),
                action=_action(own_db, weight_db, input_db, table=node.op_type == "Gather"),
            )
        )
    rows.sort(key=lambda r: (r.own_sqnr_db, r.output_sqnr_db, r.layer))
    return InspectReport(samples=samples, layers=rows)


def _inputs(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.input}


def _run(sess, names: list[str], feed: Feed, lifted: dict[str, str]) -> list[np.ndarray]:
    """`names` from one run; `lifted`: outputs that carry a body's tensor (with_outputs)."""
    inputs = {i.name for i in sess.get_inputs()}
    outputs = [lifted.get(o.name, o.name) for o in sess.get_outputs()]
    values = dict(zip(outputs, sess.run(None, {k: v for k, v in feed.items() if k in inputs})))
    values.update({k: v for k, v in feed.items() if k in names})
    return [values[n] for n in names]


def _quantized_source(tensor: str, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]) -> str | None:
    """The FP32 tensor a DequantizeLinear(QuantizeLinear(x)) pair reads, if `tensor` is one;
    through SmoothQuant's Mul(x, 1/s) to x itself (the pair then holds x/s, see `_smoothing`)."""
    q = _quantizer(tensor, producers)
    if q is None:
        return None
    if _smoothing(tensor, producers, inits) is not None:
        return next(i for i in producers[q.input[0]].input if i not in inits)
    return q.input[0]


def _quantizer(tensor: str, producers: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    return q if q is not None and q.op_type == "QuantizeLinear" else None


def _smoothing(tensor: str, producers: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """SmoothQuant's per-channel 1/s when `tensor` is DQ(Q(Mul(x, 1/s))) with 1/s a constant
    vector over x's last axis, else None. FP32's x times it is what the pair approximates."""
    q = _quantizer(tensor, producers)
    mul = producers.get(q.input[0]) if q is not None else None
    if mul is None or mul.op_type != "Mul":
        return None
    constants = [i for i in mul.input if i in inits]
    if len(constants) != 1 or len(mul.input) != 2:
        return None
    value = numpy_helper.to_array(inits[constants[0]])
    return value.astype(np.float64) if value.ndim == 1 and value.size > 1 else None


def _weight_sqnr(node, weight_dq, inits, fp32_nodes, fp32_inits, smoothing: np.ndarray | None) -> float | None:
    """Dequantized INT8 weight against the FP32 model's weight of the node with the same name;
    a SmoothQuant-scaled weight (s·W, over the input channels K) is compared as W."""
    if weight_dq.input[0] not in inits or weight_dq.input[1] not in inits:
        return None
    original = fp32_nodes.get(node.name)
    index = weight_input(node)
    if original is None or len(original.input) < 2 or original.input[index] not in fp32_inits:
        return None
    w = numpy_helper.to_array(fp32_inits[original.input[index]]).astype(np.float64)
    q = numpy_helper.to_array(inits[weight_dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[weight_dq.input[1]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[weight_dq.input[2]]).astype(np.float64) if len(weight_dq.input) > 2 and weight_dq.input[2] in inits else 0.0
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    if np.ndim(scale):
        shape[axis] = -1
    dequantized = (q - np.reshape(zero, shape)) * np.reshape(scale, shape)
    if dequantized.shape != w.shape:
        return None
    if smoothing is not None:
        trans_b = node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0)
        k_axis = 1 if trans_b else 0
        if w.ndim != 2 or w.shape[k_axis] != smoothing.size:
            return None
        dequantized = dequantized * (smoothing[None, :] if trans_b else smoothing[:, None])
    return sqnr_db(float(np.sum(w * w)), float(np.sum((dequantized - w) ** 2)))


def _db(value: float) -> float:
    return round(min(value, SQNR_CAP_DB), 2)


def _action(own_db: float, weight_db: float | None, act_db: float | None, *, table: bool = False) -> str:
    if own_db >= QUIET_LAYER_DB:
        return "none: adds little error"
    if table:  # one grid, set by its largest value: no range option changes it
        return "the table loses it on its one 8-bit grid: --ignore this Gather keeps the table float, or leave it to the accuracy-aware search"
    if weight_db is not None and weight_db < WEAK_WEIGHT_DB and (act_db is None or weight_db <= act_db):
        return "weights lose most: try --weight-range mse, or --ignore this layer"
    if act_db is not None and act_db < WEAK_ACTIVATION_DB:
        return "its input arrives with much error: look at the layers before it first"
    return "adds error: --ignore it, or leave it to the accuracy-aware search (--eval --metric)"
