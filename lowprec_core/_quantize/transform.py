"""The only graph mutator: applies a QuantPlan to a copy of the model.

The plan's float edits (channel alignment, SmoothQuant, bias correction) go first, then its
quantizers; `edited` applies the float edits alone, for an algorithm that reads the model
as the ones before it left it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .._graph import Names, drop_unused_initializers, initializers, subgraphs, topological_sort
from .params import QuantizedWeights, quantize_bias
from .plan import FloatEdit, InsertedScale, QuantPlan, TableQuant

_DTYPES = {"uint8": np.uint8, "int8": np.int8}


def apply(
    model: onnx.ModelProto,
    plan: QuantPlan,
    *,
    weights_q: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    reserved: frozenset[str] = frozenset(),
    start: tuple[onnx.ModelProto, int] | None = None,
) -> onnx.ModelProto:
    """The plan applied to a copy of `model` (the prepared model it was made for). `weights_q`:
    plan.stored_weights() as QuantizedWeights.planned gives them, where the caller has them;
    else quantized here. `reserved`: names of the graphs enclosing this one (an If body's),
    which new names must not shadow. `start`: (`edited(model, plan.edits[:n], plan.inserted)`, n),
    where the caller has it: the copy is taken from it and only the later edits are applied.
    The bytes are the same (an edit rewrites one initializer in place; the inserted scales and
    one topological sort come after the edits before them either way)."""
    out = onnx.ModelProto()
    if start is None:
        out.CopyFrom(model)
        _edit_graph(out.graph, plan.edits, plan.inserted)
    else:
        out.CopyFrom(start[0])
        _edit_graph(out.graph, plan.edits[start[1]:], ())
    graph = out.graph
    names = Names(graph, reserved)
    _fuse_activations(graph, plan)
    inits = initializers(graph)
    if weights_q is None:
        weights_q = QuantizedWeights(inits).planned(plan.stored_weights())
    by_name = {node.name: node for node in graph.node}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    act_scale: dict[str, np.float32] = {}

    for entry in plan.activations:
        dtype = _DTYPES[entry.dtype]
        scale = names.new(f"{entry.tensor}_scale")
        zero = names.new(f"{entry.tensor}_zero_point")
        new_inits += [
            numpy_helper.from_array(np.array(entry.scale, dtype=np.float32), scale),
            numpy_helper.from_array(np.array(entry.zero_point, dtype=dtype), zero),
        ]
        act_scale[entry.tensor] = np.float32(entry.scale)
        quantized = names.new(f"{entry.tensor}_quantized")
        source, dequantized = _reroute(graph, entry.tensor, names, entry.readers)
        new_nodes.append(helper.make_node("QuantizeLinear", [source, scale, zero], [quantized], names.new(f"{entry.tensor}_QuantizeLinear")))
        new_nodes.append(helper.make_node("DequantizeLinear", [quantized, scale, zero], [dequantized], names.new(f"{entry.tensor}_DequantizeLinear")))

    weight_scale: dict[str, np.ndarray] = {}
    weight_out: dict[str, str] = {}
    for entry in plan.weights:
        q, scale = weights_q[entry.initializer]
        weight_scale[entry.initializer] = scale
        weight_out[entry.initializer] = _dequantized_constant(names, entry.initializer, q, scale, entry.axis, new_inits, new_nodes)[0]

    for entry in plan.tables:
        _gather_integers(entry, weights_q[entry.initializer], by_name, names, new_inits, new_nodes)

    quantized_nodes = set(plan.nodes)
    for node in graph.node:
        if node.name in quantized_nodes:
            for i, name in enumerate(node.input):
                if name in weight_out:
                    node.input[i] = weight_out[name]

    for entry in plan.biases:
        node = by_name[entry.reader or entry.node]
        index = list(node.input).index(entry.initializer)
        q, scale = quantize_bias(numpy_helper.to_array(inits[entry.initializer]), act_scale[entry.activation], weight_scale[entry.weight])
        # Per output channel along the bias's last axis ([N], or [1, N] for a broadcast Add).
        node.input[index] = _dequantized_constant(names, entry.initializer, q, scale, q.ndim - 1 if scale.ndim else None, new_inits, new_nodes)[0]

    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    drop_unused_initializers(graph)
    topological_sort(graph)
    return out


def edited(model: onnx.ModelProto, edits: Sequence[FloatEdit], inserted: Sequence[InsertedScale] = ()) -> onnx.ModelProto:
    """A copy of `model` with float edits and inserted scales applied, and no quantizers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _edit_graph(out.graph, edits, inserted)
    return out


def edit_value(value: np.ndarray, edit: FloatEdit) -> np.ndarray:
    """One initializer's values after `edit`: ((v + add) / divide) * multiply in float64, as float32."""
    result = value.astype(np.float64)
    for vector, op in ((edit.add, np.add), (edit.divide, np.divide), (edit.multiply, np.multiply)):
        if vector is None:
            continue
        operand = np.asarray(vector, dtype=np.float64)
        if edit.axis is None:
            operand = operand.reshape(result.shape)
        else:
            shape = [1] * result.ndim
            shape[edit.axis] = -1
            operand = operand.reshape(shape)
        result = op(result, operand)
    return result.astype(np.float32)


def _edit_graph(graph: onnx.GraphProto, edits: Sequence[FloatEdit], inserted: Sequence[InsertedScale]) -> None:
    inits = initializers(graph)
    for edit in edits:
        init = inits[edit.initializer]
        init.CopyFrom(numpy_helper.from_array(edit_value(numpy_helper.to_array(init), edit), init.name))
    if not inserted:
        return
    by_name = {node.name: node for node in graph.node}
    for scale in inserted:
        graph.initializer.append(numpy_helper.from_array(np.asarray(scale.factors, dtype=np.float32), scale.initializer))
        graph.node.append(helper.make_node("Mul", [scale.tensor, scale.initializer], [scale.output], scale.node))
        for reader in scale.readers:
            by_name[reader].input[0] = scale.output
    topological_sort(graph)


def _dequantized_constant(
    names: Names,
    base: str,
    q: np.ndarray,
    scale: np.ndarray,
    axis: int | None,
    inits: list[onnx.TensorProto],
    nodes: list[onnx.NodeProto],
    zero_point: int = 0,
) -> tuple[str, str, str]:
    """An integer initializer behind a DequantizeLinear; returns the DQ output and the names
    of its scale and zero point."""
    q_name, s_name, z_name = (names.new(f"{base}_{suffix}") for suffix in ("quantized", "scale", "zero_point"))
    inits += [
        numpy_helper.from_array(q, q_name),
        numpy_helper.from_array(scale, s_name),
        numpy_helper.from_array(np.full(scale.shape, zero_point, dtype=q.dtype), z_name),
    ]
    out = names.new(f"{base}_dequantized")
    attrs = {"axis": axis} if axis is not None else {}
    nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], names.new(f"{base}_DequantizeLinear"), **attrs))
    return out, s_name, z_name


