"""The public operations: each takes paths or URIs, composes the modules below, returns a report.

No computation lives here; every step is a call into a module with one job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel

from . import benchmark as _bench
from . import registry, runtime
from ._version import __version__
from .accuracy import ModelBackend
from .calibration.collect import collect
from .calibration.health import CalibrationWarning
from .calibration.health import check as calibration_health
from .calibration.stats import Statistics, load_statistics
from .config import AccuracyBudget, BenchmarkConfig, CalibrationConfig, QuantConfig
from .data import input_specs, iter_feeds, load_labels, take
from .errors import ConfigError, GateFailed
from .layer_error import InspectReport, inspect_layers
from .metrics import resolve_metric
from .model_io import LoadedModel, file_sha256, load_model, model_bytes, prepare, save_model
from .quantize.accuracy_aware import Iteration, Journal, SearchResult, search
from .quantize.default import quantize_model
from .quantize.planner import QuantPlan, statistic_requests
from .runtime import check_runtime
from .storage import localize
from .validate import Evaluator, ValidationReport, compare

log = logging.getLogger(__name__)

PathOrUri = str | os.PathLike[str]
META_PREFIX = "lowprec."


class QuantizeReport(BaseModel):
    source: str
    source_sha256: str
    output: str
    output_sha256: str
    fp32_bytes: int
    int8_bytes: int
    calibration_samples: int
    seconds: float
    plan: QuantPlan
    accuracy: SearchResult | None = None  # the accuracy-aware search, when one ran
    calibration_warnings: list[CalibrationWarning] = []
    layers: InspectReport | None = None  # per-layer error on the evaluation (else calibration) data


def calibrate(
    model: PathOrUri,
    data: PathOrUri | Iterable[Mapping[str, np.ndarray]],
    out_dir: PathOrUri,
    *,
    config: CalibrationConfig = CalibrationConfig(),
    target: str = "cpu",
) -> Statistics:
    """One streaming pass over `data`; writes stats.json + stats.npz into out_dir."""
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        loaded = load_model(localize(model, tmp))
        prepared = prepare(loaded.proto)
        stats = _collect(loaded, prepared, _local_data(data, tmp), config, target)
        stats.save(out_dir)
    return stats


def quantize(
    model: PathOrUri,
    out: PathOrUri,
    *,
    data: PathOrUri | Iterable[Mapping[str, np.ndarray]] | None = None,
    stats: PathOrUri | None = None,
    config: QuantConfig = QuantConfig(),
    calibration: CalibrationConfig = CalibrationConfig(),
    report: PathOrUri | None = None,
    accuracy: AccuracyBudget | None = None,
    eval_data: PathOrUri | Sequence[Mapping[str, np.ndarray]] | None = None,
    labels: PathOrUri | np.ndarray | None = None,
    work_dir: PathOrUri | None = None,
    inspect_samples: int = 0,
    html: PathOrUri | None = None,
) -> QuantizeReport:
    """FP32 model -> INT8 QDQ model at `out`; calibrates from `data` unless `stats` is given.

    `inspect_samples` > 0 adds the per-layer error analysis (see `inspect`) over that many
    samples of the evaluation data, or of the calibration data when there is none; `html`
    writes the report as a self-contained page (with range histograms of the worst layers).

    With `accuracy`, runs the accuracy-aware search on `eval_data` (and `labels`): layers go
    back to float until every metric is within its budget. `work_dir` keeps statistics, the
    FP32 reference and a journal of every evaluation, so a killed run resumes where it stopped.
    A budget that cannot be met, or an INT8 model slower than FP32, raises GateFailed after
    the model and report are written."""
    started = time.perf_counter()
    if inspect_samples < 0:
        raise ConfigError(f"inspect_samples must be 0 (no per-layer analysis) or a positive sample count, not {inspect_samples}")
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        loaded = load_model(localize(model, tmp))
        prepared = prepare(loaded.proto)
        source = _local_data(data, tmp) if data is not None else None
        work = None
        if accuracy is not None:
            work = Path(work_dir) if work_dir is not None else Path(tmp) / "work"
            # Everything the search reads is checked before calibration spends any time.
            if eval_data is None:
                raise ConfigError("accuracy-aware quantization needs evaluation data (--eval)")
            if isinstance(eval_data, Iterator):
                raise ConfigError("evaluation data is read many times: pass a path or a list of feeds, not an iterator")
            if config.bias_correction == "full":
                raise ConfigError("bias_correction 'full' re-reads the calibration data for every model; the accuracy-aware search uses 'fast' or 'none'")
            metrics = [resolve_metric(b.metric) for b in accuracy.metrics]
            label_array = load_labels(localize(labels, tmp)) if isinstance(labels, (str, os.PathLike)) else labels
            _claim_work_dir(work, loaded.sha256, config, accuracy, eval_data, labels)
            if stats is None and (work / "stats" / "stats.json").exists():
                stats = work / "stats"  # a resumed run: calibration finished before
        if stats is not None:
            statistics = load_statistics(localize(stats, tmp), model_sha256=loaded.sha256)
        elif source is not None:
            statistics = _collect(loaded, prepared, source, calibration, config.target, serving=config)
        else:
            raise ConfigError("quantize needs calibration data (--data) or statistics (--stats)")
        replay = None
        if source is not None and not isinstance(source, Iterator):  # a path or a list can be read twice
            specs = input_specs(prepared)
            replay = lambda: iter_feeds(source, specs, batch_size=calibration.batch_size, max_samples=calibration.max_samples)  # noqa: E731
        search = None
        if accuracy is None:
            int8, plan = quantize_model(prepared, statistics, config, feeds=replay)
        else:
            if not (work / "stats" / "stats.json").exists():
                statistics.save(work / "stats")
            int8, plan, search, config = _accuracy_aware(prepared, statistics, config, accuracy, metrics, eval_data, label_array, work, tmp)
        # Tensors the calibration pass observed (SmoothQuant's scaled copies take derived statistics).
        observed = {out for node in prepared.graph.node for out in node.output} | {i.name for i in prepared.graph.input}
        warnings = calibration_health(statistics, [a.tensor for a in plan.activations if a.tensor in observed], config.activation_range)
        for warning in warnings:
            log.warning("calibration: %s%s", f"{warning.tensor}: " if warning.tensor else "", warning.message)
        layers = None
        if inspect_samples > 0:
            layers = _inspect_in_run(prepared, int8, eval_data if eval_data is not None else source, inspect_samples, tmp)
        _stamp(int8, loaded.sha256, config)
        # A model ORT cannot load never reaches `out`. The check never runs the model, so it
        # builds no thread pool (which costs more than loading a small model).
        saved = save_model(int8, out, external_data=bool(loaded.data_files) or None, verify=_loads)
        fp32_bytes = model_bytes(loaded)
    result = QuantizeReport(
        source=str(model),
        source_sha256=loaded.sha256,
        output=str(out),
        output_sha256=saved.sha256,
        fp32_bytes=fp32_bytes,
        int8_bytes=saved.bytes,
        calibration_samples=statistics.samples,
        seconds=round(time.perf_counter() - started, 3),
        plan=plan,
        accuracy=search,
        calibration_warnings=warnings,
        layers=layers,
    )
    if report is not None:
        _write_json(report, result)
    if html is not None:
        from .report import quantize_html

        _write_text(html, quantize_html(result, stats=statistics))
    if search is not None:
        _accuracy_gate(search, accuracy.min_speedup)
    return result


def _inspect_in_run(prepared: onnx.ModelProto, int8: onnx.ModelProto, data, samples: int, tmp: str) -> InspectReport | None:
    if data is None:
        log.info("per-layer analysis skipped: quantized from --stats with no data to run")
        return None
    if isinstance(data, Iterator):
        log.warning("per-layer analysis skipped: the calibration data was a one-pass iterator (give --eval, or a path)")
        return None
    feeds = iter_feeds(_local_data(data, tmp), input_specs(prepared), batch_size=16, max_samples=samples)
    result = inspect_layers(prepared, int8, feeds)
    for row in result.layers[:3]:
        log.info("worst layer %s: own SQNR %.1f dB (%s)", row.layer, row.own_sqnr_db, row.action)
    return result


def _claim_work_dir(work: Path, model_sha256: str, config: QuantConfig, accuracy: AccuracyBudget, eval_data, labels) -> None:
    """A work dir serves one run: the same model, config, budget and evaluation data."""
    identity = {
        "model_sha256": model_sha256,
        "config": config.model_dump(mode="json"),
        "accuracy": accuracy.model_dump(mode="json"),
        "eval_data": _identity(eval_data),
        "labels": _identity(labels),
    }
    marker = work / "run.json"
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded != identity:
            changed = sorted(k for k in identity if recorded.get(k) != identity[k])
            raise ConfigError(f"work dir {work} belongs to another run (different {', '.join(changed)}); use a new --work-dir or remove it")
        return
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity, indent=1, sort_keys=True))


def _identity(value) -> str | None:
    """What names a data source across runs: a file's sha256, a folder's file list, else its repr."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and not str(value).startswith(("s3://", "file://")):
        path = Path(value)
        if path.is_file():
            return file_sha256(path)
        if path.is_dir():
            return json.dumps(sorted((p.name, p.stat().st_size) for p in path.iterdir()))
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return str(value)


