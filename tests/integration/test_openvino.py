"""Validate and benchmark in OpenVINO, the second serving runtime, on the digit classifier."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as lp_runtime
from lowprec_core import _config as lp_config
from lowprec_core._cli import main


@pytest.fixture(scope="module")
def int8(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "int8.onnx"
    lp.quantize(demo["model"], out, data=demo["calib"])
    return out


def test_validate_runs_both_models_in_openvino(demo, int8):
    ort = lp.validate(demo["model"], int8, demo["eval"], metric="top1", labels=demo["labels"])
    ov = lp.validate(demo["model"], int8, demo["eval"], metric="top1", labels=demo["labels"], runtime="openvino")
    assert (ort.runtime, ov.runtime) == ("onnxruntime", "openvino")
    assert ov.samples == ort.samples == 500
    # Same models, another runtime's kernels: the FP32 scores agree, INT8 within a few samples.
    assert ov.reference_score == pytest.approx(ort.reference_score, abs=0.004)
    assert ov.passed and ov.candidate_score == pytest.approx(ort.candidate_score, abs=0.01)
    # Beside them, the FP32 model as OpenVINO serves it unasked (bf16 where the CPU has it).
    assert ort.default_precision is None and ort.default_score is None
    if lp_runtime.float_precision("openvino") == "f32":  # no native bf16 here: that is the reference itself
        assert ov.default_precision is None and ov.default_score is None
    else:
        assert ov.default_precision == lp_runtime.float_precision("openvino")
        assert ov.default_score == pytest.approx(ov.reference_score, abs=0.02)
        assert f"FP32 at OpenVINO's own default precision ({ov.default_precision}), what serving the FP32 model unasked gives: " \
               f"top1 {ov.default_score:.4f}" in lp.markdown(ov)


def test_benchmark_in_openvino_also_times_its_own_fp32_default(demo, int8, tmp_path, capsys):
    code = main(["benchmark", str(demo["model"]), str(int8), "--batch", "1,16", "--repeats", "5", "--runtime", "openvino",
                 "--report", str(tmp_path / "b.json")])
    assert code == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["runtime"] == "openvino" and [r["batch"] for r in report["results"]] == [1, 16]
    printed = capsys.readouterr().out
    assert printed.startswith("## Benchmark (OpenVINO ")
    import openvino

    default = openvino.Core().compile_model(str(demo["model"]), "CPU").get_property("INFERENCE_PRECISION_HINT").to_string()
    if default == "f32":  # no native bf16 here: nothing else to time
        assert report["fp32_default_precision"] is None
    else:
        assert report["fp32_default_precision"] == default
        assert all(r["fp32_default_median_ms"] > 0 and r["speedup_vs_default"] > 0 for r in report["results"])
        assert f"FP32 at OpenVINO's own default precision ({default})" in printed


@pytest.mark.parametrize("command", ["validate", "benchmark"])
def test_an_unknown_or_missing_runtime_is_exit_2_naming_the_fix(command, demo, int8, tmp_path, capsys, monkeypatch):
    extra = ["--data", str(demo["eval"]), "--metric", "agreement"] if command == "validate" else []
    args = [command, str(demo["model"]), str(int8), *extra, "--report", str(tmp_path / "r.json")]
    assert main([*args, "--runtime", "tvm"]) == 2
    assert "unknown runtime 'tvm'; expected one of: onnxruntime, openvino" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert main([*args, "--runtime", "openvino"]) == 2
    assert "runtime 'openvino' is not installed: pip install 'lowprec[openvino]'" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_quantize_for_openvino_runs_integer_kernels_there_and_passes_the_gate(demo, tmp_path):
    """--runtime openvino --target openvino (the row a VNNI or AMX CPU gets by default):
    OpenVINO's placement (float biases; the 9-product first conv quantized, as its 32-channel
    output is, in a graph that computes no shape), the same bytes on a rerun, every quantized
    layer on OpenVINO's integer kernels, and top-1 within the default budget in OpenVINO."""
    import openvino

    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for out in outs:
        assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--runtime", "openvino",
                     "--target", "openvino", "--report", str(tmp_path / "q.json")]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    plan = json.loads((tmp_path / "q.json").read_text())["plan"]
    assert plan["config"]["target"] == "openvino" and plan["biases"] == [] and len(plan["nodes"]) == 5
    assert "/features/features.0/Conv" in plan["nodes"]
    compiled = openvino.Core().compile_model(str(outs[0]), "CPU")
    layers = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()
              if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")]
    precisions = [info["runtimePrecision"].astype(str) for info in layers]
    assert len(layers) == 5 and precisions.count("u8") == 5, precisions
    result = lp.validate(demo["model"], outs[0], demo["eval"], metric="top1", labels=demo["labels"], runtime="openvino")
    assert result.passed and result.runtime == "openvino"


