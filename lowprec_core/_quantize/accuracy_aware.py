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
When no single layer helps, groups of the proxy's top 2, 4, 8, ... layers are tried. A backend's
`last_resort` candidates (embedding tables: float, one costs its whole size) are ranked only
in a round where nothing else helps. Once the
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

from .. import _progress as progress
from .._config import AccuracyBudget
from .._metrics import Metric, drop
from .._reports import Iteration, MetricResult, SearchResult
from .._struct import Struct, factory

log = logging.getLogger(__name__)

Scores = dict[str, np.ndarray]
Reverted = tuple[str, ...]


MAJOR_GAIN = 0.5  # in one round, revert only layers whose gain is at least this share of the best one's
PRUNE_MARGIN = 0.95  # a float layer is requantized only if the predicted drop keeps this much headroom


class Backend(Protocol):
    candidates: list[str]  # quantized layers, in graph order
    last_resort: list[str]  # those of `candidates` ranked only when reverting no other one helps
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
    """Revert quantized layers to float, fewest first, until every metric is within `budget`."""
    evals = _Evaluations(backend, journal)
    scores = evals.full(())  # the backend may score FP32 in this same pass over the data
    scoring = _scoring(backend.reference, metrics, budget)
    record = _Recorder(evals, on_iteration)
    state = _State(scores=scores)
    record("full", (), [], scoring.figures(scores))
    while True:
        reason = _stop_reason(state, scoring, backend.candidates, budget)
        if reason:
            break
        target = scoring.worst_metric(state.scores)
        indices = _worst_samples(scoring.reference[target], state.scores[target], scoring.by_name[target].higher_is_better,
                                 budget.ranking_subset)
        base = evals.subset(state.reverted, indices)
        first = [c for c in backend.candidates if c not in backend.last_resort]
        steps = _rank(evals, scoring, first, state.reverted, target, indices, base, budget.confirm)
        if not steps and backend.last_resort:  # what `first` asked is recalled, not evaluated again
            steps = _rank(evals, scoring, backend.candidates, state.reverted, target, indices, base, budget.confirm)
        if not steps:
            reason = f"no remaining layer or group of layers improves {target} on the {len(indices)} samples where INT8 and FP32 disagree most"
            break
        before = state.reverted
        _revert(evals, scoring, record, state, steps, target, indices, base, budget.max_iterations)
        if state.reverted != before:
            state.scores = evals.full(state.reverted)
            record("full", state.reverted, [], scoring.figures(state.scores))

    if scoring.within(state.scores) and len(state.reverted) > 1:
        state.reverted, state.scores = _prune(evals, scoring, record, state, budget.ranking_subset)

    log.info("accuracy-aware search: %s; %d layers float, %d full passes", reason, len(state.reverted), evals.counts["full"])
    return SearchResult(
        met=scoring.within(state.scores),
        reason=reason,
        float_layers={layer: state.why[layer] for layer in state.reverted},
        iterations=record.iterations,
        full_passes=evals.counts["full"],
        subset_evaluations=evals.counts["subset"],
        proxy_passes=evals.counts["proxy"],
        seconds=round(evals.spent, 3),
    )


def meets(reference: Scores, metrics: Sequence[Metric], budget: AccuracyBudget, scores: Scores) -> bool:
    """Whether a model's per-sample `scores` keep every metric within its budget of FP32's `reference`."""
    return _scoring(reference, metrics, budget).within(scores)


def _scoring(reference: Scores, metrics: Sequence[Metric], budget: AccuracyBudget) -> _Scoring:
    return _Scoring(reference, {m.name: m for m in metrics}, {b.metric: b.max_drop for b in budget.metrics}, budget.drop_type == "relative")


Gain = tuple[float, float]  # (metric gain on the subset, output-error gain): the second breaks ties
Step = tuple[list[str], tuple[Scores, float], str]  # (layers reverted together, their subset scores and nmse, why)


