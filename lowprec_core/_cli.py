"""The `lowprec` command: one sub-command per public function, no logic of its own."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from . import _api
from ._config import (
    ACTIVATION_ESTIMATORS,
    PRESETS,
    WEIGHT_ESTIMATORS,
    AccuracyBudget,
    BenchmarkConfig,
    CalibrationConfig,
    RUNTIMES,
    MetricBudget,
    QuantConfig,
    build,
    parse_input_shapes,
    runtime_target,
)
from ._errors import ConfigError, GateFailed, LowprecError
from ._metrics import METRICS, resolve_metric
from ._ops import TARGETS
from ._struct import Struct

DEMO = Path(__file__).resolve().parent / "_demo"
HTML_INSPECT_SAMPLES = 32
HOME = Path(os.environ.get("LOWPREC_HOME", Path.home() / ".local" / "share" / "lowprec"))
DEFAULT_REGISTRY = HOME / "registry"
LOG_DIR = HOME / "logs"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,8; got {text!r}") from None


_INPUT_SHAPE_HELP = ("repeatable: fix an input's sizes as the runtime will be fed them, NAME=SIZES, one size per axis, "
                     "a number or a name for a size left free (e.g. input=batch,576); OpenVINO needs them where a size "
                     "decides a shape-dependent If")


class _Formatter(argparse.HelpFormatter):
    """Every option's help line ends with its default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, [], "", argparse.SUPPRESS) and not action.required:
            shown = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else "%(default)s"
            text += f" (default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


# One line of help for the arguments many sub-commands share, by destination.
_SHARED_HELP = {
    "model": "the FP32 ONNX model (path or s3:// URI)",
    "fp32": "the FP32 ONNX model (path or s3:// URI)",
    "int8": "the INT8 ONNX model (path or s3:// URI)",
    "uri": "a published version: REGISTRY/NAME/VERSION",
    "out": "where to write the result",
    "data": "data to run: .npz, folder of .npz, or s3:// URI",
    "batch_size": "samples per inference run while calibrating",
    "max_samples": "read at most this many samples of the data",
    "target": f"hardware target, one of: {', '.join(sorted(TARGETS))}",
    "smooth_quant_alpha": "SmoothQuant's migration strength (0: none, 1: all of the activations' range into the weights)",
    "drop_type": "absolute: FP32 score - INT8 score; relative: that over the FP32 score",
    "title": "the page's title",
    "max_drop": "largest allowed drop of the metric",
    "report": "write the report (JSON) here",
    "batch": "batch sizes, comma-separated",
    "threads": "intra-op thread counts, comma-separated",
    "repeats": "timed runs per batch size and model",
    "name": "the model's name in the registry",
    "attach": "files or folders to publish with the model (each keeps its name)",
    "calib": "calibration data (.npz, folder of .npz, or s3:// URI)",
    "eval": "evaluation data (.npz, folder of .npz, or s3:// URI)",
    "registry": "registry: a folder, file:// or s3://bucket/prefix",
    "labels": ".npy of labels, one per evaluation sample",
    "metric": "validation metric",
    "preset": "quantization preset",
    "runner": "subprocess: tasks run with this Python; docker: in the component image",
    "experiment": "the KFP experiment to file the run under",
    "namespace": "the Kubernetes namespace (multi-user Kubeflow)",
    "run_name": "a name for the run (default: the pipeline's name and the time)",
    "runtime": f"the runtime that serves the model, where validate and benchmark run both models: {', '.join(RUNTIMES)}",
}
_METRIC_HELP = (f"one of {', '.join(METRICS)}, topK (these score the model's first output), or a plugin "
                "package.module:function or ./file.py:function, which reads every output "
                "(plugin code runs in this process: name only code you trust)")


