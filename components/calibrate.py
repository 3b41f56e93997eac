from kfp import dsl
from kfp.dsl import Artifact, Output

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def calibrate(model_uri: str, data_uri: str, stats: Output[Artifact], runtime: str = "onnxruntime", input_shapes: str = ""):
    """One streaming pass over the calibration data, for the graph `runtime` will serve;
    statistics as an artifact folder. `input_shapes`: NAME=SIZES entries, space-separated (quantize's)."""
    import lowprec_core

    result = lowprec_core.calibrate(model_uri, data_uri, stats.path, target=lowprec_core.runtime_target(runtime),
                                    input_shapes=lowprec_core.parse_input_shapes(input_shapes.split()))
    stats.metadata.update({"model_sha256": result.model_sha256, "samples": result.samples})
