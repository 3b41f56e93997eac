"""The MobileNetV2-style digit classifier (scripts/train_digit_mobilenet.py), committed under
examples/data with its calibration images and its held-out evaluation images and labels.

`image` is [N, 1, 96, 96] in [0, 1] (one handwritten digit scaled 8x at a random offset);
`logits` is [N, 10]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.digit_strips import DATA

MODEL = DATA / "digit_mobilenet.onnx"


def images(path: Path = DATA / "digit_mobilenet.npz") -> dict[str, np.ndarray]:
    """calib_x [64, 1, 96, 96] and eval_x [400, 1, 96, 96] as float32 in [0, 1], and eval_y [400]
    (stored as uint8 sixteenths, scikit-learn's own levels); `path`: another framed-digit
    network's images (examples/digit_efficientnet.py)."""
    with np.load(path) as data:
        return {"calib_x": data["calib_x"].astype(np.float32) / 16, "eval_x": data["eval_x"].astype(np.float32) / 16,
                "eval_y": data["eval_y"]}
