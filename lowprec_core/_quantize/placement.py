"""Where a layer pays to be quantized, and where ORT's own fusions decide for it.

ORT's CPU provider turns Q/DQ groups into integer kernels only after its float fusions
(MatMul + Add -> Gemm, Gemm + activation -> FusedGemm) and runs integer convolutions
channels-last; short dot products cost more quantized than they save. These rules tell the
planner which layers to leave float and which tensors a kept layer must quantize.
"""

from __future__ import annotations

import numpy as np
import onnx

from .._ops import FUSABLE_ACTIVATIONS, TRANSPARENT


def feeds_reads(tensor: str, reads: set[str], users: dict[str, list[onnx.NodeProto]], depth: int = 0) -> bool:
    """Whether `tensor` is, directly or through value-moving ops, one of the quantized `reads`."""
    if tensor in reads:
        return True
    return depth < 8 and any(
        user.op_type in TRANSPARENT and user.input[0] == tensor and feeds_reads(user.output[0], reads, users, depth + 1)
        for user in users.get(tensor, [])
    )


def after_activation(tensor: str, users) -> str:
    """The output of the one activation that alone reads `tensor`, else `tensor`: the value an
    integer kernel writes once it fuses that activation."""
    readers = users.get(tensor, [])
    return readers[0].output[0] if len(readers) == 1 and readers[0].op_type in FUSABLE_ACTIVATIONS else tensor


def under_floor(node, rule, config, inits) -> str | None:
    length = rule.reduction(node, tuple(inits[node.input[rule.weight_input]].dims))
    if length < config.reduction_floor:
        return (f"sums {length} products per output, fewer than {config.reduction_floor}: on target {config.target!r} "
                "the integer kernel costs more than it saves (min_reduction)")
    return None


def output_channels(node, rule, weight_dims: tuple[int, ...]) -> int | None:
    """How many output channels a layer computes per position, from its weight; None where the
    weight has no such axis (a MatMul's batched weight)."""
    axis = rule.channel_axis(node, len(weight_dims))
    return int(weight_dims[axis]) if axis is not None else None


def computes_shapes(graph: onnx.GraphProto) -> bool:
    """Whether an input has a free size and a Shape or Size node reads a computed tensor (a
    PyTorch LSTM's initial state sized from the batch of an activation)."""
    free = any(not (d.HasField("dim_value") and d.dim_value > 0) for v in graph.input for d in v.type.tensor_type.shape.dim)
    inputs = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    return free and any(n.op_type in ("Shape", "Size") and n.input[0] not in inputs for n in graph.node)


def requantized_anyway(act_inputs: list[str], shared: set[str]) -> bool:
    """Whether a short layer's inputs are all quantized for other layers already: float, it only
    adds a float branch beside their integer ones (SqueezeNet's 1x1 expand beside its 3x3, whose
    Concat then runs in float between DQs and a Q), so it is quantized whatever reads its output."""
    return bool(act_inputs) and set(act_inputs) <= shared


