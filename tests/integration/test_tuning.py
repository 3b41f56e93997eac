"""quantize --tune latency on the digit classifier: candidates, the kept one, and its rule."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _tuning
from lowprec_core._cli import main


def test_the_latency_search_reports_every_candidate_and_its_choice_reproduces(demo, tmp_path, capsys):
    out, report = tmp_path / "tuned.onnx", tmp_path / "q.json"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(out), "--tune", "latency",
                 "--report", str(report)]) == 0
    assert "latency search (onnxruntime, 1 thread(s)" in capsys.readouterr().out
    result = json.loads(report.read_text())
    tuning, config = result["tuning"], result["plan"]["config"]
    floors = [c["min_reduction"] for c in tuning["candidates"]]
    # The target's own floor is always measured; every plan quantizes some layer, so all-float is too.
    assert 64 in floors and floors[:-1] == sorted(floors[:-1]) and floors[-1] is None
    (chosen,) = [c for c in tuning["candidates"] if c["chosen"]]
    assert len(result["plan"]["nodes"]) == chosen["layers"]
    assert all(c["speedup"] > 0 and c["nmse"] >= 0 for c in tuning["candidates"]) and tuning["samples"] == _tuning.SAMPLES
    # The choice is in the config: naming it gives the same bytes without a search.
    if chosen["min_reduction"] is None:
        named = ["--ignore", *config["ignore"]]
    else:
        assert config["min_reduction"] == chosen["min_reduction"]
        named = ["--min-reduction", str(chosen["min_reduction"])]
    again = tmp_path / "again.onnx"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(again), *named]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(("measured", "kept"), [
    ({(64, "target"): (2.0, 1.0), (256, "target"): (3.0, 2.0)}, (64, "target")),  # fastest, but twice the default's error
    ({(64, "target"): (2.0, 1.0), (256, "target"): (2.05, 0.5)}, (64, "target")),  # faster by less than the margin
    ({(64, "target"): (2.0, 1.0), (256, "target"): (2.5, 1.2)}, (256, "target")),  # clearly faster, error within the slack
    ({(64, "target"): (2.0, 1.0), (0, "all"): (2.6, 1.2), (256, "target"): (2.5, 0.1)}, (0, "all")),
    ({(64, "target"): (0.8, 1.0), (256, "target"): (0.9, 1.0)}, (256, "target")),  # all slower than FP32: the least slow
    ({(64, "target"): (0.8, 1.0), (256, "target"): (0.9, 1.0), _tuning.FLOAT: (1.0, 0.0)}, _tuning.FLOAT),  # FP32 wins
    ({(64, "target"): (0.97, 1.0), _tuning.FLOAT: (1.0, 0.0)}, (64, "target")),  # within the timing noise of FP32
])
def test_the_fastest_candidate_within_the_defaults_error_is_kept(measured, kept):
    """The rule alone, on (speedup, output NMSE) per candidate; the default is (64, target)."""
    speedup = {k: v[0] for k, v in measured.items()}
    nmse = {k: v[1] for k, v in measured.items()}
    assert _tuning.choose((64, "target"), speedup, nmse) == kept


def test_candidates_try_integer_ops_only_where_the_runtime_has_them():
    assert _tuning.candidates(lp.QuantConfig()) == [(64, "target"), (0, "all"), (256, "target"), (64, "all")]
    assert _tuning.candidates(lp.QuantConfig(target="openvino")) == [(64, "target"), (0, "target"), (256, "target")]
    assert _tuning.candidates(lp.QuantConfig(min_reduction=256)) == [(256, "target"), (0, "all"), (64, "target"), (256, "all")]


class _Fixed:
    """A session that sleeps a fixed time and returns fixed outputs."""

    def __init__(self, seconds: float, outputs: list[np.ndarray]) -> None:
        self.seconds, self.outputs, self.calls = seconds, outputs, 0

    def run(self, names, feed):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return self.outputs


def test_measure_times_every_session_and_drops_those_far_behind_the_default():
    ref = np.ones(4, dtype=np.float32)
    samples = [{"x": np.zeros(1)}] * _tuning.SAMPLES
    sessions = [_Fixed(0.004, [ref]), _Fixed(0.002, [ref * 1.1]), _Fixed(0.008, [ref]), _Fixed(0.002, [ref, np.arange(3)])]
    times, nmse = _tuning.measure(sessions, samples)
    assert [len(t) for t in times] == [_tuning.SAMPLES, _tuning.SAMPLES, _tuning.DROP_AFTER, _tuning.SAMPLES]
    assert np.median(times[0] / times[1]) == pytest.approx(2.0, rel=0.3)
    assert nmse == [pytest.approx(0.01), 0.0, 0.0]  # integer outputs are not compared
    assert sessions[2].calls == _tuning.WARMUP + _tuning.DROP_AFTER


def test_the_searchs_integer_ops_choice_is_in_the_config_and_reproduces(tmp_path, monkeypatch):
    """A candidate with integer ops on, kept (the rule forced), is named by the config it returns:
    on a residual block, every layer and the Add between them on integers."""
    from tests import models

    model = tmp_path / "residual.onnx"
    onnx.save(models.residual_block(), model)
    data = models.feeds(models.residual_block(), batches=4, batch=4)
    monkeypatch.setattr(_tuning, "choose", lambda default, speedup, nmse: (0, "all"))
    out = tmp_path / "t.onnx"
    result = lp.quantize(model, out, data=data, tune="latency")
    config = result.plan.config
    assert (config.min_reduction, config.integer_ops) == (0, "all") and result.plan.integer_ops == ["add"]
    assert [(c.min_reduction, c.integer_ops, c.integer_op_nodes) for c in result.tuning.candidates] == [
        (0, "all", 1), (64, "target", 0), (256, "target", 0)]  # (64, all) has no Add between layers: the default's model
    assert len(result.plan.layers()) == 3 and result.tuning.samples == _tuning.SAMPLES
    again = tmp_path / "again.onnx"
    lp.quantize(model, again, data=data, config=config)
    assert again.read_bytes() == out.read_bytes()


def test_where_nothing_quantized_beats_fp32_the_search_says_so_and_keeps_every_layer_float(demo, tmp_path, monkeypatch):
    """Timings forced: every quantized candidate twice as slow as FP32. The float candidate (in
    ORT, the FP32 reference itself, never timed twice) is kept; its config reproduces it."""
    real = _tuning.measure

    def slow(sessions, samples):
        times, nmse = real(sessions, samples[:2])
        return [np.full(len(samples), 1.0), *(np.full(len(samples), 2.0) for _ in times[1:])], nmse

    monkeypatch.setattr(_tuning, "measure", slow)
    out = tmp_path / "t.onnx"
    result = lp.quantize(demo["model"], out, data=demo["calib"], tune="latency")
    tuning, config = result.tuning, result.plan.config
    (chosen,) = [c for c in tuning.candidates if c.chosen]
    assert chosen.min_reduction is None and chosen.layers == 0 and (chosen.speedup, chosen.nmse) == (1.0, 0.0)
    assert "every layer float" in tuning.reason and "no layer pays off in integer here" in tuning.reason
    assert all(c.speedup == 0.5 for c in tuning.candidates if not c.chosen)
    assert result.plan.layers() == [] and set(config.ignore) == {"Conv", "Gemm"}  # the digit classifier's layer types
    assert not {n.op_type for n in onnx.load(out).graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    again = tmp_path / "again.onnx"
    lp.quantize(demo["model"], again, data=demo["calib"], config=config)
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--stats", "STATS"], "--tune latency measures the candidates on data: give --data (or --eval)"),
    (["--data", "CALIB", "--eval", "EVAL", "--labels", "LABELS", "--metric", "top1"], "does not run with the accuracy-aware search"),
    (["--data", "CALIB", "--tune-threads", "0"], "tune_threads must be a positive thread count, not 0"),
])
def test_bad_tuning_requests_are_exit_2_before_any_work(demo, tmp_path, capsys, extra, needle):
    stats = tmp_path / "stats"
    lp.calibrate(demo["model"], demo["calib"], stats)
    names = {"STATS": str(stats), "CALIB": str(demo["calib"]), "EVAL": str(demo["eval"]), "LABELS": str(demo["labels"])}
    out = tmp_path / "x.onnx"
    args = ["quantize", str(demo["model"]), "--out", str(out), "--tune", "latency", *[names.get(a, a) for a in extra]]
    assert main(args) == 2
    assert needle in capsys.readouterr().err and not out.exists()
