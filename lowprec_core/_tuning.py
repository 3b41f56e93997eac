"""The latency search (`quantize --tune latency`): which layers pay off in integer, and whether
tensors stay INT8 between them, is measured on this machine, in the runtime that serves the
model, instead of taken from the target row.

The candidates are plans at several reduction floors (`QuantConfig.min_reduction`: layers that
sum fewer products per output stay float), and, where the runtime has integer kernels for
weightless ops (Add, Concat, pools, ...), the same with those on (`QuantConfig.integer_ops`
"all"): all from one calibration, each one plan and transform, never a recalibration.

One loop measures them: each round runs FP32 (at f32) and every candidate on the round's
tuning sample (one request at the batch the model is served at: `--tune-batch`, 1 unless told;
an EfficientNet-style net ran its default fastest at batch 1 and every layer quantized with
integer ops fastest at 8: docs/quantization.md), in a balanced order (_benchmark.balanced_order), timing each run and comparing
its outputs with FP32's. A candidate's speedup is the median over rounds of FP32's time over
its own (a slow moment hits a whole round alike); its error, the normalized MSE of its outputs
over the samples. The fastest candidate whose error stays within QUALITY_SLACK of the
default's is kept, if it beats the default by SPEED_MARGIN (else the default stays: timing
noise must not move the bytes). The choice goes into the config, so naming it reproduces the
model without a search.

Statistics for the candidates' tensors come from one calibration where they must (a statistics
file, data read once, an accuracy budget, whose work dir keeps one statistics file). Else the
calibration covers the default's own tensors, and a candidate needing more (the lower floors) is
built from PROVISIONAL_SAMPLES calibration samples of those tensors to be timed: its speed is its
placement's, which its statistics do not change. Only one fast enough to be kept is calibrated
in full over exactly its own tensors, rebuilt and its output error measured again (against the
reference outputs the loop kept): the model kept is then the one its config makes without a
search, to the byte. PP-OCRv4 det, 16 samples: in ORT (2-core Zen 3) the lower floors double the
tensors observed (70 -> 143) and a pass over them all takes 2.0 s instead of 1.1 s, against 0.35 s
for the provisional pass; in OpenVINO (2-core Zen 4) the one pass over them all took 1.48 s
against the default's 1.20 s, the same command time as a provisional pass.

The default (and, where OpenVINO runs float layers in bf16, its f32 and every-layer-float
forms) is always timed; the other candidates are built and compiled while the search's time
bound leaves room for them (SETUP_FLOOR), and the report names those left untried.

Where no candidate leaves every layer float, one more does (the model's layer op types
ignored): if nothing quantized beats FP32 here, that is the one kept. It runs the FP32 model, so
where the runtime would run it at f32 (ONNX Runtime; OpenVINO without bf16) it is the reference
and costs nothing (it is built only if kept); where OpenVINO runs float in bf16, it is timed like
the others.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx

from . import _lineage as lineage, _runtime as runtime
from ._benchmark import balanced_order
from ._calibration.stats import Statistics
from ._config import QuantConfig
from ._data import Feed, concat, input_specs, stackable
from ._graph import all_nodes, consumers
from ._ops import RUNTIME_INTEGER_OPS, TARGETS
from ._quantize.default import Quantizer
from ._quantize.plan import QuantPlan
from ._quantize.planner import node_entries, statistic_requests
from ._reports import LatencyTuning, TuningCandidate

log = logging.getLogger(__name__)

FLOORS = (0, 64, 256)  # reduction floors tried, with the target's own
QUALITY_SLACK = 1.25  # a candidate's output NMSE may be at most this times the default's
# It must also run this much faster than the default to replace it: two copies of one model
# timed in one loop differed by up to 5 % on a 2-core machine (Magika in OpenVINO).
SPEED_MARGIN = 1.05
# A candidate the loop finds SPEED_MARGIN faster than the default (or, where the default ran slower
# than FP32, one that quantizes nothing) is kept only if it is that much faster (no slower) again,
# timed a second time against the default, the two alone (_head_to_head), and no slower beyond
# SPEED_MARGIN on the tuning samples as one batch where they stack (_batch_gain). A loop's median
# of 7-10 rounds errs: OpenVINO on a 2-core Zen 4, six searches of the U-Net `columns` kept three
# models (floor 256 three times at 1.49-1.53x against the default's 1.31-1.36x, where 400
# interleaved rounds time it 1-3 % ahead), and the strip reader once kept every layer float (bf16),
# 1.31x against 1.24x, and said no layer paid off, where bench.compare times the two level at batch
# 1 and INT8 7 % ahead at 32. With the check and balanced_order, 24 searches of cls, strips and
# columns kept the default 23 times, and cls's float (bf16) once, at 1.08x head to head. The batch
# check: at 2 threads on 2 cores the digit CNN's search in OpenVINO once kept every layer float
# (bf16) for batch 1, where INT8 runs 2.64x of FP32 at batch 256 and float 1.78x.
# Float layers at f32 (OpenVINO on a bf16 CPU) are kept where they cut the output error to this
# share of the default's or less (and run no slower beyond noise at batch 1). Magika (Zen 4),
# before its LayerNorm's E[x^2] - E[x]^2 was centred for OpenVINO (_simplify): 0.0005 against
# 0.036, agreement 0.980 against 0.919, and faster; now bf16 reads 0.984 and stays.
F32_ERROR_SHARE = 0.5
# Or where they run SPEED_MARGIN faster than the default at batch 1 and no slower beyond noise on
# the tuning samples as one batch (LARGE_ROUNDS interleaved runs of each). Batch 1 alone
# misleads: PP-OCR cls's rounds read f32 1.33x of FP32 against bf16's 1.09-1.12x in two runs of
# three, but bench.compare timed it 1.07x against 1.14x at batch 1 and 1.10x against 1.40x at 32. The U-Net `columns` (1-D convs, GELU; Zen 4): f32 1.07x / 1.50x
# against bf16's 0.88x / 0.84x at batch 1 / 32 (FP32 itself at bf16: 0.93x / 0.83x).
LARGE_ROUNDS = 5
SAMPLES = 10  # tuning samples, one per round
PROVISIONAL_SAMPLES = 2  # calibration samples of the tensors a candidate is timed with, where the statistics lack them
WARMUP = 1  # untimed runs of each model first (ORT's and OpenVINO's first run allocates)
# A round runs each model this long at least on its sample (repeats, at most MAX_REPS, from the
# reference's time): one run of a sub-millisecond model varied by 10-15 % from round to round
# (PP-OCR cls in OpenVINO, 2-core Zen 4), as much as the candidates differ.
ROUND_MS = 5.0
MAX_REPS = 16
# After this many rounds, candidates running slower than the default by more than DROP_MARGIN
# stop being timed: to be kept they would have to gain ~10 % on it over the rounds left. So do
# those not SPEED_MARGIN ahead of it in any round yet (one truly that far ahead would be in half
# of its rounds). Once only the default is left, it has beaten FP32 by SPEED_MARGIN in every
# round and has run one round more than any candidate dropped, the loop ends: every float
# layer (the one other choice) cannot win. On PP-OCRv4 det (ORT, 2-core Zen 3, CLI, the image's
# pinned packages) its candidates all stop after 3 rounds (1-13 % behind the default) and the
# loop after 4, where it ran 6: the search costs 2.9x the command without it, not 3.4x.
DROP_AFTER = 3
DROP_MARGIN = 1.05
# Then too, without an accuracy budget, a candidate whose output error so far is over QUALITY_DROP
# times what the default's allows (QUALITY_SLACK) stops: it could not be kept. Only a candidate
# built from the calibration's own statistics; a provisional one's error is not its own yet. On
# PP-OCRv4 det in OpenVINO, floor 0's error over the default's was 2.02x after 3 samples and
# 2.4x after 10 (1.4-4.7x sample by sample): 1.5 x 1.25 stops it where it ran every round.
QUALITY_DROP = 1.5
# The timing loop also ends, every candidate at once and after DROP_AFTER + 1 rounds at least,
# once the search has run SEARCH_SHARE times as long as the command before it (loading and
# calibrating): the search should cost at most 3x the command without it. Candidates within a
# few percent of the default kept PP-OCRv4 det's loop (ORT, 2-core Zen 3) running all 10 rounds
# in some runs and 4 in others: the search took 3.0 s or 5.4 s, and the command 2.4-4.1x the one
# without it. With this bound: 2.4-3.0x (the fewest rounds, 4 and a warm-up, take 2.4 s of it).
# A loop under BOUND_FLOOR seconds runs on: a small model's whole loop costs less (PP-OCR cls:
# 25 ms a round), and its rounds are what steady its choice.
SEARCH_SHARE = 1.5
BOUND_FLOOR = 1.0
# The candidates past the first wave (the default, and where OpenVINO runs float in bf16 its f32
# and every-layer-float forms) are built and compiled only while the search's time so far, plus one
# more build and compile behind those in flight (the slowest of each yet), stays within SEARCH_SHARE
# times the command before it, or SETUP_FLOOR seconds where that is more: a candidate beyond it goes
# untried and the report names it. OpenVINO compiles a QDQ model in about three times the time
# of its float one (the digits MobileNetV2 on 2-core Zen 4: 0.25 s against 0.08 s, one thread
# each), so on a small model its seven compiles cost more than the command: its search took 3.1-3.9x
# the command without it. Cheap sessions (ONNX Runtime's) and large models' commands leave every
# candidate in.
SETUP_FLOOR = 0.5
# The default and the float model are profiled node by node (PROFILE_RUNS runs each, after one
# untimed) to cost each layer in integer against float; the default less the layers found slower
# becomes a candidate where they take at least PROFILE_GAIN of its run: below that it could not
# beat the default by SPEED_MARGIN, and each candidate costs its timing.
PROFILE_RUNS = 2
PROFILE_GAIN = 0.03

# (min_reduction, integer_ops), min_reduction None for every layer float; or (min_reduction,
# integer_ops, layers left float by name), the default less the layers its profile finds slower.
Key = tuple
FLOAT: Key = (None, "target")


def candidates(config: QuantConfig) -> list[Key]:
    """The configs tried, the default first: every floor with the target's integer ops, and,
    where the runtime has integer kernels for weightless ops, quantizing every layer and the
    default's layers with all of them on (what ORT's quantize_static does, and its middle way)."""
    default = (config.reduction_floor, config.integer_ops)
    integer = bool(RUNTIME_INTEGER_OPS[config.runtime][0])
    # Every layer quantized is tried with the weightless ops between them on integers where the
    # runtime can: tensors then stay INT8 from layer to layer (ORT's quantize_static placement).
    keys = [default, *((f, "all" if integer and f == 0 else config.integer_ops) for f in FLOORS)]
    if integer:
        keys.append((config.reduction_floor, "all"))
    return list(dict.fromkeys(keys))


def _error_limit(default_nmse: float) -> float:
    """The output NMSE a candidate may have and still be kept: QUALITY_SLACK times the
    default's (and a hair over an exact default's 0)."""
    return max(default_nmse * QUALITY_SLACK, default_nmse + 1e-9)


def choose(default: Key, speedup: dict[Key, float], nmse: dict[Key, float], accept: Callable[[Key], bool] | None = None,
           plain: Iterable[Key] = (FLOAT,)) -> Key:
    """The fastest candidate within the default's output error, if clearly faster than it.
    With `accept` (an accuracy budget), the budget is the quality rule instead: the candidates
    clearly faster than the default are judged fastest first, and the first accepted is kept.

    Where that runs slower than FP32 and a candidate that quantizes nothing was measured
    (`plain`: the float candidate, or a floor that leaves every layer float), the fastest of
    those is kept instead. SPEED_MARGIN keeps timing noise from moving the bytes between INT8
    placements; it does not keep an INT8 model measured slower than the float one, which is
    also the exact one (PP-OCR cls in ORT, 2-core Zen 3: its default ran 0.742 ms against
    float's 0.715 ms over 150 interleaved rounds, and no one layer made the gap)."""
    if accept is not None:
        faster = sorted((k for k in speedup if k != default and speedup[k] >= speedup[default] * SPEED_MARGIN),
                        key=lambda k: (-speedup[k], _order(k)))
        chosen = next((k for k in faster if accept(k)), default)
    else:
        limit = _error_limit(nmse[default])
        fastest = max((k for k in speedup if nmse[k] <= limit), key=lambda k: speedup[k])
        chosen = fastest if speedup[fastest] >= speedup[default] * SPEED_MARGIN else default
    floats = [k for k in plain if k in speedup]
    if speedup[chosen] < 1.0 and floats and chosen not in floats:
        return max(floats, key=lambda k: (speedup[k], _order(k)))
    return chosen


class _Builds:
    """Candidates built by one Quantizer over the search's statistics, or, for a candidate whose
    tensors they lack, by one over those and `calibrate`'s of the rest: provisional (from
    PROVISIONAL_SAMPLES samples) until asked for in full."""

    def __init__(self, prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, replay, calibrate) -> None:
        self.prepared, self.stats, self.config, self.replay, self.calibrate = prepared, stats, config, replay, calibrate
        self.quantizers: dict[tuple[frozenset[str], int | str | None], Quantizer] = {(frozenset(), None): Quantizer(prepared, stats)}
        self.provisional: set[Key] = set()
        self._requests: dict[Key, dict[str, int | None]] = {}
        self._full: dict[Key, tuple[frozenset[str], int | str | None]] = {}
        # Where the search calibrates as candidates need it, the first pass was the default's own.
        self._first = None if calibrate is None else set(statistic_requests(prepared, config.target, config=config))

    def requests(self, key: Key) -> dict[str, int | None]:
        """The tensors the candidate's plan may read (empty where nothing can calibrate more)."""
        if key not in self._requests:
            config = _config_of(self.config, key, self.prepared)
            self._requests[key] = {} if self.calibrate is None else statistic_requests(self.prepared, config.target, config=config)
        return self._requests[key]

    def _exact(self, key: Key) -> dict[str, int | None] | None:
        """The requests of a pass over exactly the candidate's own tensors, where its full build
        needs one: ORT computes a tensor a hair differently when the probe also outputs the
        tensors of a fusion it would make (a conv and the residual Add after it, NCHWc on
        AVX512: 1.9e-6 apart), so statistics merged from passes with other outputs give a model
        that the candidate's config, quantized without a search, misses by an ulp of a scale."""
        requests = self.requests(key)
        return requests if requests and set(requests) != self._first else None

    def missing(self, key: Key) -> dict[str, int | None]:
        """The tensors the candidate's plan may read that the search's statistics lack."""
        return {t: a for t, a in self.requests(key).items() if t not in self.stats.tensors}

    def __call__(self, key: Key, *, full: bool) -> tuple[onnx.ModelProto, QuantPlan, bytes]:
        exact = self._exact(key) if full else None
        if exact is not None:
            part: tuple[frozenset[str], int | str | None] = (frozenset(exact), "exact")
            if part not in self.quantizers:
                self.quantizers[part] = Quantizer(self.prepared, self.calibrate(exact, None))
        else:
            missing = self.missing(key)
            samples = None if full or not missing else PROVISIONAL_SAMPLES
            part = (frozenset(missing), samples)
            if part not in self.quantizers:
                more = self.calibrate(missing, samples)
                self.quantizers[part] = Quantizer(self.prepared, Statistics(self.stats.model_sha256, self.stats.samples, {**more.tensors, **self.stats.tensors}))
        if full:
            self._full[key] = part
        if part[1] is None or full:
            self.provisional.discard(key)
        else:
            self.provisional.add(key)
        return _build(self.quantizers[part], _config_of(self.config, key, self.prepared), self.replay)

    def stale(self, key: Key) -> bool:
        """Whether the candidate, to be kept or judged, must be built again from its own pass."""
        return key in self.provisional or (key not in self._full and self._exact(key) is not None)

    def statistics(self, key: Key) -> Statistics:
        """The statistics a candidate built in full was built from."""
        return self.quantizers[self._full.get(key, (frozenset(self.missing(key)), None))].stats


def search(prepared: onnx.ModelProto, stats: Statistics, config: QuantConfig, samples: list[Feed], *,
           threads: int = 1, batch: int = 1, replay: Callable[[], Iterable[Feed]] | None = None,
           accept: Callable[[bytes], bool] | None = None,
           calibrate: Callable[[dict[str, int | None], int | None], Statistics] | None = None,
           spent: float | None = None,
           ) -> tuple[onnx.ModelProto, QuantPlan, LatencyTuning, QuantConfig, Statistics]:
    """The candidates' plans, measured; returns the kept model, its plan, the search, its config
    and the statistics it was built from. `samples`: the tuning samples, one request per feed (`batch` samples each).
    `stats` must cover every candidate (calibrated for min_reduction 0 and integer_ops "all")
    unless `calibrate(requests, n)` gives the statistics of more tensors over the first n
    calibration samples (None: all); then a candidate they lack is timed provisionally (see the
    module). `accept`: an accuracy budget's judge of a serialized model, the quality rule in
    place of the default's output error (see choose). `spent`: seconds the command took before
    the search, which bounds its timing loop (SEARCH_SHARE); None: no bound."""
    started = time.perf_counter()
    serving = config.runtime
    build = _Builds(prepared, stats, config, replay, calibrate)
    built: dict[Key, tuple[onnx.ModelProto, QuantPlan, bytes]] = {}
    seen: set[bytes] = set()
    at_f32 = runtime.float_precision(serving) == "f32"
    keys = candidates(config)
    default = keys[0]
    # The first wave, always timed: the default and, where OpenVINO runs float layers in bf16, the
    # same with them at f32 and every layer float; the other candidates follow within the budget.
    first = [default, *([(*default[:2], (), "f32")] if not at_f32 and config.float_precision == "default" else [])]
    reference = prepared.SerializeToString()
    budget = None if spent is None else max(SETUP_FLOOR, SEARCH_SHARE * spent)
    build_seconds: list[float] = []

    def add(key: Key) -> bool:
        """Build a candidate; False where its bytes are a candidate's already built."""
        start = time.perf_counter()
        model, plan, data = build(key, full=False)
        build_seconds.append(time.perf_counter() - start)
        if data in seen:
            return False
        seen.add(data)
        built[key] = (model, plan, data)
        return True

    for key in first:
        add(key)
    timed = list(built)
    # Every layer float: at f32 it is the reference itself, so it is only built (and timed) where
    # the runtime runs float faster, or once it is kept (where every plan quantizes some layer).
    if not at_f32 and built[default][1].layers():
        built[FLOAT] = build(FLOAT, full=True)
        seen.add(built[FLOAT][2])
        timed.append(FLOAT)
    # Built side by side (the runtimes release the GIL while compiling): OpenVINO compiles each
    # PP-OCRv4 det candidate in 0.3 s, four in 1.0-1.1 s on two cores instead of 1.5-1.6 s.
    # Where float runs below f32, the default's layers are costed from profiles of its session
    # and a float one's (_profiled): every session then counts its nodes' time, so that none is
    # timed with counters the others lack, and none is compiled twice (PP-OCRv4 det in OpenVINO,
    # 2-core Zen 4: two more compiles and their runs took 0.8 s of a 3.3 s search).
    profiling = not at_f32 and bool(built[default][1].nodes)
    compile_seconds: list[float] = []

    def compiled(data: bytes, precision: str | None):
        start = time.perf_counter()
        session = runtime.serving_session(data, runtime=serving, threads=threads, precision=precision, spinning=True, profiling=profiling)
        if precision is None:  # a quantized candidate's (the reference's float compile is cheaper)
            compile_seconds.append(time.perf_counter() - start)
        return session

    workers = os.cpu_count() or 1
    untried: list[Key] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="lowprec-session") as pool:
        sessions = list(pool.map(lambda item: compiled(*item), [(reference, "f32"), *((built[k][2], None) for k in timed)]))
        costs: dict[str, float] = {}
        rest = [k for k in keys if k not in first]
        if profiling:
            float_key = next(k for k in timed if _quantizes_nothing(built[k][1]))
            costs, key = _profiled(prepared, reference, built[default], default, samples[0], serving, threads,
                                   (sessions[1 + timed.index(float_key)], sessions[1]))
            rest = [*([key] if key is not None else []), *rest]  # measured where the floors guess
        # The rest, each compiled as soon as it is built, while the time bound leaves room for
        # one more build and its compile behind those still compiling (see SETUP_FLOOR).
        pending = []
        for key in rest:
            waiting = sum(not future.done() for future in pending)
            needed = max(build_seconds) + max(compile_seconds, default=0.0) * math.ceil((waiting + 1) / workers)
            if budget is not None and time.perf_counter() - started + needed > budget:
                untried.append(key)
                continue
            # A floor that leaves every layer float is the reference's placement: at f32 it runs as
            # FP32 does, and timing it again only adds noise (PP-OCR cls's floor 256 in ORT: 0.96-0.99x).
            if add(key) and not (at_f32 and _quantizes_nothing(built[key][1])):
                timed.append(key)
                pending.append(pool.submit(compiled, built[key][2], None))
        sessions += [future.result() for future in pending]
    # Timed in the candidates' own order (the floors, then the precisions, every layer float and the
    # profile's): where each sits in the loop's balanced order changes nothing, but reports and
    # forced timings read them so.
    place = {k: i for i, k in enumerate([*keys, *first[1:], FLOAT])}
    paired = sorted(zip(timed, sessions[1:]), key=lambda pair: place.get(pair[0], len(place)))
    timed, sessions = [k for k, _ in paired], [sessions[0], *(s for _, s in paired)]
    as_reference = [k for k in built if k != default and k not in timed]
    # At f32, where every plan quantizes some layer, every layer float is the reference's own run.
    floats = at_f32 and all(plan.layers() for _, plan, _ in built.values())
    if untried:
        log.info("latency search: %d candidate(s) left untried within %.1f s: %s", len(untried), budget,
                 "; ".join(_describe(k) for k in untried))
    # Without a budget, the loop may stop a candidate for its error, where that error is its own.
    exact = [] if accept is not None else [i for i, k in enumerate(timed, 1) if k not in build.provisional]
    seconds = None if spent is None else max(BOUND_FLOOR, SEARCH_SHARE * spent - (time.perf_counter() - started))
    times, errors, fp32_outputs = measure(sessions, samples, exact=exact, seconds=seconds, handover=threads > 1)
    speedup = {k: float(np.median(times[0][:len(t)] / t)) for k, t in zip(timed, times[1:])}
    nmse = dict(zip(timed, errors))
    rounds = {k: len(t) for k, t in zip(timed, times[1:])}
    bounded = rounds[default] < len(samples) and any(rounds[k] == rounds[default] for k in timed if k != default)
    for key in [*as_reference, *([FLOAT] if floats and FLOAT not in speedup else [])]:
        speedup[key], nmse[key], rounds[key] = 1.0, 0.0, len(times[0])
    verdicts: dict[Key, bool] = {}

    def in_full(key: Key) -> tuple[onnx.ModelProto, QuantPlan, bytes]:
        if key not in built or build.stale(key):
            built[key] = build(key, full=True)
        return built[key]

    def judged(key: Key) -> bool:
        verdicts[key] = accept(in_full(key)[2])
        return verdicts[key]

    # A candidate dropped from the loop was behind the default in the rounds both ran; its median
    # over those few rounds is not comparable with the default's over all of them.
    finished = {k: v for k, v in speedup.items() if rounds[k] == rounds[default]}
    # One timed from provisional statistics that is fast enough to be kept: its error, in full.
    for key in sorted(build.provisional & set(finished), key=_order):
        if accept is None and finished[key] >= finished[default] * SPEED_MARGIN:
            session = runtime.serving_session(in_full(key)[2], runtime=serving, threads=threads, precision=None)
            nmse[key] = output_error(fp32_outputs, session, samples[:rounds[key]])
    plain = [k for k in finished if k == FLOAT or (k in built and _quantizes_nothing(built[k][1]))]

    def session_of(key: Key):  # a placement left out of the loop runs as the reference does
        return sessions[1 + timed.index(key)] if key in timed else sessions[0]

    stacked = functools.cache(lambda: _large_batch(prepared, samples))  # built once, if a check asks for it

    def batch_gain(key: Key, against: Key = default) -> float | None:
        """`against`'s time over the candidate's on the tuning samples as one batch."""
        return None if stacked() is None else _batch_gain(session_of(against), session_of(key), stacked(), threads > 1)

    base, gain = _precision_base(default, finished, nmse, batch_gain)
    chosen = choose(base, finished, nmse, accept=judged if accept is not None else None, plain=plain)
    confirmation = large = noise = None
    if chosen != base:  # the loop's verdict, measured again with the two alone (see SPEED_MARGIN)
        # Faster by the margin, or (the default ran slower than FP32 and this quantizes nothing) no slower.
        needed = SPEED_MARGIN if speedup[chosen] >= speedup[base] * SPEED_MARGIN else 1.0
        confirmation = _head_to_head(session_of(base), session_of(chosen), samples, threads > 1)
        if confirmation >= needed:
            large = batch_gain(chosen, base)
        if confirmation < needed or (large is not None and large * SPEED_MARGIN < 1.0):
            noise, chosen = chosen, base
    in_full(chosen)
    keys = list(speedup)
    quality = "within the accuracy budget" if accept is not None else "within its output error"
    reason = f"{_describe(chosen)}: {speedup[chosen]:.2f}x of FP32 at batch {batch}"
    if chosen != default:
        reason += f" against the default's ({_describe(default)}) {speedup[default]:.2f}x"
    else:
        reason += ", the default" + (f"; no candidate {quality} was {SPEED_MARGIN:.2f}x faster" if noise is None else "")
    as_one = "" if large is None else f", and {large:.2f}x on the {len(samples)} tuning samples as one batch"
    if confirmation is not None and noise is None:
        reason += f"; head to head it ran {confirmation:.2f}x the speed of {_describe(base)} over {len(samples)} more rounds{as_one}"
    elif noise is not None and large is not None:
        reason += (f"; {_describe(noise)} read {speedup[noise]:.2f}x in the loop and {confirmation:.2f}x the speed of"
                   f" {_describe(base)} head to head at batch {batch}, but {large:.2f}x on the {len(samples)} tuning samples as one batch:"
                   " slower where requests are batched")
    elif noise is not None:
        reason += (f"; {_describe(noise)} read {speedup[noise]:.2f}x in the loop, but head to head, over {len(samples)}"
                   f" more rounds, {confirmation:.2f}x the speed of {_describe(base)}: timing noise, not a gain")
    if chosen == base != default:
        reason += (f"; its output error is {nmse[base] / max(nmse[default], 1e-30):.2g}x the default's, whose float layers"
                   f" run at {runtime.float_precision(serving)}")
        if gain is not None:
            reason += f", and it runs {gain:.2f}x the default's speed on the {len(samples)} tuning samples as one batch"
    if accept is not None:
        reason += (f" ({len(verdicts)} faster candidate(s) scored on the evaluation data)" if verdicts else "")
    if bounded:
        reason += f"; timed over {rounds[default]} rounds, where the search's time bound stopped it"
    if untried:
        reason += f"; {len(untried)} more candidate(s) left untried, their builds and compiles past the search's {budget:.1f} s bound"
    if _quantizes_nothing(built[chosen][1]):
        reason += ("; no layer pays off in integer here (against FP32 as lowprec prepares it, its float-exact"
                   " simplifications applied), so every layer stays float: try another runtime or target for INT8")
        log.warning("latency search: %s", reason)
    elif speedup[chosen] < 1.0:
        reason += "; nothing tried runs faster than FP32 here: serve the FP32 model, or try another runtime or target"
        log.warning("latency search: %s", reason)
    plans = {k: built[k][1] if k in built else None for k in keys}  # the float candidate unbuilt: nothing quantized
    report = [TuningCandidate(min_reduction=k[0], integer_ops=k[1], layers=len(plans[k].layers()) if plans[k] else 0,
                              integer_op_nodes=len(plans[k].integer_ops) if plans[k] else 0, speedup=round(speedup[k], 4),
                              nmse=float(f"{nmse[k]:.6g}"), rounds=rounds[k], within_budget=verdicts.get(k), chosen=k == chosen,
                              float_layers=list(k[2]) if len(k) > 2 else [], float_precision=k[3] if len(k) > 3 else "default",
                              provisional_samples=PROVISIONAL_SAMPLES if k in build.provisional else None)
              for k in sorted(keys, key=_order)]
    tuning = LatencyTuning(runtime=serving, threads=threads, batch=batch, samples=len(samples), candidates=report, reason=reason,
                           seconds=round(time.perf_counter() - started, 3), layer_costs={k: round(v, 1) for k, v in costs.items()},
                           head_to_head=None if confirmation is None else round(confirmation, 4),
                           head_to_head_batch=None if large is None else round(large, 4),
                           untried=[_describe(k) for k in untried])
    log.info("latency search: %s", reason)
    model, plan, _ = built[chosen]
    return model, plan, tuning, _config_of(config, chosen, prepared), build.statistics(chosen)


