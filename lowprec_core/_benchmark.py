"""Timed runs of FP32 and INT8 in one process, interleaved after a warm-up -> BenchmarkReport."""

from __future__ import annotations

import logging
import time

import numpy as np

from . import _runtime as runtime
from ._config import BenchmarkConfig, cpu_flags
from ._data import Feed, InputSpec, fixed_batch
from ._errors import ConfigError, DataError
from ._model_io import LoadedModel, model_bytes
from ._reports import BenchmarkReport, LatencyResult

log = logging.getLogger(__name__)

NOISY_CV = 0.10  # coefficient of variation above which a series is measured longer
NOISY_DRIFT = 0.04  # the speedups of a run's two halves differ by more than this share: measured longer
MAX_EXTENSIONS = 2  # each doubles the repeats


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and which integer-dot-product extensions it has (Linux /proc/cpuinfo)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "", []
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags(text)
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")
    return model, [flag for flag in wanted if flag in flags]


SYNTHETIC_LIMIT = 1 << 30  # bytes of made-up values one input may take when no data is given


def fit_batches(config: BenchmarkConfig, specs: list[InputSpec]) -> BenchmarkConfig:
    """`config` with batch sizes the model takes. A model exported with its batch fixed (at 1, as
    many are) runs at that size only, as data.fixed_batch reads it: the default batches become it,
    and a batch asked for that the model cannot take is a ConfigError naming the input. ORT had
    failed mid-run with a traceback (`lowprec benchmark` on a batch-1 model, at the default batch 8)."""
    size = fixed_batch(specs)
    if size is None or set(config.batches) == {size}:
        return config
    if config.batches != BenchmarkConfig().batches:
        unfit = next(batch for batch in config.batches if batch != size)
        name = next(spec.name for spec in specs if spec.shape)
        raise ConfigError(f"batch {unfit}: input {name!r} fixes its batch axis at {size}, so the model runs at batch "
                          f"{size} only; expected --batch {size}")
    log.info("the model fixes its batch at %d: timed at batch %d only", size, size)
    return config.model_copy(update={"batches": (size,)})


def make_feed(specs: list[InputSpec], batch: int, sample: Feed | None = None, seed: int = 0) -> Feed:
    """A feed of `batch` rows: repeats of the sample's rows when given, else seeded values."""
    rng = np.random.default_rng(seed)
    feed: Feed = {}
    for spec in specs:
        if sample is not None and spec.name in sample:
            rows = sample[spec.name]
            if spec.batch_axis is not None and rows.ndim > spec.batch_axis:  # repeated along the input's batch axis
                rows = np.take(rows, np.arange(batch) % rows.shape[spec.batch_axis], axis=spec.batch_axis)
            feed[spec.name] = np.array(rows, order="C")  # a scalar stays one (ascontiguousarray makes it [1])
            continue
        dims = []
        for axis, dim in enumerate(spec.shape):
            if axis == spec.batch_axis:
                dims.append(batch)
            elif isinstance(dim, int) and dim > 0:
                dims.append(dim)
            else:
                raise DataError(f"input {spec.name!r} has a symbolic size {dim!r} on axis {axis}; pass --data to benchmark it")
        size = int(np.prod(dims, dtype=object)) * spec.dtype.itemsize
        if size > SYNTHETIC_LIMIT:
            raise DataError(
                f"input {spec.name!r} of shape {dims} would need {size / 2**30:.3g} GiB of made-up values "
                f"(limit {SYNTHETIC_LIMIT / 2**30:g} GiB); pass --data with real rows"
            )
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.standard_normal(dims).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(dims, dtype=spec.dtype)
    return feed


def balanced_order(n: int, index: int) -> list[int]:
    """Round `index`'s order of n sessions (0..n-1): a Williams design, in which, over n rounds
    (twice over 2n for odd n), every session runs right after every other one once. One order,
    even reversed every other round, biases a timing loop: a session timed right after another
    runs slower or faster for it (OpenVINO's threads, caches). In the latency search's loop (2-core
    Zen 4, OpenVINO, eight searches each of PP-OCR cls, the strip reader and the U-Net), a
    candidate read 5 % ahead of the default in 10 of 24 (cls's median lead 1.16x); in this
    order, in 1-4 of 24 (cls: 0.97-1.00x)."""
    first = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    row = index % (n if n % 2 == 0 else 2 * n)
    order = [(x + row) % n for x in first]
    return order if row < n else order[::-1]


# Runs per session per round where sessions run on several threads: the first, right after
# another session's run, is untimed. A multi-threaded session's run right after another's finds
# its workers parked and its caches cold: Magika INT8 at 2 threads on a 2-core Zen 4 ran 2.0-3.2
# ms right after the FP32 session's run and 1.7 ms right after its own (at 1 thread 3.29 against
# 3.31 ms), a fixed cost that cuts the faster model's speedup most (Magika batch 1: 1.62x timed
# run by run, 1.86-2.54x in blocks; bench/results/threads-*.md). A loaded pod runs one session
# back to back: blocks time that.
THREADED_BLOCK = 4


def block_size(threads: int) -> int:
    """Runs per session per round of an interleaved timing at `threads` threads."""
    return 1 if threads <= 1 else THREADED_BLOCK


