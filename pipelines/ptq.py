"""ptq: calibrate -> quantize -> validate -> benchmark -> report -> publish if the gate passed.

Every step reads the registry or the models' bucket, so every step gets the S3 Secret as
environment variables, retries on failure (S3 and node hiccups; the steps are idempotent:
a retried publish writes a revision of its own or finds its files published, and the others write
only their own outputs), explicit
resources, and caching off: its inputs are URIs whose objects may change under the same name,
and a cached benchmark would report an old machine's timings.
"""

from kfp import dsl, kubernetes

from components import benchmark, calibrate, publish, quantize, report, validate

S3_SECRET = "lowprec-s3"  # manifests/s3-credentials.secret.yaml; never a pipeline parameter
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
# (cpu request, cpu limit, memory request, memory limit) per step. Calibration holds one batch and
# its statistics; the accuracy-aware search holds the model, its FP32 reference outputs and two
# sessions; the benchmark wants whole cores so that its timings mean something.
RESOURCES = {
    "calibrate": ("1", "2", "2G", "8G"),
    "quantize": ("2", "4", "4G", "16G"),
    "validate": ("1", "2", "2G", "8G"),
    "benchmark": ("2", "2", "2G", "8G"),
    "report": ("1", "2", "2G", "8G"),
    "publish": ("500m", "1", "512M", "2G"),
    "list models without a version": ("500m", "1", "1G", "4G"),  # ptq_many's listing hashes each model
}


def step(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
    cpu, cpu_limit, memory, memory_limit = RESOURCES[name]
    task.set_display_name(name)
    task.set_cpu_request(cpu).set_cpu_limit(cpu_limit).set_memory_request(memory).set_memory_limit(memory_limit)
    task.set_retry(num_retries=2, backoff_duration="5s", backoff_factor=2.0, backoff_max_duration="120s")
    task.set_caching_options(False)  # inputs are URIs whose objects can change under one name
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={key: key for key in S3_KEYS})
    return task


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
    runtime: str = "onnxruntime",
    threads: str = "1",
    serving_nodes: dict = {},
    tune: str = "none",
    input_shapes: str = "",
):
    """`runtime` and `threads`: how the model is served (the benchmark times it so). `serving_nodes`:
    the node labels of the pool that serves it (a nodeSelector, e.g. {"node.kubernetes.io/instance-type":
    "m7i.2xlarge"}); quantize and benchmark run there, so the accuracy-aware search's speed check
    and the benchmark measure that hardware. Empty: any node. `tune`: "latency" runs quantize's
    latency search there (with accuracy_aware, the fastest placement within the budget), timing requests
    of the first of `batches` at the first of `threads`.
    `input_shapes`: sizes fixed on the model's inputs as they are served, space-separated NAME=SIZES
    entries (`input=batch,576`), where the runtime needs them; validate and benchmark run FP32 at them too."""
    stats = step(calibrate(model_uri=model_uri, data_uri=calib_uri, runtime=runtime, input_shapes=input_shapes), "calibrate")
    quant = step(quantize(
        model_uri=model_uri, stats=stats.outputs["stats"], preset=preset, accuracy_aware=accuracy_aware,
        eval_uri=eval_uri, labels_uri=labels_uri, metric=metric, max_drop=max_drop, min_speedup=min_speedup, runtime=runtime,
        tune=tune, threads=threads, input_shapes=input_shapes, batches=batches,
    ), "quantize")
    kubernetes.add_node_selector_json(quant, serving_nodes)
    check = step(validate(
        model_uri=model_uri,
        int8_model=quant.outputs["int8_model"],
        data_uri=eval_uri,
        labels_uri=labels_uri,
        metric=metric,
        max_drop=max_drop,
        runtime=runtime,
    ), "validate")
    bench = step(benchmark(model_uri=model_uri, int8_model=quant.outputs["int8_model"], data_uri=eval_uri, batches=batches,
                           runtime=runtime, threads=threads), "benchmark")
    kubernetes.add_node_selector_json(bench, serving_nodes)
    page = step(report(
        model_uri=model_uri,
        int8_model=quant.outputs["int8_model"],
        data_uri=eval_uri,
        stats=stats.outputs["stats"],
        quantize_report=quant.outputs["report"],
        validation_report=check.outputs["report"],
        benchmark_report=bench.outputs["report"],
    ), "report")
    with dsl.If(check.outputs["Output"] == True, name="accuracy-gate-passed"):  # noqa: E712 - a pipeline expression
        step(publish(
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
        ), "publish")