def measure(sessions, samples: list[Feed], *, exact: Iterable[int] = (), seconds: float | None = None,
            handover: bool = False) -> tuple[list[np.ndarray], list[float], list]:
    """Round by round, every session on one sample: sessions[0] is the FP32 reference and
    sessions[1] the default. Returns the milliseconds of each run (the mean of a round's
    repeats), per session (a session dropped from the loop has fewer; the loop stops once no
    candidate is left to decide), each candidate's output NMSE against the reference's over the
    samples it ran, and the reference's outputs, one per round. `exact`: the sessions whose
    error may stop them (QUALITY_DROP). `seconds`: once this long has passed since the warm-up
    began, the loop ends with the round running (after DROP_AFTER + 1 rounds at least).
    `handover`: each session's turn starts with an untimed run (threaded sessions: see
    _benchmark.THREADED_BLOCK)."""
    began, warm = time.perf_counter(), 0.0
    for sess in sessions:
        for _ in range(WARMUP):
            start = time.perf_counter()
            sess.run(None, samples[0])
            warm = warm or (time.perf_counter() - start) * 1e3  # the reference's first run
    reps = 1 if warm >= ROUND_MS else _repeats(sessions[0], samples[0])
    times: list[list[float]] = [[] for _ in sessions]
    error, power = np.zeros(len(sessions)), np.zeros(len(sessions))
    reference: list = []
    running, exact = list(range(len(sessions))), set(exact)
    for index, feed in enumerate(samples):
        # Rounds in which each candidate ran less than SPEED_MARGIN ahead of the default.
        behind = {i: sum(d < SPEED_MARGIN * c for d, c in zip(times[1], times[i])) for i in running[2:]}
        if index == DROP_AFTER:
            speed = {i: float(np.median(np.array(times[0]) / np.array(times[i]))) for i in running[1:]}
            running = [i for i in running if i < 2 or (speed[i] * DROP_MARGIN >= speed[1] and behind[i] < index)]
            nmse = error / np.maximum(power, 1e-30)
            allowed = QUALITY_DROP * _error_limit(nmse[1])
            running = [i for i in running if i < 2 or i not in exact or nmse[i] <= allowed]
        # One behind in more than half of all the rounds there will be cannot end that far ahead.
        running = [i for i in running if i < 2 or behind[i] * 2 <= len(samples)]
        if seconds is not None and index > DROP_AFTER and time.perf_counter() - began > seconds:
            break
        if len(running) == 2:  # the default against FP32: what is left to decide is whether it beats FP32
            clear = index > DROP_AFTER and all(f >= SPEED_MARGIN * d for f, d in zip(times[0], times[1]))
            if clear or index * 2 > len(samples):
                break
        outputs = {}
        for i in (running[j] for j in balanced_order(len(running), index)):
            if handover:
                sessions[i].run(None, feed)
            start = time.perf_counter()
            for _ in range(reps):
                outputs[i] = sessions[i].run(None, feed)
            times[i].append((time.perf_counter() - start) * 1e3 / reps)
        reference.append(outputs[0])
        for i in running[1:]:
            terms = _error_terms(outputs[0], outputs[i])
            error[i] += terms[0]
            power[i] += terms[1]
    return [np.array(t) for t in times], [float(e / max(p, 1e-30)) for e, p in zip(error[1:], power[1:])], reference