def integer_chains(short: list[tuple[onnx.NodeProto, list[str], int | None]], chosen: list[tuple[onnx.NodeProto, list[str]]],
                   target, users, sizes: dict[str, int], static: bool) -> set[str]:
    """The short layers (by name) that join quantized layers into integer chains: each reads
    tensors that are quantized anyway (the integer output of a quantized layer whose kernel
    writes integers, as ORT's QLinearConv does, after its fused activation; an input of a
    quantized layer; the output of another such short layer), or starts a chain (below), and its
    output, after its fused activation, feeds quantized layers or other such short layers.

    Float, such a layer sits behind a DequantizeLinear and needs a QuantizeLinear on its output;
    on ORT its channels-last integer neighbours also hand it NCHW floats, a layout transpose each
    way. A MobileNetV2's depthwise 3x3s and thin expands sit so, between integer 1x1s with ReLU6
    fused.

    A layer starts a chain from inputs not quantized yet where its output holds more elements
    per sample than they do: float, it needs a Q on that output, where quantized it needs one on
    its smaller inputs (SqueezeNet's first conv, 3 -> 64 channels; an expand from a 24-channel
    residual sum to 144 channels). A depthwise conv's output is no larger, so one read from the
    image stays float. Not with fewer `channels` out than Target.requantize_min_channels: there
    the short integer kernel costs more than the Q it spares (a 1 -> 8 first conv). Nor where the
    caller found the model's shapes not `static` on a row whose runtime then miscompiles the
    layer (computes_shapes, Target.short_layers_need_static_shapes).

    Grown forward from the quantized tensors, then pruned back until every kept layer's output
    feeds a quantized read. With fewer layers chosen or short (more ignored), fewer are kept."""
    reads = {name for _, act_inputs in chosen for name in act_inputs}
    quantized = reads | {after_activation(node.output[0], users) for node, _ in chosen if target.layers[node.op_type].integer_output_required}

    def starts_chain(node, act_inputs: list[str], channels: int | None) -> bool:
        new = [t for t in act_inputs if t not in quantized]
        out = node.output[0]
        return (static and (channels or 0) >= target.requantize_min_channels and out in sizes and all(t in sizes for t in new)
                and sizes[out] > sum(sizes[t] for t in new))

    kept: dict[str, tuple[onnx.NodeProto, list[str]]] = {}
    grew = True
    while grew:
        grew = False
        for node, act_inputs, channels in short:
            if node.name in kept or not act_inputs:
                continue
            if set(act_inputs) <= quantized or starts_chain(node, act_inputs, channels):
                kept[node.name] = (node, act_inputs)
                quantized.add(after_activation(node.output[0], users))
                grew = True
    while True:
        kept_reads = reads | {name for _, act_inputs in kept.values() for name in act_inputs}
        dead = [name for name, (node, _) in kept.items() if not feeds_reads(after_activation(node.output[0], users), kept_reads, users)]
        if not dead:
            return set(kept)
        for name in dead:
            del kept[name]


# Ops that pool a feature map down to one value per channel (ReduceMean over the spatial axes is
# how PyTorch writes a squeeze-excite block's pool).
POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"})


def lone_layers(chosen: list[tuple[onnx.NodeProto, list[str], int]], graph: onnx.GraphProto, users, sizes: dict[str, int],
                min_work: int, quantized: set[str] = frozenset()) -> dict[str, str]:
    """The chosen layers (node, activation inputs, products per output) that stay float for
    being lone and small on a pooled tensor, with why: every input is a pool's output (through
    value-moving ops) that no other chosen layer reads or writes, nor `quantized` reaches (an
    8-bit embedding table's Gather outputs), its output, after its fused activation, reaches no
    chosen layer's input, and it computes fewer than `min_work` products per sample (its
    products per output times its output's elements per sample; unknown sizes never count as
    small). Squeeze-excite convs and classifier heads read one value per channel and feed a
    float gate or the logits: each sums a few thousand products, against a QuantizeLinear and a
    DequantizeLinear of its own. Judged from the chosen layers all at once: with fewer chosen
    (more ignored), no fewer are lone."""
    pooled = {node.output[0] for node in graph.node if node.op_type in POOLS}
    reads: dict[str, set[str]] = {}
    written: set[str] = set(quantized)
    for node, act_inputs, _ in chosen:
        for name in act_inputs:
            reads.setdefault(name, set()).add(node.name)
        written |= {node.output[0], after_activation(node.output[0], users)}
    lone = {}
    for node, act_inputs, length in chosen:
        out = node.output[0]
        if not act_inputs or out not in sizes or length * sizes[out] >= min_work:
            continue
        if any(reads[name] != {node.name} or not any(feeds_reads(t, {name}, users) for t in pooled)
               or any(feeds_reads(t, {name}, users) for t in written) for name in act_inputs):
            continue
        others = {name for name, readers in reads.items() if readers - {node.name}}
        if feeds_reads(after_activation(out, users), others, users):
            continue
        lone[node.name] = (f"computes {length * sizes[out]} products per sample from a pooled tensor quantized for it alone into float "
                           f"readers: fewer than {min_work}, its QuantizeLinear and DequantizeLinear cost more than its integer kernel "
                           "saves (lone_min_work)")
    return lone


