"""Timed runs of FP32 and INT8 in one process, interleaved after a warm-up -> BenchmarkReport."""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel

from . import runtime
from .config import BenchmarkConfig
from .data import Feed, InputSpec
from .errors import DataError
from .model_io import LoadedModel, model_bytes


class LatencyResult(BaseModel):
    batch: int
    threads: int
    fp32_median_ms: float
    fp32_p90_ms: float
    int8_median_ms: float
    int8_p90_ms: float
    speedup: float


class BenchmarkReport(BaseModel):
    onnxruntime: str
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float
    results: list[LatencyResult]


def make_feed(specs: list[InputSpec], batch: int, sample: Feed | None = None, seed: int = 0) -> Feed:
    """A feed of `batch` rows: repeats of the sample's rows when given, else seeded values."""
    rng = np.random.default_rng(seed)
    feed: Feed = {}
    for spec in specs:
        if sample is not None and spec.name in sample:
            rows = sample[spec.name]
            feed[spec.name] = np.ascontiguousarray(np.resize(rows, (batch, *rows.shape[1:])))
            continue
        dims = []
        for axis, dim in enumerate(spec.shape):
            if axis == 0:
                dims.append(batch)
            elif isinstance(dim, int) and dim > 0:
                dims.append(dim)
            else:
                raise DataError(f"input {spec.name!r} has a symbolic size {dim!r} on axis {axis}; pass --data to benchmark it")
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.standard_normal(dims).astype(spec.dtype)
        else:
            feed[spec.name] = np.zeros(dims, dtype=spec.dtype)
    return feed


def interleaved(sessions, feed: Feed, *, warmup: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds per run of two sessions on one feed, alternating which goes first so drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feed)
    for repeat in range(repeats):
        for index in (0, 1) if repeat % 2 == 0 else (1, 0):
            start = time.perf_counter()
            sessions[index].run(None, feed)
            times[index].append((time.perf_counter() - start) * 1e3)
    return np.array(times[0]), np.array(times[1])


def speedup(reference: bytes, candidate: bytes, feed: Feed, *, repeats: int = 20, threads: int = 1) -> float:
    """FP32 median latency over the candidate's, interleaved on one feed: a quick check, not a benchmark."""
    sessions = tuple(runtime.session(m, threads=threads) for m in (reference, candidate))
    fp, q = interleaved(sessions, feed, warmup=3, repeats=repeats)
    return float(np.median(fp / q))  # paired rounds: a slow moment hits both models of a round


def run(
    fp32: LoadedModel,
    int8: LoadedModel,
    specs: list[InputSpec],
    config: BenchmarkConfig,
    *,
    sample: Feed | None = None,
) -> BenchmarkReport:
    results = []
    for threads in config.threads:
        sessions = tuple(runtime.session(str(m.path), threads=threads) for m in (fp32, int8))
        for batch in config.batches:
            fp, q = interleaved(sessions, make_feed(specs, batch, sample), warmup=config.warmup, repeats=config.repeats)
            results.append(
                LatencyResult(
                    batch=batch,
                    threads=threads,
                    fp32_median_ms=float(np.median(fp)),
                    fp32_p90_ms=float(np.percentile(fp, 90)),
                    int8_median_ms=float(np.median(q)),
                    int8_p90_ms=float(np.percentile(q, 90)),
                    speedup=float(np.median(fp) / np.median(q)),
                )
            )
    return BenchmarkReport(
        onnxruntime=runtime.version(),
        fp32_bytes=model_bytes(fp32),
        int8_bytes=model_bytes(int8),
        size_ratio=model_bytes(int8) / model_bytes(fp32),
        results=results,
    )