def _accuracy_aware(prepared, statistics, config: QuantConfig, accuracy: AccuracyBudget, metrics, eval_data, label_array, work: Path, tmp: str):
    """The search over float layers; returns the final model, its plan, the search and the config that makes it."""
    specs = input_specs(prepared)
    source = _local_data(eval_data, tmp)
    feeds = lambda: iter_feeds(source, specs, batch_size=32)  # noqa: E731
    evaluator = Evaluator(prepared.SerializeToString(), feeds, metrics, labels=label_array, cache_dir=work / "reference", specs=specs)
    first = next(iter(feeds()))
    backend = ModelBackend(prepared, statistics, config, evaluator, speed_feed=take(first, specs, slice(0, 1)))
    iterations = work / "iterations"
    iterations.mkdir(exist_ok=True)

    def write(iteration: Iteration) -> None:
        path = iterations / f"{iteration.index:04d}.json"
        if path.exists():  # written before a restart
            return
        _, plan = backend.build(tuple(iteration.float_layers))
        _write_text(path, json.dumps({"iteration": iteration.model_dump(mode="json"), "plan": plan.model_dump(mode="json")}, indent=1))
        log.info("iteration %d (%s): %s", iteration.index, iteration.kind,
                 ", ".join(f"{n} drop {r.drop:.4f}/{r.max_drop:.4f}" for n, r in iteration.metrics.items()))

    journal = Journal(work / "journal.jsonl")
    result = search(backend, metrics, accuracy, journal=journal, on_iteration=write)
    if journal.replayed:
        log.info("resumed: %d evaluations replayed from %s", journal.replayed, journal.path)
    final = tuple(result.float_layers)
    model, plan = backend.build(final)
    return model, plan, result, backend.config_for(final)


