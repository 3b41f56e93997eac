"""Accuracy-Aware Quantization: revert the fewest quantized layers to float until every metric
is within its budget, with as few full validation passes as the evidence allows.

The search only decides; a `Backend` builds and scores models. Each round:
1. pick the ranking subset: the samples where INT8 falls furthest below FP32 on the metric
   that is most over its budget;
2. rank the remaining quantized layers by a cheap proxy (how much output error each adds,
   from one pass with intermediate outputs), and confirm the proxy's best few with the real
   metric on the subset, each reverted alone;
3. revert them best first while each still helps on the subset (a candidate's gain was measured
   alone, so it is checked again with the layers already reverted); when one stops helping,
   the round ends and the next one re-ranks;
4. predict the full-set drop by scaling it with the subset's own drop, and run a full
   validation pass only when the prediction meets the budget or the round ends.
When no single layer helps, groups of the proxy's top 2, 4, 8, ... layers are tried. Once the
budget is met, a pruning pass gives back quantizers to float layers the budget no longer needs
(least useful first, predicted on an even sample of the set), confirmed by one full pass.

Every evaluation goes through a `Journal`: a line per result, appended and flushed. A killed
run restarts, replays the journal (each recorded evaluation returns at once), and continues
from the first evaluation it has not seen; the search being deterministic given those
results, it reaches the same plan.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import progress
from ..config import AccuracyBudget
from ..metrics import Metric, drop
from ..reports import Iteration, MetricResult, SearchResult

log = logging.getLogger(__name__)

Scores = dict[str, np.ndarray]
Reverted = tuple[str, ...]


MAJOR_GAIN = 0.5  # in one round, revert only layers whose gain is at least this share of the best one's
PRUNE_MARGIN = 0.95  # a float layer is requantized only if the predicted drop keeps this much headroom


class Backend(Protocol):
    candidates: list[str]  # quantized layers, in graph order
    reference: Scores  # FP32 per-sample scores on the whole evaluation set

    def full(self, reverted: Reverted) -> Scores: ...

    def subset(self, reverted: Reverted, indices: Sequence[int]) -> tuple[Scores, float]: ...

    def proxy(self, reverted: Reverted, indices: Sequence[int]) -> dict[str, float]: ...

    def speed(self, reverted: Reverted) -> float | None: ...


class Journal:
    """Append-only record of evaluation results, keyed by what was evaluated."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short
                    continue
                self.entries[entry["key"]] = entry
        self.replayed = 0

    def recall(self, key: str, compute: Callable[[], dict]) -> dict:
        if key in self.entries:
            self.replayed += 1
            return self.entries[key]
        start = time.perf_counter()
        entry = {"key": key, **compute(), "seconds": time.perf_counter() - start}
        self.entries[key] = entry
        if self.path is not None:
            with self.path.open("a") as out:
                out.write(json.dumps(entry) + "\n")
                out.flush()
                os.fsync(out.fileno())
        return entry


