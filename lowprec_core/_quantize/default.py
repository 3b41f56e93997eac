"""The Default Quantization pipeline: plan from statistics, correct biases, apply the plan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import onnx

from .._calibration.stats import Statistics
from .._config import QuantConfig
from .._graph import all_names, all_nodes, body_model, if_bodies, initializers, names_defined_here, put_body
from .._ops import QUANTIZABLE
from .algorithms import align_channels, correct_biases, correct_biases_full, smooth_quant
from .params import quantize_planned_weights
from .plan import FloatEdit, InsertedScale, QuantPlan
from .planner import has_layers, plan, resolve_ignored, resolve_model_type, statistic_requests
from .transform import apply, edited

log = logging.getLogger(__name__)


def quantize_model(
    model: onnx.ModelProto,
    stats: Statistics,
    config: QuantConfig,
    *,
    feeds: Callable[[], Iterable[dict]] | None = None,
    reserved: frozenset[str] = frozenset(),
    ignored: set[str] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Quantize a prepared model; returns the new model and the plan that made it.

    `feeds` (a callable giving a fresh pass over the calibration data) enables full bias
    correction when the config asks for it; with statistics alone the fast one runs.

    The bodies of If nodes (silero VAD's export keeps its whole network in one) are then
    quantized the same way, each as a model of its own whose inputs are the outer values it
    reads (`graph.body_model`); their plans go into `QuantPlan.bodies`. The calibration pass
    passes their tensors out through the If (`calibration.collect.with_outputs`).

    The ignored scope is resolved to node names here, once (`ignored`, where a caller has done
    it), and every step below reads that set; the plan records it."""
    if ignored is None:
        ignored = resolve_ignored(model, config.ignore)
    int8, quant_plan = _quantize_graph(model, stats, config, feeds, reserved, ignored)
    bodies: dict[str, QuantPlan] = {}
    unrun: dict[str, str] = {}
    for node, attribute, body in if_bodies(int8.graph):
        if not has_layers(body):
            continue
        sub, owned = body_model(int8, node, attribute)
        inside = {n.name for n in all_nodes(body)} & ignored
        sub_config = config.model_copy(update={"ignore": tuple(sorted(inside))})
        # What this config's plan of the body reads (statistics collected for this config alone hold no more).
        own = set(statistic_requests(sub, config.target, bodies=False, config=sub_config, ignored=inside)) & names_defined_here(body)
        if own and not own & set(stats.tensors):
            why = f"inside {node.name}/{attribute}, which no calibration batch ran: it has no statistics"
            unrun.update({n.name: why for n in all_nodes(body) if n.op_type in QUANTIZABLE})
            continue
        sub_int8, sub_plan = quantize_model(sub, stats, sub_config, reserved=reserved | all_names(int8.graph), ignored=inside)
        put_body(int8, node, attribute, sub_int8, owned)
        if sub_plan.layers() or sub_plan.left_float():
            bodies[f"{node.name}/{attribute}"] = sub_plan
    if unrun:
        log.warning("%d layers stay float: their If bodies never ran on the calibration data", len(unrun))
    if bodies or unrun:
        quant_plan = quant_plan.model_copy(update={"bodies": bodies, "skipped": {**quant_plan.skipped, **unrun}})
    return int8, quant_plan


def _quantize_graph(
    model: onnx.ModelProto,
    stats: Statistics,
    config: QuantConfig,
    feeds: Callable[[], Iterable[dict]] | None,
    reserved: frozenset[str],
    ignored: set[str],
) -> tuple[onnx.ModelProto, QuantPlan]:
    """One graph, its If bodies aside: align, smooth, plan, correct biases, apply. Each step
    reads the model as the edits before it left it (`working`); every edit goes into the plan,
    and the plan applied to `model` gives the INT8 model."""
    edits: list[FloatEdit] = []
    inserted: list[InsertedScale] = []
    working = model
    aligned: list[str] = []
    if config.channel_alignment:
        edits, stats, aligned = align_channels(model, stats)
        working = edited(model, edits) if edits else model
    smoothed: list[str] = []
    if resolve_model_type(model, config.model_type) == "transformer":
        smooth_edits, inserted, stats, smoothed = smooth_quant(working, stats, config, ignored=ignored)
        edits += smooth_edits
        working = edited(working, smooth_edits, inserted) if smooth_edits or inserted else working
    quant_plan = plan(working, stats, config, ignored=ignored).model_copy(
        update={"smoothed": smoothed, "aligned": aligned, "edits": edits, "inserted": inserted})
    # Bias correction changes biases only: the weights quantize once for it and the transform.
    weights_q = quantize_planned_weights(quant_plan.weights, initializers(working.graph))
    if config.bias_correction != "none":
        corrections = correct_biases(working, quant_plan, stats, weights_q=weights_q)
        quant_plan = quant_plan.model_copy(update={"edits": [*quant_plan.edits, *corrections],
                                                   "corrected_biases": [e.initializer for e in corrections]})
        if config.bias_correction == "full" and feeds is not None:
            working = edited(working, corrections)
            corrections = correct_biases_full(working, apply(model, quant_plan, weights_q=weights_q), quant_plan, feeds())
            quant_plan = quant_plan.model_copy(update={"edits": [*quant_plan.edits, *corrections],
                                                       "corrected_biases": [e.initializer for e in corrections]})
    return apply(model, quant_plan, reserved=reserved, weights_q=weights_q), quant_plan