def _accuracy_gate(search: SearchResult, min_speedup: float) -> None:
    last = search.iterations[-1]
    if not search.met:
        worst = ", ".join(f"{n} drop {r.drop:.4f} > {r.max_drop:.4f}" for n, r in last.metrics.items() if r.drop > r.max_drop)
        raise GateFailed(f"accuracy budget not met ({worst}): {search.reason}")
    if last.speedup is not None and last.speedup < min_speedup:
        raise GateFailed(
            f"the budget is met with {len(search.float_layers)} layers in float, but the INT8 model runs at "
            f"{last.speedup:.2f}x of FP32 at batch 1, below the required {min_speedup:.2f}x"
            + (": slower than the model it replaces" if last.speedup < 1.0 else "")
        )


def validate(
    fp32: PathOrUri,
    int8: PathOrUri,
    data: PathOrUri | Iterable[Mapping[str, np.ndarray]],
    *,
    metric: str,
    max_drop: float = 0.01,
    labels: PathOrUri | None = None,
    batch_size: int = 32,
    report: PathOrUri | None = None,
    gate: bool = False,
    runtime: str = "onnxruntime",
) -> ValidationReport:
    """Score INT8 against FP32 in `runtime` (onnxruntime or openvino); with gate=True a failed
    check raises GateFailed (after the report)."""
    check_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        reference, candidate = _load_pair(fp32, int8, tmp)
        label_array = load_labels(localize(labels, tmp)) if labels is not None else None
        feeds = iter_feeds(_local_data(data, tmp), input_specs(reference.proto), batch_size=batch_size)
        result = compare(
            str(reference.path),
            str(candidate.path),
            feeds,
            metric=metric,
            max_drop=max_drop,
            labels=label_array,
            serving=runtime,
        )
    if report is not None:
        _write_json(report, result)
    if gate and not result.passed:
        raise GateFailed(
            f"{metric} drop {result.drop:.4f} exceeds the maximum {max_drop:.4f} "
            f"(FP32 {result.reference_score:.4f}, INT8 {result.candidate_score:.4f})"
        )
    return result