def search(
    backend: Backend,
    metrics: Sequence[Metric],
    budget: AccuracyBudget,
    *,
    journal: Journal,
    on_iteration: Callable[[Iteration], None] = lambda it: None,
) -> SearchResult:
    by_name = {m.name: m for m in metrics}
    limits = {b.metric: b.max_drop for b in budget.metrics}
    counts = {"full": 0, "subset": 0, "proxy": 0}
    spent = 0.0

    def figures(scores: Scores) -> dict[str, MetricResult]:
        out = {}
        for name, limit in limits.items():
            fp32, int8 = float(np.mean(reference[name])), float(np.mean(scores[name]))
            loss = drop(fp32, int8, by_name[name].higher_is_better)
            if budget.drop_type == "relative":
                loss /= max(abs(fp32), 1e-12)
            out[name] = MetricResult(fp32=fp32, int8=int8, drop=loss, max_drop=limit)
        return out

    def within(scores: Scores) -> bool:
        return all(r.drop <= r.max_drop for r in figures(scores).values())

    def worst_metric(scores: Scores) -> str:
        results = figures(scores)
        return max(results, key=lambda n: ((results[n].drop - results[n].max_drop) / max(results[n].max_drop, 1e-6), n))

    def key(kind: str, reverted: Reverted, indices: Sequence[int] = ()) -> str:
        return json.dumps([kind, sorted(reverted), list(indices)])

    def full(reverted: Reverted) -> Scores:
        nonlocal spent
        entry = journal.recall(key("full", reverted), lambda: {"scores": _lists(backend.full(reverted))})
        counts["full"] += 1
        spent += entry["seconds"]
        return _arrays(entry["scores"])

    def subset(reverted: Reverted, indices: Sequence[int]) -> tuple[Scores, float]:
        nonlocal spent

        def compute() -> dict:
            scores, nmse = backend.subset(reverted, indices)
            return {"scores": _lists(scores), "nmse": nmse}

        entry = journal.recall(key("subset", reverted, indices), compute)
        counts["subset"] += 1
        spent += entry["seconds"]
        return _arrays(entry["scores"]), entry["nmse"]

    def proxy(reverted: Reverted, indices: Sequence[int]) -> dict[str, float]:
        nonlocal spent
        entry = journal.recall(key("proxy", reverted, indices), lambda: {"errors": backend.proxy(reverted, indices)})
        counts["proxy"] += 1
        spent += entry["seconds"]
        return entry["errors"]

    def speed(reverted: Reverted) -> float | None:
        return journal.recall(key("speed", reverted), lambda: {"speedup": backend.speed(reverted)})["speedup"]

    iterations: list[Iteration] = []
    why: dict[str, str] = {}

    def predict(full_scores: Scores, indices: Sequence[int], old: Scores, new: Scores) -> dict[str, MetricResult]:
        """Full-set figures after a revert measured on the subset: each metric's full drop scaled
        by how much the subset's own drop shrank (the subset holds the worst samples)."""
        out = {}
        order = np.array(sorted(indices))
        for name, result in figures(full_scores).items():
            higher = by_name[name].higher_is_better
            before = drop(float(np.mean(reference[name][order])), float(np.mean(old[name])), higher)
            after = drop(float(np.mean(reference[name][order])), float(np.mean(new[name])), higher)
            ratio = after / before if before > 1e-12 else 1.0
            loss = result.drop * max(ratio, 0.0)
            scale = max(abs(result.fp32), 1e-12) if budget.drop_type == "relative" else 1.0
            int8 = result.fp32 - loss * scale if higher else result.fp32 + loss * scale
            out[name] = MetricResult(fp32=result.fp32, int8=int8, drop=loss, max_drop=result.max_drop)
        return out

    def shift(full_scores: Scores, old: Scores, new: Scores) -> dict[str, MetricResult]:
        """Full-set figures moved by the mean change measured on a representative subset."""
        out = {}
        for name, result in figures(full_scores).items():
            higher = by_name[name].higher_is_better
            change = float(np.mean(new[name]) - np.mean(old[name]))
            int8 = result.int8 + change
            loss = drop(result.fp32, int8, higher)
            if budget.drop_type == "relative":
                loss /= max(abs(result.fp32), 1e-12)
            out[name] = MetricResult(fp32=result.fp32, int8=int8, drop=loss, max_drop=result.max_drop)
        return out

    def record(kind, reverted: Reverted, added: Sequence[str], figs: dict[str, MetricResult], note: str | None = None) -> None:
        iteration = Iteration(
            index=len(iterations),
            kind=kind,
            reverted=list(added),
            float_layers=list(reverted),
            metrics=figs,
            within_budget=all(r.drop <= r.max_drop for r in figs.values()),
            seconds=round(spent, 3),
            speedup=speed(reverted) if kind == "full" else None,
            why=note,
        )
        iterations.append(iteration)
        on_iteration(iteration)
        figures_text = ", ".join(f"{n} drop {r.drop:.4g}/{r.max_drop:.4g}" for n, r in figs.items())
        what = f"{kind} {', '.join(added)}" if added else kind
        progress.report("accuracy-aware iteration", iteration.index, detail=f"{what}; {len(reverted)} float; {figures_text}")

    def gain(name: str, new: Scores, new_nmse: float, old: Scores, old_nmse: float) -> tuple[float, float]:
        sign = 1.0 if by_name[name].higher_is_better else -1.0
        return sign * float(np.mean(new[name]) - np.mean(old[name])), old_nmse - new_nmse

    def helps(g: tuple[float, float]) -> bool:
        return g[0] > 1e-12 or (abs(g[0]) <= 1e-12 and g[1] > 0)

    def prune(reverted: Reverted, scores: Scores) -> tuple[Reverted, Scores]:
        """Greedy reverts overshoot: layers reverted early may be unneeded once later ones are
        float. Give each float layer its quantizers back, least useful first, while the
        predicted drop stays within budget; one full pass confirms, or nothing changes."""
        # Here the question is how the whole set moves, so the subset is spread evenly over it
        # (not the worst samples) and its mean change is the prediction.
        count = len(next(iter(reference.values())))
        indices = sorted({int(i) for i in np.linspace(0, count - 1, min(budget.ranking_subset, count))})
        start, _ = subset(reverted, indices)
        kept = reverted
        for layer in sorted(reverted, key=lambda layer: (usefulness.get(layer, 0.0), reverted.index(layer))):
            trial_set = tuple(other for other in kept if other != layer)
            trial, _ = subset(trial_set, indices)
            predicted = shift(scores, start, trial)
            if all(r.drop <= PRUNE_MARGIN * r.max_drop for r in predicted.values()):
                kept = trial_set
                record("requantize", kept, [layer], predicted, "predicted within budget without it (an even sample of the set)")
        if kept == reverted:
            return reverted, scores
        confirmed = full(kept)
        record("full", kept, [], figures(confirmed))
        if within(confirmed):
            return kept, confirmed
        record("full", reverted, [], figures(scores), "the pruned set missed the budget on the full set: back to the last one that met it")
        return reverted, scores

    usefulness: dict[str, float] = {}
    reverted: Reverted = ()
    scores = full(reverted)  # the backend may score FP32 in this same pass over the data
    reference = backend.reference
    record("full", reverted, [], figures(scores))
    reverts = 0
    reason = ""
    while True:
        if within(scores):
            reason = "every metric is within its budget"
            break
        remaining = [c for c in backend.candidates if c not in reverted]
        if not remaining:
            reason = "every quantized layer is float and the drop remains: it does not come from quantization"
            break
        if reverts >= budget.max_iterations:
            reason = f"stopped after {reverts} reverts (max_iterations {budget.max_iterations})"
            break
        target = worst_metric(scores)
        indices = _worst_samples(reference[target], scores[target], by_name[target].higher_is_better, budget.ranking_subset)
        base, base_nmse = subset(reverted, indices)
        start_scores = base
        errors = proxy(reverted, indices)
        ranked = sorted(remaining, key=lambda layer: (-errors.get(layer, 0.0), backend.candidates.index(layer)))

        # Confirm the proxy's best with the real metric, a few at a time, until one helps.
        confirmed: list[tuple[tuple[float, float], str, Scores, float]] = []
        chunk = len(ranked) if len(ranked) <= 2 * budget.confirm else budget.confirm  # few layers: confirm them all
        for start in range(0, len(ranked), chunk):
            for layer in ranked[start : start + chunk]:
                trial, trial_nmse = subset(reverted + (layer,), indices)
                g = gain(target, trial, trial_nmse, base, base_nmse)
                if helps(g):
                    confirmed.append((g, layer, trial, trial_nmse))
            if confirmed:
                break
        confirmed.sort(key=lambda c: (-c[0][0], -c[0][1], backend.candidates.index(c[1])))

        steps: list[tuple[list[str], Scores, float, str]] = []
        if confirmed:
            # Big gains first; a layer that helps a little is left for a later round, where it
            # competes again (a run of small reverts is how greedy searches end with too many).
            best = confirmed[0][0][0]
            steps = [
                ([layer], trial, nmse, f"{target} on the ranking subset {g[0]:+.4g} reverted alone")
                for g, layer, trial, nmse in confirmed
                if g[0] >= MAJOR_GAIN * best
            ]
        else:
            # No single layer helps: the error is spread out. Revert the proxy's top groups.
            size = 2
            while size <= len(ranked) and not steps:
                group = ranked[:size]
                trial, trial_nmse = subset(reverted + tuple(group), indices)
                g = gain(target, trial, trial_nmse, base, base_nmse)
                if helps(g):
                    steps = [(group, trial, trial_nmse, f"in a group of {size}: {target} on the ranking subset {g[0]:+.4g}")]
                size *= 2
            if not steps:
                reason = f"no remaining layer or group of layers improves {target} on the {len(indices)} samples where INT8 and FP32 disagree most"
                break

        before = reverted
        for position, (group, trial, trial_nmse, note) in enumerate(steps):
            if reverts >= budget.max_iterations:
                break
            if position:  # measured alone; check it still helps with what is already reverted
                trial, trial_nmse = subset(reverted + tuple(group), indices)
                if not helps(gain(target, trial, trial_nmse, base, base_nmse)):
                    break
            reverted = reverted + tuple(group)
            reverts += 1
            for layer in group:
                why[layer] = note
                usefulness[layer] = gain(target, trial, trial_nmse, base, base_nmse)[0] / len(group)
            predicted = predict(scores, indices, start_scores, trial)
            base, base_nmse = trial, trial_nmse
            record("revert", reverted, group, predicted, note)
            if all(r.drop <= r.max_drop for r in predicted.values()):
                break
        if reverted != before:
            scores = full(reverted)
            record("full", reverted, [], figures(scores))

    if within(scores) and len(reverted) > 1:
        reverted, scores = prune(reverted, scores)

    log.info("accuracy-aware search: %s; %d layers float, %d full passes", reason, len(reverted), counts["full"])
    return SearchResult(
        met=within(scores),
        reason=reason,
        float_layers={layer: why[layer] for layer in reverted},
        iterations=iterations,
        full_passes=counts["full"],
        subset_evaluations=counts["subset"],
        proxy_passes=counts["proxy"],
        seconds=round(spent, 3),
    )


def _worst_samples(reference: np.ndarray, candidate: np.ndarray, higher_is_better: bool, size: int) -> list[int]:
    """The `size` samples where the candidate falls furthest below the reference, ascending."""
    deficit = (reference - candidate) if higher_is_better else (candidate - reference)
    order = sorted(range(len(deficit)), key=lambda i: (-float(deficit[i]), i))
    return sorted(order[: min(size, len(order))])


def _lists(scores: Scores) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in scores.items()}


def _arrays(scores: dict[str, list[float]]) -> Scores:
    return {name: np.asarray(values, dtype=np.float64) for name, values in scores.items()}
