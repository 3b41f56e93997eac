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
from .benchmark import cpu_description
from .calibration.stats import Statistics, load_statistics
from .config import (
    AccuracyBudget,
    BenchmarkConfig,
    CalibrationConfig,
    MetricBudget,
    QuantConfig,
)
from .errors import (
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
from .data import InputSpec, input_specs
from .fleet import FleetModel, pending
from .quantize.plan import QuantPlan
from .registry import Manifest
from .render import markdown
from .reports import BenchmarkReport, InspectReport, LayerError, QuantizeReport, SearchResult, ValidationReport
from .runtime import kernel_counts, serving_session

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
    "serving_session",
    "validate",
]
