"""The public operations: each takes paths or URIs, composes the modules below, returns a report.

No computation lives here; every step is a call into a module with one job.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from . import _lineage as lineage, _runtime as runtime
from ._calibration.collect import collect
from ._calibration.health import check as calibration_health
from ._calibration.stats import Statistics, load_statistics
from ._config import AccuracyBudget, BenchmarkConfig, CalibrationConfig, QuantConfig
from ._data import Feed, concat, fixed_batch, input_specs, iter_feeds, load_labels, single_samples, stackable
from ._errors import ConfigError, DataError, GateFailed, ModelError
from ._graph import shown_sizes
from ._model_io import InputShapes, LoadedModel, at_input_sizes_of, load_model, model_bytes, prepare, save_model
from ._ops import TARGETS
from ._quantize.default import quantize_model
from ._quantize.plan import QuantPlan
from ._quantize.planner import statistic_requests
from ._records import Record
from ._reports import BenchmarkReport, CalibrationWarning, InspectReport, QuantizeReport, ValidationReport
from ._runtime import check_runtime
from ._storage import localize, write_text
from ._struct import Struct

if TYPE_CHECKING:
    from ._metrics import Metric
    from ._registry import Manifest

# The searches, the registry, the benchmark, validation and the per-layer analysis are imported
# by the operations that use them: a plain quantize (0.3 s on a small model, most of it start-up)
# does not pay for loading them.

log = logging.getLogger(__name__)

PathOrUri = str | os.PathLike[str]


def calibrate(
    model: PathOrUri,
    data: PathOrUri | Iterable[Mapping[str, np.ndarray]],
    out_dir: PathOrUri,
    *,
    config: CalibrationConfig = CalibrationConfig(),
    target: str = "cpu",
    input_shapes: InputShapes | None = None,
) -> Statistics:
    """One streaming pass over `data`; writes stats.json + stats.npz into out_dir.
    `input_shapes`: sizes fixed on the inputs first, as QuantConfig.input_shapes."""
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        loaded = load_model(localize(model, tmp))
        prepared = prepare(loaded.proto, TARGETS[target].runtime, input_shapes)
        _check_sized(prepared, input_shapes)
        runtime.check_model(prepared, TARGETS[target].runtime)
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
    tune: str = "none",
    tune_threads: int = 1,
    tune_batch: int = 1,
) -> QuantizeReport:
    """FP32 model -> INT8 QDQ model at `out`; calibrates from `data` unless `stats` is given.

    `tune="latency"` runs the latency search (see _tuning): plans at several reduction floors,
    timed in the target's runtime on this machine at `tune_threads` threads and compared with
    FP32 on samples of the evaluation (else calibration) data, `tune_batch` to a request (the
    batch the model is served at: a placement fastest at batch 1 can trail at 8); the fastest within the default's
    output error is kept, and the report lists every candidate. With `accuracy` too, the budget
    is the rule: the fastest placement that meets it on `eval_data` is kept, and the search over
    float layers starts from it.

    `inspect_samples` > 0 adds the per-layer error analysis (see `inspect`) over that many
    samples of the evaluation data, or of the calibration data when there is none; `html`
    writes the report as a self-contained page (with range histograms of the worst layers).

    With `accuracy`, runs the accuracy-aware search on `eval_data` (and `labels`): layers go
    back to float until every metric is within its budget. `work_dir` keeps statistics, the
    FP32 reference and a journal of every evaluation, so a killed run resumes where it stopped.
    A budget that cannot be met, or an INT8 model slower than FP32, raises GateFailed after
    the model and report are written."""
    started = time.perf_counter()
    if accuracy is not None or tune != "none":
        from . import _accuracy as accuracy_search, _tuning as latency_search, _workdir as workdir
    if inspect_samples < 0:
        raise ConfigError(f"inspect_samples must be 0 (no per-layer analysis) or a positive sample count, not {inspect_samples}")
    _check_tuning(tune, tune_threads, tune_batch, accuracy, data, eval_data)
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        loaded = load_model(localize(model, tmp))
        prepared = prepare(loaded.proto, TARGETS[config.target].runtime, config.input_shapes)
        _check_sized(prepared, config.input_shapes)
        runtime.check_model(prepared, config.runtime)
        source = _local_data(data, tmp) if data is not None else None
        run = None
        if accuracy is not None:
            # Everything the search reads is checked before calibration spends any time.
            run = _search_run(loaded, config, accuracy, eval_data, labels, work_dir, tmp, tune, tune_batch)
            stats = stats if stats is not None else workdir.saved_stats(run.work)  # a resumed run calibrated before
        # The latency search plans at every floor, each with every weightless op the runtime runs
        # on integers. With data it can read again (and no budget, whose resumable work dir keeps
        # one statistics file), calibrate for the default alone: the search calibrates other
        # candidates' tensors only as far as they need them, and the one it keeps over exactly
        # its own, so the kept model is the one its config makes without a search, to the byte.
        # Else for the lowest floor (the most layers).
        replay = _replay(prepared, source, calibration)
        lazy = tune == "latency" and run is None and stats is None and replay is not None
        more = _calibrator(loaded, prepared, source, calibration) if lazy else None
        calibrated_for = config
        if tune == "latency":
            calibrated_for = config if more is not None else config.model_copy(update={"min_reduction": 0, "integer_ops": "all"})
        statistics = _statistics(loaded, prepared, stats, source, calibration, calibrated_for, tmp)
        search = tuning = evaluator = None
        if run is not None:
            if workdir.saved_stats(run.work) is None:
                statistics.save(run.work / workdir.STATS)
            evaluator = accuracy_search.evaluator(prepared, config.runtime, run.metrics, _local_data(eval_data, tmp), run.labels, run.work)
        if tune == "latency":
            # With a budget, the latency search keeps the fastest placement within it, and the
            # search over float layers starts there; a resumed run reads what it chose.
            saved = workdir.saved_tuning(run.work) if run is not None else None
            if saved is not None:
                tuning, config = saved
            else:
                int8, plan, tuning, config, statistics = latency_search.search(
                    prepared, statistics, config,
                    _tuning_samples(prepared, eval_data if eval_data is not None else source, tmp, tune_batch),
                    threads=tune_threads, batch=tune_batch, replay=replay,
                    accept=accuracy_search.within_budget(evaluator, run.metrics, accuracy) if run is not None else None,
                    calibrate=more, spent=time.perf_counter() - started)
                if run is not None:
                    workdir.save_tuning(run.work, tuning, config)
        elif run is None:
            int8, plan = quantize_model(prepared, statistics, config, feeds=replay)
        if run is not None:
            int8, plan, search, config = accuracy_search.run(prepared, statistics, config, accuracy, run.metrics, evaluator, run.work)
        warnings = _calibration_warnings(prepared, statistics, plan, config)
        _warn_if_nothing_quantized(plan)
        layers = None
        if inspect_samples > 0:
            layers = _inspect_in_run(prepared, int8, eval_data if eval_data is not None else source, inspect_samples, tmp)
        lineage.stamp(int8, loaded.sha256, config)
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
        tuning=tuning,
        calibration_warnings=warnings,
        layers=layers,
    )
    if report is not None:
        _write_json(report, result)
    if html is not None:
        from ._render import quantize_html

        write_text(html, quantize_html(result, stats=statistics))
    if search is not None:
        accuracy_search.gate(search, accuracy.min_speedup)
    return result


TUNING = ("none", "latency")


def _check_tuning(tune: str, threads: int, batch: int, accuracy, data, eval_data) -> None:
    if tune not in TUNING:
        raise ConfigError(f"unknown tuning {tune!r}; expected one of: {', '.join(TUNING)}")
    if tune == "none":
        return
    if threads < 1:
        raise ConfigError(f"tune_threads must be a positive thread count, not {threads}")
    if batch < 1:
        raise ConfigError(f"tune_batch must be a positive batch size, not {batch}")
    samples = eval_data if eval_data is not None else data
    if samples is None:
        raise ConfigError("--tune latency measures the candidates on data: give --data (or --eval)")
    if isinstance(samples, Iterator):
        raise ConfigError("--tune latency reads its data after calibration: pass a path or a list of feeds, not an iterator")


class _SearchRun(Struct):
    work: Path
    metrics: list[Metric]
    labels: np.ndarray | None


def _search_run(loaded: LoadedModel, config: QuantConfig, accuracy: AccuracyBudget, eval_data, labels, work_dir, tmp: str,
                tune: str, tune_batch: int = 1) -> _SearchRun:
    """The accuracy-aware search's inputs, checked, and its work dir claimed for this run."""
    from . import _workdir as workdir
    from ._metrics import resolve_metric

    if eval_data is None:
        raise ConfigError("accuracy-aware quantization needs evaluation data (--eval)")
    if isinstance(eval_data, Iterator):
        raise ConfigError("evaluation data is read many times: pass a path or a list of feeds, not an iterator")
    if config.bias_correction == "full":
        raise ConfigError("bias_correction 'full' re-reads the calibration data for every model; the accuracy-aware search uses 'fast' or 'none'")
    check_runtime(config.runtime)  # every candidate is scored and timed where it will be served
    metrics = [resolve_metric(b.metric) for b in accuracy.metrics]
    label_array = load_labels(localize(labels, tmp)) if isinstance(labels, (str, os.PathLike)) else labels
    work = Path(work_dir) if work_dir is not None else Path(tmp) / "work"
    workdir.claim(work, loaded.sha256, config, accuracy, eval_data, labels, tune=tune, tune_batch=tune_batch)
    return _SearchRun(work, metrics, label_array)


