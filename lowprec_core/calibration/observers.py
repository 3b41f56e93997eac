"""Streaming, mergeable observers: pure numpy, O(1) memory per tensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MinMaxObserver:
    """Running min and max over every value seen; NaN and Inf are counted, not folded in."""

    minimum: float = float("inf")
    maximum: float = float("-inf")
    count: int = 0
    nonfinite: int = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if values.size == 0:
            return
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int(values.size - finite.sum())
            values = values[finite]
            if values.size == 0:
                return
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        self.count += int(values.size)

    def merge(self, other: MinMaxObserver) -> MinMaxObserver:
        return MinMaxObserver(
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
            self.count + other.count,
            self.nonfinite + other.nonfinite,
        )
