"""Cut the small PP-OCRv4 recognition set the tests commit (tests/data/ppocr_rec_lines.npz)
from the benchmark's evaluation data: uint8 images (the model input is (img/255 - 0.5)/0.5)
and their true strings. Run once: python -m bench.make_test_lines ../shared/data/ocr_rec_lines.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CALIB, EVAL = 16, 32
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ppocr_rec_lines.npz"


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round((x * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8)


def main(source: str) -> None:
    data = np.load(source)
    np.savez_compressed(
        OUT,
        calib_img=to_uint8(data["calib_x"][:CALIB]), calib_y=data["calib_y"][:CALIB],
        eval_img=to_uint8(data["eval_x"][:EVAL]), eval_y=data["eval_y"][:EVAL],
    )
    print(f"{OUT}: {OUT.stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main(sys.argv[1])
