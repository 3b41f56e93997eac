"""float16 models, computed in float32 while they are quantized.

A model stored in float16 (ORT's `convert_float_to_float16`, a GPU export) has no float32
weight to quantize, and ORT's integer kernels take float32 scales only: planned as it is, every
layer would stay float. So preparation widens it: its float16 weights, constants and casts
become float32, and so does every tensor inside. Its interface is the model's own: a float16
input is cast to float32 where the graph reads it, and a float16 output is cast back from the
float32 value that makes it. A model with no float16 in it is left as it is, byte for byte.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from ._graph import Names, all_names, all_nodes, all_tensors, rename, subgraphs

log = logging.getLogger(__name__)

_HALF, _FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

# Ops whose output type an attribute names (besides Cast's `to`): float16 there makes float16.
_DTYPE_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Multinomial", "Bernoulli"})


def computes_in_float16(model: onnx.ModelProto) -> bool:
    """Whether a runtime runs float16 arithmetic in `model`: float16 weights or constants, an op
    that makes float16, or a float16 input or cast read by anything but a Cast. A float16
    interface around float32 arithmetic (what widen makes) is not."""
    graph = model.graph
    if any(tensor.data_type == _HALF for tensor in all_tensors(graph)):
        return True
    half = {v.name for v in graph.input if v.type.tensor_type.elem_type == _HALF}
    for node in all_nodes(graph):
        if _names_half(node):
            if node.op_type != "Cast":
                return True
            half.update(node.output)
    return any(node.op_type != "Cast" and half.intersection(node.input) for node in all_nodes(graph))


def widen(model: onnx.ModelProto) -> None:
    """Computes `model` in float32 in place, keeping its float16 inputs and outputs float16
    (see the module's docstring).

    Run after Constant nodes became initializers, and after every value name was made unique
    across bodies: reads of an input are renamed model-wide, bodies included."""
    graph = model.graph
    edges = [v.name for v in (*graph.input, *graph.output) if v.type.tensor_type.elem_type == _HALF]
    _widen_graph(graph, top=True)
    inputs = [v.name for v in graph.input if v.type.tensor_type.elem_type == _HALF]
    defined_by_input = {v.name for v in graph.input}
    outputs = [v.name for v in graph.output if v.type.tensor_type.elem_type == _HALF and v.name not in defined_by_input]
    names = Names(graph, all_names(graph))
    mapping = {name: names.new(f"{name}_float32") for name in dict.fromkeys([*inputs, *outputs])}
    if mapping:
        original = [v.name for v in graph.input], [v.name for v in graph.output]
        rename(graph, mapping)
        for value, name in zip(graph.input, original[0]):
            value.name = name
        for value, name in zip(graph.output, original[1]):
            value.name = name
        cast_in = [onnx.helper.make_node("Cast", [name], [mapping[name]], names.new(f"{name}_to_float32"), to=_FLOAT) for name in inputs]
        cast_out = [onnx.helper.make_node("Cast", [mapping[name]], [name], names.new(f"{name}_to_float16"), to=_HALF) for name in outputs]
        nodes = [*cast_in, *graph.node, *cast_out]
        del graph.node[:]
        graph.node.extend(nodes)
    log.info("float16 model: quantized as float32; %d float16 inputs and outputs keep their type at the edge", len(edges))


def _names_half(node: onnx.NodeProto) -> bool:
    """A Cast to float16, or an op whose `dtype` says float16."""
    if node.domain not in ("", "ai.onnx"):
        return False
    wanted = "to" if node.op_type == "Cast" else "dtype" if node.op_type in _DTYPE_OPS else None
    return any(a.name == wanted and a.i == _HALF for a in node.attribute)


def _widen_graph(graph: onnx.GraphProto, *, top: bool) -> None:
    """float16 -> float32 for `graph`'s weights, constants, casts and declared types, bodies
    included; the top graph's own inputs and outputs keep theirs (the model's interface)."""
    for index, init in enumerate(graph.initializer):
        if init.data_type == _HALF:
            graph.initializer[index].CopyFrom(_as_float(init))
    declared = [*graph.value_info] if top else [*graph.input, *graph.output, *graph.value_info]
    for value in declared:
        if value.type.tensor_type.elem_type == _HALF:
            value.type.tensor_type.elem_type = _FLOAT
    for node in graph.node:
        if _names_half(node):
            for attr in node.attribute:
                if attr.name in ("to", "dtype"):
                    attr.i = _FLOAT
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == _HALF:
                attr.t.CopyFrom(_as_float(attr.t))
            for index, tensor in enumerate(attr.tensors):
                if tensor.data_type == _HALF:
                    attr.tensors[index].CopyFrom(_as_float(tensor))
        for sub in subgraphs(node):
            _widen_graph(sub, top=False)


def _as_float(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A float16 tensor as float32, the same name and values (float16 widens exactly)."""
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