def test_runtime_openvino_alone_takes_the_row_for_this_cpus_isa(demo, tmp_path):
    """Without --target, the row ops.DEFAULT_ROWS gives this CPU: on one without VNNI or AMX,
    OpenVINO's integer Gemm runs slower than f32 and the digit CNN's Gemms stay float."""
    from lowprec_core._ops import INT32_DOT_PRODUCTS

    out = tmp_path / "d.onnx"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--runtime", "openvino",
                 "--report", str(tmp_path / "q.json")]) == 0
    plan = json.loads((tmp_path / "q.json").read_text())["plan"]
    expected = "openvino" if INT32_DOT_PRODUCTS & lp_config.cpu_flags() else "openvino-avx2"
    assert plan["config"]["target"] == expected == lp.runtime_target("openvino")
    gemms = {name for name, reason in plan["skipped"].items() if "has no integer Gemm" in reason}
    assert bool(gemms) == (expected == "openvino-avx2") and plan["nodes"]


def test_the_accuracy_aware_search_for_openvino_scores_and_times_candidates_in_openvino(demo, tmp_path, monkeypatch):
    from lowprec_core import _runtime_openvino

    built = []
    original = _runtime_openvino.OpenVINOSession.__init__
    monkeypatch.setattr(_runtime_openvino.OpenVINOSession, "__init__",
                        lambda self, model, **kw: (built.append(kw.get("precision")), original(self, model, **kw))[1])
    budget = lp.AccuracyBudget(metrics=(lp.MetricBudget(metric="top1", max_drop=0.0),), min_speedup=0)
    report = lp.quantize(demo["model"], tmp_path / "s.onnx", data=demo["calib"], config=lp.QuantConfig(target="openvino"),
                         eval_data=demo["eval"], labels=demo["labels"], accuracy=budget)
    assert report.accuracy.met and report.accuracy.iterations[-1].speedup is not None
    # The FP32 reference at f32 (scores, then the speed check's), every candidate at the plugin's default.
    assert built.count("f32") == 2 and built.count(None) >= 2


def test_quantize_with_a_target_of_another_runtime_is_exit_2(demo, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    args = ["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out)]
    assert main([*args, "--runtime", "openvino", "--target", "cpu"]) == 2
    assert "target 'cpu' places quantizers for onnxruntime, not openvino; with --runtime openvino use: openvino" in capsys.readouterr().err
    assert main([*args, "--runtime", "tflite"]) == 2
    assert "unknown runtime 'tflite'; expected one of: onnxruntime, openvino" in capsys.readouterr().err
    assert not out.exists()


def test_the_latency_search_for_openvino_times_in_openvino(demo, tmp_path):
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], config=lp.QuantConfig(target="openvino"),
                         tune="latency")
    assert result.tuning.runtime == "openvino" and sum(c.chosen for c in result.tuning.candidates) == 1
    assert all(c.speedup > 0 for c in result.tuning.candidates)
    # Every plan quantizes some layer, so every layer float is a candidate too: timed where
    # OpenVINO runs float in bf16, else it is the f32 reference itself (exactly 1x, error 0).
    import openvino

    default = openvino.Core().compile_model(str(demo["model"]), "CPU").get_property("INFERENCE_PRECISION_HINT").to_string()
    assert lp_runtime.float_precision("openvino") == default
    floats = result.tuning.candidates[-1]
    assert floats.min_reduction is None and floats.layers == 0
    assert ((floats.speedup, floats.nmse) == (1.0, 0.0)) == (default == "f32")
    # Where float runs in bf16, every layer of the default is costed from OpenVINO's profiles.
    default_candidate = next(c for c in result.tuning.candidates if (c.min_reduction, c.integer_ops, c.float_layers) == (64, "target", []))
    assert len(result.tuning.layer_costs) == (default_candidate.layers if default != "f32" else 0)


def test_where_float_runs_in_bf16_the_search_profiles_its_own_timing_sessions(demo, tmp_path, monkeypatch):
    """The default's layers are costed from profiles of the sessions the loop times (counters on
    in every one alike), not from two more compiles: one compile per model timed, FP32 included."""
    from lowprec_core import _runtime_openvino, _tuning

    monkeypatch.setattr(_tuning.runtime, "float_precision", lambda serving: "bf16")  # as on a bf16 CPU
    monkeypatch.setattr(_tuning, "PROFILE_GAIN", float("inf"))  # the profile suggests no candidate here
    core, compiled = _runtime_openvino._core(), []

    class Counting:
        def __getattr__(self, name):
            return getattr(core, name)

        def compile_model(self, model, device, config):
            compiled.append(dict(config))
            return core.compile_model(model, device, config)

    monkeypatch.setattr(_runtime_openvino, "_core", lambda: Counting())
    real = _tuning.measure

    def level(sessions, samples, **kwargs):  # every candidate as fast as the default: none is rebuilt to be kept
        times, nmse, reference = real(sessions, samples, **kwargs)
        return [times[0], *(np.full(len(times[0]), 0.5) for _ in times[1:])], nmse, reference

    monkeypatch.setattr(_tuning, "measure", level)
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], config=lp.QuantConfig(target="openvino"),
                         tune="latency")
    default = next(c for c in result.tuning.candidates if (c.min_reduction, c.integer_ops, c.float_precision) == (64, "target", "default"))
    assert len(result.tuning.layer_costs) == default.layers > 0
    assert len(compiled) == len(result.tuning.candidates) + 1  # every candidate timed (none is FP32 itself at bf16)
    assert all(config.get("PERF_COUNT") for config in compiled)


