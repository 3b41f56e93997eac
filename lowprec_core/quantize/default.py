"""The Default Quantization pipeline: plan from statistics, correct biases, apply the plan."""

from __future__ import annotations

import onnx

from ..calibration.stats import Statistics
from ..config import QuantConfig
from .algorithms import correct_biases
from .planner import QuantPlan, plan
from .transform import apply


def quantize_model(model: onnx.ModelProto, stats: Statistics, config: QuantConfig) -> tuple[onnx.ModelProto, QuantPlan]:
    """Quantize a prepared model; returns the new model and the plan that made it."""
    quant_plan = plan(model, stats, config)
    if config.bias_correction:
        model, corrected = correct_biases(model, quant_plan, stats)
        quant_plan = quant_plan.model_copy(update={"corrected_biases": corrected})
    return apply(model, quant_plan), quant_plan
