from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish(
    int8_model: Input[Model],
    stats: Input[Artifact],
    quantize_report: Input[Artifact],
    validation_report: Input[Artifact],
    benchmark_report: Input[Artifact],
    html_report: Input[Artifact],
    layer_report: Input[Artifact],
    registry_uri: str,
    name: str,
    model_uri: str,
) -> str:
    """Push model, statistics and reports to the registry, manifest last; returns the version URI."""
    import lowprec_core

    attachments = {
        "stats": stats.path,
        "reports/quantize.json": quantize_report.path,
        "reports/validation.json": validation_report.path,
        "reports/benchmark.json": benchmark_report.path,
        "reports/report.html": html_report.path,
        "reports/inspect.json": layer_report.path,
    }
    uri, _ = lowprec_core.publish(int8_model.path, registry_uri, name, source=model_uri, attach=attachments)
    return uri
