"""Reports rendered for people (Markdown) from the JSON report models."""

from __future__ import annotations

from ._api import QuantizeReport
from .benchmark import BenchmarkReport
from .validate import ValidationReport


def quantize_markdown(report: QuantizeReport) -> str:
    plan = report.plan
    lines = [
        "## Quantization",
        f"- INT8 size: {report.int8_bytes / 1e6:.2f} MB ({report.int8_bytes / report.fp32_bytes:.0%} of FP32)",
        f"- Nodes quantized: {len(plan.nodes)}; left in float: {len(plan.skipped)}; activations fused: {len(plan.fused)}",
        f"- Calibration samples: {report.calibration_samples}; wall time {report.seconds:.1f} s",
        f"- Preset `{plan.config.preset}`, target `{plan.config.target}`",
    ]
    if plan.skipped:
        lines += ["", "| node left in float | why |", "|---|---|"]
        lines += [f"| `{name}` | {why} |" for name, why in sorted(plan.skipped.items())]
    return "\n".join(lines) + "\n"


def validation_markdown(report: ValidationReport) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    return (
        f"## Validation: {verdict}\n"
        f"| metric | FP32 | INT8 | drop | max drop | samples |\n|---|---|---|---|---|---|\n"
        f"| {report.metric} | {report.reference_score:.4f} | {report.candidate_score:.4f} | "
        f"{report.drop:.4f} | {report.max_drop:.4f} | {report.samples} |\n"
    )


def benchmark_markdown(report: BenchmarkReport) -> str:
    lines = [
        f"## Benchmark (ONNX Runtime {report.onnxruntime})",
        f"Size: FP32 {report.fp32_bytes / 1e6:.2f} MB, INT8 {report.int8_bytes / 1e6:.2f} MB ({report.size_ratio:.0%})",
        "",
        "| batch | threads | FP32 p50 ms | FP32 p90 ms | INT8 p50 ms | INT8 p90 ms | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.batch} | {r.threads} | {r.fp32_median_ms:.3f} | {r.fp32_p90_ms:.3f} | "
        f"{r.int8_median_ms:.3f} | {r.int8_p90_ms:.3f} | {r.speedup:.2f}x |"
        for r in report.results
    ]
    return "\n".join(lines) + "\n"
