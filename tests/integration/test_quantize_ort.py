"""Quantized models in the real ONNX Runtime: integer kernels, accuracy, determinism."""

from __future__ import annotations

import collections
import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core._runtime import FLOAT_KERNELS, INTEGER_KERNELS, optimized_graph, session

OCR = importlib.util.find_spec("rapidocr_onnxruntime")


def _kernels(path: Path) -> collections.Counter:
    return collections.Counter(node.op_type for node in optimized_graph(str(path)).graph.node)


def _float_layers_read_float_weights(path: Path) -> bool:
    """No float Conv/MatMul/Gemm in ORT's optimised graph is fed by a dequantized weight: a
    layer is either an integer kernel or entirely float."""
    graph = optimized_graph(str(path)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return all(producers.get(node.input[1]) != "DequantizeLinear" for node in graph.node if node.op_type in FLOAT_KERNELS and len(node.input) > 1)


def _short_layers(report) -> set[str]:
    """Layers the CPU rows' cost rules leave float: under the reduction floor, or lone and small."""
    return {name for name, why in report.plan.skipped.items() if "min_reduction" in why or "lone_min_work" in why}


def test_demo_model_quantized_layers_run_in_integer_kernels(tmp_path, demo):
    out = tmp_path / "int8.onnx"
    report = lp.quantize(demo["model"], out, data=demo["calib"])
    fp32_ops = collections.Counter(n.op_type for n in onnx.load(demo["model"]).graph.node)
    kernels = _kernels(out)
    # The first conv sums only 1x3x3 products per output, below the CPU floor, but its 32-channel
    # output would need a Q for the integer conv after it anyway: it is quantized too.
    assert _short_layers(report) == set(), report.plan.skipped
    assert sum(kernels[k] for k in FLOAT_KERNELS) == 0, kernels
    assert kernels["QLinearConv"] == fp32_ops["Conv"] and kernels["QGemm"] == fp32_ops["Gemm"], kernels
    assert len(report.plan.nodes) == fp32_ops["Conv"] + fp32_ops["Gemm"]
    assert _float_layers_read_float_weights(out)
    # Above a floor of 300 the first conv (9 products) feeds a conv that is short too (288), which
    # widens 32 channels to 64 for the integer third conv: the two run as an integer chain from the
    # image (one Q on its single channel). The last Gemm (64) shrinks 64 features to 10: float.
    floor = lp.quantize(demo["model"], tmp_path / "floor.onnx", data=demo["calib"], config=lp.QuantConfig(min_reduction=300))
    assert _short_layers(floor) == {"/head/head.3/Gemm"}, floor.plan.skipped
    # The hidden Gemm's ReLU then feeds a float layer only, and ORT fuses the two into a float
    # FusedGemm: the Gemm stays float rather than run in float on dequantized weights.
    assert "feeds float layers only" in floor.plan.skipped["/head/head.1/Gemm"]
    kernels = _kernels(tmp_path / "floor.onnx")
    assert kernels["QLinearConv"] == 3 and sum(kernels[k] for k in INTEGER_KERNELS) == 3, kernels
    assert kernels["QuantizeLinear"] == 1, kernels
    assert _float_layers_read_float_weights(tmp_path / "floor.onnx"), kernels


def test_demo_accuracy_within_half_a_point(tmp_path, demo):
    out = tmp_path / "int8.onnx"
    lp.quantize(demo["model"], out, data=demo["calib"])
    result = lp.validate(demo["model"], out, demo["eval"], metric="top1", labels=demo["labels"], max_drop=0.005)
    assert result.reference_score > 0.97  # the model is real, not a stand-in
    assert result.passed, result


def test_quantizing_twice_gives_identical_bytes(tmp_path, demo):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    lp.quantize(demo["model"], first, data=demo["calib"])
    lp.quantize(demo["model"], second, data=demo["calib"])
    assert first.read_bytes() == second.read_bytes()


def test_calibrate_then_quantize_from_stats_matches_one_step(tmp_path, demo):
    lp.calibrate(demo["model"], demo["calib"], tmp_path / "stats")
    lp.quantize(demo["model"], tmp_path / "two_step.onnx", stats=tmp_path / "stats")
    lp.quantize(demo["model"], tmp_path / "one_step.onnx", data=demo["calib"])
    assert (tmp_path / "two_step.onnx").read_bytes() == (tmp_path / "one_step.onnx").read_bytes()


def test_stats_of_another_model_are_refused(tmp_path, demo):
    lp.calibrate(demo["model"], demo["calib"], tmp_path / "stats")
    other = onnx.load(demo["model"])
    other.doc_string = "a different model"
    onnx.save(other, tmp_path / "other.onnx")
    with pytest.raises(lp.StatsError, match="belong to model sha256"):
        lp.quantize(tmp_path / "other.onnx", tmp_path / "int8.onnx", stats=tmp_path / "stats")
    assert not (tmp_path / "int8.onnx").exists()


@pytest.mark.slow
@pytest.mark.skipif(OCR is None and not os.environ.get("CI"), reason="rapidocr-onnxruntime is installed by `make venv`")
@pytest.mark.parametrize(("filename", "shape", "size"), [
    ("ch_PP-OCRv4_rec_infer.onnx", (4, 3, 48, 320), 0.40),
    ("ch_PP-OCRv4_det_infer.onnx", (2, 3, 160, 160), 0.40),
    # MobileNetV3 at width 0.35: most 1x1 convs sum 16-48 products and stay float. Its head is
    # MatMul + Add on a Reshape to a computed shape, which ORT fuses into a Gemm. Its five
    # squeeze-excite convs over the floor are lone (lone_min_work) and hold a sixth of its
    # weights: 0.84 of FP32's bytes with them float (0.75 quantized).
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (2, 3, 48, 192), 0.85),
])
def test_ppocr_models_quantize_to_integer_kernels(tmp_path, filename, shape, size):
    model = Path(OCR.origin).parent / "models" / filename
    source = onnx.load(model)
    assert source.opset_import[0].version in (11, 12) and any(n.op_type == "Constant" for n in source.graph.node)
    # Structure check only (no accuracy claim): image-shaped inputs in the model's value range.
    rng = np.random.default_rng(0)
    images = np.clip(rng.normal(0.6, 0.4, size=shape), -1, 1).astype(np.float32)
    out = tmp_path / "int8.onnx"
    report = lp.quantize(model, out, data=[{"x": images[:1]}, {"x": images[1:]}])

    # Depthwise, first and thin 1x1 convs stay float (min_reduction), and squeeze-excite convs
    # over pooled tensors (lone_min_work); they hold few weights.
    assert out.stat().st_size <= size * model.stat().st_size
    onnx.checker.check_model(onnx.load(out))
    kernels = _kernels(out)
    convs = sum(1 for n in source.graph.node if n.op_type == "Conv")
    short = _short_layers(report)
    assert short and set(report.plan.nodes).isdisjoint(short)
    op_types = {n.name: n.op_type for n in source.graph.node}
    assert sum(op_types[name] == "Conv" for name in report.plan.nodes) == convs - sum(op_types[name] == "Conv" for name in short)
    assert kernels["QLinearConv"] == convs - sum(op_types[name] == "Conv" for name in short), kernels  # every quantized Conv runs as an integer kernel
    assert _float_layers_read_float_weights(out), kernels  # and every other one entirely in float
    assert sum(kernels[k] for k in INTEGER_KERNELS) == len(report.plan.nodes), (kernels, len(report.plan.nodes))
    outputs = session(out.read_bytes()).run(None, {"x": images[:1]})[0]
    assert outputs.shape[0] == 1 and np.isfinite(outputs).all()