def _fill_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _fill_help(child)
        elif action.help is None:
            action.help = _SHARED_HELP.get(action.dest)
    return parser


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv`, only the sub-commands it names get their arguments
    (the others keep their name and help line): building all of them is 6 ms of every run's
    start-up, which on a small model is 2 % of the command."""
    parser = _Parser(prog="lowprec", description="Post-training INT8 quantization of ONNX models.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    _add_commands(parser, COMMANDS, "command", None if argv is None else set(argv))
    return _fill_help(parser)


def _add_commands(parser: argparse.ArgumentParser, commands: tuple[Command, ...], dest: str, named: set[str] | None) -> None:
    sub = parser.add_subparsers(dest=dest, required=True)
    for command in commands:
        child = sub.add_parser(command.name, help=command.help)
        if named is None or command.name in named:
            command.arguments(child) if command.run is not None else _add_commands(child, command.children, dest="action", named=named)
        if command.run is not None:
            child.set_defaults(run=command.run)


class Command(Struct):
    """A sub-command: its arguments, and the function that runs it (returns the exit code)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None
    run: Callable[[argparse.Namespace], int | None] | None  # None: one of `children` runs
    children: tuple[Command, ...] = ()


# --- calibrate ---------------------------------------------------------------------------------

def _calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--data", required=True, help=".npz, folder of .npz, or s3:// URI")
    p.add_argument("--out", required=True, help="statistics folder to write")
    p.add_argument("--batch-size", type=int, default=CalibrationConfig().batch_size)
    p.add_argument("--max-samples", type=int)
    p.add_argument("--target", help=f"one of: {', '.join(TARGETS)} (default: the runtime's)")
    p.add_argument("--runtime", help=f"the runtime the model will be quantized for: {', '.join(RUNTIMES)} (default: the target's, else onnxruntime)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=SIZES", help=_INPUT_SHAPE_HELP + " (give quantize the same)")


def _calibrate(args: argparse.Namespace) -> None:
    stats = _api.calibrate(
        args.model, args.data, args.out,
        config=build(CalibrationConfig, batch_size=args.batch_size, max_samples=args.max_samples),
        target=runtime_target(args.runtime, args.target),
        input_shapes=parse_input_shapes(args.input_shape),
    )
    print(f"statistics for {len(stats.tensors)} tensors over {stats.samples} samples -> {args.out}")


# --- quantize ----------------------------------------------------------------------------------

def _quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("--data", help="calibration data (not needed with --stats)")
    p.add_argument("--out", required=True)
    p.add_argument("--stats", help="statistics folder from `lowprec calibrate`")
    p.add_argument("--preset", default=QuantConfig().preset, help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--target", help=f"one of: {', '.join(TARGETS)} (default: the runtime's for this CPU: {QuantConfig().target} for onnxruntime; openvino, or openvino-avx2 on a CPU without VNNI or AMX)")
    p.add_argument("--runtime", help=f"the runtime that serves the INT8 model, which decides where quantizers go: {', '.join(RUNTIMES)} "
                                     "(default: the target's, else onnxruntime)")
    p.add_argument("--ignore", nargs="+", default=[], metavar="NAME_OR_OPTYPE", help="keep these nodes, or every node of these op types, in float (re:PATTERN for a regex over node names; node:NAME for a node named like an op type)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=SIZES",
                   help=_INPUT_SHAPE_HELP + "; validate and benchmark run the FP32 model at them too")
    p.add_argument("--report", help="write the quantization report (JSON)")
    p.add_argument("--html", help="write the report as one self-contained HTML page")
    p.add_argument("--inspect-samples", type=int, metavar="N",
                   help="per-layer error analysis over N samples of --eval (else --data) data "
                        f"(default: {HTML_INSPECT_SAMPLES} with --html, which shows it, else 0: `lowprec inspect` does it later)")
    p.add_argument("--activation-range", default=QuantConfig().activation_range, help=f"one of: {', '.join(ACTIVATION_ESTIMATORS)}")
    p.add_argument("--weight-range", default=QuantConfig().weight_range, help=f"one of: {', '.join(WEIGHT_ESTIMATORS)}")
    p.add_argument("--bias-correction", default=QuantConfig().bias_correction, choices=["none", "fast", "full"],
                   help="full runs the calibration data once more through the INT8 model (needs --data)")
    p.add_argument("--model-type", default=QuantConfig().model_type, choices=["auto", "cnn", "transformer"],
                   help="transformer adds SmoothQuant on MatMul/Gemm inputs (auto: when the graph has attention, a Softmax a MatMul reads, or LayerNormalization)")
    p.add_argument("--smooth-quant-alpha", type=float, default=QuantConfig().smooth_quant_alpha)
    p.add_argument("--channel-alignment", action="store_true", help="POT's activation channel alignment for linear Conv->Conv pairs")
    p.add_argument("--min-reduction", type=int, metavar="N",
                   help="keep float the layers whose outputs sum fewer than N products (default: the target's; 0 quantizes all)")
    p.add_argument("--integer-ops", default=QuantConfig().integer_ops, choices=["target", "all", "none"],
                   help="run weightless ops (Add, Mul, Concat, pools, Sigmoid, Resize) on integers between quantized layers: "
                        "as the target row says, every one the runtime has an integer kernel for, or none")
    p.add_argument("--float-precision", default=QuantConfig().float_precision, choices=["default", "f32"],
                   help="the precision OpenVINO runs the INT8 model's float layers at: the plugin's default (bf16 on CPUs with "
                        "AVX512_BF16 or AMX) or f32; stamped into the model, honoured by lowprec's OpenVINO sessions, and to be set "
                        "as INFERENCE_PRECISION_HINT where it is served. --tune latency tries f32 itself where the default is bf16")
    p.add_argument("--tune", default="none", choices=["none", "latency"],
                   help="latency: time plans at several reduction floors in the runtime, on this machine, and keep the fastest "
                        "within the default's output error (costs a few plans and timings; the report lists them)")
    p.add_argument("--tune-threads", type=int, default=1, metavar="N", help="threads the latency search times with (the serving pod's)")
    p.add_argument("--tune-batch", type=int, default=1, metavar="N",
                   help="samples to a request the latency search times (the batch the model is served at)")
    p.add_argument("--batch-size", type=int, default=CalibrationConfig().batch_size)
    p.add_argument("--max-samples", type=int)
    aa = p.add_argument_group("accuracy-aware (with --eval): revert layers to float until every metric is within budget")
    aa.add_argument("--eval", help="evaluation data (.npz, folder of .npz, or s3:// URI)")
    aa.add_argument("--labels", help=".npy of labels, one per evaluation sample (integers or strings)")
    aa.add_argument("--metric", action="append", default=[], metavar="NAME[=MAX_DROP]",
                    help=f"repeatable; {_METRIC_HELP}")
    aa.add_argument("--max-drop", type=float, default=0.01, help="budget for each --metric without its own")
    aa.add_argument("--drop-type", default="absolute", choices=["absolute", "relative"])
    aa.add_argument("--max-iterations", type=int, default=50, help="most layers (or groups) reverted")
    aa.add_argument("--min-speedup", type=float, default=1.0, help="fail when the result runs slower than this x FP32 at batch 1 (0: report only)")
    aa.add_argument("--work-dir", help="keeps statistics, the FP32 reference and a journal: a rerun resumes")


def _quantize(args: argparse.Namespace) -> None:
    config = build(
        QuantConfig, preset=args.preset, target=runtime_target(args.runtime, args.target), ignore=tuple(args.ignore),
        activation_range=args.activation_range, weight_range=args.weight_range, bias_correction=args.bias_correction,
        model_type=args.model_type, smooth_quant_alpha=args.smooth_quant_alpha, channel_alignment=args.channel_alignment,
        min_reduction=args.min_reduction, integer_ops=args.integer_ops, float_precision=args.float_precision,
        input_shapes=parse_input_shapes(args.input_shape),
    )
    calibration = build(CalibrationConfig, batch_size=args.batch_size, max_samples=args.max_samples)
    result = _api.quantize(
        args.model, args.out, data=args.data, stats=args.stats, config=config, calibration=calibration, report=args.report,
        accuracy=_accuracy_budget(args), eval_data=args.eval, labels=args.labels, work_dir=args.work_dir,
        inspect_samples=_inspect_samples(args), html=args.html, tune=args.tune, tune_threads=args.tune_threads, tune_batch=args.tune_batch,
    )
    if result.accuracy is not None:
        search = result.accuracy
        print(f"accuracy-aware: {search.reason}; {len(search.float_layers)} layers float after {search.full_passes} full passes")
    if result.tuning is not None:
        tuning = result.tuning
        print(f"latency search ({tuning.runtime}, {tuning.threads} thread(s), batch {tuning.batch}, {tuning.seconds:.1f} s): {tuning.reason}")
    print(
        f"{args.out}: {len(result.plan.layers())} nodes quantized, {len(result.plan.left_float())} left in float"
        f"{f', {len(tables)} embedding table(s) in 8 bits' if (tables := result.plan.all_tables()) else ''}; "
        f"{result.int8_bytes / 1e6:.2f} MB ({result.int8_bytes / result.fp32_bytes:.0%} of FP32) in {result.seconds:.1f} s"
    )
    precision = result.plan.config.float_precision  # the search's choice, where it ran
    if precision != "default" and config.runtime == "openvino":
        print(f"serve it in OpenVINO with INFERENCE_PRECISION_HINT={precision}: its float layers are meant to run at {precision} "
              "(stamped in the model; lowprec's validate and benchmark honour it)")
    if result.layers is not None and result.layers.layers:
        worst = ", ".join(f"{r.layer} {r.own_sqnr_db:.1f} dB" for r in result.layers.layers[:3])
        print(f"worst layers (own SQNR over {result.layers.samples} samples): {worst}")
    if args.html:
        print(f"report -> {args.html}")


def _inspect_samples(args: argparse.Namespace) -> int:
    """The per-layer analysis costs more than quantizing (PP-OCRv4 det: 1.4 s -> 5.8 s, 0.33 ->
    0.75 GB): it runs where its result is shown (--html) or asked for, not by default."""
    if args.inspect_samples is not None:
        return args.inspect_samples
    return HTML_INSPECT_SAMPLES if args.html else 0


def _accuracy_budget(args: argparse.Namespace) -> AccuracyBudget | None:
    if args.eval is None:
        if args.metric:
            raise ConfigError("--metric needs --eval (the data the accuracy-aware search validates on)")
        return None
    if not args.metric:
        raise ConfigError("--eval needs at least one --metric NAME[=MAX_DROP]")
    budgets = []
    for entry in args.metric:
        name, _, limit = entry.rpartition("=") if "=" in entry else (entry, "", "")
        try:
            max_drop = float(limit) if limit else args.max_drop
        except ValueError:
            raise ConfigError(f"--metric {entry!r}: the budget after '=' must be a number, e.g. cosine=0.005") from None
        resolve_metric(name)  # unknown names fail here, before calibration
        budgets.append(MetricBudget(metric=name, max_drop=max_drop))
    return build(AccuracyBudget, metrics=tuple(budgets), drop_type=args.drop_type, max_iterations=args.max_iterations,
                 min_speedup=args.min_speedup)


# --- inspect, report, validate, benchmark -------------------------------------------------------

def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--data", required=True)
    p.add_argument("--top", type=int, default=10, help="rows to print (the report holds all)")
    p.add_argument("--max-samples", type=int)
    p.add_argument("--report", help="write every layer (JSON)")


def _inspect(args: argparse.Namespace) -> None:
    result = _api.inspect(args.fp32, args.int8, args.data, max_samples=args.max_samples, report=args.report)
    print(f"{len(result.layers)} quantized layers over {result.samples} samples, worst first (SQNR in dB):")
    print(f"{'layer':<48} {'own':>7} {'output':>7} {'weight':>7} {'input':>7}  action")
    show = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for row in result.layers[: args.top]:
        print(f"{row.layer[-48:]:<48} {show(row.own_sqnr_db):>7} {show(row.output_sqnr_db):>7} "
              f"{show(row.weight_sqnr_db):>7} {show(row.input_sqnr_db):>7}  {row.action}")


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", required=True, help="report from `quantize --report`")
    p.add_argument("--validation", help="report from `validate --report`")
    p.add_argument("--benchmark", help="report from `benchmark --report`")
    p.add_argument("--inspect", help="report from `inspect --report`")
    p.add_argument("--stats", help="statistics folder (histograms of the worst layers)")
    p.add_argument("--title", default="lowprec INT8 report")
    p.add_argument("--out", required=True, help="HTML file to write")


def _report(args: argparse.Namespace) -> None:
    path = _api.render_report(args.quantize, args.out, validation=args.validation, benchmark_report=args.benchmark,
                              inspect_report=args.inspect, stats=args.stats, title=args.title)
    print(f"report -> {path}")


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--data", required=True)
    p.add_argument("--labels", help=".npy of class ids (for top1)")
    p.add_argument("--metric", required=True, help=_METRIC_HELP)
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--report")
    p.add_argument("--runtime", default="onnxruntime")


def _validate(args: argparse.Namespace) -> int:
    result = _api.validate(
        args.fp32, args.int8, args.data, metric=args.metric, max_drop=args.max_drop, labels=args.labels, report=args.report, gate=False,
        runtime=args.runtime,
    )
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict}: {result.metric} FP32 {result.reference_score:.4f}, INT8 {result.candidate_score:.4f}, drop {result.drop:.4f} (max {result.max_drop})")
    if result.outputs > 1 and (result.metric in METRICS or re.fullmatch(r"top\d+", result.metric)):
        print(f"scored on output {result.output!r}, the first of the models' {result.outputs}; "
              "a plugin metric (--metric module:function) reads them all")
    if result.default_score is not None:
        print(f"FP32 at the runtime's own default precision ({result.default_precision}): {result.metric} {result.default_score:.4f}")
    return 0 if result.passed else GateFailed.exit_code


def _benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--batch", type=_int_list, default=BenchmarkConfig().batches)
    p.add_argument("--threads", type=_int_list, default=BenchmarkConfig().threads)
    p.add_argument("--repeats", type=int, default=BenchmarkConfig().repeats)
    p.add_argument("--data", help="take input rows from this data (needed for symbolic non-batch sizes)")
    p.add_argument("--report")
    p.add_argument("--runtime", default=BenchmarkConfig().runtime,
                   help=f"where both models run: {', '.join(RUNTIMES)} (openvino also times the FP32 model at its own default precision, bf16 where the CPU has it)")


def _benchmark(args: argparse.Namespace) -> None:
    from ._render import markdown

    config = build(BenchmarkConfig, batches=args.batch, threads=args.threads, repeats=args.repeats, runtime=args.runtime)
    print(markdown(_api.benchmark(args.fp32, args.int8, config=config, data=args.data, report=args.report)), end="")


# --- the registry ------------------------------------------------------------------------------

def _publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("int8")
    p.add_argument("--registry", required=True, help="file:// path or s3://bucket/prefix")
    p.add_argument("--name", required=True)
    p.add_argument("--source", help="the FP32 model it came from (recorded and checked)")
    p.add_argument("--attach", nargs="+", default=[], metavar="FILE")


def _publish(args: argparse.Namespace) -> None:
    uri, manifest = _api.publish(args.int8, args.registry, args.name, source=args.source, attach=args.attach)
    print(f"published {len(manifest.files)} files -> {uri}")


def _fetch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("uri")
    p.add_argument("--out", required=True)
    p.add_argument("--revision", help="an earlier revision of the version (REGISTRY/NAME/VERSION/revisions/REV)")


def _fetch(args: argparse.Namespace) -> None:
    manifest = _api.fetch(args.uri, args.out, revision=args.revision)
    print(f"fetched {manifest.name} {manifest.version}: {len(manifest.files)} files verified -> {args.out}")


def _gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", required=True, help="file:// path or s3://bucket/prefix")
    p.add_argument("--name", help="only this model's versions")
    p.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS",
                   help="leave younger revisions alone: a publish may still be writing them")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")


def _gc(args: argparse.Namespace) -> None:
    from . import _registry as registry

    removed = registry.gc(args.registry, args.name, dry_run=args.dry_run, min_age_s=args.min_age)
    for uri in removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {uri}")
    print(f"{len(removed)} objects of incomplete revisions {'found' if args.dry_run else 'removed'}")


# --- pipeline ----------------------------------------------------------------------------------
# The pipelines are imported when one of these runs: the CLI composes the layers below it, and
# the other sub-commands do not pay for kfp.

def _compile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--pipeline", default="ptq", help="ptq or ptq_many")


def _compile(args: argparse.Namespace) -> None:
    from pipelines.run import compile_pipeline

    print(f"compiled -> {compile_pipeline(args.out, args.pipeline)}")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    for name in ("model", "calib", "eval", "registry", "name"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--labels", default="")
    p.add_argument("--metric", default="agreement")
    p.add_argument("--preset", default="mixed")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--batch", default="1,8")
    p.add_argument("--accuracy-aware", action="store_true", help="quantize with the accuracy-aware search on --eval against --metric/--max-drop")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--runner", default="subprocess", choices=["subprocess", "docker"],
                   help="docker: each step in the component image, through the Docker API at DOCKER_HOST")


def _run_one(args: argparse.Namespace) -> None:
    from pipelines.run import run_local

    _check_choices(args.metric, args.preset, args.runtime)
    run_local(
        runner=args.runner,
        model_uri=args.model, calib_uri=args.calib, eval_uri=args.eval, registry_uri=args.registry, name=args.name,
        preset=args.preset, metric=args.metric, labels_uri=args.labels, max_drop=args.max_drop, batches=args.batch,
        accuracy_aware=args.accuracy_aware, runtime=args.runtime,
    )


def _run_many_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", required=True, help="prefix holding NAME/model.onnx, calib.npz, eval.npz[, labels.npy]")
    p.add_argument("--registry", required=True)
    p.add_argument("--metric", default="agreement")
    p.add_argument("--preset", default="mixed")
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--batch", default="1,8")
    p.add_argument("--runner", default="subprocess", choices=["subprocess", "docker"])
    p.add_argument("--runtime", default="onnxruntime")


def _run_many(args: argparse.Namespace) -> None:
    from pipelines.run import run_local

    _check_choices(args.metric, args.preset, args.runtime)
    run_local(pipeline="ptq_many", runner=args.runner, models_prefix=args.models, registry_uri=args.registry,
              preset=args.preset, metric=args.metric, max_drop=args.max_drop, batches=args.batch, runtime=args.runtime)


def _submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the KFP API, e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888")
    p.add_argument("--pipeline", default="ptq", help="ptq or ptq_many")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter (repeat)")
    p.add_argument("--schedule", help="cron: 5 fields (min hour day month weekday) or KFP's 6 (seconds first)")
    p.add_argument("--experiment", default="lowprec")
    p.add_argument("--namespace")
    p.add_argument("--run-name")


def _submit(args: argparse.Namespace) -> None:
    from pipelines.run import submit, typed_arguments

    arguments = typed_arguments(args.pipeline, args.param)
    if args.pipeline == "ptq":
        _check_choices(str(arguments.get("metric", "agreement")), str(arguments.get("preset", "mixed")),
                       str(arguments.get("runtime", "onnxruntime")))
    ident = submit(args.host, pipeline=args.pipeline, arguments=arguments, schedule=args.schedule,
                   experiment=args.experiment, namespace=args.namespace, run_name=args.run_name)
    print(f"{'recurring run' if args.schedule else 'run'} {ident} of {args.pipeline} submitted to {args.host}")


def _check_choices(metric: str, preset: str, runtime: str = "onnxruntime") -> None:
    """Catch bad values before any task starts, not in the third container. (Whether a runtime is
    installed is the image's business: the local Python may not serve it.)"""
    resolve_metric(metric)
    build(QuantConfig, preset=preset)
    build(BenchmarkConfig, runtime=runtime)


PIPELINE_COMMANDS = (
    Command("compile", "write a pipeline's KFP YAML", _compile_arguments, _compile),
    Command("run", "run `ptq` on this machine with kfp's local runner", _run_arguments, _run_one),
    Command("run-many", "run `ptq_many` locally: every model under --models without a version in --registry", _run_many_arguments, _run_many),
    Command("submit", "submit a run, or a recurring run with --schedule, to a Kubeflow Pipelines API", _submit_arguments, _submit),
)


# --- demo --------------------------------------------------------------------------------------

def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", default=str(DEFAULT_REGISTRY))


COMMANDS = (
    Command("calibrate", "collect activation statistics in one streaming pass", _calibrate_arguments, _calibrate),
    Command("quantize", "FP32 ONNX -> INT8 QDQ ONNX", _quantize_arguments, _quantize),
    Command("inspect", "per-layer error of an INT8 model against its FP32 source, worst first", _inspect_arguments, _inspect),
    Command("report", "render the JSON reports of one model as a self-contained HTML page", _report_arguments, _report),
    Command("validate", "FP32 vs INT8 on evaluation data; exit 10 if the drop is too large", _validate_arguments, _validate),
    Command("benchmark", "latency and size, FP32 vs INT8, interleaved", _benchmark_arguments, _benchmark),
    Command("publish", "push an INT8 model and its files to a registry, manifest last", _publish_arguments, _publish),
    Command("fetch", "download a published version and verify its hashes", _fetch_arguments, _fetch),
    Command("gc", "remove what interrupted publishes left: objects of revisions that never completed", _gc_arguments, _gc),
    Command("pipeline", "compile, run or submit the Kubeflow pipelines", None, None, PIPELINE_COMMANDS),
    Command("demo", "run the whole pipeline on the bundled digit classifier", _demo_arguments, lambda args: _demo(args.registry)),
)


def _demo(registry_uri: str) -> int:
    from pipelines.run import run_local

    import json
    import tempfile
    import time

    from . import _registry as registry

    started = time.perf_counter()
    log = LOG_DIR / f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    print(f"running the ptq pipeline on the digit classifier (kfp's log: {log})")
    try:
        with _steps_only(log):
            run_local(
                model_uri=str(DEMO / "digits.onnx"), calib_uri=str(DEMO / "digits_calib.npz"), eval_uri=str(DEMO / "digits_eval.npz"),
                registry_uri=registry_uri, name="digits", metric="top1", labels_uri=str(DEMO / "digits_eval_labels.npy"),
                max_drop=0.005, batches="1,256",
            )
    except LowprecError:
        print(f"the tasks' own output is in {log}", file=sys.stderr)
        raise
    uri, manifest = registry.versions(registry_uri, "digits")[-1]
    with tempfile.TemporaryDirectory(prefix="lowprec-demo-") as tmp:
        registry.fetch(uri, tmp)
        valid = json.loads((Path(tmp) / "reports" / "validation.json").read_text())
        bench = json.loads((Path(tmp) / "reports" / "benchmark.json").read_text())
    print()
    print(f"digit classifier, {valid['samples']} test images:")
    print(f"  top-1 accuracy  FP32 {valid['reference_score']:.2%}   INT8 {valid['candidate_score']:.2%}")
    for row in bench["results"]:
        print(f"  batch {row['batch']:>3}: FP32 {row['fp32_median_ms']:.3f} ms, INT8 {row['int8_median_ms']:.3f} ms -> {row['speedup']:.2f}x")
    print(f"  size: {bench['fp32_bytes'] / 1e3:.0f} KB -> {bench['int8_bytes'] / 1e3:.0f} KB")
    print(f"published {manifest.name} {manifest.version} with {len(manifest.files)} files -> {uri}")
    if "reports/report.html" in manifest.files:
        print(f"report: {registry.file_uri(uri, manifest, 'reports/report.html')}")
    print(f"(whole pipeline in {time.perf_counter() - started:.1f} s)")
    return 0


_TASK_DONE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _steps_only(log: Path):
    """Everything written to stdout and stderr (kfp's executor JSON, each task's own output) goes
    to `log`; the screen gets one line per task as it finishes."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    screen = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    stop = threading.Event()

    def follow() -> None:
        position, rest = 0, ""
        while True:
            finished = stop.is_set()
            with open(log, "rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            position += len(chunk)
            *lines, rest = (rest + chunk.decode(errors="replace")).split("\n")
            for line in lines if not finished else [*lines, rest]:
                found = _TASK_DONE.search(_ANSI.sub("", line))
                if found:
                    screen.write(f"  {found[1]:<34} {found[2].lower()}\n")
            if finished:
                return
            stop.wait(0.2)

    with open(log, "ab") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        stop.set()
        follower.join(timeout=5)
        screen.close()


class ProgressDisplay(logging.Handler):
    """lowprec.progress records as a redrawn line on a terminal, as plain lines elsewhere
    (a pipeline log gets every AAQ iteration, and every 10th batch of the others)."""

    def __init__(self, stream) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.open_line = False

    def emit(self, record: logging.LogRecord) -> None:
        step, done, total, detail = record.progress
        text = f"{step} {done}{f'/{total}' if total else ''}{f': {detail}' if detail else ''}"
        if self.tty and step != "accuracy-aware iteration":
            if total:
                filled = int(20 * done / total)
                text = f"{step} [{'#' * filled}{'.' * (20 - filled)}] {done}/{total}{f': {detail}' if detail else ''}"
            self.stream.write("\r\x1b[K" + text)
            self.open_line = True
        elif step == "accuracy-aware iteration" or done % 10 == 0 or (total and done == total):
            self.stream.write(("\n" if self.open_line else "") + text + "\n")
            self.open_line = False
        self.stream.flush()


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    with _console(level) as shown:
        try:
            return args.run(args) or 0
        except LowprecError as err:
            if shown.open_line:
                print(file=sys.stderr)
            print(f"lowprec: error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            return 130


@contextlib.contextmanager
def _console(level: int):
    """Log lines and progress to this call's stderr, and SIGTERM as an exit that unwinds (a pod's
    eviction, a CI timeout: a publish or fetch that is stopped removes what it had written);
    all of it undone on return, so that main() can run more than once in one process."""
    root, shown = logging.getLogger(), logging.getLogger("lowprec.progress")
    saved = (root.level, shown.level, shown.propagate)
    lines, progress = logging.StreamHandler(sys.stderr), ProgressDisplay(sys.stderr)
    lines.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(lines)
    root.setLevel(level)
    shown.addHandler(progress)
    shown.setLevel(logging.INFO)
    shown.propagate = False
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if on_main else None
    try:
        yield progress
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
        root.removeHandler(lines)
        shown.removeHandler(progress)
        root.level, shown.level, shown.propagate = saved


if __name__ == "__main__":
    sys.exit(main())