def _tuning_samples(prepared: onnx.ModelProto, data, tmp: str, batch: int = 1) -> list[Feed]:
    """The latency search's samples from the evaluation (else calibration) data: SAMPLES feeds of
    `batch` samples each. Where the data holds fewer than SAMPLES x batch samples, the batches
    take them again in turn (a batch's speed does not depend on which samples fill it)."""
    from . import _tuning as latency_search

    specs = input_specs(prepared)
    fixed = fixed_batch(specs)
    if batch > 1 and fixed is not None:
        if fixed != batch:
            raise ConfigError(f"tune_batch {batch}: the model fixes its batch at {fixed} (input {specs[0].name!r} is "
                              f"{shown_sizes(specs[0].shape)}); time it at that batch, or export it with a free batch axis")
        batch = 1  # its feeds come at the model's own batch
    feeds = iter_feeds(_local_data(data, tmp), specs, batch_size=1, max_samples=latency_search.SAMPLES * batch)
    rows = single_samples(feeds, specs, latency_search.SAMPLES * batch)
    if batch == 1:
        return rows
    if len(rows) < batch:
        raise DataError(f"tune_batch {batch}: the data holds {len(rows)} sample(s), fewer than one batch")
    if not stackable(rows, specs):
        raise DataError(f"tune_batch {batch}: the data's samples differ in size beyond the batch axis (variable-length "
                        "inputs), so they cannot be stacked into one request; time them one at a time (tune_batch 1)")
    return [concat([rows[(index * batch + row) % len(rows)] for row in range(batch)], specs)
            for index in range(latency_search.SAMPLES)]


