"""Float-model algorithms around MinMax quantization: each takes a model and returns a new one.

Bias correction (fast): quantizing a weight shifts the mean of each output channel by
(W_q - W) · E[x]. With E[x] per input channel from the calibration pass, the shift is
folded back into the bias, so the INT8 layer keeps the FP32 layer's output mean.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from ..calibration.stats import Statistics
from ..graph import initializers
from ..ops import integer_range
from .params import quantize_weight
from .planner import QuantPlan
from .ranges import weight_clip

log = logging.getLogger(__name__)

_DTYPES = {"int8": np.int8, "uint8": np.uint8}


def weight_error(weight: np.ndarray, axis: int | None, dtype_name: str, estimator: str) -> np.ndarray:
    """W_q - W for the weight exactly as the transformer will quantize it."""
    dtype = _DTYPES[dtype_name]
    clip = weight_clip(weight, axis, estimator, levels=2 * integer_range(dtype)[1] + 1)
    q, scale = quantize_weight(weight, axis, dtype, clip)
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


def correct_biases(model: onnx.ModelProto, plan: QuantPlan, stats: Statistics) -> tuple[onnx.ModelProto, list[str]]:
    """Fast bias correction for every planned bias; returns the new float model and what changed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = initializers(out.graph)
    nodes = {node.name: node for node in out.graph.node}
    weights = {w.initializer: w for w in plan.weights}
    corrected = []
    for entry in plan.biases:
        node = nodes[entry.node]
        mean = stats.require(entry.activation).channel_mean
        if mean is None:
            continue
        w = weights[entry.weight]
        weight = numpy_helper.to_array(inits[entry.weight])
        shift = _output_shift(node, weight_error(weight, w.axis, w.dtype, w.estimator), mean.astype(np.float64))
        bias_init = inits[entry.initializer]
        bias = numpy_helper.to_array(bias_init)
        if shift is None or shift.shape != bias.shape:
            continue
        bias_init.CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32), bias_init.name))
        corrected.append(entry.initializer)
    log.info("bias correction: %d biases corrected", len(corrected))
    return out, corrected


