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
):
    """FP32 -> INT8 from precomputed statistics."""
    import lowprec_core
    from lowprec_core.report import quantize_markdown

    config = lowprec_core.QuantConfig(preset=preset)
    result = lowprec_core.quantize(model_uri, int8_model.path, stats=stats.path, config=config, report=report.path)
    int8_model.metadata.update({"sha256": result.output_sha256, "bytes": result.int8_bytes})
    with open(summary.path, "w") as handle:
        handle.write(quantize_markdown(result))
