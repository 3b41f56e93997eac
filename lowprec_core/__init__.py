"""lowprec: post-training INT8 quantization of ONNX models."""

from ._version import __version__
from ._api import (
    benchmark,
    calibrate,
    fetch,
    inspect,
    publish,
    quantize,
    render_report,
    validate,
)
from ._benchmark import cpu_description
from ._calibration.stats import Statistics, load_statistics
from ._config import (
    AccuracyBudget,
    BenchmarkConfig,
    CalibrationConfig,
    MetricBudget,
    QuantConfig,
    runtime_target,
)
from ._errors import (
    ConfigError,
    DataError,
    GateFailed,
    IntegrityError,
    LowprecError,
    ModelError,
    PipelineError,
    RegistryError,
    StatsError,
)
from ._data import InputSpec, input_specs
from ._fleet import FleetModel, pending
from ._quantize.plan import QuantPlan
from ._registry import Manifest
from ._render import markdown
from ._reports import BenchmarkReport, InspectReport, LayerError, QuantizeReport, SearchResult, ValidationReport
from ._runtime import kernel_counts, serving_session

__all__ = [
    "__version__",
    "AccuracyBudget",
    "BenchmarkConfig",
    "BenchmarkReport",
    "CalibrationConfig",
    "ConfigError",
    "DataError",
    "FleetModel",
    "GateFailed",
    "InputSpec",
    "InspectReport",
    "IntegrityError",
    "LayerError",
    "LowprecError",
    "Manifest",
    "MetricBudget",
    "ModelError",
    "PipelineError",
    "QuantConfig",
    "QuantPlan",
    "QuantizeReport",
    "RegistryError",
    "SearchResult",
    "Statistics",
    "StatsError",
    "ValidationReport",
    "benchmark",
    "calibrate",
    "cpu_description",
    "fetch",
    "input_specs",
    "inspect",
    "kernel_counts",
    "load_statistics",
    "markdown",
    "pending",
    "publish",
    "quantize",
    "render_report",
    "runtime_target",
    "serving_session",
    "validate",
]
