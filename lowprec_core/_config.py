"""Typed configuration with every default in one place; all models are frozen."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ._errors import ConfigError
from ._ops import DEFAULT_ROWS, RUNTIME_INTEGER_OPS, TARGETS
from ._records import Record, ValidationError, check, spec

# Names only: the estimators themselves live in quantize/ranges.py, which imports this module.
ACTIVATION_ESTIMATORS = ("minmax", "mean_minmax", "quantile", "mse")
WEIGHT_ESTIMATORS = ("minmax", "mse")

PRESETS: dict[str, dict[str, bool]] = {
    # preset -> how activations are quantized; weights are always symmetric.
    "performance": {"symmetric_activations": True},
    "mixed": {"symmetric_activations": False},
}


# Fields whose value must come from a table: field -> (the table, what to call it in an error).
_CHOICES = {
    "preset": (PRESETS, "preset"),
    "target": (TARGETS, "target"),
    "activation_range": (ACTIVATION_ESTIMATORS, "activation range estimator"),
    "weight_range": (WEIGHT_ESTIMATORS, "weight range estimator"),
}


class _Frozen(Record):
    _extra = "forbid"


class CalibrationConfig(_Frozen):
    """How calibration data is fed: batch size for a single-.npz source, and a sample cap."""

    batch_size: int = spec(16, ge=1)
    max_samples: int | None = spec(None, ge=1)


class QuantConfig(_Frozen):
    """What to quantize and how. ``ignore`` holds node names or op types left in float."""

    # Fields added after models were published are left out of a dump at their defaults, so the
    # config stamped into a model (lineage) and its bytes stay what they were.
    _omit_defaults = {"integer_ops": "target", "float_precision": "default", "input_shapes": {}}

    preset: str = "mixed"
    target: str = "cpu"
    ignore: tuple[str, ...] = ()
    per_channel: bool = True
    fuse_activations: bool = True
    activation_range: str = "mse"
    weight_range: str = "minmax"
    bias_correction: Literal["none", "fast", "full"] = "fast"
    channel_alignment: bool = False
    model_type: Literal["auto", "cnn", "transformer"] = "auto"
    smooth_quant_alpha: float = spec(0.85, ge=0.0, le=1.0)
    # Layers summing fewer products per output stay float; None: the target's (ops.Target.min_reduction).
    min_reduction: int | None = spec(None, ge=0)
    # Weightless ops (Add, Concat, pools, ...) run on integers between quantized layers:
    # "target": the target row's choice; "all": every one the runtime has an integer kernel for
    # (ops.RUNTIME_INTEGER_OPS); "none".
    integer_ops: Literal["target", "all", "none"] = "target"
    # The precision OpenVINO runs the INT8 model's float layers at: "default", the plugin's own
    # (bf16 on CPUs with AVX512_BF16 or AMX), or "f32". Stamped into the model with the config;
    # lowprec's OpenVINO sessions honour it, and serving must set INFERENCE_PRECISION_HINT to it.
    # ONNX Runtime runs float layers at f32 whatever this says.
    float_precision: Literal["default", "f32"] = "default"
    # Sizes fixed on the model's inputs before anything else, as the runtime will be fed them:
    # input name -> one size per axis, an integer or a name for a size left free (the batch).
    # OpenVINO needs them where a size decides a shape-dependent If (model_io.fix_input_shapes).
    input_shapes: dict[str, tuple[int | str, ...]] = {}

    @check("input_shapes")
    def _sizes(value: dict[str, tuple[int | str, ...]], field: str) -> dict[str, tuple[int | str, ...]]:
        return check_input_sizes(value)

    @check(*_CHOICES)
    def _known_choice(value: str, field: str) -> str:
        choices, label = _CHOICES[field]
        if value not in choices:
            raise ValueError(f"unknown {label} {value!r}; expected one of: {', '.join(choices)}")
        return value

    @property
    def runtime(self) -> str:
        """The runtime the target's placement is for (see RUNTIMES)."""
        return TARGETS[self.target].runtime

    @property
    def reduction_floor(self) -> int:
        return TARGETS[self.target].min_reduction if self.min_reduction is None else self.min_reduction

    @property
    def integer_op_rows(self) -> tuple[frozenset[str], frozenset[str]]:
        """(weightless ops run on integers, float gates they may quantize for themselves)."""
        target = TARGETS[self.target]
        if self.integer_ops == "target":
            return target.integer_ops, target.integer_op_float_inputs
        return RUNTIME_INTEGER_OPS[target.runtime] if self.integer_ops == "all" else (frozenset(), frozenset())

    @property
    def symmetric_activations(self) -> bool:
        forced = TARGETS[self.target].symmetric_activations
        return PRESETS[self.preset]["symmetric_activations"] if forced is None else forced


