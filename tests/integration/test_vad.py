"""A recurrent model the defaults were not chosen on: silero VAD on real speech.

Its LSTM sits in an If whose branch reads the last encoder ReLU from the outer scope. Before the
fix, the INT8 model failed onnx.checker (an If sorted ahead of that ReLU) and the branch read
the Conv output the fused ReLU had left unclamped: 0.60 frame agreement with FP32. On the same
streams (bench/RESULTS.md) NNCF agrees on 0.916, and every ORT variant writes an invalid graph.
"""

from __future__ import annotations

import collections
import importlib.util
import os

import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from lowprec_core._graph import all_nodes
from lowprec_core._runtime import FLOAT_KERNELS, INTEGER_KERNELS, optimized_graph
from examples import vad

READY = importlib.util.find_spec("silero_vad") is not None and any(vad.SPEECH_DIR.glob("*.wav"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not READY and not os.environ.get("CI"), reason="make venv installs silero-vad; make speech fetches the recordings"),
]


def test_silero_vad_keeps_its_calls_on_real_speech(tmp_path):
    fp32 = runtime.session(str(vad.model_path()))
    calib = vad.calibration(lambda feed: fp32.run(None, feed))
    out = tmp_path / "vad-int8.onnx"
    report = lp.quantize(vad.model_path(), out, data=calib)

    onnx.checker.check_model(onnx.load(out))  # node order included: subgraphs read outer tensors
    assert len(report.plan.nodes) >= 5  # the STFT, encoder and decoder convolutions
    kernels = collections.Counter(node.op_type for node in optimized_graph(out.read_bytes()).graph.node)
    assert sum(kernels[k] for k in INTEGER_KERNELS) == len(report.plan.nodes) and not sum(kernels[k] for k in FLOAT_KERNELS), kernels
    int8 = runtime.session(str(out))
    scores = vad.agreement(lambda feed: fp32.run(None, feed), lambda feed: int8.run(None, feed))
    assert 0.3 < scores["speech"] < 0.7  # the streams hold speech and noise both
    assert scores["agree"] >= 0.95, scores  # measured 0.958

    # The last encoder conv receives 12 dB SQNR and passes on 4 dB, yet adds little itself: run
    # alone on FP32's input its own SQNR is about 30 dB (output minus input error said 4.3 dB).
    layers = {row.layer: row for row in lp.inspect(vad.model_path(), out, calib[:8]).layers}
    last = layers["/model/encoder/3/reparam_conv/Conv"]
    assert last.output_sqnr_db < 8 and last.own_sqnr_db > 25, last


def test_the_accuracy_aware_search_runs_on_an_rnn_whose_state_carries_the_batch_second(tmp_path):
    """Its subsets and its speed feed slice every input along that input's batch axis (the
    state's second, none for the sample rate); they sliced axis 0 and failed on the scalar."""
    fp32 = runtime.session(str(vad.model_path()))
    run = lambda feed: fp32.run(None, feed)  # noqa: E731
    calib = vad.calibration(run)
    evaluation = vad.calibration(run, seed=5)  # a stream calibration never saw, FP32's states
    budget = lp.AccuracyBudget(metrics=(lp.MetricBudget(metric="mse", max_drop=2e-4),), min_speedup=0)
    report = lp.quantize(vad.model_path(), tmp_path / "aaq.onnx", data=calib, eval_data=evaluation, accuracy=budget)
    assert report.accuracy.iterations[-1].within_budget
    assert report.plan.nodes  # not everything went back to float
    int8 = runtime.session(str(tmp_path / "aaq.onnx"))
    assert vad.agreement(run, lambda feed: int8.run(None, feed))["agree"] >= 0.98  # measured 0.995


def test_silero_vads_default_export_quantizes_inside_its_if(tmp_path):
    """silero_vad.onnx keeps the whole network in If(sr == 16000): a 16 kHz body and an 8 kHz
    body, six convolutions each. The 16 kHz calls run the one body; the other, which no
    calibration batch ran, stays float and says why."""
    path = vad.model_path(vad.DEFAULT_EXPORT)
    fp32 = runtime.session(str(path))
    calib = vad.calibration(lambda feed: fp32.run(None, feed))
    out = tmp_path / "vad-default-int8.onnx"
    report = lp.quantize(path, out, data=calib)

    onnx.checker.check_model(onnx.load(out))
    assert report.plan.nodes == [] and len(report.plan.bodies) == 1, report.plan.bodies
    (body,) = report.plan.bodies.values()
    assert len(body.nodes) == 6 and all(name.startswith("If_0_then_branch") for name in body.nodes)
    unrun = [name for name, why in report.plan.skipped.items() if "no calibration batch ran" in why]
    assert len(unrun) == 6 and all(name.startswith("If_0_else_branch") for name in unrun)
    kernels = collections.Counter(node.op_type for node in all_nodes(optimized_graph(out.read_bytes()).graph))
    assert kernels["QLinearConv"] == 6, kernels
    int8 = runtime.session(str(out))
    scores = vad.agreement(lambda feed: fp32.run(None, feed), lambda feed: int8.run(None, feed))
    assert scores["agree"] >= 0.95, scores  # measured 0.958, as the flat 16 kHz export
    # The per-layer analysis reads the body's tensors through the If, as calibration does: the
    # same last encoder conv stands out as in the flat export's test above.
    layers = {row.layer.removeprefix("If_0_then_branch__Inline_0__"): row for row in lp.inspect(path, out, calib[:8]).layers}
    assert len(layers) == 6, sorted(layers)
    last = layers["/encoder/3/reparam_conv/Conv"]
    assert last.output_sqnr_db < 8, last