class _State(Struct, frozen=False):
    """Where the search stands: the float layers so far and the full-set scores they give."""

    scores: Scores
    reverted: Reverted = ()
    reverts: int = 0
    why: dict[str, str] = factory(dict)
    usefulness: dict[str, float] = factory(dict)  # a float layer's gain per layer when reverted


def _stop_reason(state: _State, scoring: _Scoring, candidates: list[str], budget: AccuracyBudget) -> str:
    """Why the search ends before another round, or "" to go on."""
    if scoring.within(state.scores):
        return "every metric is within its budget"
    if all(c in state.reverted for c in candidates):
        return "every quantized layer is float and the drop remains: it does not come from quantization"
    if state.reverts >= budget.max_iterations:
        return f"stopped after {state.reverts} reverts (max_iterations {budget.max_iterations})"
    return ""


class _Evaluations:
    """Every evaluation the search asks of the backend, through the journal: counted and timed."""

    def __init__(self, backend: Backend, journal: Journal) -> None:
        self.backend, self.journal = backend, journal
        self.counts = {"full": 0, "subset": 0, "proxy": 0}
        self.spent = 0.0  # seconds of evaluation, replayed ones at their recorded cost

    def _recall(self, kind: str, reverted: Reverted, indices: Sequence[int], compute: Callable[[], dict]) -> dict:
        entry = self.journal.recall(json.dumps([kind, sorted(reverted), list(indices)]), compute)
        if kind in self.counts:
            self.counts[kind] += 1
            self.spent += entry["seconds"]
        return entry

    def full(self, reverted: Reverted) -> Scores:
        return _arrays(self._recall("full", reverted, (), lambda: {"scores": _lists(self.backend.full(reverted))})["scores"])

    def subset(self, reverted: Reverted, indices: Sequence[int]) -> tuple[Scores, float]:
        def compute() -> dict:
            scores, nmse = self.backend.subset(reverted, indices)
            return {"scores": _lists(scores), "nmse": nmse}

        entry = self._recall("subset", reverted, indices, compute)
        return _arrays(entry["scores"]), entry["nmse"]

    def proxy(self, reverted: Reverted, indices: Sequence[int]) -> dict[str, float]:
        return self._recall("proxy", reverted, indices, lambda: {"errors": self.backend.proxy(reverted, indices)})["errors"]

    def speed(self, reverted: Reverted) -> float | None:
        return self._recall("speed", reverted, (), lambda: {"speedup": self.backend.speed(reverted)})["speedup"]


class _Scoring(Struct):
    """The budget's arithmetic: per-sample scores in, each metric's drop against its budget out."""

    reference: Scores
    by_name: dict[str, Metric]
    limits: dict[str, float]
    relative: bool

    def _loss(self, fp32: float, int8: float, name: str) -> float:
        loss = drop(fp32, int8, self.by_name[name].higher_is_better)
        return loss / max(abs(fp32), 1e-12) if self.relative else loss

    def figures(self, scores: Scores) -> dict[str, MetricResult]:
        out = {}
        for name, limit in self.limits.items():
            fp32, int8 = float(np.mean(self.reference[name])), float(np.mean(scores[name]))
            out[name] = MetricResult(fp32=fp32, int8=int8, drop=self._loss(fp32, int8, name), max_drop=limit)
        return out

    def within(self, scores: Scores) -> bool:
        return all(r.drop <= r.max_drop for r in self.figures(scores).values())

    def worst_metric(self, scores: Scores) -> str:
        results = self.figures(scores)
        return max(results, key=lambda n: ((results[n].drop - results[n].max_drop) / max(results[n].max_drop, 1e-6), n))

    def gain(self, name: str, new: tuple[Scores, float], old: tuple[Scores, float]) -> Gain:
        sign = 1.0 if self.by_name[name].higher_is_better else -1.0
        return sign * float(np.mean(new[0][name]) - np.mean(old[0][name])), old[1] - new[1]

    def predict(self, full_scores: Scores, indices: Sequence[int], old: Scores, new: Scores) -> dict[str, MetricResult]:
        """Full-set figures after a revert measured on the subset: each metric's full drop scaled
        by how much the subset's own drop shrank (the subset holds the worst samples)."""
        out = {}
        order = np.array(sorted(indices))
        for name, result in self.figures(full_scores).items():
            higher = self.by_name[name].higher_is_better
            before = drop(float(np.mean(self.reference[name][order])), float(np.mean(old[name])), higher)
            after = drop(float(np.mean(self.reference[name][order])), float(np.mean(new[name])), higher)
            ratio = after / before if before > 1e-12 else 1.0
            loss = result.drop * max(ratio, 0.0)
            scale = max(abs(result.fp32), 1e-12) if self.relative else 1.0
            int8 = result.fp32 - loss * scale if higher else result.fp32 + loss * scale
            out[name] = MetricResult(fp32=result.fp32, int8=int8, drop=loss, max_drop=result.max_drop)
        return out

    def shift(self, full_scores: Scores, old: Scores, new: Scores) -> dict[str, MetricResult]:
        """Full-set figures moved by the mean change measured on a representative subset."""
        out = {}
        for name, result in self.figures(full_scores).items():
            int8 = result.int8 + float(np.mean(new[name]) - np.mean(old[name]))
            out[name] = MetricResult(fp32=result.fp32, int8=int8, drop=self._loss(result.fp32, int8, name), max_drop=result.max_drop)
        return out


