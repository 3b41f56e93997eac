"""The report models: what each public operation returns, and writes as JSON.

Records with no behaviour; they import nothing of lowprec's but the plan they carry.
Renderers for people (Markdown, HTML) are in `render.py`.
"""

from __future__ import annotations

from typing import Literal

from ._quantize.plan import QuantPlan
from ._records import Record


class CalibrationWarning(Record):
    tensor: str | None  # None: about the calibration set as a whole
    kind: str  # never_seen, nonfinite, outliers, constant, small_set
    message: str


class MetricResult(Record):
    fp32: float
    int8: float
    drop: float
    max_drop: float


class Iteration(Record):
    """kind `full`: a full validation pass; `revert`: a layer (or group) reverted, its full-set
    figures predicted from the ranking subset; `requantize`: the final pruning pass gave a
    float layer back its quantizers (figures predicted the same way)."""

    index: int
    kind: Literal["full", "revert", "requantize"]
    reverted: list[str] = []
    float_layers: list[str]
    metrics: dict[str, MetricResult]
    within_budget: bool
    seconds: float  # evaluation time spent up to this iteration
    speedup: float | None = None  # FP32 over INT8 latency at batch 1 (full passes)
    why: str | None = None


class SearchResult(Record):
    met: bool
    reason: str
    float_layers: dict[str, str]  # layer -> why it is float
    iterations: list[Iteration]
    full_passes: int  # passes over the whole evaluation set (the FP32 reference shares the first)
    subset_evaluations: int
    proxy_passes: int
    seconds: float


class TuningCandidate(Record):
    min_reduction: int | None  # None: every layer float (the target's layer op types ignored)
    integer_ops: str = "target"  # QuantConfig.integer_ops
    layers: int  # layers quantized
    integer_op_nodes: int = 0  # weightless ops run on integers
    speedup: float  # FP32 (at f32) median latency / this candidate's, batch 1, in the runtime
    nmse: float  # output error against FP32: normalized MSE over the tuning samples it ran
    rounds: int = 0  # timing rounds it ran (fewer where it fell clearly behind the default)
    within_budget: bool | None = None  # with an accuracy budget: whether it met it (None: not scored)
    float_layers: list[str] = []  # the default's layers its profile found slower in integer, left float
    float_precision: str = "default"  # QuantConfig.float_precision: the precision its float layers ran at
    # Samples of the statistics its nmse is from, where fewer than the calibration's: it was timed
    # built from those (its placement is what its speed depends on) and, too slow to be kept,
    # never calibrated in full. None: the calibration's statistics.
    provisional_samples: int | None = None
    chosen: bool = False


class LatencyTuning(Record):
    """quantize --tune latency: the candidates measured and the one kept (see _tuning)."""

    runtime: str
    threads: int
    samples: int
    candidates: list[TuningCandidate]
    reason: str
    seconds: float
    # Per layer of the default: microseconds a run spends on it in integer minus in float, profiled
    # in the runtime (> 0: slower in integer).
    layer_costs: dict[str, float] = {}
    # Where the loop found a candidate faster than the default it started from: that one's time
    # over the candidate's, the two timed again alone (_tuning._head_to_head).
    head_to_head: float | None = None
    # And on the tuning samples as one batch, where they stack, once it is faster at batch 1.
    head_to_head_batch: float | None = None
    # Candidates never built or timed: building and compiling them would have passed the search's
    # time bound (_tuning.SETUP_FLOOR).
    untried: list[str] = []
    batch: int = 1  # samples to each timed request (the batch the model is served at)


class LayerError(Record):
    layer: str
    op_type: str
    output: str
    output_sqnr_db: float
    own_sqnr_db: float
    weight_sqnr_db: float | None
    input_sqnr_db: float | None
    action: str


class InspectReport(Record):
    samples: int
    layers: list[LayerError]  # worst first: lowest own SQNR


class ValidationReport(Record):
    runtime: str = "onnxruntime"  # where both models ran
    metric: str
    output: str  # the first tensor output: the one a built-in metric scores
    outputs: int = 1  # tensor outputs the models have; a plugin metric reads every one
    samples: int
    reference_score: float
    candidate_score: float
    drop: float
    max_drop: float
    passed: bool
    # The FP32 model at the runtime's own default precision, where that is not f32 (OpenVINO:
    # bf16 on CPUs with AVX512_BF16 or AMX), scored like the candidate: what serving FP32 unasked
    # gives, the quality an INT8 model is an alternative to.
    default_precision: str | None = None
    default_score: float | None = None


class LatencyResult(Record):
    batch: int
    threads: int
    fp32_median_ms: float
    fp32_p90_ms: float
    fp32_p99_ms: float = 0.0
    int8_median_ms: float
    int8_p90_ms: float
    int8_p99_ms: float = 0.0
    speedup: float
    fp32_per_s: float = 0.0  # throughput, samples per second at the median
    int8_per_s: float = 0.0
    repeats: int = 0
    fp32_default_median_ms: float | None = None  # the FP32 model at the runtime's own default precision (OpenVINO: bf16 where the CPU has it)
    speedup_vs_default: float | None = None  # INT8 against that: whether INT8 beats what the runtime does unasked
    cv: float = 0.0  # the larger coefficient of variation of the two series
    drift: float = 0.0  # relative difference of the speedups measured in the first and second half
    noisy: bool = False  # still above NOISY_CV or NOISY_DRIFT after measuring longer: do not act on this speedup alone


class BenchmarkReport(Record):
    runtime: str = "onnxruntime"
    onnxruntime: str  # the version of the runtime the models ran in (ONNX Runtime's, or OpenVINO's)
    fp32_default_precision: str | None = None  # the runtime's own precision for the FP32 model, where it is not f32
    providers: list[str] = []
    cpu: str = ""
    isa: list[str] = []  # the integer dot-product extensions the CPU offers (avx512_vnni, avx_vnni, amx_int8, ...)
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float
    fp32_load_ms: float = 0.0
    int8_load_ms: float = 0.0
    peak_rss_mb: float = 0.0
    results: list[LatencyResult]


class QuantizeReport(Record):
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
    tuning: LatencyTuning | None = None  # the latency search, when one ran
    calibration_warnings: list[CalibrationWarning] = []
    layers: InspectReport | None = None  # per-layer error on the evaluation (else calibration) data
