"""Validate and benchmark in OpenVINO, the second serving runtime, on the digit classifier."""

from __future__ import annotations

import json
import sys

import pytest

import lowprec_core as lp
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
