"""What is quantizable: one table row per op type, one row per hardware target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


@dataclass(frozen=True)
class OpRule:
    """How one op type is quantized.

    activation_inputs: input indices that carry activations (quantized per tensor).
    weight_input: the input index of the weight, quantized per channel when it is constant.
    bias_input: the input index of a bias that becomes int32 (scale = x_scale * w_scale).
    channel_axis: (node, weight rank) -> the weight axis that holds output channels,
        or None where per-channel is not possible.
    """

    activation_inputs: tuple[int, ...]
    weight_input: int
    bias_input: int | None
    channel_axis: Callable[[onnx.NodeProto, int], int | None]
    integer_output_required: bool  # no integer kernel with a float output exists (Conv)
    input_channel_axis: int  # the axis of the activation input that the weight contracts over


def _conv_transpose_axis(node: onnx.NodeProto, rank: int) -> int | None:
    # Weight is [C_in, C_out/group, k...]: axis 1 holds whole output channels only when group == 1.
    return 1 if _attr(node, "group", 1) == 1 else None


QUANTIZABLE: dict[str, OpRule] = {
    "Conv": OpRule((0,), 1, 2, lambda node, rank: 0, True, 1),
    "ConvTranspose": OpRule((0,), 1, 2, _conv_transpose_axis, True, 1),
    "Gemm": OpRule((0,), 1, 2, lambda node, rank: 0 if _attr(node, "transB", 0) else 1, False, -1),
    # ORT's integer MatMul takes per-column scales for a 2-D B only.
    "MatMul": OpRule((0,), 1, None, lambda node, rank: rank - 1 if rank == 2 else None, False, -1),
}

# Activations that a following QuantizeLinear can absorb: with uint8 and zero point at the
# bottom of the range, saturation *is* the activation, so the node can be dropped.
FUSABLE_ACTIVATIONS: frozenset[str] = frozenset({"Relu", "Clip"})

# Ops that only move or select values: a quantized tensor passes through them unchanged, and
# ORT moves Q/DQ pairs across them. A quantized reader behind one counts as a quantized reader.
TRANSPARENT: frozenset[str] = frozenset(
    {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Identity", "Slice", "Split", "Gather"}
)


@dataclass(frozen=True)
class Target:
    """A hardware target: which ops it runs in integer and with which types."""

    ops: frozenset[str]
    activation_dtype: type
    weight_dtype: type
    per_channel: bool
    bias_int32: bool


TARGETS: dict[str, Target] = {
    # ONNX Runtime's CPU provider: u8 activations x s8 weights (VNNI), per-channel, int32 bias.
    "cpu": Target(frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"}), np.uint8, np.int8, True, True),
}


def integer_range(dtype: type) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)
