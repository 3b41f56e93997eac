"""Issue 5's acceptance run: `lowprec quantize` on PP-OCRv4 recognition, with its accuracy-aware
check on real text lines, writes one HTML page a person can act on."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import lowprec
from tests.integration.test_html_report import CHROMIUM, render_in_chromium
from examples import ocr_metric

LINES = Path(__file__).resolve().parents[1] / "data" / "ppocr_rec_lines.npz"
HAVE_OCR = importlib.util.find_spec("rapidocr_onnxruntime") is not None


def _model_input(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def rec_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    lines = np.load(LINES)
    np.savez(tmp / "calib.npz", x=_model_input(lines["calib_img"]))
    np.savez(tmp / "eval.npz", x=_model_input(lines["eval_img"]))
    np.save(tmp / "labels.npy", lines["eval_y"])
    result = lowprec(
        "quantize", ocr_metric.model_path(), "--data", tmp / "calib.npz", "--out", tmp / "int8.onnx",
        "--eval", tmp / "eval.npz", "--labels", tmp / "labels.npy", "--metric", "examples.ocr_metric:exact_match=0.05",
        "--min-speedup", "0",  # speed is the benchmarks' business; this run checks the page
        "--report", tmp / "q.json", "--html", tmp / "report.html",
    )
    assert result.returncode == 0, result.stderr
    return tmp, result, json.loads((tmp / "q.json").read_text())


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_OCR and not os.environ.get("CI"), reason="rapidocr-onnxruntime is installed by `make venv`")]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_the_page_names_the_five_worst_layers_with_their_sqnr(rec_run):
    tmp, result, report = rec_run
    layers = report["layers"]["layers"]
    assert len(layers) == len(report["plan"]["nodes"])  # every quantized layer is ranked
    own = [row["own_sqnr_db"] for row in layers]
    assert own == sorted(own)
    html = (tmp / "report.html").read_text()
    table = _text(html[html.index("<table><tr><th>#</th>"):])
    for rank, row in enumerate(layers[:5], 1):
        assert f"{rank} {row['layer']} {row['own_sqnr_db']:.1f} {row['output_sqnr_db']:.1f}" in table, (row, table[:800])
    worst = ", ".join(f"{r['layer']} {r['own_sqnr_db']:.1f} dB" for r in layers[:3])
    assert worst in result.stdout  # the terminal names them too


def test_the_page_shows_accuracy_speedup_and_calibration_warnings(rec_run):
    tmp, _, report = rec_run
    final = report["accuracy"]["iterations"][-1]["metrics"]["examples.ocr_metric:exact_match"]
    assert final["fp32"] >= 0.75  # real lines read by the real model
    text = _text((tmp / "report.html").read_text())
    assert f"examples.ocr_metric:exact_match {final['int8']:.4f} FP32 {final['fp32']:.4f}" in text
    assert re.search(r"speedup b=1 \d+\.\d\dx", text)
    # 16 calibration lines is below what the mse estimator wants: the page says so.
    warnings = report["calibration_warnings"]
    assert any("16 calibration samples" in w["message"] for w in warnings)
    for warning in warnings:
        assert warning["message"] in text


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (make test installs it)")
def test_chromium_renders_the_rec_page(rec_run, tmp_path):
    tmp, _, _ = rec_run
    render_in_chromium(tmp / "report.html", tmp_path)