def _helps(gain: Gain) -> bool:
    return gain[0] > 1e-12 or (abs(gain[0]) <= 1e-12 and gain[1] > 0)


class _Recorder:
    """The iterations so far: each one logged, reported as progress and handed to `on_iteration`."""

    def __init__(self, evals: _Evaluations, on_iteration: Callable[[Iteration], None]) -> None:
        self.evals, self.on_iteration = evals, on_iteration
        self.iterations: list[Iteration] = []

    def __call__(self, kind: str, reverted: Reverted, added: Sequence[str], figs: dict[str, MetricResult], note: str | None = None) -> None:
        iteration = Iteration(
            index=len(self.iterations),
            kind=kind,
            reverted=list(added),
            float_layers=list(reverted),
            metrics=figs,
            within_budget=all(r.drop <= r.max_drop for r in figs.values()),
            seconds=round(self.evals.spent, 3),
            speedup=self.evals.speed(reverted) if kind == "full" else None,
            why=note,
        )
        self.iterations.append(iteration)
        self.on_iteration(iteration)
        figures_text = ", ".join(f"{n} drop {r.drop:.4g}/{r.max_drop:.4g}" for n, r in figs.items())
        what = f"{kind} {', '.join(added)}" if added else kind
        progress.report("accuracy-aware iteration", iteration.index, detail=f"{what}; {len(reverted)} float; {figures_text}")


def _rank(evals: _Evaluations, scoring: _Scoring, candidates: list[str], reverted: Reverted, target: str,
          indices: Sequence[int], base: tuple[Scores, float], confirm: int) -> list[Step]:
    """This round's reverts, best first: the proxy ranks the remaining layers, the real metric on
    the subset confirms its best few; if no single layer helps, the proxy's top 2, 4, 8, ...
    as one group. Empty when nothing helps."""
    remaining = [c for c in candidates if c not in reverted]
    if not remaining:
        return []
    errors = evals.proxy(reverted, indices)
    ranked = sorted(remaining, key=lambda layer: (-errors.get(layer, 0.0), candidates.index(layer)))

    # Confirm the proxy's best with the real metric, a few at a time, until one helps.
    confirmed: list[tuple[Gain, str, tuple[Scores, float]]] = []
    chunk = len(ranked) if len(ranked) <= 2 * confirm else confirm  # few layers: confirm them all
    for start in range(0, len(ranked), chunk):
        for layer in ranked[start : start + chunk]:
            trial = evals.subset(reverted + (layer,), indices)
            gain = scoring.gain(target, trial, base)
            if _helps(gain):
                confirmed.append((gain, layer, trial))
        if confirmed:
            break
    if confirmed:
        confirmed.sort(key=lambda c: (-c[0][0], -c[0][1], candidates.index(c[1])))
        # Big gains first; a layer that helps a little is left for a later round, where it
        # competes again (a run of small reverts is how greedy searches end with too many).
        best = confirmed[0][0][0]
        return [([layer], trial, f"{target} on the ranking subset {gain[0]:+.4g} reverted alone")
                for gain, layer, trial in confirmed if gain[0] >= MAJOR_GAIN * best]
    # No single layer helps: the error is spread out. Revert the proxy's top groups.
    size = 2
    while size <= len(ranked):
        group = ranked[:size]
        trial = evals.subset(reverted + tuple(group), indices)
        gain = scoring.gain(target, trial, base)
        if _helps(gain):
            return [(group, trial, f"in a group of {size}: {target} on the ranking subset {gain[0]:+.4g}")]
        size *= 2
    return []


