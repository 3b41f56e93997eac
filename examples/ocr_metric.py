"""Exact-match rate of PP-OCRv4 recognition, as a metric plugin: greedy CTC decoding against the
true strings. The alphabet is in the model's metadata (`character`, one per line)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import onnx

MODEL = "models/ch_PP-OCRv4_rec_infer.onnx"


def model_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # found without importing it (it wants cv2)
    return Path(spec.origin).parent / MODEL


@functools.cache
def _alphabet() -> tuple[str, ...]:
    meta = {p.key: p.value for p in onnx.load(model_path(), load_external_data=False).metadata_props}
    return ("<blank>", *meta["character"].splitlines(), " ")


def decode(probs: np.ndarray) -> list[str]:
    alphabet = _alphabet()
    lines = []
    for row in probs.argmax(-1):
        kept = [k for i, k in enumerate(row) if k != 0 and (i == 0 or k != row[i - 1])]
        lines.append("".join(alphabet[k] for k in kept))
    return lines


def exact_match(outputs, labels):
    return np.array([text == str(label) for text, label in zip(decode(outputs[0]), labels)], dtype=np.float64)
