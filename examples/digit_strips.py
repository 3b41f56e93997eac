"""The CRNN + BiLSTM + CTC reader of five-digit strips (scripts/train_digit_strips.py), committed
under examples/data with its calibration strips and its held-out evaluation strips and labels.

`probs` is [N, 34, 11]: 34 time steps, class 0 the CTC blank, class k the digit k - 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
MODEL = DATA / "digit_strips.onnx"


def strips() -> dict[str, np.ndarray]:
    """calib_x [64, 1, 24, 136], eval_x [400, 1, 24, 136] and eval_y (the five digits of each, as text)."""
    with np.load(DATA / "digit_strips.npz") as data:
        return {key: data[key] for key in data.files}


def decode(probs: np.ndarray) -> list[str]:
    """Greedy CTC: the best class at each step, repeats merged, blanks dropped."""
    return ["".join(str(k - 1) for j, k in enumerate(row) if k and (j == 0 or k != row[j - 1])) for row in probs.argmax(-1)]
