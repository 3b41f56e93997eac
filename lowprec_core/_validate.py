"""Reference (FP32) against candidate (INT8) on evaluation data -> ValidationReport."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from . import _runtime as runtime
from ._data import Feed, InputSpec, batch_size, concat, fixed_batch, take
from ._errors import ConfigError, DataError
from ._metrics import Metric, drop, resolve_metric
from ._reports import ValidationReport


def compare(
    reference: bytes | str,
    candidate: bytes | str,
    feeds: Iterable[Feed],
    *,
    metric: str,
    max_drop: float,
    labels: np.ndarray | None = None,
    threads: int | None = None,
    serving: str = "onnxruntime",
) -> ValidationReport:
    """Score both models batch by batch in the `serving` runtime (FP32 at f32 there); memory
    holds scores, not outputs. Where the runtime's own default precision is not f32 (OpenVINO
    on a bf16 CPU), the FP32 model at that precision is scored too, as a third model."""
    spec = resolve_metric(metric)
    if spec.needs_labels and labels is None:
        raise ConfigError(f"metric {metric!r} needs labels (--labels LABELS.npy)")
    ref_sess = runtime.serving_session(reference, runtime=serving, threads=threads, precision="f32")
    cand_sess = runtime.serving_session(candidate, runtime=serving, threads=threads)
    default_sess = None
    if runtime.float_precision(serving) != "f32":
        default_sess = runtime.serving_session(reference, runtime=serving, threads=threads)
    names = _output_names(ref_sess, cand_sess)
    ref_total = cand_total = default_total = 0.0
    seen = 0
    for feed, batch_labels in _with_labels(feeds, labels):
        ref_out = ref_sess.run(names, feed)
        cand_out = cand_sess.run(names, feed)
        ref_total += float(spec.score(ref_out, ref_out, batch_labels).sum())
        cand_total += float(spec.score(ref_out, cand_out, batch_labels).sum())
        if default_sess is not None:
            default_total += float(spec.score(ref_out, default_sess.run(names, feed), batch_labels).sum())
        seen += ref_out[0].shape[0]
    ref_score, cand_score = ref_total / seen, cand_total / seen
    loss = drop(ref_score, cand_score, spec.higher_is_better)
    return ValidationReport(
        runtime=serving,
        metric=metric,
        output=names[0],
        outputs=len(names),
        samples=seen,
        reference_score=ref_score,
        candidate_score=cand_score,
        drop=loss,
        max_drop=max_drop,
        passed=bool(loss <= max_drop),
        default_precision=default_sess.precision if default_sess is not None else None,
        default_score=default_total / seen if default_sess is not None else None,
    )


Scores = dict[str, np.ndarray]  # metric name -> one score per sample


class Evaluator:
    """Per-sample scores of candidate models against one FP32 reference, on one evaluation set.

    The reference runs once, in the same pass over the data as the first candidate (so a budget
    the default model meets costs one pass). Where a metric reads FP32 outputs they are kept on
    disk under `cache_dir`, one file per batch, so memory holds one batch whatever the set's
    size. `full_passes` counts passes over the whole set. `serving`: the runtime every model
    runs in (the reference at f32, candidates at the runtime's default precision).
    """

    def __init__(
        self,
        reference: bytes,
        feeds: Callable[[], Iterable[Feed]],
        metrics: Sequence[Metric],
        *,
        labels: np.ndarray | None,
        cache_dir: Path,
        specs: list[InputSpec],
        serving: str = "onnxruntime",
    ) -> None:
        for metric in metrics:
            if metric.needs_labels and labels is None:
                raise ConfigError(f"metric {metric.name!r} needs labels (--labels LABELS.npy)")
        self.metrics = list(metrics)
        self.labels = labels
        self.feeds = feeds
        self.specs = specs  # where each input holds its samples, for gathering subsets
        self.cache = cache_dir
        self.full_passes = 0
        self._keep = any(m.needs_reference for m in self.metrics)
        self.serving = serving
        self._reference = runtime.serving_session(reference, runtime=serving, precision="f32")
        self._names = _tensor_outputs(self._reference)
        self._subsets: dict[tuple[int, ...], tuple[list[Feed], list[list[np.ndarray]], list[np.ndarray | None]]] = {}
        self._reference_scores: Scores | None = None
        self._last_full: tuple[bytes, Scores] | None = None

    @property
    def reference_scores(self) -> Scores:
        """FP32's per-sample scores: from disk when an earlier (or resumed) pass made them."""
        if self._reference_scores is None:
            done = self.cache / "reference.npz"
            if done.exists():
                with np.load(done) as archive:
                    self._reference_scores = {m.name: archive[m.name] for m in self.metrics}
            else:
                self._pass(None)
        return self._reference_scores

    def full(self, candidate: bytes) -> Scores:
        """Every sample once: a full validation pass (the reference's too, the first time). The
        last model scored is remembered: one judged by the latency search, then the first model of
        the accuracy-aware search, costs one pass."""
        digest = hashlib.sha256(candidate).digest()
        if self._last_full is not None and self._last_full[0] == digest:
            return self._last_full[1]
        if self._reference_scores is None and (self.cache / "reference.npz").exists():
            _ = self.reference_scores
        scores = self._pass(runtime.serving_session(candidate, runtime=self.serving))
        self._last_full = (digest, scores)
        return scores

    def _pass(self, sess) -> Scores:
        with_reference = self._reference_scores is None
        if with_reference:
            self.cache.mkdir(parents=True, exist_ok=True)
        reference: dict[str, list[np.ndarray]] = {m.name: [] for m in self.metrics}
        scores: dict[str, list[np.ndarray]] = {m.name: [] for m in self.metrics}
        for index, (feed, batch_labels) in enumerate(_with_labels(self.feeds(), self.labels)):
            if with_reference:
                ref = self._reference.run(self._names, feed)
                if self._keep:  # class names as fixed-width strings: an object array would be pickled
                    np.savez(self.cache / f"reference-{index:06d}.npz", *(r.astype(str) if r.dtype == object else r for r in ref))
                for metric in self.metrics:
                    reference[metric.name].append(metric.score(ref, ref, batch_labels))
            if sess is not None:
                out = sess.run(self._names, feed)
                if not with_reference:
                    ref = self._stored_reference(index) if self._keep else out
                for metric in self.metrics:
                    scores[metric.name].append(metric.score(ref, out, batch_labels))
        self.full_passes += 1
        if with_reference:
            result = {name: np.concatenate(parts) for name, parts in reference.items()}
            np.savez(self.cache / ".reference.npz", **result)
            os.replace(self.cache / ".reference.npz", self.cache / "reference.npz")  # written last: marks it complete
            self._reference_scores = result
        return {name: np.concatenate(parts) for name, parts in scores.items()} if sess is not None else {}

    def _stored_reference(self, index: int) -> list[np.ndarray]:
        with np.load(self.cache / f"reference-{index:06d}.npz") as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]

    def subset(self, candidate: bytes, indices: Sequence[int]) -> tuple[Scores, float]:
        """Scores on the samples `indices` only, and the first float output's normalized MSE to
        FP32 there (a continuous tie-breaker for metrics that move in whole samples). Scores follow
        ascending sample index."""
        feeds, refs, labels = self._subset(tuple(sorted(indices)))
        sess = runtime.serving_session(candidate, runtime=self.serving)
        scores: dict[str, list[np.ndarray]] = {m.name: [] for m in self.metrics}
        error = power = 0.0
        scored = next((i for i, r in enumerate(refs[0]) if r.dtype.kind == "f"), None) if refs else None
        for feed, ref, batch_labels in zip(feeds, refs, labels):
            out = sess.run(self._names, feed)
            for metric in self.metrics:
                scores[metric.name].append(metric.score(ref, out, batch_labels))
            if scored is not None:  # class names or ids first (skl2onnx): the first float output
                error += float(np.sum((out[scored].astype(np.float64) - ref[scored]) ** 2))
                power += float(np.sum(ref[scored].astype(np.float64) ** 2))
        return {name: np.concatenate(parts) for name, parts in scores.items()}, error / max(power, 1e-30)

    def subset_feeds(self, indices: Sequence[int]) -> list[Feed]:
        return self._subset(tuple(sorted(indices)))[0]

    def _subset(self, indices: tuple[int, ...]):
        """The samples `indices` gathered into batches of up to 16 (or of the batch the model fixes), with
        their FP32 outputs and labels."""
        if indices not in self._subsets:
            wanted = set(indices)
            rows: list[Feed] = []
            start = 0
            for feed in self.feeds():
                n = batch_size(feed, self.specs)
                picked = [i - start for i in range(start, start + n) if i in wanted]
                if picked:
                    rows.append(take(feed, self.specs, picked))
                start += n
            merged = concat(rows, self.specs)
            group = fixed_batch(self.specs) or 16  # a batch-1 export takes its samples one a feed
            feeds = [take(merged, self.specs, slice(i, i + group)) for i in range(0, len(indices), group)]
            refs = [self._reference.run(self._names, feed) for feed in feeds]
            order = sorted(wanted)
            labels = [None if self.labels is None else self.labels[order[i : i + group]] for i in range(0, len(order), group)]
            self._subsets = {indices: (feeds, refs, labels)}  # one subset at a time
        return self._subsets[indices]


