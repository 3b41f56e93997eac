"""The accuracy-aware search's backend: one INT8 model per set of float layers, scored by an Evaluator.

Statistics are computed once by the caller; every model here is re-planned from them with the
reverted layers added to the ignored scope, so a layer's whole quantizer group (its weight,
bias, output quantizer, and any input quantizer no other quantized layer reads) goes at once.
"""

from __future__ import annotations

import onnx

from . import benchmark
from .calibration.stats import Statistics
from .config import QuantConfig
from .data import Feed
from .ops import QUANTIZABLE
from .quantize.default import quantize_model
from .quantize.planner import QuantPlan
from .validate import Evaluator, Scores

Reverted = tuple[str, ...]


class ModelBackend:
    def __init__(self, prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, evaluator: Evaluator, *, speed_feed: Feed) -> None:
        self.prepared = prepared
        self.stats = stats
        self.config = config
        self.evaluator = evaluator
        self.speed_feed = speed_feed
        self._fp32 = prepared.SerializeToString()
        self._last: tuple[Reverted, onnx.ModelProto, QuantPlan] | None = None
        _, plan = self.build(())
        self.candidates = list(plan.nodes)
        self.reference = evaluator.reference_scores

    def config_for(self, reverted: Reverted) -> QuantConfig:
        return self.config.model_copy(update={"ignore": tuple(self.config.ignore) + tuple(sorted(reverted))})

    def build(self, reverted: Reverted) -> tuple[onnx.ModelProto, QuantPlan]:
        key = tuple(sorted(reverted))
        if self._last is None or self._last[0] != key:
            model, plan = quantize_model(self.prepared, self.stats, self.config_for(reverted))
            self._last = (key, model, plan)
        return self._last[1], self._last[2]

    def _bytes(self, reverted: Reverted) -> bytes:
        return self.build(reverted)[0].SerializeToString()

    def full(self, reverted: Reverted) -> Scores:
        return self.evaluator.full(self._bytes(reverted))

    def subset(self, reverted: Reverted, indices) -> tuple[Scores, float]:
        return self.evaluator.subset(self._bytes(reverted), indices)

    def proxy(self, reverted: Reverted, indices) -> dict[str, float]:
        """Per remaining layer: the normalized MSE of its output minus that of its inputs, i.e.
        the error it adds (input, weight and output quantization together)."""
        model, plan = self.build(reverted)
        produced = {out for node in model.graph.node for out in node.output} & {
            out for node in self.prepared.graph.node for out in node.output
        }
        fused = {f.into: f.node for f in plan.fused}
        nodes = {node.name: node for node in self.prepared.graph.node}
        ends: dict[str, tuple[str, list[str]]] = {}
        for layer in plan.nodes:
            node = nodes[layer]
            out = nodes[fused[layer]].output[0] if layer in fused else node.output[0]
            ins = [node.input[i] for i in QUANTIZABLE[node.op_type].activation_inputs if i < len(node.input) and node.input[i]]
            if out in produced:
                ends[layer] = (out, [t for t in ins if t in produced])
        tensors = sorted({t for out, ins in ends.values() for t in [out, *ins]})
        errors = self.evaluator.tensor_errors(self.prepared, model, tensors, indices)
        return {layer: errors[out] - max((errors[t] for t in ins), default=0.0) for layer, (out, ins) in ends.items()}

    def speed(self, reverted: Reverted) -> float:
        return benchmark.speedup(self._fp32, self._bytes(reverted), self.speed_feed)