def interleaved(sessions, feed: Feed, *, warmup: int, repeats: int, block: int = 1) -> tuple[np.ndarray, ...]:
    """Milliseconds per run of each session on one feed, round by round, in a balanced order so
    that drift, and the session run before, hit all of them alike. With `block` > 1 each session
    runs `block` times in its turn and the first is not timed (see THREADED_BLOCK); `repeats`
    timed runs each, at least."""
    times: list[list[float]] = [[] for _ in sessions]
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feed)
    timed = max(block - 1, 1)
    for repeat in range(-(-repeats // timed)):
        for index in balanced_order(len(sessions), repeat):
            times[index] += [seconds * 1e3 for seconds in turn(sessions[index], feed, block)]
    return tuple(np.array(t) for t in times)


def turn(session, feed: Feed, block: int = 1) -> list[float]:
    """One session's turn in an interleaved timing: `block` runs, the seconds of each timed one
    (every run when block is 1; all but the first, the handover, else: see THREADED_BLOCK)."""
    seconds = []
    for run in range(block):
        start = time.perf_counter()
        session.run(None, feed)
        if block == 1 or run > 0:
            seconds.append(time.perf_counter() - start)
    return seconds


def speedup(reference: bytes, candidate: bytes, feed: Feed, *, repeats: int = 20, threads: int = 1, serving: str = "onnxruntime") -> float:
    """FP32 median latency (f32) over the candidate's, interleaved on one feed, in the `serving`
    runtime: a quick check, not a benchmark."""
    sessions = tuple(runtime.serving_session(m, runtime=serving, threads=threads, precision=precision, spinning=True)
                     for m, precision in ((reference, "f32"), (candidate, None)))
    fp, q = interleaved(sessions, feed, warmup=3, repeats=repeats, block=block_size(threads))
    return float(np.median(fp / q))  # paired rounds: a slow moment hits both models of a round


def run(
    fp32: LoadedModel,
    int8: LoadedModel,
    specs: list[InputSpec],
    config: BenchmarkConfig,
    *,
    sample: Feed | None = None,
) -> BenchmarkReport:
    import resource

    results = []
    load_ms = [0.0, 0.0]
    default_precision = None
    for threads in config.threads:
        sessions = []
        for index, m in enumerate((fp32, int8)):
            start = time.perf_counter()
            sessions.append(runtime.serving_session(str(m.path), runtime=config.runtime, threads=threads,
                                                    precision="f32" if index == 0 else None, spinning=True))
            load_ms[index] = max(load_ms[index], (time.perf_counter() - start) * 1e3)
        if config.runtime == "openvino":  # the FP32 model as OpenVINO runs it unasked (bf16 on AMX, AVX512_BF16)
            unasked = runtime.serving_session(str(fp32.path), runtime=config.runtime, threads=threads)
            if unasked.precision != sessions[0].precision:
                default_precision = unasked.precision
                sessions.append(unasked)
        for batch in config.batches:
            feed = make_feed(specs, batch, sample)
            repeats = config.repeats
            series = interleaved(sessions, feed, warmup=config.warmup, repeats=repeats, block=block_size(threads))
            for _ in range(MAX_EXTENSIONS):  # noisy: measure longer, keeping what was measured
                if not _noisy(_cv(*series[:2]), _drift(*series[:2])):
                    break
                more = interleaved(sessions, feed, warmup=0, repeats=repeats, block=block_size(threads))
                series = tuple(np.concatenate([a, b]) for a, b in zip(series, more))
                repeats *= 2
            fp, q = series[:2]
            default = float(np.median(series[2])) if len(series) > 2 else None
            cv, drift = _cv(fp, q), _drift(fp, q)
            results.append(
                LatencyResult(
                    batch=batch,
                    threads=threads,
                    fp32_median_ms=float(np.median(fp)),
                    fp32_p90_ms=float(np.percentile(fp, 90)),
                    fp32_p99_ms=float(np.percentile(fp, 99)),
                    int8_median_ms=float(np.median(q)),
                    int8_p90_ms=float(np.percentile(q, 90)),
                    int8_p99_ms=float(np.percentile(q, 99)),
                    speedup=float(np.median(fp) / np.median(q)),
                    fp32_per_s=batch * 1e3 / float(np.median(fp)),
                    int8_per_s=batch * 1e3 / float(np.median(q)),
                    repeats=len(fp),
                    fp32_default_median_ms=default,
                    speedup_vs_default=None if default is None else default / float(np.median(q)),
                    cv=cv,
                    drift=drift,
                    noisy=_noisy(cv, drift),
                )
            )
    cpu, isa = cpu_description()
    return BenchmarkReport(
        runtime=config.runtime,
        onnxruntime=runtime.version(config.runtime),
        fp32_default_precision=default_precision,
        providers=list(runtime.PROVIDERS) if config.runtime == "onnxruntime" else ["CPU"],
        cpu=cpu,
        isa=isa,
        fp32_bytes=model_bytes(fp32),
        int8_bytes=model_bytes(int8),
        size_ratio=model_bytes(int8) / model_bytes(fp32),
        fp32_load_ms=load_ms[0],
        int8_load_ms=load_ms[1],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        results=results,
    )


def _cv(*series: np.ndarray) -> float:
    """The larger coefficient of variation (std / mean) of the series."""
    return float(max(np.std(s) / max(np.mean(s), 1e-12) for s in series))


def _drift(fp: np.ndarray, q: np.ndarray) -> float:
    """How much the speedup moved within the run: first half of the rounds against the second.
    A machine whose load changes shows it here even when each series is steady, and a second
    run would then disagree with this one."""
    half = len(fp) // 2
    if half < 2:
        return 0.0
    first = np.median(fp[:half]) / np.median(q[:half])
    second = np.median(fp[half:]) / np.median(q[half:])
    return float(abs(first - second) / ((first + second) / 2))


def _noisy(cv: float, drift: float) -> bool:
    return cv > NOISY_CV or drift > NOISY_DRIFT
