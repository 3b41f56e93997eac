"""The EfficientNet-B0-style digit classifier (scripts/train_digit_efficientnet.py: SiLU,
squeeze-excite, 3x3 and 5x5 depthwise convs), committed under examples/data with its
calibration images and its held-out evaluation images and labels, framed as
examples/digit_mobilenet.py's: `image` [N, 1, 96, 96] in [0, 1], `logits` [N, 10]."""

from __future__ import annotations

import numpy as np

from examples import digit_mobilenet
from examples.digit_strips import DATA

MODEL = DATA / "digit_efficientnet.onnx"


def images() -> dict[str, np.ndarray]:
    """calib_x [64, 1, 96, 96], eval_x [400, 1, 96, 96] (float32 in [0, 1]) and eval_y [400]."""
    return digit_mobilenet.images(DATA / "digit_efficientnet.npz")