def _error_terms(reference: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    """(squared error, squared reference) summed over the float tensor outputs (integer ones are
    exact or not comparable; a sequence or map, skl2onnx's ZipMap of probabilities, is not a
    tensor)."""
    error = power = 0.0
    for ref, got in zip(reference, outputs):
        if isinstance(ref, np.ndarray) and np.issubdtype(ref.dtype, np.floating):
            ref = ref.astype(np.float64)
            power += float(np.sum(ref ** 2))
            error += float(np.sum((got.astype(np.float64) - ref) ** 2))
    return error, power


def output_error(reference: list, candidate, samples: list[Feed]) -> float:
    """A candidate's output NMSE against the reference's outputs on `samples` (measure's, one
    per sample), as measure computes it."""
    terms = [_error_terms(outputs, candidate.run(None, feed)) for outputs, feed in zip(reference, samples, strict=True)]
    return float(sum(e for e, _ in terms) / max(sum(p for _, p in terms), 1e-30))


def _repeats(reference, sample: Feed) -> int:
    """Runs a round makes of each model: enough for ROUND_MS of the reference, from one warm run
    of it (a model whose first run took ROUND_MS runs once a round without this)."""
    start = time.perf_counter()
    reference.run(None, sample)
    return min(MAX_REPS, max(1, math.ceil(ROUND_MS / max((time.perf_counter() - start) * 1e3, 1e-3))))


# A runtime names a node it made from a model's node after it, or after its output, with a suffix:
# ONNX Runtime's "_token_N" (a QDQ group fused into QLinearConv), "_nchwc" (a conv in blocked
# layout), "/duplicated" (a DequantizeLinear copied per reader); OpenVINO's "/WithoutBiases".
_RUNTIME_SUFFIX = re.compile(r"(_token_\d+|_nchwc|/duplicated|/WithoutBiases)+$")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


class _Names:
    """One model's node names, for reading a runtime's profile of it."""

    def __init__(self, model: onnx.ModelProto, layers: set[str]) -> None:
        self.nodes = {node.name: node for node in model.graph.node}
        self.producer = {out: node.name for node in model.graph.node for out in node.output}
        self.readers = consumers(model.graph)
        self.layers = layers

    def resolve(self, runtime_name: str) -> set[str]:
        """The model's nodes a runtime node runs: the node it is named after (or whose output
        it is named after) and, where that is an activation fused into a layer, the layer too."""
        for name in (runtime_name, _RUNTIME_SUFFIX.sub("", runtime_name)):
            node = name if name in self.nodes else self.producer.get(name)
            if node is not None:
                found = {node}
                # An activation (one computed input) fused into the layer it reads, if it is that layer's only reader.
                sources = [(tensor, self.producer[tensor]) for tensor in self.nodes[node].input if tensor in self.producer]
                if self.nodes[node].op_type not in _QDQ and len(sources) == 1:
                    tensor, source = sources[0]
                    if source in self.layers and len(self.readers.get(tensor, [])) == 1:
                        found.add(source)
                return found
        return set()

    def owners(self, name: str) -> set[str]:
        """The quantized layers a node is part of: the layer itself, or, for a quantizer, the
        layers that read what it quantizes (else the layer whose output it quantizes)."""
        if name in self.layers:
            return {name}
        node = self.nodes[name]
        if node.op_type not in _QDQ:
            return set()
        found: set[str] = set()
        frontier = list(node.output)
        while frontier:
            for reader in self.readers.get(frontier.pop(), []):
                if reader.op_type in _QDQ:
                    frontier.extend(reader.output)
                elif reader.name in self.layers:
                    found.add(reader.name)
        source = node
        while not found and source is not None and source.op_type in _QDQ:
            producer = self.producer.get(source.input[0])
            source = self.nodes.get(producer) if producer else None
            if source is not None and source.name in self.layers:
                found.add(source.name)
        return found


def layer_costs(prepared: onnx.ModelProto, int8: onnx.ModelProto, layers: list[str], float_profile: list[runtime.NodeTime],
                int8_profile: list[runtime.NodeTime]) -> dict[str, float]:
    """Per quantized layer: the microseconds a run spends on it in INT8 (its integer kernel and
    its quantizers) minus what it spends on it in float, from one profile of each model in the
    serving runtime. Each node of the INT8 profile is paired with the float nodes that run any of
    the same model nodes; the difference goes to the quantized layers it is part of (shared
    equally). A float node no INT8 node pairs with credits its layers. Approximate by nature (a
    runtime fuses differently around integer kernels); the candidate it suggests is timed."""
    quantized = set(layers)
    before, after = _Names(prepared, quantized), _Names(int8, quantized)

    def names(item: runtime.NodeTime, graph: _Names) -> set[str]:
        return set().union(*(graph.resolve(n) for n in (item.fused or (item.name,))))

    float_names = [names(item, before) for item in float_profile]
    by_name: dict[str, list[int]] = {}
    for index, found in enumerate(float_names):
        for name in found:
            by_name.setdefault(name, []).append(index)
    paired: set[int] = set()
    cost = dict.fromkeys(layers, 0.0)
    for item in int8_profile:
        found = names(item, after)
        matched = {i for name in found for i in by_name.get(name, []) if i not in paired}
        paired |= matched
        owners = set().union(*(after.owners(name) for name in found)) if found else set()
        for layer in owners:
            cost[layer] += (item.micros - sum(float_profile[i].micros for i in matched)) / len(owners)
    for index, item in enumerate(float_profile):
        owners = float_names[index] & quantized
        if index not in paired and owners:
            for layer in owners:
                cost[layer] -= item.micros / len(owners)
    return cost


def _profiled(prepared: onnx.ModelProto, reference: bytes, default: tuple[onnx.ModelProto, QuantPlan, bytes], key: Key,
              sample: Feed, serving: str, threads: int, sessions: tuple) -> tuple[dict[str, float], Key | None]:
    """The default's layers costed one by one from a profile of it and of the float model (at
    the runtime's own float precision: `sessions`, one of the float model and one of the default,
    built with `profiling`), and the candidate that leaves float those
    slower in integer, where together they take PROFILE_GAIN of the default's run. Only where the
    runtime runs float below f32 (OpenVINO's bf16): there a float layer competes with its integer
    form one by one. At f32 the reduction floor already tells them apart: on 2-core Zen 4 in ONNX
    Runtime, the default less the layers its profile found slower ran within noise of it on PP-OCR
    cls, det, rec and Magika (1.06 against 1.06x, 1.60 against 1.58x, 1.70 against 1.78x, 2.69
    against 2.64x), and profiling det costs 0.9 s, a third of the search."""
    model, plan, data = default
    float_profile = runtime.profile(reference, sample, runtime=serving, threads=threads, runs=PROFILE_RUNS, session_of=sessions[0])
    int8_profile = runtime.profile(data, sample, runtime=serving, threads=threads, runs=PROFILE_RUNS, session_of=sessions[1])
    costs = layer_costs(prepared, model, plan.nodes, float_profile, int8_profile)
    slower = tuple(layer for layer in plan.nodes if costs[layer] > 0)
    gain = sum(costs[layer] for layer in slower)
    total = sum(item.micros for item in int8_profile)
    log.info("latency search: the profile finds %d of %d layers slower in integer (%.0f of %.0f us)", len(slower), len(plan.nodes), gain, total)
    return costs, ((*key[:2], slower) if slower and gain >= PROFILE_GAIN * total else None)


def _precision_base(default: Key, finished: dict[Key, float], nmse: dict[Key, float],
                    batch_gain: Callable[[Key], float | None] = lambda key: None) -> tuple[Key, float | None]:
    """The candidate the choice starts from, and the default's time over its at a large batch
    where that was measured: the default, or the default with its float layers at f32, where
    that cuts the output error to F32_ERROR_SHARE of the default's or less and runs no slower
    beyond timing noise (SPEED_MARGIN), or where it runs SPEED_MARGIN faster at batch 1 and, by
    `batch_gain` (the default's time over its own on the tuning samples as one batch; None where
    it cannot be measured), no slower there. The speed choice asks nothing of its error: the same
    placement from the same statistics, its float layers computed in f32 instead of bf16 (the
    U-Net `columns` on Zen 4 read 4.4e-7 against 3.2e-7, both noise: its default kept every
    strip's reading). A faster candidate must then keep within its error. One not kept is
    dropped from `finished`: its batch-1 speed alone is no reason to keep it (see LARGE_ROUNDS)."""
    f32 = next((k for k in finished if len(k) > 3), None)
    if f32 is None:
        return default, None
    if nmse[f32] <= F32_ERROR_SHARE * nmse[default] and finished[f32] * SPEED_MARGIN >= finished[default]:
        return f32, None
    if finished[f32] >= finished[default] * SPEED_MARGIN:
        gain = batch_gain(f32)
        if gain is not None and gain * SPEED_MARGIN >= 1.0:
            return f32, gain
    del finished[f32]
    return default, None


def _large_batch(prepared: onnx.ModelProto, samples: list[Feed]) -> Feed | None:
    """The tuning samples as one batch, where the model's inputs leave the batch open and the
    samples agree in every other dimension (the first sample's shapes, an axis at a time)."""
    specs = input_specs(prepared)
    if len(samples) < 2 or any(spec.batch_axis is not None and isinstance(spec.shape[spec.batch_axis], int) for spec in specs):
        return None
    return concat(samples, specs) if stackable(samples, specs) else None


def _interleaved(first, second, feeds: list[Feed], reps: int = 1, handover: bool = False) -> float:
    """The median over one round per feed of first's time over second's, the two run in turn
    (`reps` times each, in the balanced order: for two, reversed every other round), after one
    untimed run of each; with `handover`, each turn starts with an untimed run too."""
    for sess in (first, second):
        sess.run(None, feeds[0])
    ratios = []
    for index, feed in enumerate(feeds):
        seconds = {}
        for key in balanced_order(2, index):
            if handover:
                (first, second)[key].run(None, feed)
            start = time.perf_counter()
            for _ in range(reps):
                (first, second)[key].run(None, feed)
            seconds[key] = time.perf_counter() - start
        ratios.append(seconds[0] / seconds[1])
    return float(np.median(ratios))


def _batch_gain(first, second, large: Feed, handover: bool = False) -> float:
    """first's time over second's on the tuning samples as one batch: LARGE_ROUNDS runs each in turn."""
    return _interleaved(first, second, [large] * LARGE_ROUNDS, handover=handover)


def _head_to_head(first, second, samples: list[Feed], handover: bool = False) -> float:
    """first's time over second's at batch 1, the two alone: one round per tuning sample, each
    run for ROUND_MS of first's time (see measure) in turn. Where the loop found a candidate
    faster than the default, this says whether it is: see SPEED_MARGIN."""
    return _interleaved(first, second, samples, _repeats(first, samples[0]), handover)


def _build(quantizer: Quantizer, config: QuantConfig, replay) -> tuple[onnx.ModelProto, QuantPlan, bytes]:
    model, plan = quantizer(config, feeds=replay)
    if config.float_precision != "default":
        # Stamped as the command stamps its output (it re-stamps with the source's digest): every
        # session of these bytes, the timing loop's, its error's, an accuracy budget's, runs the
        # float layers at that precision (see _runtime_openvino.stamped_precision).
        lineage.stamp(model, "", config)
    return model, plan, model.SerializeToString()


def _config_of(config: QuantConfig, key: Key, model: onnx.ModelProto) -> QuantConfig:
    if key == FLOAT:  # every op type of the model that the target quantizes (its tables' Gathers too), ignored
        present = {node.op_type for node in all_nodes(model.graph)}
        kinds = {*TARGETS[config.target].layers, *(["Gather"] if TARGETS[config.target].tables else [])}
        layers = sorted((present & kinds) - set(config.ignore))
        return config.model_copy(update={"ignore": (*config.ignore, *layers)})
    update = {"min_reduction": key[0], "integer_ops": key[1]}
    if len(key) > 2:  # the layers the profile found slower in integer, by name
        update["ignore"] = (*config.ignore, *node_entries(model, key[2]))
    if len(key) > 3:  # the float layers' precision in the runtime
        update["float_precision"] = key[3]
    return config.model_copy(update=update)


def _quantizes_nothing(plan: QuantPlan) -> bool:
    return not plan.layers() and not plan.integer_ops and not plan.all_tables()


def _order(key: Key) -> tuple:
    return (key[0] is None, key)


def _describe(key: Key) -> str:
    if key == FLOAT:
        return "every layer float"
    return (f"min_reduction {key[0]}" + (f", integer_ops {key[1]}" if key[1] != "target" else "")
            + (f", {len(key[2])} layer(s) the profile found slower in integer left float" if len(key) > 2 and key[2] else "")
            + (f", float layers at {key[3]}" if len(key) > 3 else ""))
