"""The accuracy-aware search run on a real model: its backend (one INT8 model per set of float
layers, scored by an Evaluator), its driver over a work dir, and the gate on its result.

Statistics are computed once by the caller; every model here is re-planned from them with the
reverted layers added to the ignored scope, so a layer's whole quantizer group (its weight,
bias, output quantizer, and any input quantizer no other quantized layer reads) goes at once.
An embedding table in 8 bits is one candidate, named by its first Gather (ignoring that Gather
keeps the whole table float), and a last resort: float, it costs its whole size at no gain in
speed (MiniLM 23.6 -> 58.8 MB). One `Quantizer` builds them all: a model costs its plan and
one transform.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from . import _benchmark as benchmark
from ._calibration.stats import Statistics
from ._config import AccuracyBudget, QuantConfig
from ._data import Feed, input_specs, iter_feeds, take
from ._errors import GateFailed
from ._layer_error import layer_errors
from ._metrics import Metric
from ._quantize.accuracy_aware import Journal, meets, search
from ._quantize.default import Quantizer
from ._quantize.plan import QuantPlan
from ._quantize.planner import node_entries
from ._reports import Iteration, SearchResult
from ._storage import write_text
from ._validate import Evaluator, Scores

log = logging.getLogger(__name__)

Reverted = tuple[str, ...]


class ModelBackend:
    def __init__(self, prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, evaluator: Evaluator, *, speed_feed: Feed) -> None:
        self.prepared = prepared
        self.stats = stats
        self.config = config
        self.evaluator = evaluator
        self.speed_feed = speed_feed
        self._quantizer = Quantizer(prepared, stats)
        self._fp32 = prepared.SerializeToString()
        self._last: tuple[Reverted, onnx.ModelProto, QuantPlan, bytes | None] | None = None
        _, plan = self.build(())
        # Tables first (embeddings start a graph), then the layers, those inside If bodies included.
        self.tables = {table.readers[0]: table.readers for table in plan.all_tables()}
        self.candidates = [*self.tables, *plan.layers()]
        self.last_resort = list(self.tables)

    @property
    def reference(self) -> Scores:
        return self.evaluator.reference_scores

    def config_for(self, reverted: Reverted) -> QuantConfig:
        return self.config.model_copy(update={"ignore": tuple(self.config.ignore) + node_entries(self.prepared, sorted(reverted))})

    def build(self, reverted: Reverted) -> tuple[onnx.ModelProto, QuantPlan]:
        key = tuple(sorted(reverted))
        if self._last is None or self._last[0] != key:
            model, plan = self._quantizer(self.config_for(reverted))
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
        errors = {node.name: nmse[out] - (nmse[reads] if reads else 0.0) for node, out, reads in layers}
        for first, readers in self.tables.items():  # a table's error: what all its Gathers add
            added = [errors.pop(reader) for reader in readers if reader in errors]
            if added:
                errors[first] = sum(added)
        return errors

    def speed(self, reverted: Reverted) -> float:
        return benchmark.speedup(self._fp32, self._bytes(reverted), self.speed_feed, serving=self.config.runtime)


def evaluator(prepared: onnx.ModelProto, runtime: str, metrics: list[Metric], eval_source, labels: np.ndarray | None,
              work: Path) -> Evaluator:
    """What scores every model of a search on the evaluation data, in the serving runtime, with
    the FP32 reference outputs kept in `work`."""
    specs = input_specs(prepared)
    feeds = lambda: iter_feeds(eval_source, specs, batch_size=32)  # noqa: E731
    return Evaluator(prepared.SerializeToString(), feeds, metrics, labels=labels, cache_dir=work / "reference", specs=specs,
                     serving=runtime)


def within_budget(evaluator: Evaluator, metrics: list[Metric], budget: AccuracyBudget) -> Callable[[bytes], bool]:
    """A judge of serialized models: whether one, scored on the whole evaluation set, keeps every
    metric within the budget (the latency search's quality rule when a budget is given)."""

    def judge(model: bytes) -> bool:
        scores = evaluator.full(model)
        return meets(evaluator.reference_scores, metrics, budget, scores)

    return judge


def run(prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, budget: AccuracyBudget, metrics: list[Metric],
        evaluator: Evaluator, work: Path) -> tuple[onnx.ModelProto, QuantPlan, SearchResult, QuantConfig]:
    """The search over float layers, journaled in `work` (see workdir.py), from `config`'s
    placement; returns the final model, its plan, the search and the config that makes that model."""
    first = next(iter(evaluator.feeds()))
    backend = ModelBackend(prepared, stats, config, evaluator, speed_feed=take(first, evaluator.specs, slice(0, 1)))
    iterations = work / "iterations"
    iterations.mkdir(exist_ok=True)

    def write(iteration: Iteration) -> None:
        path = iterations / f"{iteration.index:04d}.json"
        if path.exists():  # written before a restart
            return
        _, plan = backend.build(tuple(iteration.float_layers))
        write_text(path, json.dumps({"iteration": iteration.model_dump(mode="json"), "plan": plan.model_dump(mode="json")}, indent=1))
        log.info("iteration %d (%s): %s", iteration.index, iteration.kind,
                 ", ".join(f"{n} drop {r.drop:.4f}/{r.max_drop:.4f}" for n, r in iteration.metrics.items()))

    journal = Journal(work / "journal.jsonl")
    result = search(backend, metrics, budget, journal=journal, on_iteration=write)
    if journal.replayed:
        log.info("resumed: %d evaluations replayed from %s", journal.replayed, journal.path)
    final = tuple(result.float_layers)
    model, plan = backend.build(final)
    return model, plan, result, backend.config_for(final)


def gate(result: SearchResult, min_speedup: float) -> None:
    """GateFailed when the budget was not met, or is met only by a model slower than `min_speedup`."""
    last = result.iterations[-1]
    if not result.met:
        worst = ", ".join(f"{n} drop {r.drop:.4f} > {r.max_drop:.4f}" for n, r in last.metrics.items() if r.drop > r.max_drop)
        raise GateFailed(f"accuracy budget not met ({worst}): {result.reason}")
    if last.speedup is not None and last.speedup < min_speedup:
        raise GateFailed(
            f"the budget is met with {len(result.float_layers)} layers in float, but the INT8 model runs at "
            f"{last.speedup:.2f}x of FP32 at batch 1, below the required {min_speedup:.2f}x"
            + (": slower than the model it replaces" if last.speedup < 1.0 else "")
        )
