"""The quantizers compared side by side: lowprec's default and the anchors, one function each.

Each takes (model path, calibration feeds, output path, model name) and writes an INT8 model.
"""

from __future__ import annotations

from pathlib import Path


def lowprec_default(model: Path, calib: list[dict], out: Path, name: str) -> None:
    import lowprec_core

    lowprec_core.quantize(model, out, data=calib)


def lowprec_openvino(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """`lowprec quantize --runtime openvino`: quantizers placed for OpenVINO's CPU plugin."""
    import lowprec_core

    lowprec_core.quantize(model, out, data=calib, config=lowprec_core.QuantConfig(target=lowprec_core.runtime_target("openvino")))


def lowprec_tune(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """`lowprec quantize --tune latency`: the placement measured in ORT on this machine, 1 thread."""
    import lowprec_core

    lowprec_core.quantize(model, out, data=calib, tune="latency")


def lowprec_openvino_tune(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """`lowprec quantize --runtime openvino --tune latency`: measured in OpenVINO, 1 thread."""
    import lowprec_core

    config = lowprec_core.QuantConfig(target=lowprec_core.runtime_target("openvino"))
    lowprec_core.quantize(model, out, data=calib, config=config, tune="latency")


def _ort(model: Path, calib: list[dict], out: Path, *, per_channel: bool, op_types: list[str] | None, prepare: bool = False) -> None:
    """quantize_static on the model as it is, or with `prepare` on the model after the steps ORT's
    documentation puts first (_ort_prepared)."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calib)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="ort-prepared-") as tmp:
        source = _ort_prepared(model, Path(tmp)) if prepare else model
        quantize_static(
            str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
        )


def opset13(model: Path, out: Path) -> Path:
    """`model` saved to `out` at opset 13 at least (onnx's version converter)."""
    import onnx
    import onnx.version_converter

    loaded = onnx.load(model)
    opset = next(o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx"))
    onnx.save(onnx.version_converter.convert_version(loaded, 13) if opset < 13 else loaded, out)
    return out


def _ort_prepared(model: Path, workdir: Path) -> Path:
    """The model after the steps ORT's quantization documentation puts before quantize_static:
    opset 13 at least (per-channel DequantizeLinear takes an axis from 13 on; ORT's own
    quantizer does not raise it), then `quant_pre_process` (shape inference and ORT's basic graph
    optimisations: constants folded, BatchNormalization folded into the conv before it, so no
    Q/DQ pair lands between them), without its symbolic shape inference where that refuses the
    graph (the option ORT offers). A step that fails fails the variant: a row entry."""
    import contextlib

    from onnxruntime.quantization.shape_inference import quant_pre_process

    upgraded = opset13(model, workdir / "opset13.onnx")
    prepared = workdir / "prepared.onnx"
    # quant_pre_process leaves scratch files (external data, sym_shape_infer_temp.onnx) in the
    # current directory: run it inside workdir.
    with contextlib.chdir(workdir):
        try:
            quant_pre_process(str(upgraded), str(prepared))
        except Exception:  # ORT's symbolic shape inference refuses some graphs (PP-OCR's, MiniLM's, silero's)
            quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
    return prepared


def ort_per_tensor(model, calib, out, name):
    _ort(model, calib, out, per_channel=False, op_types=None)


def ort_per_channel(model, calib, out, name):
    _ort(model, calib, out, per_channel=True, op_types=None)


def ort_per_channel_ops(model, calib, out, name):
    _ort(model, calib, out, per_channel=True, op_types=["Conv", "MatMul", "Gemm"])


# The same three after ORT's documented preparation (_ort_prepared).
def ort_per_tensor_prepared(model, calib, out, name):
    _ort(model, calib, out, per_channel=False, op_types=None, prepare=True)


def ort_per_channel_prepared(model, calib, out, name):
    _ort(model, calib, out, per_channel=True, op_types=None, prepare=True)


def ort_per_channel_ops_prepared(model, calib, out, name):
    _ort(model, calib, out, per_channel=True, op_types=["Conv", "MatMul", "Gemm"], prepare=True)


def _nncf_args(calib: list[dict], name: str) -> dict:
    import nncf

    # NNCF's documented practice for transformers is model_type=TRANSFORMER; give it its best.
    model_type = nncf.ModelType.TRANSFORMER if name == "minilm" else None
    return {"calibration_dataset": nncf.Dataset(calib), "subset_size": sum(len(next(iter(f.values()))) for f in calib), "model_type": model_type}


def nncf_default(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """nncf.quantize on the ONNX model (its ONNX backend): an ONNX QDQ model."""
    import nncf
    import onnx

    onnx.save(nncf.quantize(onnx.load(model), **_nncf_args(calib, name)), out)


def nncf_prepared(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """nncf.quantize (ONNX backend) on the model after ORT's preparation (_ort_prepared): NNCF
    asks for "pre-processing" where its graph lacks shapes, and names no tool of its own."""
    import tempfile

    import nncf
    import onnx

    with tempfile.TemporaryDirectory(prefix="nncf-prepared-") as tmp:
        onnx.save(nncf.quantize(onnx.load(_ort_prepared(model, Path(tmp))), **_nncf_args(calib, name)), out)


def nncf_openvino(model: Path, calib: list[dict], out: Path, name: str) -> None:
    """nncf.quantize on the model as OpenVINO reads it (its OpenVINO backend: the flow NNCF
    documents for OpenVINO), written as OpenVINO IR (`out` ends in .xml; weights in .bin, f32).
    OpenVINO runs it; ONNX Runtime cannot."""
    import nncf
    import openvino as ov

    quantized = nncf.quantize(ov.Core().read_model(str(model)), **_nncf_args(calib, name))
    ov.save_model(quantized, str(out), compress_to_fp16=False)


# What each variant imports; the harness imports it before starting the clock, so the times
# compare quantization, not Python start-up. lowprec_core loads a public name's module on first
# use, so "module:name" resolves that name too (the modules only a search uses are still loaded
# inside the call, as a command line run loads them).
IMPORTS = {
    "lowprec": "lowprec_core:quantize",
    "lowprec-openvino": "lowprec_core:quantize",
    "lowprec-tune": "lowprec_core:quantize",
    "lowprec-openvino-tune": "lowprec_core:quantize",
    "ort-per-tensor": "onnxruntime.quantization",
    "ort-per-channel": "onnxruntime.quantization",
    "ort-pc-conv/matmul/gemm": "onnxruntime.quantization",
    "ort-per-tensor-prepared": "onnxruntime.quantization",
    "ort-per-channel-prepared": "onnxruntime.quantization",
    "ort-pc-conv/matmul/gemm-prepared": "onnxruntime.quantization",
    "nncf": "nncf",
    "nncf-prepared": "nncf",
    "nncf-openvino": "nncf.openvino",
}

# Variants whose model is OpenVINO IR (.xml beside its .bin), not ONNX: compared in OpenVINO only.
OPENVINO_IR = {"nncf-openvino"}

VARIANTS = {
    "lowprec": lowprec_default,
    "lowprec-openvino": lowprec_openvino,
    "lowprec-tune": lowprec_tune,
    "lowprec-openvino-tune": lowprec_openvino_tune,
    "ort-per-tensor": ort_per_tensor,
    "ort-per-channel": ort_per_channel,
    "ort-pc-conv/matmul/gemm": ort_per_channel_ops,
    "ort-per-tensor-prepared": ort_per_tensor_prepared,
    "ort-per-channel-prepared": ort_per_channel_prepared,
    "ort-pc-conv/matmul/gemm-prepared": ort_per_channel_ops_prepared,
    "nncf": nncf_default,
    "nncf-prepared": nncf_prepared,
    "nncf-openvino": nncf_openvino,
}