def _statistics(loaded: LoadedModel, prepared: onnx.ModelProto, stats, source, calibration: CalibrationConfig,
                config: QuantConfig, tmp: str) -> Statistics:
    """The statistics file given, else one calibration pass over `source` for this config."""
    if stats is not None:
        return load_statistics(localize(stats, tmp), model_sha256=loaded.sha256)
    if source is not None:
        return _collect(loaded, prepared, source, calibration, config.target, serving=config)
    raise ConfigError("quantize needs calibration data (--data) or statistics (--stats)")


def _calibrator(loaded: LoadedModel, prepared: onnx.ModelProto, source, calibration: CalibrationConfig):
    """calibrate(requests, n): statistics of more tensors over the first n samples of the
    calibration data (None: all of them), read again (see _replay); as the first pass computed them."""

    def calibrate(requests: dict[str, int | None], samples: int | None) -> Statistics:
        cap = calibration.max_samples if samples is None else min(samples, calibration.max_samples or samples)
        feeds = _replay(prepared, source, calibration.model_copy(update={"max_samples": cap}))()
        return collect(prepared, feeds, requests, model_sha256=loaded.sha256)

    return calibrate


def _replay(prepared: onnx.ModelProto, source, calibration: CalibrationConfig):
    """The calibration data read again (full bias correction), where it can be: a path or a list."""
    if source is None or isinstance(source, Iterator):
        return None
    specs = input_specs(prepared)
    return lambda: iter_feeds(source, specs, batch_size=calibration.batch_size, max_samples=calibration.max_samples)


