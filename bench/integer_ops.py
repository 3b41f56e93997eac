"""Whether a target should run weightless ops on integers (ops.Target.integer_ops, issue 17): each
model quantized with today's target, with integer ops on (`--integer-ops all`), and with every
layer and op quantized (`--min-reduction 0 --integer-ops all`: what ORT's quantize_static does),
beside ORT's per-tensor model; quality against FP32 and speedup over FP32 (1 thread,
interleaved, medians).

    .venv/bin/python -m bench.integer_ops [--models ocr_det,ocr_rec,ocr_cls,magika] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort

import lowprec_core as lp
from bench.anchors import ort_per_tensor
from bench.compare import time_interleaved
from bench.models import MODELS

VARIANTS = {  # name -> QuantConfig fields
    "today": {},
    "integer ops": {"integer_ops": "all"},
    "all layers + integer ops": {"min_reduction": 0, "integer_ops": "all"},
}


def _runner(path: Path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def measure(name: str, workdir: Path, rounds: int) -> list[str]:
    bench = MODELS[name]()
    fp32 = _runner(bench.path)
    paths, cells = {"fp32": bench.path}, {}
    for variant, fields in VARIANTS.items():
        out = workdir / f"{name}-{len(paths)}.onnx"
        report = lp.quantize(bench.path, out, data=bench.calib, config=lp.QuantConfig(**fields))
        paths[variant] = out
        quality = bench.evaluate(fp32, _runner(out))
        cells[variant] = [f"{quality[bench.headline]:.4f}", str(len(report.plan.integer_ops)), "{}/{}".format(*lp.kernel_counts(str(out)))]
    out = workdir / f"{name}-ort.onnx"
    ort_per_tensor(bench.path, bench.calib, out, name)
    paths["ORT per-tensor"] = out
    cells["ORT per-tensor"] = [f"{bench.evaluate(fp32, _runner(out))[bench.headline]:.4f}", "-", "{}/{}".format(*lp.kernel_counts(str(out)))]
    for batch in bench.bench_batches:
        times = time_interleaved(paths, bench.feed(batch), rounds if batch == 1 else max(rounds // 3, 10), budget_s=5.0)
        for variant in cells:
            cells[variant].append(f"{times['fp32'] / times[variant]:.2f}x")
    small, large = bench.bench_batches
    return [f"| {name} ({bench.headline}) | {variant} | " + " | ".join(values) + " |" for variant, values in cells.items()] + \
        [f"<!-- {name}: batches {small} and {large} -->"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_det,ocr_rec,ocr_cls,magika")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cpu, isa = lp.cpu_description()
    lines = [f"CPU: {cpu or platform.processor()}; integer ISA: {', '.join(isa)}; onnxruntime {ort.__version__}; 1 thread.", "",
             "| model (metric) | variant | quality | integer ops | kernels int/float | speedup b=1 | speedup large b |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="lowprec-intops-") as tmp:
        for name in args.models.split(","):
            lines += measure(name, Path(tmp), args.rounds)
            print("\n".join(lines[-5:]), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
