"""One streaming ONNX Runtime pass that feeds every requested tensor to its observers."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import onnx

from .. import progress, runtime
from ..data import Feed
from ..errors import DataError
from .observers import ChannelObserver, TensorObserver
from .stats import Statistics, TensorStats

log = logging.getLogger(__name__)


def collect(
    model: onnx.ModelProto,
    feeds: Iterable[Feed],
    requests: Mapping[str, int | None],
    *,
    model_sha256: str,
    threads: int | None = None,
) -> Statistics:
    """Run every feed once. `requests` maps tensor -> channel axis for per-channel statistics
    (None: tensor-wide only). Memory holds one batch's requested tensors, never the whole set."""
    graph_inputs = {i.name for i in model.graph.input}
    probe = with_outputs(model, [t for t in requests if t not in graph_inputs])
    sess = runtime.session(probe, threads=threads, optimization="all")
    names = [o.name for o in sess.get_outputs()]
    observers = {name: TensorObserver() for name in requests}
    channels = {name: ChannelObserver(axis) for name, axis in requests.items() if axis is not None}
    samples = 0
    for index, feed in enumerate(feeds):
        try:
            values = sess.run(names, feed)
        except Exception as err:  # ORT's own exception types
            raise DataError(f"calibration feed {index} failed in ONNX Runtime: {str(err).splitlines()[0]}") from None
        for name, value in list(zip(names, values)) + [(n, feed[n]) for n in graph_inputs if n in feed]:
            if name in observers:
                bounds = channels[name].update(value) if name in channels else None
                observers[name].update(value, bounds=bounds)
        del values
        samples += int(next(iter(feed.values())).shape[0])
        progress.report("calibration", index + 1, detail=f"{samples} samples")
    stats = {}
    for name, obs in observers.items():
        if not obs.count:
            continue
        channel = channels.get(name)
        stats[name] = TensorStats(
            minimum=obs.minimum,
            maximum=obs.maximum,
            count=obs.count,
            nonfinite=obs.nonfinite,
            mean_min=obs.sum_batch_min / obs.batches,
            mean_max=obs.sum_batch_max / obs.batches,
            radius=obs.radius,
            histogram=obs.histogram,
            channel_absmax=channel.absmax if channel else None,
            channel_mean=channel.mean if channel else None,
            channel_min=channel.minimum if channel else None,
            channel_max=channel.maximum if channel else None,
            rank=obs.rank,
        )
    unseen = sorted(set(requests) - set(stats))
    if unseen:
        log.warning("%d tensors never saw a finite value, e.g. %s", len(unseen), unseen[:3])
    return Statistics(model_sha256, samples, stats)


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
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
