"""The 1-D U-Net that labels every column of a five-digit strip (scripts/train_digit_columns.py),
committed under examples/data. It reads the CRNN reader's strips (examples/digit_strips.py: the
calibration strips and the held-out evaluation strips and labels).

`probs` is [N, 11, 136]: per column, class 0 no digit, class k the digit k - 1 (over the middle
half of each digit's columns)."""

from __future__ import annotations

import numpy as np

from examples.digit_strips import DATA, decode as decode_steps

MODEL = DATA / "digit_columns.onnx"


def decode(probs: np.ndarray) -> list[str]:
    """Each strip's digits: the best class of each column, runs merged, class 0 dropped (the
    reader's greedy CTC decoding, with columns for time steps)."""
    return decode_steps(np.moveaxis(probs, 1, -1))
