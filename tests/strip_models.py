"""What the tests of the two digit-strip models share (examples/digit_strips.py, the CRNN reader,
and examples/digit_columns.py, the U-Net): their exact match on the held-out strips, and
quantizing either from the committed calibration strips (`quantized` serves any committed
digit model whose data holds `calib_x` for its `image` input: the MobileNetV2's too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lowprec_core as lp


def exact(session, data: dict[str, np.ndarray], decode) -> float:
    """The share of the held-out strips whose five digits the model reads right."""
    read = decode(session.run(None, {"image": data["eval_x"]})[0])
    return float(np.mean([r == str(t) for r, t in zip(read, data["eval_y"])]))


def quantized(tmp_path: Path, data: dict[str, np.ndarray], model: Path, config: lp.QuantConfig):
    out = tmp_path / "int8.onnx"
    calib = [{"image": data["calib_x"][i : i + 16]} for i in range(0, len(data["calib_x"]), 16)]
    return out, lp.quantize(model, out, data=calib, config=config)