def test_the_accuracy_aware_search_reverts_layers_inside_the_default_exports_if(tmp_path):
    """Its inputs name no dimension (state [2, 0, 128]): the open size is the batch, second in
    the state. The layers the search can revert all sit in the 16 kHz body."""
    path = vad.model_path(vad.DEFAULT_EXPORT)
    fp32 = runtime.session(str(path))
    run = lambda feed: fp32.run(None, feed)  # noqa: E731
    budget = lp.AccuracyBudget(metrics=(lp.MetricBudget(metric="mse", max_drop=2e-4),), min_speedup=0)
    report = lp.quantize(path, tmp_path / "aaq.onnx", data=vad.calibration(run), eval_data=vad.calibration(run, seed=5), accuracy=budget)
    final = report.accuracy.iterations[-1]
    assert final.within_budget and final.float_layers and all(name.startswith("If_0_then_branch") for name in final.float_layers)
    assert len(report.plan.layers()) >= 3  # not everything went back to float
    int8 = runtime.session(str(tmp_path / "aaq.onnx"))
    assert vad.agreement(run, lambda feed: int8.run(None, feed))["agree"] >= 0.98  # measured 0.995


def test_silero_vad_served_in_openvino_once_its_call_length_is_fixed(tmp_path, capsys):
    """OpenVINO cannot read the flat export: an If squeezes the encoder's time axis only when it
    is 1, so its output's rank depends on the call length. `--input-shape input=batch,576` fixes
    that length (the batch stays free); validate and benchmark then run the FP32 model at the
    INT8 model's sizes, without being told."""
    pytest.importorskip("openvino")
    import numpy as np

    from lowprec_core._cli import main

    fp32 = runtime.session(str(vad.model_path()))
    data = tmp_path / "calib"
    data.mkdir()
    for index, feed in enumerate(vad.calibration(lambda feed: fp32.run(None, feed))):
        np.savez(data / f"{index:03d}.npz", **feed)
    out = tmp_path / "vad-ov.onnx"
    common = [str(vad.model_path()), "--data", str(data), "--out", str(out), "--runtime", "openvino"]
    assert main(["quantize", *common]) == 3 and not out.exists()
    assert main(["quantize", *common, "--input-shape", "input=batch,576"]) == 0
    inputs = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in onnx.load(out).graph.input}
    assert inputs["input"] == ["batch", 576] and inputs["state"] == [2, "batch", 128]

    sized = tmp_path / "fp32-576.onnx"
    onnx.save(lp.fix_input_shapes(onnx.load(vad.model_path()), {"input": ("batch", 576)}), sized)
    reference = lp.serving_session(str(sized), runtime="openvino", precision="f32")
    int8 = lp.serving_session(str(out), runtime="openvino")
    scores = vad.agreement(lambda feed: reference.run(None, feed), lambda feed: int8.run(None, feed))
    assert scores["agree"] >= 0.97, scores  # measured 0.980 (NNCF's model in OpenVINO: 0.916)

    capsys.readouterr()
    assert main(["benchmark", str(vad.model_path()), str(out), "--runtime", "openvino", "--data", str(data / "000.npz"),
                 "--batch", "1,16", "--repeats", "5", "--report", str(tmp_path / "b.json")]) == 0
    assert [r.batch for r in lp.BenchmarkReport.model_validate_json((tmp_path / "b.json").read_text()).results] == [1, 16]
    assert main(["validate", str(vad.model_path()), str(out), "--runtime", "openvino", "--data", str(data),
                 "--metric", "mse", "--max-drop", "0.01"]) == 0


def test_sizes_that_an_unused_if_branch_contradicts_are_exit_3_saying_so_before_calibration(tmp_path, capsys):
    """The default export's 8 kHz body is written for 288-sample calls: fixed at 576, ONNX
    Runtime's constant folding finds a Squeeze there of an axis that is now 2, and refuses the
    model. The error says the sizes were given, and why a branch no call takes matters."""
    from lowprec_core._cli import main

    (tmp_path / "empty").mkdir()
    out = tmp_path / "x.onnx"
    code = main(["quantize", str(vad.model_path(vad.DEFAULT_EXPORT)), "--data", str(tmp_path / "empty"), "--out", str(out),
                 "--input-shape", "input=batch,576"])
    err = capsys.readouterr().err
    assert code == 3 and not out.exists()  # an empty data folder would have been exit 4 after a check that came later
    assert "with the input sizes fixed as given (input [batch, 576]): ONNX Runtime cannot load the model" in err
    assert "Sizes hold in every branch of an If, including one written for other sizes that no call takes" in err
