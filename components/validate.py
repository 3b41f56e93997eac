from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(
    model_uri: str,
    int8_model: Input[Model],
    data_uri: str,
    labels_uri: str,
    metric: str,
    max_drop: float,
    metrics: Output[Metrics],
    report: Output[Artifact],
    runtime: str = "onnxruntime",
) -> bool:
    """FP32 vs INT8 on evaluation data, in the serving runtime; returns whether the accuracy gate passed."""
    import lowprec_core

    result = lowprec_core.validate(
        model_uri, int8_model.path, data_uri, metric=metric, max_drop=max_drop, labels=labels_uri or None, report=report.path,
        runtime=runtime,
    )
    metrics.log_metric(f"fp32_{metric}", result.reference_score)
    metrics.log_metric(f"int8_{metric}", result.candidate_score)
    metrics.log_metric("drop", result.drop)
    if result.default_score is not None:  # FP32 as the runtime serves it unasked (OpenVINO's bf16)
        metrics.log_metric(f"fp32_{result.default_precision}_{metric}", result.default_score)
    return result.passed
