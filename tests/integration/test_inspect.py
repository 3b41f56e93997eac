"""`lowprec inspect` on the real digit classifier with one deliberately badly calibrated layer."""

from __future__ import annotations


import lowprec_core as lp
from lowprec_core._calibration.stats import Statistics
from lowprec_core._config import QuantConfig
from lowprec_core._model_io import load_model, prepare
from tests.conftest import lowprec

BAD = "/features/features.5/Conv"


def _sabotaged_stats(demo, tmp_path) -> str:
    """Calibrate honestly, then stretch the range of BAD's output 40x, as one outlier batch would."""
    good = lp.calibrate(demo["model"], demo["calib"], tmp_path / "good")
    graph = prepare(load_model(demo["model"]).proto).graph
    conv = next(n for n in graph.node if n.name == BAD)
    outputs = {conv.output[0]} | {n.output[0] for n in graph.node if n.input and n.input[0] == conv.output[0] and n.op_type == "Relu"}
    tensors = dict(good.tensors)
    for name in outputs & set(tensors):
        t = tensors[name]
        tensors[name] = t.replace(minimum=t.minimum * 40, maximum=t.maximum * 40)
    Statistics(good.model_sha256, good.samples, tensors).save(tmp_path / "bad")
    return str(tmp_path / "bad")


def test_inspect_names_the_bad_layer_and_ignoring_it_helps(demo, tmp_path):
    stats = _sabotaged_stats(demo, tmp_path)
    minmax = QuantConfig(activation_range="minmax")  # ranges straight from the (sabotaged) min/max
    lp.quantize(demo["model"], tmp_path / "bad.onnx", stats=stats, config=minmax)
    report = lp.inspect(demo["model"], tmp_path / "bad.onnx", demo["eval"])
    assert report.layers[0].layer == BAD, [(r.layer, r.own_sqnr_db) for r in report.layers]
    assert report.layers[0].own_sqnr_db < min(r.own_sqnr_db for r in report.layers[1:]) - 10
    assert "none" not in report.layers[0].action

    lp.quantize(demo["model"], tmp_path / "fixed.onnx", stats=stats, config=minmax.model_copy(update={"ignore": (BAD,)}))
    score = lambda path: lp.validate(demo["model"], path, demo["eval"], metric="mse", max_drop=1.0).candidate_score  # noqa: E731
    assert score(tmp_path / "fixed.onnx") < 0.5 * score(tmp_path / "bad.onnx")


def test_inspect_cli_prints_worst_first_and_writes_every_layer(demo, tmp_path):
    out = tmp_path / "int8.onnx"
    quantized = len(lp.quantize(demo["model"], out, data=demo["calib"]).plan.nodes)
    result = lowprec("inspect", demo["model"], out, "--data", demo["eval"], "--top", "2", "--report", tmp_path / "i.json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{quantized} quantized layers over 500 samples") and len(lines) == 2 + 2
    report = lp.InspectReport.model_validate_json((tmp_path / "i.json").read_text())
    assert len(report.layers) == quantized
    assert [r.own_sqnr_db for r in report.layers] == sorted(r.own_sqnr_db for r in report.layers)


def test_smoothquant_layers_are_compared_as_the_fp32_model_computes_them(tmp_path):
    """SmoothQuant stores s·W and feeds x/s: inspect must undo s on both sides, not report the
    scaling itself as error (it did: weight SQNR below 0 dB, input unmatched)."""
    import numpy as np
    import onnx

    from tests import models

    from onnx import numpy_helper

    model = models.mlp(seed=3)
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    scaled = numpy_helper.to_array(w1).copy()
    scaled[9] *= 40.0  # a hidden channel with outliers: SmoothQuant's case for the MatMul
    w1.CopyFrom(numpy_helper.from_array(scaled, "w1"))
    onnx.save(model, tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    data = [{"x": rng.normal(0, 1, (16, 16)).astype(np.float32)} for _ in range(4)]
    report = lp.quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", data=data, config=QuantConfig(model_type="transformer", min_reduction=0),  # a toy MLP: K=32
                         inspect_samples=64)
    assert report.plan.smoothed, "the outlier channels should have been smoothed"
    layer = next(r for r in report.layers.layers if r.layer == "matmul")
    assert layer.weight_sqnr_db is not None and layer.weight_sqnr_db > 20, layer
    assert layer.input_sqnr_db is not None and layer.input_sqnr_db > 20, layer
    assert layer.output_sqnr_db > 20, layer