def inspect(
    fp32: PathOrUri,
    int8: PathOrUri,
    data: PathOrUri | Iterable[Mapping[str, np.ndarray]],
    *,
    batch_size: int = 16,
    max_samples: int | None = None,
    report: PathOrUri | None = None,
) -> InspectReport:
    """Per quantized layer, where the INT8 error comes from (worst first), with a suggested action.

    The FP32 model goes through the same float-exact simplification quantize applies, so both
    graphs name their tensors alike."""
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        reference, candidate = _load_pair(fp32, int8, tmp)
        prepared = prepare(reference.proto)
        feeds = iter_feeds(_local_data(data, tmp), input_specs(prepared), batch_size=batch_size, max_samples=max_samples)
        result = inspect_layers(prepared, candidate.proto, feeds)
    if report is not None:
        _write_json(report, result)
    return result


def render_report(
    quantize_report: PathOrUri,
    out: PathOrUri,
    *,
    validation: PathOrUri | None = None,
    benchmark_report: PathOrUri | None = None,
    inspect_report: PathOrUri | None = None,
    stats: PathOrUri | None = None,
    title: str = "lowprec INT8 report",
) -> Path:
    """The JSON reports of one model as one self-contained HTML page (no scripts, no network)."""
    from .report import quantize_html

    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        def read(model_cls, path):
            return None if path is None else model_cls.model_validate_json(Path(localize(path, tmp)).read_text())

        html = quantize_html(
            read(QuantizeReport, quantize_report),
            validation=read(ValidationReport, validation),
            benchmark=read(_bench.BenchmarkReport, benchmark_report),
            layers=read(InspectReport, inspect_report),
            stats=load_statistics(localize(stats, tmp)) if stats is not None else None,
            title=title,
        )
    return _write_text(out, html)


def benchmark(
    fp32: PathOrUri,
    int8: PathOrUri,
    *,
    config: BenchmarkConfig = BenchmarkConfig(),
    data: PathOrUri | None = None,
    report: PathOrUri | None = None,
) -> _bench.BenchmarkReport:
    """Latency of FP32 and INT8, interleaved in this process, in `config.runtime`; sample rows
    from `data` if given."""
    check_runtime(config.runtime)
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        reference, candidate = _load_pair(fp32, int8, tmp)
        specs = input_specs(reference.proto)
        sample = next(iter_feeds(localize(data, tmp), specs, batch_size=1)) if data is not None else None
        result = _bench.run(reference, candidate, specs, config, sample=sample)
    if report is not None:
        _write_json(report, result)
    return result


