from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def quantize(
    model_uri: str,
    stats: Input[Artifact],
    preset: str,
    int8_model: Output[Model],
    report: Output[Artifact],
    summary: Output[Markdown],
    accuracy_aware: bool = False,
    eval_uri: str = "",
    labels_uri: str = "",
    metric: str = "agreement",
    max_drop: float = 0.01,
    min_speedup: float = 1.0,
    runtime: str = "onnxruntime",
    tune: str = "none",
    threads: str = "1",
    input_shapes: str = "",
    batches: str = "1",
):
    """FP32 -> INT8 from precomputed statistics; with accuracy_aware, layers go back to float
    until `metric` drops by at most `max_drop` on the evaluation data (an unmet budget fails the step).
    `runtime`: the runtime that serves the model, which decides where quantizers go. `tune`:
    "latency" times candidate placements on this node (see quantize's `tune`) at the first of `threads`
    and requests of the first of `batches` (comma-separated, as the benchmark step takes them).
    `input_shapes`: sizes fixed on the inputs as served, NAME=SIZES entries, space-separated
    (`input=batch,576`; see QuantConfig.input_shapes)."""
    import lowprec_core

    config = lowprec_core.QuantConfig(preset=preset, target=lowprec_core.runtime_target(runtime),
                                      input_shapes=lowprec_core.parse_input_shapes(input_shapes.split()))
    budget = None
    if accuracy_aware:
        budget = lowprec_core.AccuracyBudget(metrics=[{"metric": metric, "max_drop": max_drop}], min_speedup=min_speedup)
    result = lowprec_core.quantize(
        model_uri, int8_model.path, stats=stats.path, config=config, report=report.path,
        accuracy=budget, eval_data=eval_uri or None, labels=labels_uri or None,
        tune=tune, tune_threads=int(threads.split(",")[0]), tune_batch=int(batches.split(",")[0]),
    )
    int8_model.metadata.update({"sha256": result.output_sha256, "bytes": result.int8_bytes})
    with open(summary.path, "w") as handle:
        handle.write(lowprec_core.markdown(result))
