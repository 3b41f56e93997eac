"""Metric plugins for `--metric bench.plugins:NAME`: outputs and labels in, one score per sample out."""

from __future__ import annotations

import functools

import numpy as np
import onnx

from bench.models import _package_file


@functools.cache
def _alphabet() -> list[str]:
    path = _package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")
    chars = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}["character"].splitlines()
    return ["<blank>", *chars, " "]


def ctc_decode(probs: np.ndarray) -> list[str]:
    """Greedy CTC: arg-max per step, repeats merged, blanks dropped."""
    alphabet = _alphabet()
    out = []
    for row in probs.argmax(-1):
        keep = [k for i, k in enumerate(row) if k != 0 and (i == 0 or k != row[i - 1])]
        out.append("".join(alphabet[k] for k in keep))
    return out


def ocr_exact(outputs: list[np.ndarray], labels: np.ndarray | None) -> np.ndarray:
    """1.0 where the decoded line equals its label exactly (PP-OCRv4 recognition)."""
    return np.array([text == str(label) for text, label in zip(ctc_decode(outputs[0]), labels)], dtype=np.float64)