def publish(
    int8: PathOrUri,
    registry_uri: str,
    name: str,
    *,
    source: PathOrUri | None = None,
    attach: Sequence[PathOrUri] | Mapping[str, PathOrUri] = (),
) -> tuple[str, registry.Manifest]:
    """Push the INT8 model and attachments (files, or folders of them) to the registry.

    A sequence keeps each attachment's own name; a mapping names its place in the version.
    """
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        int8_path = localize(int8, tmp)
        model = load_model(int8_path)
        meta = {p.key: p.value for p in model.proto.metadata_props}
        source_sha = meta.get(f"{META_PREFIX}source_sha256")
        if source is not None:
            actual = load_model(localize(source, tmp)).sha256
            if source_sha is not None and actual != source_sha:
                raise ConfigError(
                    f"{int8} was quantized from a model with sha256 {source_sha[:12]}…, not from {source} ({actual[:12]}…)"
                )
            source_sha = actual
        config = json.loads(meta.get(f"{META_PREFIX}config", "{}"))
        files = {"model.onnx": Path(int8_path)}
        files.update({location: Path(int8_path).parent / location for location in model.data_files})
        named = attach.items() if isinstance(attach, Mapping) else ((None, item) for item in attach)
        for key, item in named:
            files.update(_attachment(localize(item, tmp), key))
        return registry.publish(
            files,
            registry_uri,
            name,
            source_uri=str(source) if source is not None else None,
            source_sha256=source_sha or model.sha256,
            config=config,
        )


def fetch(version_uri: str, destination: PathOrUri, *, revision: str | None = None) -> registry.Manifest:
    return registry.fetch(version_uri, destination, revision=revision)


def _collect(
    loaded: LoadedModel, prepared: onnx.ModelProto, data, config: CalibrationConfig, target: str, *, serving: QuantConfig | None = None
) -> Statistics:
    """`serving`: the one config the statistics are for (quantize calibrating in the same call);
    None: statistics for every config (calibrate's stats file)."""
    feeds = iter_feeds(data, input_specs(prepared), batch_size=config.batch_size, max_samples=config.max_samples)
    return collect(prepared, feeds, statistic_requests(prepared, target, config=serving), model_sha256=loaded.sha256)


def _load_pair(fp32: PathOrUri, int8: PathOrUri, tmp: str) -> tuple[LoadedModel, LoadedModel]:
    return load_model(localize(fp32, tmp)), load_model(localize(int8, tmp))


def _local_data(data, tmp: str):
    if isinstance(data, (str, os.PathLike)):
        return localize(data, tmp)
    return data


def _loads(path: str) -> None:
    runtime.session(path, threads=1)


def _stamp(model: onnx.ModelProto, source_sha256: str, config: QuantConfig) -> None:
    """Lineage travels inside the INT8 model: its source and the config that made it."""
    entries = {
        "source_sha256": source_sha256,
        "config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "version": __version__,
    }
    kept = [p for p in model.metadata_props if not p.key.startswith(META_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in sorted(entries.items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = f"{META_PREFIX}{key}", value


def _attachment(path: Path, key: str | None) -> dict[str, Path]:
    if path.is_file():
        return {key or f"attachments/{path.name}": path}
    if path.is_dir():
        return {f"{key or path.name}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()}
    raise ConfigError(f"cannot attach {path}: no such file or folder")


def _write_json(path: PathOrUri, report: BaseModel) -> None:
    _write_text(path, report.model_dump_json(indent=1))


def _write_text(path: PathOrUri, text: str) -> Path:
    """Written beside the target, then renamed: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
