from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Model, Output

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    model_uri: str,
    int8_model: Input[Model],
    data_uri: str,
    stats: Input[Artifact],
    quantize_report: Input[Artifact],
    validation_report: Input[Artifact],
    benchmark_report: Input[Artifact],
    page: Output[HTML],
    layers: Output[Artifact],
    summary: Output[Markdown],
):
    """Per-layer error on the evaluation data, then one self-contained HTML page of every report."""
    import lowprec_core

    result = lowprec_core.inspect(model_uri, int8_model.path, data_uri, max_samples=256, report=layers.path)
    lowprec_core.render_report(
        quantize_report.path, page.path, validation=validation_report.path, benchmark_report=benchmark_report.path,
        inspect_report=layers.path, stats=stats.path, title=f"lowprec: {model_uri}",
    )
    with open(summary.path, "w") as handle:
        handle.write(lowprec_core.markdown(result))
