from kfp import dsl

from ._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_pending(models_prefix: str, registry_uri: str, preset: str, runtime: str = "onnxruntime") -> list:
    """The models under `models_prefix` (NAME/model.onnx, calib.npz, eval.npz[, labels.npy])
    with no INT8 version in the registry for this config, as dicts for dsl.ParallelFor."""
    import lowprec_core

    todo = lowprec_core.pending(models_prefix, registry_uri, lowprec_core.QuantConfig(preset=preset, target=lowprec_core.runtime_target(runtime)))
    print(f"{len(todo)} models to quantize: {', '.join(m.model_name for m in todo) or 'none'}")
    return [m.model_dump() for m in todo]
