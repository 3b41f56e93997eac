"""Speed of the default INT8 model against FP32 on CNN architectures the defaults were not
chosen on: onnx's light test models (the ONNX model zoo's classics at batch 1, weights made by
ConstantOfShape). Their weights are fills, so this measures speed and placement, never accuracy.

    .venv/bin/python -m bench.light [--rounds 30] [--out bench/RESULTS_LIGHT.md]

Each model is quantized with the default config from two uniform [0, 1) images, then FP32 and
INT8 are timed interleaved in one process (1 thread, medians), as bench.compare does.
"""

from __future__ import annotations

import argparse
import collections
import logging
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import lowprec_core as lp
from bench.compare import time_interleaved

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19", "zfnet512"]


_KINDS = {"(min_reduction)": "min_reduction", "into channel groups": "channel shuffle", "feeds float layers only": "activation fused in float"}


def _kind(why: str) -> str:
    return next((kind for marker, kind in _KINDS.items() if marker in why), why[:40])


def measure(name: str, workdir: Path, rounds: int) -> str:
    path = LIGHT / f"light_{name}.onnx"
    rng = np.random.default_rng(0)
    specs = lp.input_specs(onnx.load(path))
    feeds = [{s.name: rng.uniform(0, 1, [d if isinstance(d, int) and d > 0 else 1 for d in s.shape]).astype(s.dtype) for s in specs}
             for _ in range(2)]
    out = workdir / f"{name}.onnx"
    report = lp.quantize(path, out, data=feeds)
    integer, floating = lp.kernel_counts(str(out))
    medians = time_interleaved({"fp32": path, "int8": out}, feeds[0], rounds)
    float_reasons = collections.Counter(_kind(why) for why in report.plan.skipped.values())
    return (f"| {name} | {len(report.plan.nodes)} | {integer}/{floating} | "
            f"{medians['fp32'] * 1e3:.1f} | {medians['int8'] * 1e3:.1f} | {medians['fp32'] / medians['int8']:.2f}x | "
            f"{'; '.join(f'{n}x {r}' for r, n in float_reasons.most_common(3))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(NAMES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lines = [
        "# Default INT8 against FP32 on onnx's light CNNs (speed only: their weights are fills)",
        "",
        f"`python -m bench.light --rounds {args.rounds}` on {platform.machine()}, onnxruntime {ort.__version__}, lowprec {lp.__version__}. "
        "Batch 1, 1 thread, FP32 and INT8 timed interleaved, medians.",
        "Kernels: integer / float Conv-MatMul-Gemm kernels that ORT runs after its graph optimisation.",
        "",
        "| model | layers quantized | kernels int/float | FP32 ms | INT8 ms | speedup | why layers stay float |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="lowprec-light-") as tmp:
        for name in args.models.split(","):
            lines.append(measure(name, Path(tmp), args.rounds))
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
