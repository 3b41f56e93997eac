"""The Default Quantization pipeline: plan from statistics, correct biases, apply the plan."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx

from ..calibration.stats import Statistics
from ..config import QuantConfig
from .algorithms import align_channels, correct_biases, correct_biases_full, smooth_quant
from .planner import QuantPlan, plan
from .transform import apply


def resolve_model_type(model: onnx.ModelProto, model_type: str) -> str:
    """`auto`: a graph with attention (Softmax) or LayerNormalization is a transformer."""
    if model_type != "auto":
        return model_type
    ops = {node.op_type for node in model.graph.node}
    return "transformer" if ops & {"Softmax", "LayerNormalization"} else "cnn"


def quantize_model(
    model: onnx.ModelProto,
    stats: Statistics,
    config: QuantConfig,
    *,
    feeds: Callable[[], Iterable[dict]] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Quantize a prepared model; returns the new model and the plan that made it.

    `feeds` (a callable giving a fresh pass over the calibration data) enables full bias
    correction when the config asks for it; with statistics alone the fast one runs."""
    aligned: list[str] = []
    if config.channel_alignment:
        model, stats, aligned = align_channels(model, stats)
    smoothed: list[str] = []
    if resolve_model_type(model, config.model_type) == "transformer":
        model, stats, smoothed = smooth_quant(model, stats, config)
    quant_plan = plan(model, stats, config).model_copy(update={"smoothed": smoothed, "aligned": aligned})
    if config.bias_correction != "none":
        model, corrected = correct_biases(model, quant_plan, stats)
        quant_plan = quant_plan.model_copy(update={"corrected_biases": corrected})
    if config.bias_correction == "full" and feeds is not None:
        model, corrected = correct_biases_full(model, apply(model, quant_plan), quant_plan, feeds())
        quant_plan = quant_plan.model_copy(update={"corrected_biases": corrected})
    return apply(model, quant_plan), quant_plan