def _gather_integers(entry: TableQuant, quantized: tuple[np.ndarray, np.ndarray], by_name, names: Names,
                     new_inits: list[onnx.TensorProto], new_nodes: list[onnx.NodeProto]) -> None:
    """An embedding table on one uint8 grid behind a DequantizeLinear that its Gathers read,
    each Gather's output through a Q/DQ pair on that grid (see TableQuant). `quantized`: the
    table as TableQuant.weight() quantizes it, int8."""
    q, scale = quantized
    table, scale_name, zero_name = _dequantized_constant(names, entry.initializer, (q.astype(np.int16) + 128).astype(np.uint8), scale,
                                                         None, new_inits, new_nodes, zero_point=128)
    for reader in entry.readers:
        node = by_name[reader]
        node.input[0] = table
        gathered, rows_q = names.new(f"{node.output[0]}_gathered"), names.new(f"{node.output[0]}_quantized")
        out, node.output[0] = node.output[0], gathered
        new_nodes.append(helper.make_node("QuantizeLinear", [gathered, scale_name, zero_name], [rows_q], names.new(f"{out}_QuantizeLinear")))
        new_nodes.append(helper.make_node("DequantizeLinear", [rows_q, scale_name, zero_name], [out], names.new(f"{out}_DequantizeLinear")))


def _fuse_activations(graph: onnx.GraphProto, plan: QuantPlan) -> None:
    if not plan.fused:
        return
    by_name = {node.name: node for node in graph.node}
    dropped = set()
    for entry in plan.fused:
        activation, producer = by_name[entry.node], by_name[entry.into]
        producer.output[0] = activation.output[0]
        dropped.add(entry.node)
    keep = [node for node in graph.node if node.name not in dropped]
    del graph.node[:]
    graph.node.extend(keep)


def _reroute(graph: onnx.GraphProto, tensor: str, names: Names, readers: list[str] | None) -> tuple[str, str]:
    """Return (what Q reads, what DQ writes) and point the readers of `tensor` at the DQ:
    all of them when `readers` is None, else just those nodes.

    A graph output whose every reader takes the DQ keeps its name: the producer is renamed
    instead and the DQ writes it.
    """
    if readers is None and tensor in {o.name for o in graph.output}:
        source = names.new(f"{tensor}_float")
        _rename(graph, tensor, source, outputs=True)
        return source, tensor
    dequantized = names.new(f"{tensor}_dequantized")
    _rename(graph, tensor, dequantized, only=None if readers is None else set(readers))
    return tensor, dequantized


def _rename(graph: onnx.GraphProto, old: str, new: str, *, outputs: bool = False, only: set[str] | None = None) -> None:
    """Rename `old` to `new` in node inputs (or outputs), optionally in the named nodes only.

    A reader's subgraphs (If, Loop, Scan bodies) read outer tensors by name too: renamed inputs
    are renamed there as well, or a branch would go on reading the old tensor (a fused ReLU's
    unclamped Conv output)."""
    for node in graph.node:
        if only is not None and node.name not in only:
            continue
        names = node.output if outputs else node.input
        for i, name in enumerate(names):
            if name == old:
                names[i] = new
        if not outputs:
            for sub in subgraphs(node):
                _rename_outer(sub, old, new)


def _rename_outer(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a read of the outer tensor `old` throughout a subgraph (ONNX forbids shadowing it)."""
    _rename(graph, old, new)
    for output in graph.output:  # a branch may hand an outer tensor straight back
        if output.name == old:
            output.name = new