def test_a_layernorm_written_as_a_square_difference_survives_bf16_once_prepared_for_openvino():
    """jax2tf's LayerNorm variance, E[h*h] - E[h]^2, cancels to nothing in bf16 where every
    channel sits far from 0 (Magika's FP32 model read 0.77 agreement with itself at bf16 on Zen
    4); prepared for OpenVINO it is centred first and comes out as close as bf16 allows."""
    from lowprec_core._model_io import prepare
    from tests import models
    from tests.unit.test_simplify_ranges import _layernorm_f64

    model = models.square_difference_layernorm()
    x = {"x": np.random.default_rng(5).normal(0, 1, (4, 6, 16)).astype(np.float32)}
    exact = _layernorm_f64(model, x["x"])
    sessions = [lp_runtime.serving_session(m, runtime="openvino", precision="bf16") for m in (model, prepare(model, "openvino"))]
    if sessions[0].precision != "bf16":
        pytest.skip("this CPU has no bf16: OpenVINO runs f32")
    before, after = (float(np.abs(s.run(None, x)[0] - exact).max()) for s in sessions)
    assert after < 1.0 and before > 10 * after, (before, after)  # measured 8379 and 0.39 (outputs of size ~10)


def test_the_latency_search_with_a_budget_scores_its_candidates_in_openvino(demo, tmp_path, monkeypatch):
    """Timings forced so the last candidate timed is the fastest (every layer float where
    OpenVINO runs float in bf16, else a quantized one): it is scored in OpenVINO and kept."""
    from lowprec_core import _tuning, _validate

    real = _tuning.measure

    def forced(sessions, samples, **kwargs):
        times, nmse, _ = real(sessions, samples[:2])
        n = len(samples)
        return [np.full(n, 1.0), *(np.full(n, 1.0) for _ in times[1:-1]), np.full(n, 0.25)], nmse, [sessions[0].run(None, s) for s in samples]

    monkeypatch.setattr(_tuning, "measure", forced)
    monkeypatch.setattr(_tuning, "_head_to_head", lambda first, second, samples, *handover: 4.0)  # and timed alone, as fast
    monkeypatch.setattr(_tuning, "_batch_gain", lambda first, second, large, *handover: 4.0)  # at batch 1 and as one batch
    scored_in = []
    real_full = _validate.Evaluator.full
    monkeypatch.setattr(_validate.Evaluator, "full", lambda self, model: scored_in.append(self.serving) or real_full(self, model))
    budget = lp.AccuracyBudget(metrics=(lp.MetricBudget(metric="top1", max_drop=0.01),), min_speedup=0)
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], config=lp.QuantConfig(target="openvino"),
                         eval_data=demo["eval"], labels=demo["labels"], accuracy=budget, tune="latency")
    (chosen,) = [c for c in result.tuning.candidates if c.chosen]
    assert chosen.speedup == 4.0 and chosen.within_budget and result.accuracy.met
    assert scored_in and set(scored_in) == {"openvino"}


@pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None, reason="make venv installs silero-vad")
@pytest.mark.parametrize("command", ["quantize", "calibrate"])
def test_a_model_openvino_cannot_read_is_exit_3_naming_its_nodes_before_any_work(tmp_path, capsys, command):
    """silero VAD's flat export: OpenVINO 2026.4's ONNX frontend cannot convert two of its nodes.
    The data folder is empty, so a check after calibration would have been a data error (4)."""
    model = Path(importlib.util.find_spec("silero_vad").origin).parent / "data" / "silero_vad_16k_op15.onnx"
    (tmp_path / "empty").mkdir()
    out = tmp_path / ("x.onnx" if command == "quantize" else "stats")
    assert main([command, str(model), "--data", str(tmp_path / "empty"), "--out", str(out), "--runtime", "openvino"]) == 3
    err = capsys.readouterr().err
    assert "OpenVINO cannot read the model: Conv node writing '/model/decoder/decoder/2/Conv_output_0': " \
           "The input data tensor's rank has to be known (static); ReduceMean node writing" in err
    # ... and which sizes the inputs leave free, and the option that fixes them (test_vad.py).
    assert "inputs leave sizes free (input [batch, sequence], state [2, batch, 128], sr []): fixing those it is served at " \
           "(--input-shape NAME=SIZES" in err
    assert not out.exists()
