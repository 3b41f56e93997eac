"""Metric plugins for `--metric bench.plugins:NAME`: outputs and labels in, one score per sample out.

PP-OCRv4's greedy CTC decoding is the test suite's plugin (examples/ocr_metric.py): one
decoder for the tests, the benchmarks and the model table."""

from __future__ import annotations

from examples.ocr_metric import decode as ctc_decode
from examples.ocr_metric import exact_match as ocr_exact

__all__ = ["ctc_decode", "ocr_exact"]
