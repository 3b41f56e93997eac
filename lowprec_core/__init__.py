"""lowprec: post-training INT8 quantization of ONNX models."""

from ._version import __version__
from ._api import (
    QuantizeReport,
    benchmark,
    calibrate,
    fetch,
    inspect,
    publish,
    quantize,
    render_report,
    validate,
)
from .benchmark import BenchmarkReport
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
from .layer_error import InspectReport, LayerError
from .quantize.accuracy_aware import SearchResult
from .quantize.planner import QuantPlan
from .registry import Manifest
from .validate import ValidationReport

__all__ = [
    "__version__",
    "AccuracyBudget",
    "BenchmarkConfig",
    "BenchmarkReport",
    "CalibrationConfig",
    "ConfigError",
    "DataError",
    "GateFailed",
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
    "fetch",
    "inspect",
    "load_statistics",
    "publish",
    "quantize",
    "render_report",
    "validate",
]
