"""ptq_many: every model under a prefix that has no INT8 version for this config, quantized by
`ptq` in parallel. Run it again and the models already published are skipped."""

from kfp import dsl

from components import list_pending

from .ptq import ptq, step

PARALLELISM = 4  # models quantized at once (fixed when compiled: kfp takes a constant here)


@dsl.pipeline(name="lowprec-ptq-many", description="Post-training INT8 quantization of every new model under a prefix")
def ptq_many(
    models_prefix: str,
    registry_uri: str,
    preset: str = "mixed",
    metric: str = "agreement",
    max_drop: float = 0.01,
    batches: str = "1,8",
    min_speedup: float = 1.0,
    runtime: str = "onnxruntime",
    threads: str = "1",
    serving_nodes: dict = {},
):
    todo = step(list_pending(models_prefix=models_prefix, registry_uri=registry_uri, preset=preset, runtime=runtime), "list models without a version")
    with dsl.ParallelFor(todo.output, parallelism=PARALLELISM, name="each-model") as model:
        ptq(
            model_uri=model.model_uri,
            calib_uri=model.calib_uri,
            eval_uri=model.eval_uri,
            labels_uri=model.labels_uri,
            registry_uri=registry_uri,
            name=model.model_name,
            preset=preset,
            metric=metric,
            max_drop=max_drop,
            batches=batches,
            min_speedup=min_speedup,
            runtime=runtime,
            threads=threads,
            serving_nodes=serving_nodes,
        )