def _calibration_warnings(prepared: onnx.ModelProto, statistics: Statistics, plan: QuantPlan, config: QuantConfig) -> list[CalibrationWarning]:
    # Tensors the calibration pass observed (SmoothQuant's scaled copies take derived statistics).
    observed = {out for node in prepared.graph.node for out in node.output} | {i.name for i in prepared.graph.input}
    warnings = calibration_health(statistics, [a.tensor for a in plan.activations if a.tensor in observed], config.activation_range)
    for warning in warnings:
        log.warning("calibration: %s%s", f"{warning.tensor}: " if warning.tensor else "", warning.message)
    return warnings


def _inspect_in_run(prepared: onnx.ModelProto, int8: onnx.ModelProto, data, samples: int, tmp: str) -> InspectReport | None:
    from ._layer_error import inspect_layers

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
    from ._validate import compare

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
    from ._layer_error import inspect_layers

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
    from ._render import quantize_html

    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        def read(model_cls, path):
            return None if path is None else model_cls.model_validate_json(Path(localize(path, tmp)).read_text())

        html = quantize_html(
            read(QuantizeReport, quantize_report),
            validation=read(ValidationReport, validation),
            benchmark=read(BenchmarkReport, benchmark_report),
            layers=read(InspectReport, inspect_report),
            stats=load_statistics(localize(stats, tmp)) if stats is not None else None,
            title=title,
        )
    return write_text(out, html)


def benchmark(
    fp32: PathOrUri,
    int8: PathOrUri,
    *,
    config: BenchmarkConfig = BenchmarkConfig(),
    data: PathOrUri | None = None,
    report: PathOrUri | None = None,
) -> BenchmarkReport:
    """Latency of FP32 and INT8, interleaved in this process, in `config.runtime`; sample rows
    from `data` if given."""
    from . import _benchmark as _bench

    check_runtime(config.runtime)
    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        reference, candidate = _load_pair(fp32, int8, tmp)
        specs = input_specs(reference.proto)
        config = _bench.fit_batches(config, specs)
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
) -> tuple[str, Manifest]:
    """Push the INT8 model and attachments (files, or folders of them) to the registry.

    A sequence keeps each attachment's own name; a mapping names its place in the version.
    """
    from . import _registry as registry

    with tempfile.TemporaryDirectory(prefix="lowprec-") as tmp:
        int8_path = localize(int8, tmp)
        model = load_model(int8_path)
        source_sha, config = lineage.read(model.proto)
        if source is not None:
            actual = load_model(localize(source, tmp)).sha256
            if source_sha is not None and actual != source_sha:
                raise ConfigError(
                    f"{int8} was quantized from a model with sha256 {source_sha[:12]}…, not from {source} ({actual[:12]}…)"
                )
            source_sha = actual
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


