"""Reference (FP32) against candidate (INT8) on evaluation data -> ValidationReport."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydantic import BaseModel

from . import runtime
from .data import Feed
from .errors import ConfigError, DataError
from .metrics import METRICS, drop


class ValidationReport(BaseModel):
    metric: str
    output: str
    samples: int
    reference_score: float
    candidate_score: float
    drop: float
    max_drop: float
    passed: bool


def compare(
    reference: bytes | str,
    candidate: bytes | str,
    feeds: Iterable[Feed],
    *,
    metric: str,
    max_drop: float,
    labels: np.ndarray | None = None,
    threads: int | None = None,
) -> ValidationReport:
    """Score both models on the first output, batch by batch; memory holds scores, not outputs."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of: {', '.join(METRICS)}")
    spec = METRICS[metric]
    if spec.needs_labels and labels is None:
        raise ConfigError(f"metric {metric!r} needs labels (--labels LABELS.npy)")
    ref_sess = runtime.session(reference, threads=threads)
    cand_sess = runtime.session(candidate, threads=threads)
    output = ref_sess.get_outputs()[0].name
    if output not in {o.name for o in cand_sess.get_outputs()}:
        raise DataError(f"candidate model has no output {output!r}; the models do not match")
    ref_total = cand_total = 0.0
    seen = 0
    for feed in feeds:
        ref_out = ref_sess.run([output], feed)[0]
        cand_out = cand_sess.run([output], feed)[0]
        n = ref_out.shape[0]
        batch_labels = None
        if labels is not None:
            if seen + n > len(labels):
                raise DataError(f"labels hold {len(labels)} entries but the data has more samples")
            batch_labels = labels[seen : seen + n]
        ref_total += float(spec.score(ref_out, ref_out, batch_labels).sum())
        cand_total += float(spec.score(ref_out, cand_out, batch_labels).sum())
        seen += n
    if labels is not None and seen != len(labels):
        raise DataError(f"labels hold {len(labels)} entries but the data has {seen} samples")
    ref_score, cand_score = ref_total / seen, cand_total / seen
    loss = drop(ref_score, cand_score, spec.higher_is_better)
    return ValidationReport(
        metric=metric,
        output=output,
        samples=seen,
        reference_score=ref_score,
        candidate_score=cand_score,
        drop=loss,
        max_drop=max_drop,
        passed=bool(loss <= max_drop),
    )
