"""The Default Quantization pipeline: plan from statistics, correct biases, apply the plan.

`Quantizer` runs it for one prepared model and one set of statistics, as many times as a
search asks, each for a config of its own (more layers ignored, another reduction floor, other
weightless ops on integers). What a config leaves unchanged is computed once and kept: channel
alignment's edits and the model they leave, the model each set of SmoothQuant edits leaves,
every weight's integer values and every bias's fast correction. A candidate then costs its plan
(decisions, from statistics already in memory) and one transform: never a recalibration, nor a
rerun of the float algorithms over layers they have already seen."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable

import onnx

from .._calibration.stats import Statistics
from .._config import QuantConfig
from .._digest import sha256
from .._graph import all_names, all_nodes, body_model, if_bodies, initializers, names_defined_here, put_body
from .._ops import QUANTIZABLE
from .algorithms import align_channels, correct_biases, correct_biases_full, smooth_quant
from .params import QuantizedWeights
from .plan import FloatEdit, InsertedScale, QuantPlan
from .planner import has_layers, plan, resolve_ignored, resolve_model_type, statistic_requests
from .transform import apply, edited

log = logging.getLogger(__name__)

# Float starting points a Quantizer keeps (each a copy of the model, with its quantized weights).
# Where SmoothQuant runs, reverting a layer it smooths changes its group's factors, so each such
# candidate of the accuracy-aware search starts from a model of its own; the search tries them
# one after another, and comes back to its current one between them.
KEEP_FLOATS = 3  # at least 2: the first and the one in use


def quantize_model(
    model: onnx.ModelProto,
    stats: Statistics,
    config: QuantConfig,
    *,
    feeds: Callable[[], Iterable[dict]] | None = None,
    reserved: frozenset[str] = frozenset(),
    ignored: set[str] | None = None,
) -> tuple[onnx.ModelProto, QuantPlan]:
    """Quantize a prepared model; returns the new model and the plan that made it (one
    `Quantizer` call: see there)."""
    return Quantizer(model, stats)(config, feeds=feeds, reserved=reserved, ignored=ignored)


class _Floats:
    """One float starting point of the plan: the model as channel alignment and SmoothQuant
    left it (`working`, their `edits` and `inserted` scales applied), the statistics that go with
    it, and what was computed on it: each weight's integer values, each bias's fast correction."""

    def __init__(self, working: onnx.ModelProto, stats: Statistics, edits: list[FloatEdit], inserted: list[InsertedScale],
                 aligned: list[str], smoothed: list[str], source: QuantizedWeights) -> None:
        self.working, self.stats, self.edits, self.inserted = working, stats, edits, inserted
        self.aligned, self.smoothed = aligned, smoothed
        # What no edit touched quantizes as in the source model, once for every starting point.
        self.quantized = QuantizedWeights(initializers(working.graph), source=source, edited=frozenset(e.initializer for e in edits))
        self.corrections: dict[str, FloatEdit | None] = {}  # (BiasQuant, WeightQuant) JSON -> edit, None where none applies

    def fast_corrections(self, quant_plan: QuantPlan, weights_q) -> list[FloatEdit]:
        """correct_biases for the plan, each bias computed once (its correction depends on its
        entry, its weight's entry and the statistics of what it reads, nothing else)."""
        weights = {w.initializer: w for w in quant_plan.weights}
        keys = [entry.model_dump_json() + weights[entry.weight].model_dump_json() for entry in quant_plan.biases]
        missing = {key: entry for entry, key in zip(quant_plan.biases, keys) if key not in self.corrections}
        if missing:
            found = {e.initializer: e for e in correct_biases(self.working, quant_plan.model_copy(update={"biases": list(missing.values())}),
                                                              self.stats, weights_q=weights_q)}
            self.corrections.update({key: found.get(entry.initializer) for key, entry in missing.items()})
        return [edit for edit in (self.corrections[key] for key in keys) if edit is not None]


class Quantizer:
    """quantize_model for one prepared model and statistics, over many configs (see the module)."""

    def __init__(self, model: onnx.ModelProto, stats: Statistics) -> None:
        self.model, self.stats = model, stats
        self._aligned: tuple[onnx.ModelProto, Statistics, list[FloatEdit], list[str]] | None = None
        self._floats: OrderedDict[str, _Floats] = OrderedDict()  # most recently used last
        self._first_floats: str | None = None
        self._source_weights = QuantizedWeights(initializers(self.model.graph))  # the weights no float edit touches
        self._bodies: dict[tuple[str, str, str], Quantizer] = {}

    def __call__(
        self,
        config: QuantConfig,
        *,
        feeds: Callable[[], Iterable[dict]] | None = None,
        reserved: frozenset[str] = frozenset(),
        ignored: set[str] | None = None,
    ) -> tuple[onnx.ModelProto, QuantPlan]:
        """Quantize the model for `config`; returns the new model and the plan that made it.

        `feeds` (a callable giving a fresh pass over the calibration data) enables full bias
        correction when the config asks for it; with statistics alone the fast one runs.

        The bodies of If nodes (silero VAD's export keeps its whole network in one) are then
        quantized the same way, each as a model of its own whose inputs are the outer values it
        reads (`graph.body_model`); their plans go into `QuantPlan.bodies`. The calibration pass
        passes their tensors out through the If (`calibration.collect.with_outputs`).

        The ignored scope is resolved to node names here, once (`ignored`, where a caller has
        done it), and every step below reads that set; the plan records it."""
        model, stats = self.model, self.stats
        if ignored is None:
            ignored = resolve_ignored(model, config.ignore)
        int8, quant_plan = self._graph(config, feeds, reserved, ignored)
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
            # The body as the outer transform left it (it renames the outer values the body reads).
            key = (node.name, attribute, sha256(sub.SerializeToString()).hexdigest())
            inner = self._bodies.setdefault(key, Quantizer(sub, stats))
            sub_int8, sub_plan = inner(sub_config, reserved=reserved | all_names(int8.graph), ignored=inside)
            put_body(int8, node, attribute, sub_int8, owned)
            if sub_plan.layers() or sub_plan.left_float():
                bodies[f"{node.name}/{attribute}"] = sub_plan
        if unrun:
            log.warning("%d layers stay float: their If bodies never ran on the calibration data", len(unrun))
        if bodies or unrun:
            quant_plan = quant_plan.model_copy(update={"bodies": bodies, "skipped": {**quant_plan.skipped, **unrun}})
        return int8, quant_plan

    def _graph(self, config: QuantConfig, feeds, reserved: frozenset[str], ignored: set[str]) -> tuple[onnx.ModelProto, QuantPlan]:
        """One graph, its If bodies aside: align, smooth, plan, correct biases, apply. Each step
        reads the model as the edits before it left it (`working`); every edit goes into the plan,
        and the plan applied to the prepared model gives the INT8 model."""
        floats = self._floats_for(config, ignored)
        quant_plan = plan(floats.working, floats.stats, config, ignored=ignored, quantized=floats.quantized).model_copy(
            update={"smoothed": floats.smoothed, "aligned": floats.aligned, "edits": floats.edits, "inserted": floats.inserted})
        # Bias correction changes biases only: the weights quantize once for it and the transform.
        weights_q = floats.quantized.planned(quant_plan.stored_weights())
        if config.bias_correction != "none":
            corrections = floats.fast_corrections(quant_plan, weights_q)
            quant_plan = quant_plan.model_copy(update={"edits": [*quant_plan.edits, *corrections],
                                                       "corrected_biases": [e.initializer for e in corrections]})
            if config.bias_correction == "full" and feeds is not None:
                working = edited(floats.working, corrections)
                corrections = correct_biases_full(working, self._apply(floats, quant_plan, weights_q, frozenset()), quant_plan, feeds())
                quant_plan = quant_plan.model_copy(update={"edits": [*quant_plan.edits, *corrections],
                                                           "corrected_biases": [e.initializer for e in corrections]})
        return self._apply(floats, quant_plan, weights_q, reserved), quant_plan

    def _apply(self, floats: _Floats, quant_plan: QuantPlan, weights_q, reserved: frozenset[str]) -> onnx.ModelProto:
        """The transform, started from the model the plan's first float edits left (theirs are
        the same bytes: see transform.apply's `start`)."""
        return apply(self.model, quant_plan, reserved=reserved, weights_q=weights_q, start=(floats.working, len(floats.edits)))

    def _floats_for(self, config: QuantConfig, ignored: set[str]) -> _Floats:
        """The float starting point for `config`: channel alignment's (computed once), then
        SmoothQuant's where the model is a transformer (its groups leave ignored layers out, so
        its edits are computed per config; the model they leave is built once per set of edits)."""
        working, stats, edits, aligned = self.model, self.stats, [], []
        if config.channel_alignment:
            if self._aligned is None:
                align_edits, aligned_stats, names = align_channels(self.model, self.stats)
                self._aligned = (edited(self.model, align_edits) if align_edits else self.model, aligned_stats, align_edits, names)
            working, stats, edits, aligned = self._aligned
        smooth_edits: list[FloatEdit] = []
        inserted: list[InsertedScale] = []
        smoothed: list[str] = []
        if resolve_model_type(self.model, config.model_type) == "transformer":
            smooth_edits, inserted, stats, smoothed = smooth_quant(working, stats, config, ignored=ignored)
        key = sha256("".join([str(config.channel_alignment), *(e.model_dump_json() for e in [*smooth_edits, *inserted])]).encode()).hexdigest()
        if key not in self._floats:
            if smooth_edits or inserted:
                working = edited(working, smooth_edits, inserted)
            self._floats[key] = _Floats(working, stats, [*edits, *smooth_edits], inserted, aligned, smoothed, self._source_weights)
            # Each holds a copy of the model: keep the first (the search's starting point) and the latest few.
            self._first_floats = self._first_floats or key
            if len(self._floats) > KEEP_FLOATS:
                del self._floats[next(k for k in self._floats if k not in (self._first_floats, key))]
        self._floats.move_to_end(key)
        return self._floats[key]
