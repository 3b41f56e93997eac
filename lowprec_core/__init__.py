"""lowprec: post-training INT8 quantization of ONNX models."""

from typing import TYPE_CHECKING

from ._version import __version__

# Public name -> the private module that defines it. A name's module is imported on first use
# (PEP 562), so `import lowprec_core` or a `lowprec quantize` loads only what it runs: the
# searches, the registry and the report renderer cost start-up a plain quantize does not need.
_EXPORTS = {
    "benchmark": "_api", "calibrate": "_api", "fetch": "_api", "inspect": "_api", "publish": "_api",
    "quantize": "_api", "render_report": "_api", "validate": "_api",
    "cpu_description": "_benchmark",
    "Statistics": "_calibration.stats", "load_statistics": "_calibration.stats",
    "AccuracyBudget": "_config", "BenchmarkConfig": "_config", "CalibrationConfig": "_config", "MetricBudget": "_config",
    "QuantConfig": "_config", "parse_input_shapes": "_config", "runtime_target": "_config",
    "ConfigError": "_errors", "DataError": "_errors", "GateFailed": "_errors", "IntegrityError": "_errors",
    "LowprecError": "_errors", "ModelError": "_errors", "PipelineError": "_errors", "RegistryError": "_errors",
    "StatsError": "_errors",
    "InputSpec": "_data", "input_specs": "_data",
    "FleetModel": "_fleet", "pending": "_fleet",
    "fix_input_shapes": "_model_io",
    "QuantPlan": "_quantize.plan",
    "Manifest": "_registry",
    "markdown": "_render",
    "BenchmarkReport": "_reports", "InspectReport": "_reports", "LayerError": "_reports", "QuantizeReport": "_reports",
    "SearchResult": "_reports", "ValidationReport": "_reports",
    "kernel_counts": "_runtime", "serving_session": "_runtime",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lowprec_core' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and editors see: the names, from their modules
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
        parse_input_shapes,
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
    from ._model_io import fix_input_shapes
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
    "fix_input_shapes",
    "input_specs",
    "inspect",
    "kernel_counts",
    "load_statistics",
    "markdown",
    "parse_input_shapes",
    "pending",
    "publish",
    "quantize",
    "render_report",
    "runtime_target",
    "serving_session",
    "validate",
]