def fetch(version_uri: str, destination: PathOrUri, *, revision: str | None = None) -> Manifest:
    from . import _registry as registry

    return registry.fetch(version_uri, destination, revision=revision)


def _collect(
    loaded: LoadedModel, prepared: onnx.ModelProto, data, config: CalibrationConfig, target: str, *, serving: QuantConfig | None = None
) -> Statistics:
    """`serving`: the one config the statistics are for (quantize calibrating in the same call);
    None: statistics for every config (calibrate's stats file)."""
    feeds = iter_feeds(data, input_specs(prepared), batch_size=config.batch_size, max_samples=config.max_samples)
    return collect(prepared, feeds, statistic_requests(prepared, target, config=serving), model_sha256=loaded.sha256)


def _load_pair(fp32: PathOrUri, int8: PathOrUri, tmp: str) -> tuple[LoadedModel, LoadedModel]:
    """FP32 and INT8, the FP32 model at the input sizes the INT8 model was quantized for
    (QuantConfig.input_shapes): both then run at the same sizes, where the runtime needs them."""
    reference, candidate = load_model(localize(fp32, tmp)), load_model(localize(int8, tmp))
    sized = at_input_sizes_of(reference.proto, candidate.proto)
    if sized is not None:
        path = Path(tmp) / "reference-sized" / reference.path.name
        save_model(sized, path, external_data=bool(reference.data_files) or None)
        data = path.parent / f"{path.name}.data"  # save_model's weights file, where it wrote one
        # Built here, not read back: the bytes are this process's own; its identity stays the source's.
        reference = LoadedModel(sized, reference.sha256, path, (data.name,) if data.exists() else ())
    runtime.probe_float16(reference.proto, reference.path)  # a float16 source: see _runtime
    return reference, candidate


def _warn_if_nothing_quantized(plan: QuantPlan) -> None:
    """An "INT8" model that computes as its source does passes any validation gate: say so,
    with the commonest reasons (a float64 model, an INT8 model given again)."""
    if plan.layers() or plan.all_tables():
        return
    reasons = Counter(plan.left_float().values()).most_common(2)
    why = "; ".join(f"{reason} ({count})" for reason, count in reasons) or "the model has no layer lowprec quantizes"
    log.warning("nothing was quantized, the INT8 model computes as its source does: %s", why)


def _local_data(data, tmp: str):
    if isinstance(data, (str, os.PathLike)):
        return localize(data, tmp)
    return data


def _check_sized(prepared: onnx.ModelProto, shapes: InputShapes | None) -> None:
    """With sizes fixed, that ONNX Runtime still loads the model (calibration runs in it): a
    branch of an If written for other sizes, one no call takes, can contradict them (silero
    VAD's default export holds an 8 kHz body for 288-sample calls beside its 16 kHz one)."""
    if not shapes:
        return
    try:
        runtime.session(prepared, threads=1, optimization="basic")  # its constant folding reads every branch
    except ModelError as err:
        listed = ", ".join(f"{name} {shown_sizes(dims)}" for name, dims in shapes.items())
        raise ModelError(f"with the input sizes fixed as given ({listed}): {err}. Sizes hold in every branch of an If, "
                         "including one written for other sizes that no call takes") from None


def _loads(path: str) -> None:
    runtime.session(path, threads=1)


def _attachment(path: Path, key: str | None) -> dict[str, Path]:
    if path.is_file():
        return {key or f"attachments/{path.name}": path}
    if path.is_dir():
        return {f"{key or path.name}/{p.relative_to(path)}": p for p in sorted(path.rglob("*")) if p.is_file()}
    raise ConfigError(f"cannot attach {path}: no such file or folder")


def _write_json(path: PathOrUri, report: Record) -> None:
    write_text(path, report.model_dump_json(indent=1))