def check_input_sizes(shapes: dict[str, tuple[int | str, ...]]) -> dict[str, tuple[int | str, ...]]:
    """`shapes` (QuantConfig.input_shapes), or ValueError naming the first size that is neither a
    positive integer nor a name."""
    for name, dims in shapes.items():
        for size in dims:
            if not (isinstance(size, int) and not isinstance(size, bool) and size >= 1 or isinstance(size, str) and size.isidentifier()):
                raise ValueError(f"input {name!r}: size {size!r} is neither a positive integer nor a name for a free size "
                                 "(letters, digits, underscores)")
    return shapes


def parse_input_shapes(entries: Iterable[str]) -> dict[str, tuple[int | str, ...]]:
    """`NAME=SIZES` entries (`input=batch,576`: one size per axis, a number or a name for a free
    size) as QuantConfig.input_shapes takes them; ConfigError names a bad entry."""
    shapes: dict[str, tuple[int | str, ...]] = {}
    for entry in entries:
        name, _, sizes = entry.partition("=")
        if not name or not sizes:
            raise ConfigError(f"input shape {entry!r}: expected NAME=SIZES, one size per axis, e.g. input=batch,576")
        if name in shapes:
            raise ConfigError(f"input shape {entry!r}: {name!r} is given twice")
        shapes[name] = tuple(int(size) if size.strip().lstrip("-").isdigit() else size.strip() for size in sizes.split(","))
    try:
        return check_input_sizes(shapes)
    except ValueError as err:
        raise ConfigError(str(err)) from None


class MetricBudget(_Frozen):
    """One metric and the most it may drop (FP32 minus INT8, or the reverse for lower-is-better)."""

    metric: str
    max_drop: float = spec(0.01, ge=0.0)


class AccuracyBudget(_Frozen):
    """The accuracy-aware search: every metric within its budget, or stop and say why.

    ranking_subset: samples the ranking runs on (those where INT8 and FP32 disagree most);
    confirm: how many of the proxy's top layers are checked with the real metric each round;
    min_speedup: the gate fails below it (1.0: an INT8 model slower than FP32 gains nothing)."""

    metrics: tuple[MetricBudget, ...] = spec(min_length=1)
    drop_type: Literal["absolute", "relative"] = "absolute"
    max_iterations: int = spec(50, ge=1)
    ranking_subset: int = spec(64, ge=4)
    confirm: int = spec(8, ge=1)
    min_speedup: float = spec(1.0, ge=0.0)  # FP32 / INT8 latency at batch 1 the result must reach

    @check("metrics")
    def _distinct(value: tuple[MetricBudget, ...], field: str) -> tuple[MetricBudget, ...]:
        names = [m.metric for m in value]
        if len(set(names)) != len(names):
            raise ValueError(f"each metric once, got {names}")
        return value


# The runtimes a model can be validated and benchmarked in, and how to install each.
RUNTIMES = {
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install 'lowprec[openvino]' (the openvino package)",
}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo, or its text where the caller has read it;
    none elsewhere)."""
    try:
        text = open("/proc/cpuinfo").read() if cpuinfo is None else cpuinfo
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def runtime_target(runtime: str | None, target: str | None = None, *, flags: frozenset[str] | None = None) -> str:
    """The target for `runtime` (default: ONNX Runtime's): `target` when it is one of that
    runtime's rows, else that runtime's default for this CPU (`flags`, default cpu_flags(); see
    ops.DEFAULT_ROWS): a default measured per ISA. ConfigError for an unknown runtime or
    target, or a target of another runtime."""
    if runtime is None:
        runtime = TARGETS[target].runtime if target in TARGETS else "onnxruntime"
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; expected one of: {', '.join(RUNTIMES)}")
    own = [name for name, row in TARGETS.items() if row.runtime == runtime]
    if target is None:
        flags = cpu_flags() if flags is None else flags
        return next(row for needs, row in DEFAULT_ROWS[runtime] if not needs or needs & flags)
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; expected one of: {', '.join(TARGETS)}")
    if target not in own:
        raise ConfigError(f"target {target!r} places quantizers for {TARGETS[target].runtime}, not {runtime}; "
                          f"with --runtime {runtime} use: {', '.join(own)}")
    return target


class BenchmarkConfig(_Frozen):
    batches: tuple[int, ...] = (1, 8)
    threads: tuple[int, ...] = (1,)
    warmup: int = spec(5, ge=0)
    repeats: int = spec(30, ge=3)
    runtime: str = "onnxruntime"

    @check("runtime")
    def _known_runtime(value: str, field: str) -> str:
        if value not in RUNTIMES:
            raise ValueError(f"unknown runtime {value!r}; expected one of: {', '.join(RUNTIMES)}")
        return value

    @check("batches", "threads")
    def _positive(value: tuple[int, ...], field: str) -> tuple[int, ...]:
        if not value or any(v < 1 for v in value):
            raise ValueError(f"expected positive integers, got {list(value)}")
        return value


def build(model_cls: type[_Frozen], **values: object) -> _Frozen:
    """Build a config, or a one-line ConfigError naming the bad field and what it expected."""
    try:
        return model_cls.model_validate(values)
    except ValidationError as err:
        where = ".".join(str(p) for p in err.loc) or model_cls.__name__
        raise ConfigError(f"{where}: {err.msg}") from None
