from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def benchmark(
    model_uri: str,
    int8_model: Input[Model],
    data_uri: str,
    batches: str,
    report: Output[Artifact],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    runtime: str = "onnxruntime",
    threads: str = "1",
):
    """Latency of FP32 and INT8, interleaved in one process, in the serving runtime, at each of
    `threads` (comma-separated: the serving pod's CPU count, say)."""
    import lowprec_core

    config = lowprec_core.BenchmarkConfig(batches=tuple(int(b) for b in batches.split(",")), runtime=runtime,
                                          threads=tuple(int(t) for t in threads.split(",")))
    result = lowprec_core.benchmark(model_uri, int8_model.path, config=config, data=data_uri, report=report.path)
    with open(summary.path, "w") as handle:
        handle.write(lowprec_core.markdown(result))
    for row in result.results:
        metrics.log_metric(f"speedup_b{row.batch}_t{row.threads}", row.speedup)
    metrics.log_metric("size_ratio", result.size_ratio)
