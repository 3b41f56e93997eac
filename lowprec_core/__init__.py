"""lowprec: post-training INT8 quantization of ONNX models."""

from ._api import QuantizeReport, benchmark, calibrate, fetch, publish, quantize, validate
from .benchmark import BenchmarkReport
from .calibration.stats import Statistics, load_statistics
from .config import BenchmarkConfig, CalibrationConfig, QuantConfig
from .errors import (
    ConfigError,
    DataError,
    GateFailed,
    IntegrityError,
    LowprecError,
    ModelError,
    RegistryError,
    StatsError,
)
from .quantize.planner import QuantPlan
from .registry import Manifest
from .validate import ValidationReport

__all__ = [
    "BenchmarkConfig",
    "BenchmarkReport",
    "CalibrationConfig",
    "ConfigError",
    "DataError",
    "GateFailed",
    "IntegrityError",
    "LowprecError",
    "Manifest",
    "ModelError",
    "QuantConfig",
    "QuantPlan",
    "QuantizeReport",
    "RegistryError",
    "Statistics",
    "StatsError",
    "ValidationReport",
    "benchmark",
    "calibrate",
    "fetch",
    "load_statistics",
    "publish",
    "quantize",
    "validate",
]
