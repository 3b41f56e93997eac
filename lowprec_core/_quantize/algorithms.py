"""Float-model algorithms around MinMax quantization: each reads a model and returns its edits
(plan.FloatEdit, with their values), which transform applies; none edits a graph itself.

Bias correction (fast): quantizing a weight shifts the mean of each output channel by
(W_q - W) · E[x]. With E[x] per input channel from the calibration pass, the shift is
folded back into the bias, so the INT8 layer keeps the FP32 layer's output mean.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from .. import _progress as progress, _runtime as runtime
from .._calibration.collect import with_outputs
from .._calibration.observers import ChannelObserver
from .._calibration.stats import Statistics, TensorStats
from .._config import QuantConfig
from .._graph import Names, consumers, initializers, topological_sort
from .plan import FloatEdit, InsertedScale, QuantPlan
from .planner import resolve_ignored, smoothing_groups
from .ranges import median, outlier_channel_max
from .transform import edit_value

log = logging.getLogger(__name__)


def weight_error(weight: np.ndarray, q: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """W_q - W for the weight as the transformer quantizes it (q, scale: QuantizedWeights)."""
    shape = [1] * weight.ndim
    if axis is not None:
        shape[axis] = -1
    return q.astype(np.float32) * scale.reshape(shape) - weight


def _output_shift(node: onnx.NodeProto, delta: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """Per-output-channel mean shift of one layer, or None when the shapes do not line up."""
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        out_ch, in_per_group = delta.shape[:2]
        if mean.size != in_per_group * group:
            return None
        summed = delta.reshape(out_ch, in_per_group, -1).sum(axis=2)  # kernel taps see the same mean
        per_group = mean.reshape(group, in_per_group)
        return np.einsum("gok,gk->go", summed.reshape(group, out_ch // group, in_per_group), per_group).reshape(-1)
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = delta.T if trans_b else delta
        return mean @ w if mean.size == w.shape[0] else None
    if node.op_type == "MatMul" and delta.ndim == 2:
        return mean @ delta if mean.size == delta.shape[0] else None
    return None


def correct_biases(
    model: onnx.ModelProto, plan: QuantPlan, stats: Statistics, *, weights_q: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> list[FloatEdit]:
    """Fast bias correction for every planned bias: one edit per corrected bias.
    `weights_q`: the plan's weights as QuantizedWeights.planned gives them (the transform's too)."""
    inits = initializers(model.graph)
    nodes = {node.name: node for node in model.graph.node}
    weights = {w.initializer: w for w in plan.weights}
    edits = []
    for entry in plan.biases:
        node = nodes[entry.node]
        mean = stats.require(entry.activation).channel_mean
        if mean is None:
            continue
        weight = numpy_helper.to_array(inits[entry.weight])
        delta = weight_error(weight, *weights_q[entry.weight], weights[entry.weight].axis)
        shift = _output_shift(node, delta, mean.astype(np.float64))
        size = int(np.prod(inits[entry.initializer].dims))
        if shift is None or shift.size != size:
            continue
        edits.append(FloatEdit(initializer=entry.initializer, by="bias_correction", add=(-shift.astype(np.float64)).reshape(-1).tolist()))
    log.info("bias correction: %d biases corrected", len(edits))
    return edits




def smooth_quant(
    model: onnx.ModelProto, stats: Statistics, config: QuantConfig, *, ignored: set[str] | None = None
) -> tuple[list[FloatEdit], list[InsertedScale], Statistics, list[str]]:
    """SmoothQuant for MatMul/Gemm inputs with outlier channels: move per-channel activation
    scale into the weights.

    For input X (channels k) read by layers with weights W, s_k = max|X_k|^α / max|W_k|^(1-α);
    X' = X / s (one Mul, read only by those layers) and W' = s·W, so X'W' = XW exactly in
    float, while X' has flat channels that quantize per tensor. The new tensor's statistics are
    derived from X's per-channel min/max, so no second calibration pass is needed. Returns the
    weights' edits, the Muls, the statistics with X' in them, and which inputs were smoothed.
    """
    graph = model.graph
    inits = initializers(graph)
    groups = smoothing_groups(graph, config, resolve_ignored(model, config.ignore) if ignored is None else ignored)
    names = Names(graph)
    tensors = dict(stats.tensors)
    smoothed = []
    edits: list[FloatEdit] = []
    inserted: list[InsertedScale] = []
    for tensor, readers in sorted(groups.items()):
        entry = stats.tensors.get(tensor)
        if entry is None or entry.channel_min is None or entry.channel_max is None:
            continue
        if outlier_channel_max(entry) is None:
            continue  # flat channels already quantize well; a Mul here would only cost time
        weights = []
        for node in readers:
            w = numpy_helper.to_array(inits[node.input[1]])
            trans_b = node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0)
            weights.append((node, w.T if trans_b else w, bool(trans_b)))  # as [K, N]
        absmax = entry.channel_absmax.astype(np.float64)
        if any(w.shape[0] != absmax.size for _, w, _ in weights):
            continue
        w_max = np.max([np.abs(w).max(axis=1) for _, w, _ in weights], axis=0).astype(np.float64)
        valid = (absmax > 0) & (w_max > 0)
        scale = np.ones_like(absmax)
        scale[valid] = absmax[valid] ** config.smooth_quant_alpha / w_max[valid] ** (1.0 - config.smooth_quant_alpha)
        scale = np.clip(scale, 1e-5, 1e5)
        for node, _, trans_b in weights:  # W' = s·W along K: axis 0 of [K, N], axis 1 of a transposed [N, K]
            edits.append(FloatEdit(initializer=node.input[1], by="smooth_quant", axis=1 if trans_b else 0, multiply=scale.tolist()))
        inverse = names.new(f"{tensor}_smooth_inverse")
        result = names.new(f"{tensor}_smoothed")
        inserted.append(InsertedScale(tensor=tensor, readers=[node.name for node in readers], factors=(1.0 / scale).astype(np.float32).tolist(),
                                      initializer=inverse, output=result, node=names.new(f"{tensor}_SmoothQuant")))
        low, high = entry.channel_min / scale, entry.channel_max / scale
        tensors[result] = TensorStats(
            minimum=float(low.min()),
            maximum=float(high.max()),
            count=entry.count,
            mean_min=float(low.min()),
            mean_max=float(high.max()),
            channel_absmax=np.maximum(high, -low),
            channel_mean=None if entry.channel_mean is None else entry.channel_mean / scale,
            rank=entry.rank,
            channel_min=low,
            channel_max=high,
        )
        smoothed.append(tensor)
    log.info("SmoothQuant: %d inputs smoothed (alpha %.2f)", len(smoothed), config.smooth_quant_alpha)
    return edits, inserted, Statistics(stats.model_sha256, stats.samples, tensors), smoothed


def correct_biases_full(
    model: onnx.ModelProto, quantized: onnx.ModelProto, plan: QuantPlan, feeds: Iterable[dict[str, np.ndarray]]
) -> list[FloatEdit]:
    """Full bias correction: each layer's output mean as the INT8 model runs it, against the FP32
    layer applied to the *same* (quantized-model) input.

    One extra pass over the calibration data runs the INT8 model with a float "shadow" of every
    biased layer beside it, reading the same dequantized input. The difference is the error the
    layer itself adds (weights, its input's quantization, int32 bias rounding) given everything
    before it, so all layers can be corrected from one pass without double counting.
    """
    float_nodes = {node.name: node for node in model.graph.node}
    float_inits = initializers(model.graph)
    probe = onnx.ModelProto()
    probe.CopyFrom(quantized)
    names = Names(probe.graph)
    q_nodes = {node.name: node for node in probe.graph.node}
    targets = []  # (bias entry, int8 layer output, shadow output, channel axis)
    for entry in plan.biases:
        node, q_node = float_nodes.get(entry.node), q_nodes.get(entry.node)
        if node is None or q_node is None:
            continue
        shadow = onnx.NodeProto()
        shadow.CopyFrom(node)
        shadow.name = names.new(f"{node.name}_shadow")
        shadow.input[0] = q_node.input[0]
        for i in range(1, len(node.input)):
            if node.input[i] in float_inits:
                copy = onnx.TensorProto()
                copy.CopyFrom(float_inits[node.input[i]])
                copy.name = names.new(f"{node.input[i]}_shadow")
                probe.graph.initializer.append(copy)
                shadow.input[i] = copy.name
        del shadow.output[:]
        shadow.output.append(names.new(f"{node.output[0]}_shadow"))
        probe.graph.node.append(shadow)
        axis = 1 if node.op_type in ("Conv", "ConvTranspose") else -1
        targets.append((entry, q_node.output[0], shadow.output[0], axis))
    if not targets:
        return []
    topological_sort(probe.graph)
    wanted = [name for t in targets for name in t[1:3]]
    sess = runtime.session(with_outputs(probe, wanted)[0], optimization="basic")
    observers = {name: ChannelObserver(t[3]) for t in targets for name in t[1:3]}
    done = 0
    for done, feed in enumerate(feeds, 1):
        for name, value in zip(wanted, sess.run(wanted, feed)):
            observers[name].update(value)
        progress.report("full bias correction", done)
    if done:
        progress.report("full bias correction", done, done)
    edits = []
    for entry, q_name, shadow_name, _ in targets:
        shift = np.asarray(observers[q_name].mean - observers[shadow_name].mean)
        if shift.size != int(np.prod(float_inits[entry.initializer].dims)):
            continue
        edits.append(FloatEdit(initializer=entry.initializer, by="full_bias_correction", add=(-shift.astype(np.float64)).reshape(-1).tolist()))
    log.info("full bias correction: %d biases corrected", len(edits))
    return edits


def align_channels(model: onnx.ModelProto, stats: Statistics) -> tuple[list[FloatEdit], Statistics, list[str]]:
    """Activation Channel Alignment (OpenVINO POT) for linear Conv -> Conv pairs.

    Where a Conv's only reader is another Conv (group 1, no padding, stride and dilation 1),
    each channel of the tensor between them is centred (producer bias -= mean, consumer bias
    += W·mean) and its range brought to the median channel's (producer rows / s, consumer
    columns * s, s clipped to [0.01, 100]). The float function is unchanged; one per-tensor
    quantizer then fits every channel. The tensor's new statistics come from its per-channel
    min/max, so calibration stays one pass. A Conv in two pairs is edited twice, the second
    edit reading what the first left.
    """
    graph = model.graph
    inits, users = initializers(graph), consumers(graph)
    producers = {o: node for node in graph.node for o in node.output}
    outputs = {o.name for o in graph.output}
    tensors = dict(stats.tensors)
    aligned: list[str] = []
    edits: list[FloatEdit] = []
    current: dict[str, np.ndarray] = {}  # initializers as the edits so far left them

    def attr(node, name, default):
        return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def const(name):
        tensor = inits.get(name)
        private = tensor is not None and len(users.get(name, [])) == 1 and tensor.data_type == onnx.TensorProto.FLOAT
        if not private:
            return None
        return current.get(name, numpy_helper.to_array(tensor)).astype(np.float64)

    for consumer in graph.node:
        if consumer.op_type != "Conv" or attr(consumer, "group", 1) != 1 or len(consumer.input) < 3:
            continue
        if any(attr(consumer, "pads", [0])) or any(v != 1 for v in attr(consumer, "strides", [1])) or any(
            v != 1 for v in attr(consumer, "dilations", [1])
        ):
            continue
        tensor = consumer.input[0]
        producer = producers.get(tensor)
        entry = stats.tensors.get(tensor)
        if producer is None or producer.op_type != "Conv" or len(producer.input) < 3 or tensor in outputs:
            continue
        if len(users.get(tensor, [])) != 1 or entry is None or entry.channel_min is None:
            continue
        w_in, b_in, w_out, b_out = (const(n) for n in (producer.input[1], producer.input[2], consumer.input[1], consumer.input[2]))
        if any(v is None for v in (w_in, b_in, w_out, b_out)) or w_in.shape[0] != w_out.shape[1]:
            continue
        low, high = entry.channel_min.astype(np.float64), entry.channel_max.astype(np.float64)
        mean, spread = (low + high) / 2, high - low
        scale = np.ones_like(spread)
        if np.any(spread > 0):
            scale = np.clip(spread / median(spread[spread > 0]), 1e-2, 1e2)
            scale[spread <= 0] = 1.0
        pair = [
            FloatEdit(initializer=producer.input[1], by="alignment", axis=0, divide=scale.tolist()),
            FloatEdit(initializer=producer.input[2], by="alignment", axis=0, add=(-mean).tolist(), divide=scale.tolist()),
            FloatEdit(initializer=consumer.input[1], by="alignment", axis=1, multiply=scale.tolist()),
            FloatEdit(initializer=consumer.input[2], by="alignment", axis=0,
                      add=(w_out.reshape(w_out.shape[0], w_out.shape[1], -1).sum(axis=2) @ mean).tolist()),
        ]
        for edit, value in zip(pair, (w_in, b_in, w_out, b_out)):
            current[edit.initializer] = edit_value(value, edit)
        edits += pair
        new_low, new_high = (low - mean) / scale, (high - mean) / scale
        tensors[tensor] = TensorStats(
            minimum=float(new_low.min()), maximum=float(new_high.max()), count=entry.count,
            mean_min=float(new_low.min()), mean_max=float(new_high.max()),
            channel_absmax=np.maximum(new_high, -new_low),
            channel_mean=None if entry.channel_mean is None else (entry.channel_mean - mean) / scale,
            channel_min=new_low, channel_max=new_high, rank=entry.rank,
        )
        aligned.append(tensor)
    log.info("activation channel alignment: %d tensors aligned", len(aligned))
    return edits, Statistics(stats.model_sha256, stats.samples, tensors), aligned