def sample_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Elements per sample of every tensor whose shape inference knows all but the first dim."""
    sizes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 1 and all(d.HasField("dim_value") for d in dims[1:]):
            sizes[value.name] = int(np.prod([d.dim_value for d in dims[1:]]))
    return sizes


def channel_split(node: onnx.NodeProto, users, known_ranks: dict[str, int]) -> str | None:
    """Why a conv stays float when a Reshape splits its output's channels into groups (4-D to
    5-D: ShuffleNet's channel shuffle), reached directly or through one activation."""
    tensors = [node.output[0]] + [r.output[0] for r in users.get(node.output[0], []) if r.op_type in FUSABLE_ACTIVATIONS]
    for tensor in tensors:
        for reader in users.get(tensor, []):
            if reader.op_type == "Reshape" and known_ranks.get(tensor) == 4 and known_ranks.get(reader.output[0], 0) > 4:
                return (f"{reader.name!r} splits its output into channel groups: ORT's integer convolutions run "
                        "channels-last, and the full transpose each way around the split costs more than the "
                        "integer kernel saves (ShuffleNet: 0.74x of FP32 quantized, 1.02x with these convs float)")
    return None


def layer_bias(node, rule, users, graph_outputs: set[str], input_rank: int) -> tuple[onnx.NodeProto, str]:
    """(the node that adds the layer's bias, the bias tensor), or (node, "") without one.

    A MatMul's bias is the Add after it when ORT fuses the pair into a Gemm: 2-D input, the
    Add its only reader. That Gemm becomes an integer kernel only with an int32 bias."""
    if rule.bias_input is not None:
        return node, node.input[rule.bias_input] if len(node.input) > rule.bias_input else ""
    readers = users.get(node.output[0], [])
    if not rule.bias_from_following_add or input_rank != 2 or len(readers) != 1 or node.output[0] in graph_outputs:
        return node, ""
    add = readers[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
        return node, ""
    return add, add.input[1] if add.input[0] == node.output[0] else add.input[0]


def float_fused(node, rule, users, graph_outputs: set[str], input_rank: int) -> tuple[str, onnx.NodeProto] | None:
    """(the layer's output as ORT's float kernel would take it, the activation ORT fuses into
    that kernel), if any: a Gemm's own output, or for a MatMul on 2-D input the Add after it
    (ORT folds the two into a Gemm first)."""
    reader, _ = layer_bias(node, rule, users, graph_outputs, input_rank)
    if rule.bias_input is None and reader is node:
        return None  # a MatMul ORT does not fold into a Gemm
    output = reader.output[0]
    readers = users.get(output, [])
    if len(readers) != 1 or output in graph_outputs or readers[0].op_type not in rule.float_fused_activations:
        return None
    return output, readers[0]


def drop_float_fused(chosen, layers, users, graph_outputs: set[str], skipped: dict[str, str], rank):
    """Leave float a layer that ORT fuses with its activation into a float kernel where only
    float layers read the activation: an integer kernel would need a quantizer between the two,
    rounding values that only float layers use (and, once a reader is reverted to float, undoing
    part of that revert). Repeated, since each layer left float leaves its input unread."""
    while True:
        reads = {name for _, act_inputs, _ in chosen for name in act_inputs}
        dropped = {}
        for node, act_inputs, _ in chosen:
            fused = float_fused(node, layers[node.op_type], users, graph_outputs, rank(act_inputs[0]))
            activation = fused[1] if fused is not None else None
            if activation is not None and not feeds_reads(activation.output[0], reads, users):
                dropped[node.name] = (
                    f"its {activation.op_type} feeds float layers only, and ORT fuses the two into a float kernel "
                    "before its QDQ fusions: quantized weights would buy no integer kernel"
                )
        if not dropped:
            return chosen
        skipped.update(dropped)
        chosen = [entry for entry in chosen if entry[0].name not in dropped]


def ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor whose rank shape inference knows."""
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]
        if value.type.tensor_type.HasField("shape")
    }
