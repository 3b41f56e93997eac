"""Pure functions: arrays in, per-sample scores out. A metric table, not branches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)


def top1(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the arg-max over the last axis equals the label."""
    return (np.argmax(_flat(output), axis=1) == np.asarray(labels).reshape(-1)).astype(np.float64)


def agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """1.0 where both models pick the same class."""
    return (np.argmax(_flat(reference), axis=1) == np.argmax(_flat(candidate), axis=1)).astype(np.float64)


def cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = _flat(reference), _flat(candidate)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), (np.abs(a - b).sum(axis=1) == 0) * 1.0)


def mse(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = _flat(reference), _flat(candidate)
    return np.mean((a - b) ** 2, axis=1)


@dataclass(frozen=True)
class Metric:
    """score(reference_output, candidate_output, labels) -> per-sample scores.

    The reference model's own score comes from score(ref, ref, labels). ``higher_is_better``
    decides the sign of the drop.
    """

    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
    needs_labels: bool
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    "top1": Metric(lambda ref, cand, labels: top1(cand, labels), True, True),
    "agreement": Metric(lambda ref, cand, labels: agreement(ref, cand), False, True),
    "cosine": Metric(lambda ref, cand, labels: cosine(ref, cand), False, True),
    "mse": Metric(lambda ref, cand, labels: mse(ref, cand), False, False),
}


def drop(reference_score: float, candidate_score: float, higher_is_better: bool) -> float:
    """How much worse the candidate is (positive = worse)."""
    return reference_score - candidate_score if higher_is_better else candidate_score - reference_score
