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
from .layer_error import layer_errors
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
        self._last: tuple[Reverted, onnx.ModelProto, QuantPlan, bytes | None] | None = None
        _, plan = self.build(())
        self.candidates = plan.layers()  # those inside If bodies included

    @property
    def reference(self) -> Scores:
        return self.evaluator.reference_scores

    def config_for(self, reverted: Reverted) -> QuantConfig:
        return self.config.model_copy(update={"ignore": tuple(self.config.ignore) + tuple(sorted(reverted))})

    def build(self, reverted: Reverted) -> tuple[onnx.ModelProto, QuantPlan]:
        key = tuple(sorted(reverted))
        if self._last is None or self._last[0] != key:
            model, plan = quantize_model(self.prepared, self.stats, self.config_for(reverted))
            self._last = (key, model, plan, None)
        return self._last[1], self._last[2]

    def _bytes(self, reverted: Reverted) -> bytes:
        """The built model serialized once: a full pass, its speed check and its subset runs share it."""
        self.build(reverted)
        if self._last[3] is None:
            self._last = (*self._last[:3], self._last[1].SerializeToString())
        return self._last[3]

    def full(self, reverted: Reverted) -> Scores:
        return self.evaluator.full(self._bytes(reverted))

    def subset(self, reverted: Reverted, indices) -> tuple[Scores, float]:
        return self.evaluator.subset(self._bytes(reverted), indices)

    def proxy(self, reverted: Reverted, indices) -> dict[str, float]:
        """Per quantized layer: the normalized MSE of its output minus that of what it reads,
        i.e. the error it adds (weights and output quantization), on the subset."""
        model, _ = self.build(reverted)
        layers, nmse, _, _ = layer_errors(self.prepared, model, self.evaluator.subset_feeds(indices))
        return {node.name: nmse[out] - (nmse[reads] if reads else 0.0) for node, out, reads in layers}

    def speed(self, reverted: Reverted) -> float:
        return benchmark.speedup(self._fp32, self._bytes(reverted), self.speed_feed)