def _tensor_outputs(sess) -> list[str]:
    """The outputs metrics read: a session's tensors. A sequence or a map (skl2onnx's ZipMap of
    probabilities) is no tensor: it cannot be stored beside the others for the accuracy-aware
    search, and no built-in metric reads one."""
    return [o.name for o in sess.get_outputs() if getattr(o, "type", "tensor").startswith("tensor")]


def _output_names(ref_sess, cand_sess) -> list[str]:
    """The reference's tensor outputs, which the candidate must have too."""
    names = _tensor_outputs(ref_sess)
    missing = [n for n in names if n not in {o.name for o in cand_sess.get_outputs()}]
    if missing:
        raise DataError(f"candidate model has no output {missing[0]!r}; the models do not match")
    return names


def _with_labels(feeds: Iterable[Feed], labels: np.ndarray | None) -> Iterator[tuple[Feed, np.ndarray | None]]:
    seen = 0
    for feed in feeds:
        n = next(iter(feed.values())).shape[0]
        if labels is not None and seen + n > len(labels):
            raise DataError(f"labels hold {len(labels)} entries but the data has more samples")
        yield feed, None if labels is None else labels[seen : seen + n]
        seen += n
    if labels is not None and seen != len(labels):
        raise DataError(f"labels hold {len(labels)} entries but the data has {seen} samples")
