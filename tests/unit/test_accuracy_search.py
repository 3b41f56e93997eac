"""The accuracy-aware search's logic on a fake backend whose layers cost known, additive errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lowprec_core._config import AccuracyBudget, MetricBudget
from lowprec_core._metrics import METRICS
from lowprec_core._quantize.accuracy_aware import Journal, search

SAMPLES = 200


class Additive:
    """Layer i lowers the score of the samples in its `hurts` set by `cost[i]`; the proxy
    sees the costs through noise, so the search has to confirm with the metric."""

    def __init__(self, costs: dict[str, float], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.costs = costs
        self.candidates = list(costs)
        self.last_resort: list[str] = []
        self.hurts = {name: rng.choice(SAMPLES, size=40, replace=False) for name in costs}
        self.reference = {"cosine": np.ones(SAMPLES)}
        self.noise = {name: float(rng.uniform(0.5, 2.0)) for name in costs}
        self.calls = {"full": 0, "subset": 0, "proxy": 0}

    def _scores(self, reverted) -> np.ndarray:
        scores = np.ones(SAMPLES)
        for name, cost in self.costs.items():
            if name not in reverted:
                scores[self.hurts[name]] -= cost
        return scores

    def full(self, reverted):
        self.calls["full"] += 1
        return {"cosine": self._scores(reverted)}

    def subset(self, reverted, indices):
        self.calls["subset"] += 1
        scores = self._scores(reverted)[sorted(indices)]
        return {"cosine": scores}, float(np.sum(1 - scores))

    def proxy(self, reverted, indices):
        self.calls["proxy"] += 1
        return {name: cost * self.noise[name] for name, cost in self.costs.items() if name not in reverted}

    def speed(self, reverted):
        return 1.5 - 0.05 * len(reverted)


BUDGET = AccuracyBudget(metrics=(MetricBudget(metric="cosine", max_drop=0.01),), confirm=2)


def _costs() -> dict[str, float]:
    costs = {f"layer{i}": 0.001 for i in range(20)}
    costs.update({"layer3": 0.05, "layer11": 0.03, "layer17": 0.02})
    return costs


def test_reverts_the_layers_that_cost_accuracy_and_no_others():
    backend = Additive(_costs())
    result = search(backend, [METRICS["cosine"]], BUDGET, journal=Journal(None))
    assert result.met
    # Each big layer costs 40/200 * cost of mean cosine: 0.01, 0.006, 0.004; small ones 0.0002.
    # Total 0.0236 > 0.01: reverting layer3 and layer11 leaves 0.0076, within budget.
    assert set(result.float_layers) == {"layer3", "layer11"}
    assert result.iterations[-1].metrics["cosine"].drop <= 0.01
    assert result.full_passes <= 3 and backend.calls["full"] == result.full_passes
    assert result.iterations[-1].speedup == 1.5 - 0.1


def test_unreachable_budget_stops_and_says_why():
    backend = Additive(_costs())
    budget = BUDGET.model_copy(update={"max_iterations": 1})
    result = search(backend, [METRICS["cosine"]], budget, journal=Journal(None))
    assert not result.met
    assert "max_iterations 1" in result.reason
    assert len(result.float_layers) == 1


def test_a_killed_run_resumes_from_its_journal_to_the_same_plan(tmp_path):
    whole = search(Additive(_costs()), [METRICS["cosine"]], BUDGET, journal=Journal(tmp_path / "whole.jsonl"))
    lines = (tmp_path / "whole.jsonl").read_text().splitlines()
    assert len(lines) > 4
    # A kill after four evaluations, in the middle of writing the fifth.
    (tmp_path / "killed.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][: len(lines[4]) // 2])
    backend = Additive(_costs())
    journal = Journal(tmp_path / "killed.jsonl")
    resumed = search(backend, [METRICS["cosine"]], BUDGET, journal=journal)
    assert journal.replayed == 4
    assert resumed.float_layers == whole.float_layers
    same = lambda it: it.model_dump(exclude={"seconds"})  # noqa: E731  (the re-run evaluations take their own time)
    assert [same(i) for i in resumed.iterations] == [same(i) for i in whole.iterations]
    # Only the evaluations after the kill ran again.
    kinds = [json.loads(line)["key"].split('"')[1] for line in lines[4:]]
    assert sum(backend.calls.values()) == sum(1 for kind in kinds if kind != "speed")


def test_the_gate_fails_a_result_slower_than_fp32():
    import pytest

    from lowprec_core._accuracy import gate
    from lowprec_core._errors import GateFailed

    result = search(Additive(_costs()), [METRICS["cosine"]], BUDGET, journal=Journal(None))
    gate(result, min_speedup=1.0)  # 1.4x: passes
    slow = result.model_copy(update={"iterations": [*result.iterations[:-1], result.iterations[-1].model_copy(update={"speedup": 0.9})]})
    with pytest.raises(GateFailed, match="0.90x of FP32 at batch 1.*slower than the model it replaces"):
        gate(slow, min_speedup=1.0)
    gate(slow, min_speedup=0.0)


class Hurts(Additive):
    """Explicit hurt sets: layer a hurts 10 samples badly, layer b hurts every sample a little."""

    def __init__(self) -> None:
        super().__init__({"a": 0.1, "b": 0.012})
        self.hurts = {"a": np.arange(0, SAMPLES, SAMPLES // 10), "b": np.arange(SAMPLES)}


def test_pruning_gives_back_quantizers_the_budget_no_longer_needs():
    # a alone costs 0.005 of mean cosine and b 0.012. The worst samples point at a first; with
    # a reverted the prediction (0.017 scaled by the subset) looks met, the full pass says 0.012,
    # so b follows. Then b alone was enough: pruning requantizes a (0.005 <= 0.0095).
    backend = Hurts()
    result = search(backend, [METRICS["cosine"]], BUDGET, journal=Journal(None))
    assert result.met
    assert list(result.float_layers) == ["b"]
    kinds = [i.kind for i in result.iterations]
    assert "requantize" in kinds and kinds[-1] == "full"
    assert result.iterations[-1].metrics["cosine"].drop == pytest.approx(0.005)


def test_a_last_resort_candidate_is_reverted_only_when_no_other_helps():
    """An embedding table back in float costs its whole size: MiniLM's search reverted its word
    table among eleven MatMuls (58.8 MB at 1.38x) where the MatMuls alone met the budget."""
    costs = _costs()
    costs["table"] = 0.04  # more than layer11: ranked on its own, it goes before it
    budget = BUDGET.model_copy(update={"metrics": (MetricBudget(metric="cosine", max_drop=0.0105),)})
    result = search(Additive(costs), [METRICS["cosine"]], budget, journal=Journal(None))
    assert result.met and {"layer3", "table"} <= set(result.float_layers), result.float_layers
    backend = Additive(costs)
    backend.last_resort = ["table"]
    # The three big layers float leave the table's 0.008 and 17 small ones' 0.0034: a few small ones go too.
    result = search(backend, [METRICS["cosine"]], budget, journal=Journal(None))
    assert result.met and "table" not in result.float_layers and {"layer3", "layer11", "layer17"} <= set(result.float_layers)
    # Where nothing else helps any more, it goes.
    only = Additive({"table": 0.05, "layer0": 0.001})
    only.last_resort = ["table"]
    result = search(only, [METRICS["cosine"]], BUDGET, journal=Journal(None))
    assert result.met and list(result.float_layers) == ["table"]
