"""ptq: calibrate -> quantize -> validate -> benchmark -> report -> publish if the gate passed."""

from kfp import dsl

from components import benchmark, calibrate, publish, quantize, report, validate


@dsl.pipeline(name="lowprec-ptq", description="Post-training INT8 quantization of one ONNX model")
def ptq(
    model_uri: str,
    calib_uri: str,
    eval_uri: str,
    registry_uri: str,
    name: str,
    preset: str = "mixed",
    metric: str = "agreement",
    labels_uri: str = "",
    max_drop: float = 0.01,
    batches: str = "1,8",
    accuracy_aware: bool = False,
    min_speedup: float = 1.0,
):
    stats = calibrate(model_uri=model_uri, data_uri=calib_uri).set_display_name("calibrate")
    quant = quantize(
        model_uri=model_uri, stats=stats.outputs["stats"], preset=preset, accuracy_aware=accuracy_aware,
        eval_uri=eval_uri, labels_uri=labels_uri, metric=metric, max_drop=max_drop, min_speedup=min_speedup,
    )
    check = validate(
        model_uri=model_uri,
        int8_model=quant.outputs["int8_model"],
        data_uri=eval_uri,
        labels_uri=labels_uri,
        metric=metric,
        max_drop=max_drop,
    )
    bench = benchmark(model_uri=model_uri, int8_model=quant.outputs["int8_model"], data_uri=eval_uri, batches=batches)
    page = report(
        model_uri=model_uri,
        int8_model=quant.outputs["int8_model"],
        data_uri=eval_uri,
        stats=stats.outputs["stats"],
        quantize_report=quant.outputs["report"],
        validation_report=check.outputs["report"],
        benchmark_report=bench.outputs["report"],
    )
    with dsl.If(check.outputs["Output"] == True, name="accuracy-gate-passed"):  # noqa: E712 - a pipeline expression
        publish(
            int8_model=quant.outputs["int8_model"],
            stats=stats.outputs["stats"],
            quantize_report=quant.outputs["report"],
            validation_report=check.outputs["report"],
            benchmark_report=bench.outputs["report"],
            html_report=page.outputs["page"],
            layer_report=page.outputs["layers"],
            registry_uri=registry_uri,
            name=name,
            model_uri=model_uri,
        ).set_caching_options(False)
