"""A user's ORT script, as bench.cli_cost runs it in a fresh process: read a folder of .npz
feeds and call `quantize_static` (one of bench.anchors' variants). It imports nothing else, so
its time and memory are ORT's own.

    python -m bench.ort_quantize MODEL FEEDS_DIR OUT VARIANT
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from bench import anchors


def main(model: str, folder: str, out: str, variant: str) -> None:
    feeds = [dict(np.load(path)) for path in sorted(Path(folder).glob("*.npz"))]
    getattr(anchors, variant)(Path(model), feeds, Path(out), "")


if __name__ == "__main__":
    main(*sys.argv[1:])
