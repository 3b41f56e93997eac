"""The latency search (`quantize --tune latency`): which layers pay off in integer is measured
on this machine, in the runtime that serves the model, instead of taken from the target row.

The candidates are plans at several reduction floors (`QuantConfig.min_reduction`: layers that
sum fewer products per output stay float), all from one calibration: each costs one plan and
transform, never a recalibration. Every candidate and FP32 (at f32) are timed interleaved in one
loop at batch 1, and each candidate's outputs are compared with FP32's on the tuning samples.
The fastest candidate whose output error stays within QUALITY_SLACK of the default's is kept,
if it beats the default by SPEED_MARGIN (else the default stays: timing noise must not move
the bytes). The chosen floor goes into the config, so `--min-reduction N` reproduces the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from . import _benchmark as benchmark, _runtime as runtime
from ._calibration.stats import Statistics
from ._config import QuantConfig
from ._data import Feed
from ._quantize.default import quantize_model
from ._quantize.plan import QuantPlan
from ._reports import LatencyTuning, TuningCandidate

log = logging.getLogger(__name__)

FLOORS = (0, 64, 256)  # reduction floors tried, with the target's own
QUALITY_SLACK = 1.25  # a candidate's output NMSE may be at most this times the default's
# It must also run this much faster than the default to replace it: two copies of one model
# timed in one loop differed by up to 5 % on a 2-core machine (Magika in OpenVINO).
SPEED_MARGIN = 1.05
SAMPLES = 16  # tuning samples the output error is measured on
REPEATS = 20  # interleaved timing rounds


def search(prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, feeds: list[Feed], *,
           threads: int = 1, replay: Callable[[], Iterable[Feed]] | None = None) -> tuple[onnx.ModelProto, QuantPlan, LatencyTuning, QuantConfig]:
    """The candidates' plans, measured; returns the kept model, its plan, the search and its config.
    `feeds`: the tuning samples (batches); the first sample of the first also times the models."""
    started = time.perf_counter()
    serving = config.runtime
    fp32 = prepared.SerializeToString()
    reference = runtime.serving_session(fp32, runtime=serving, threads=threads, precision="f32")
    expected = [reference.run(None, feed) for feed in feeds]
    default = config.reduction_floor
    built: dict[int, tuple[onnx.ModelProto, QuantPlan, bytes]] = {}
    by_layers: dict[tuple[str, ...], int] = {}
    for floor in [default, *sorted(set(FLOORS) - {default})]:
        model, plan = quantize_model(prepared, stats, config.model_copy(update={"min_reduction": floor}), feeds=replay)
        key = tuple(plan.layers())
        if key in by_layers:  # the same layers as a floor already built (the default first): the same model
            continue
        by_layers[key] = floor
        built[floor] = (model, plan, model.SerializeToString())
    floors = sorted(built)
    sessions = [runtime.serving_session(built[f][2], runtime=serving, threads=threads, spinning=True) for f in floors]
    nmse = {f: _output_nmse(sess, feeds, expected) for f, sess in zip(floors, sessions)}
    speed_feed = {name: value[:1] for name, value in feeds[0].items()}
    timed = benchmark.interleaved(
        [runtime.serving_session(fp32, runtime=serving, threads=threads, precision="f32", spinning=True), *sessions],
        speed_feed, warmup=3, repeats=REPEATS)
    speedup = {f: float(np.median(timed[0] / t)) for f, t in zip(floors, timed[1:])}
    limit = max(nmse[default] * QUALITY_SLACK, nmse[default] + 1e-9)
    eligible = [f for f in floors if nmse[f] <= limit]
    fastest = max(eligible, key=lambda f: speedup[f])
    chosen = fastest if speedup[fastest] >= speedup[default] * SPEED_MARGIN else default
    reason = (f"min_reduction {chosen}: {speedup[chosen]:.2f}x of FP32 at batch 1"
              + (f" against the default's ({default}) {speedup[default]:.2f}x" if chosen != default else
                 f", the default; no candidate within its output error was {SPEED_MARGIN:.2f}x faster"))
    if not built[chosen][1].layers():
        reason += "; no layer pays off in integer here, so every layer stays float"
    if speedup[chosen] < 1.0:
        reason += "; nothing tried runs faster than FP32 here: serve the FP32 model, or try another runtime or target"
        log.warning("latency search: %s", reason)
    candidates = [TuningCandidate(min_reduction=f, layers=len(built[f][1].layers()), speedup=round(speedup[f], 4),
                                  nmse=float(f"{nmse[f]:.6g}"), chosen=f == chosen) for f in floors]
    tuning = LatencyTuning(runtime=serving, threads=threads, samples=sum(len(next(iter(f.values()))) for f in feeds),
                           candidates=candidates, reason=reason, seconds=round(time.perf_counter() - started, 3))
    log.info("latency search: %s", reason)
    model, plan, _ = built[chosen]
    return model, plan, tuning, config.model_copy(update={"min_reduction": chosen})


def _output_nmse(sess, feeds: list[Feed], expected: list[list[np.ndarray]]) -> float:
    """Normalized MSE of every float output against FP32's, summed over the samples."""
    error = power = 0.0
    for feed, want in zip(feeds, expected):
        for got, ref in zip(sess.run(None, feed), want):
            if np.issubdtype(ref.dtype, np.floating):
                error += float(np.sum((got.astype(np.float64) - ref) ** 2))
                power += float(np.sum(ref.astype(np.float64) ** 2))
    return error / max(power, 1e-30)
