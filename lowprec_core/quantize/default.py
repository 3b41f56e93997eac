"""The Default Quantization pipeline: plan from statistics, correct biases, apply the plan."""

from __future__ import annotations

import onnx

from ..calibration.stats import Statistics
from ..config import QuantConfig
from .algorithms import correct_biases, smooth_quant
from .planner import QuantPlan, plan
from .transform import apply


def resolve_model_type(model: onnx.ModelProto, model_type: str) -> str:
    """`auto`: a graph with attention (Softmax) or LayerNormalization is a transformer."""
    if model_type != "auto":
        return model_type
    ops = {node.op_type for node in model.graph.node}
    return "transformer" if ops & {"Softmax", "LayerNormalization"} else "cnn"


def quantize_model(model: onnx.ModelProto, stats: Statistics, config: QuantConfig) -> tuple[onnx.ModelProto, QuantPlan]:
    """Quantize a prepared model; returns the new model and the plan that made it."""
    smoothed: list[str] = []
    if resolve_model_type(model, config.model_type) == "transformer":
        model, stats, smoothed = smooth_quant(model, stats, config)
    quant_plan = plan(model, stats, config).model_copy(update={"smoothed": smoothed})
    if config.bias_correction:
        model, corrected = correct_biases(model, quant_plan, stats)
        quant_plan = quant_plan.model_copy(update={"corrected_biases": corrected})
    return apply(model, quant_plan), quant_plan