def _revert(evals: _Evaluations, scoring: _Scoring, record: _Recorder, state: _State, steps: list[Step], target: str,
            indices: Sequence[int], base: tuple[Scores, float], max_iterations: int) -> None:
    """Take the round's steps in order while each still helps on the subset (a step's gain was
    measured alone, so later ones are measured again), until the predicted drop is within budget."""
    start = base[0]
    for position, (group, trial, note) in enumerate(steps):
        if state.reverts >= max_iterations:
            break
        if position:  # measured alone; check it still helps with what is already reverted
            trial = evals.subset(state.reverted + tuple(group), indices)
            if not _helps(scoring.gain(target, trial, base)):
                break
        state.reverted = state.reverted + tuple(group)
        state.reverts += 1
        for layer in group:
            state.why[layer] = note
            state.usefulness[layer] = scoring.gain(target, trial, base)[0] / len(group)
        predicted = scoring.predict(state.scores, indices, start, trial[0])
        base = trial
        record("revert", state.reverted, group, predicted, note)
        if all(r.drop <= r.max_drop for r in predicted.values()):
            break


def _prune(evals: _Evaluations, scoring: _Scoring, record: _Recorder, state: _State, subset_size: int) -> tuple[Reverted, Scores]:
    """Greedy reverts overshoot: layers reverted early may be unneeded once later ones are
    float. Give each float layer its quantizers back, least useful first, while the
    predicted drop stays within budget; one full pass confirms, or nothing changes."""
    reverted, scores = state.reverted, state.scores
    indices = _even_sample(len(next(iter(scoring.reference.values()))), subset_size)
    start, _ = evals.subset(reverted, indices)
    kept = reverted
    for layer in sorted(reverted, key=lambda layer: (state.usefulness.get(layer, 0.0), reverted.index(layer))):
        trial_set = tuple(other for other in kept if other != layer)
        trial, _ = evals.subset(trial_set, indices)
        predicted = scoring.shift(scores, start, trial)
        if all(r.drop <= PRUNE_MARGIN * r.max_drop for r in predicted.values()):
            kept = trial_set
            record("requantize", kept, [layer], predicted, "predicted within budget without it (an even sample of the set)")
    if kept == reverted:
        return reverted, scores
    confirmed = evals.full(kept)
    record("full", kept, [], scoring.figures(confirmed))
    if scoring.within(confirmed):
        return kept, confirmed
    record("full", reverted, [], scoring.figures(scores), "the pruned set missed the budget on the full set: back to the last one that met it")
    return reverted, scores


def _even_sample(count: int, size: int) -> list[int]:
    """`size` indices spread evenly over `count` samples: how the whole set moves, not its worst."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(size, count))})


def _worst_samples(reference: np.ndarray, candidate: np.ndarray, higher_is_better: bool, size: int) -> list[int]:
    """The `size` samples where the candidate falls furthest below the reference, ascending."""
    deficit = (reference - candidate) if higher_is_better else (candidate - reference)
    order = sorted(range(len(deficit)), key=lambda i: (-float(deficit[i]), i))
    return sorted(order[: min(size, len(order))])


def _lists(scores: Scores) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in scores.items()}


def _arrays(scores: dict[str, list[float]]) -> Scores:
    return {name: np.asarray(values, dtype=np.float64) for name, values in scores.items()}
