"""How the CPU targets' min_reduction was chosen: each model quantized with layers below several
floors kept float, quality against FP32 and speedup over FP32 (1 thread, interleaved, medians).

    .venv/bin/python -m bench.reduction [--models ...] [--floors 0,32,64,128] [--out bench/RESULTS_REDUCTION.md]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort

import lowprec_core as lp
from bench.compare import time_interleaved
from bench.models import MODELS


def _runner(path: Path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def measure(name: str, floors: list[int], workdir: Path, rounds: int) -> list[str]:
    bench = MODELS[name]()
    fp32 = _runner(bench.path)
    paths, rows = {"fp32": bench.path}, {}
    for floor in floors:
        out = workdir / f"{name}-{floor}.onnx"
        report = lp.quantize(bench.path, out, data=bench.calib, config=lp.QuantConfig(min_reduction=floor))
        paths[floor] = out
        quality = bench.evaluate(fp32, _runner(out))
        rows[floor] = [f"{quality[bench.headline]:.4f}", f"{len(report.plan.nodes)}/{len(report.plan.nodes) + len(report.plan.skipped)}"]
    for batch in bench.bench_batches:
        feed = bench.feed(batch)
        times = time_interleaved(paths, feed, rounds if batch == 1 else max(rounds // 3, 10))
        for floor in floors:
            rows[floor].append(f"{times['fp32'] / times[floor]:.2f}x")
    large = bench.bench_batches[1]
    lines = [f"### {name} ({bench.headline})", "", f"| min_reduction | {bench.headline} | layers quantized | speedup b=1 | speedup b={large} |",
             "|---|---|---|---|---|"]
    lines += [f"| {floor} | " + " | ".join(cells) + " |" for floor, cells in rows.items()]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="digits,ocr_rec,ocr_det,ocr_cls,minilm")
    parser.add_argument("--floors", default="0,32,64,128")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    floors = [int(f) for f in args.floors.split(",")]
    text = ["# min_reduction on the CPU target", "",
            f"`python -m bench.reduction --floors {args.floors}` on {platform.processor() or platform.machine()}, onnxruntime {ort.__version__}.",
            "A floor of 0 quantizes every Conv/MatMul/Gemm; a floor of N keeps float the layers whose outputs sum fewer than N products.", ""]
    with tempfile.TemporaryDirectory(prefix="lowprec-reduction-") as tmp:
        for name in args.models.split(","):
            text += measure(name, floors, Path(tmp), args.rounds)
            print("\n".join(text[-(len(floors) + 5):]), flush=True)
    if args.out:
        args.out.write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
