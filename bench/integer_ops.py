"""Whether a target should run weightless ops on integers (ops.Target.integer_ops, issue 17): each
model quantized with today's target, with integer ops on, and with every layer and op quantized
(min_reduction 0 plus integer ops: what ORT's quantize_static does), beside ORT's per-tensor
model; quality against FP32 and speedup over FP32 (1 thread, interleaved, medians).

An ablation: it switches a target row for the run, so it imports lowprec_core._ops (an exception
the import contract names).

    .venv/bin/python -m bench.integer_ops [--models ocr_det,ocr_rec,ocr_cls,magika] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import tempfile
from pathlib import Path

import onnxruntime as ort

import lowprec_core as lp
from bench.anchors import ort_per_tensor
from bench.compare import time_interleaved
from bench.models import MODELS
from lowprec_core import _ops as ops

INTEGER_OPS = frozenset({"Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid", "LeakyRelu", "Resize"})
GATES = frozenset({"HardSigmoid", "Sigmoid"})
VARIANTS = {  # name -> (min_reduction, integer ops on)
    "today": (None, False),
    "integer ops": (None, True),
    "all layers + integer ops": (0, True),
}


@contextlib.contextmanager
def _integer_ops(on: bool):
    saved = dict(ops.TARGETS)
    if on:
        for name in ("cpu", "cpu-vnni"):
            ops.TARGETS[name] = dataclasses.replace(ops.TARGETS[name], integer_ops=INTEGER_OPS, integer_op_float_inputs=GATES)
    try:
        yield
    finally:
        ops.TARGETS.clear()
        ops.TARGETS.update(saved)


def _runner(path: Path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def measure(name: str, workdir: Path, rounds: int) -> list[str]:
    bench = MODELS[name]()
    fp32 = _runner(bench.path)
    paths, cells = {"fp32": bench.path}, {}
    for variant, (floor, on) in VARIANTS.items():
        out = workdir / f"{name}-{len(paths)}.onnx"
        with _integer_ops(on):
            report = lp.quantize(bench.path, out, data=bench.calib, config=lp.QuantConfig(min_reduction=floor))
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
