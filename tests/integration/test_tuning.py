"""quantize --tune latency on the digit classifier: candidates, the kept one, and its rule."""

from __future__ import annotations

import json

import numpy as np
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
    assert 64 in floors and floors == sorted(floors)  # the target's own floor is always measured
    (chosen,) = [c for c in tuning["candidates"] if c["chosen"]]
    assert config["min_reduction"] == chosen["min_reduction"] and len(result["plan"]["nodes"]) == chosen["layers"]
    assert all(c["speedup"] > 0 and c["nmse"] >= 0 for c in tuning["candidates"]) and tuning["samples"] == _tuning.SAMPLES
    # The choice is in the config: naming it gives the same bytes without a search.
    again = tmp_path / "again.onnx"
    assert main(["quantize", str(demo["model"]), "--data", str(demo["calib"]), "--out", str(again),
                 "--min-reduction", str(chosen["min_reduction"])]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(("measured", "kept"), [
    ({64: (2.0, 1.0), 256: (3.0, 2.0)}, 64),  # 256 is fastest but doubles the default's output error
    ({64: (2.0, 1.0), 256: (2.05, 0.5)}, 64),  # faster by less than the margin: the default stays
    ({64: (2.0, 1.0), 256: (2.5, 1.2)}, 256),  # clearly faster, error within the slack: kept
])
def test_the_fastest_candidate_within_the_defaults_error_is_kept(demo, tmp_path, monkeypatch, measured, kept):
    """The rule alone: each candidate's (speedup, output NMSE) stand in for the measurements.
    Digits gives two distinct candidates: its own floor (64, every layer) and 256."""
    floors = sorted(measured)
    errors = iter(measured[f][1] for f in floors)  # the search measures the candidates by floor
    monkeypatch.setattr(_tuning, "_output_nmse", lambda sess, feeds, expected: next(errors))

    def interleaved(sessions, feed, *, warmup, repeats):  # FP32 at 10 ms, each candidate at 10 / its speedup
        return (np.full(repeats, 10.0), *(np.full(repeats, 10.0 / measured[f][0]) for f in floors))

    monkeypatch.setattr(_tuning.benchmark, "interleaved", interleaved)
    result = lp.quantize(demo["model"], tmp_path / "t.onnx", data=demo["calib"], tune="latency")
    assert [c.min_reduction for c in result.tuning.candidates] == floors
    assert [c.min_reduction for c in result.tuning.candidates if c.chosen] == [kept]
    assert result.plan.config.min_reduction == kept and len(result.plan.layers()) == (5 if kept == 64 else 3)


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
