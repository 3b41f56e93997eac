"""One streaming ONNX Runtime pass that feeds every requested tensor to its observer."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import onnx

from .. import runtime
from ..data import Feed
from ..errors import DataError
from .observers import MinMaxObserver
from .stats import Statistics, TensorStats

log = logging.getLogger(__name__)


def collect(
    model: onnx.ModelProto,
    feeds: Iterable[Feed],
    tensors: list[str],
    *,
    model_sha256: str,
    threads: int | None = None,
) -> Statistics:
    """Run every feed once; memory holds one batch's requested tensors, never the whole set."""
    graph_inputs = {i.name for i in model.graph.input}
    probe = _with_outputs(model, [t for t in tensors if t not in graph_inputs])
    sess = runtime.session(probe, threads=threads, optimization="basic")
    names = [o.name for o in sess.get_outputs()]
    observers = {name: MinMaxObserver() for name in tensors}
    samples = 0
    for index, feed in enumerate(feeds):
        try:
            values = sess.run(names, feed)
        except Exception as err:  # ORT's own exception types
            raise DataError(f"calibration feed {index} failed in ONNX Runtime: {str(err).splitlines()[0]}") from None
        for name, value in list(zip(names, values)) + [(n, feed[n]) for n in graph_inputs if n in feed]:
            observer = observers.get(name)
            if observer is not None:
                observer.update(value)
        samples += int(next(iter(feed.values())).shape[0])
        log.debug("calibration batch %d done (%d samples)", index, samples)
    stats = {
        name: TensorStats(obs.minimum, obs.maximum, obs.count, obs.nonfinite)
        for name, obs in observers.items()
        if obs.count
    }
    unseen = sorted(set(tensors) - set(stats))
    if unseen:
        log.warning("%d tensors never saw a finite value, e.g. %s", len(unseen), unseen[:3])
    return Statistics(model_sha256, samples, stats)


def _with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph = probe.graph
    present = {o.name for o in graph.output}
    known = {v.name: v for v in list(graph.value_info) + list(graph.input)}
    for name in tensors:
        if name in present:
            continue
        info = onnx.ValueInfoProto()
        if name in known:
            info.CopyFrom(known[name])
        else:
            info.name = name
        graph.output.append(info)
        present.add(name)
    return probe
