"""The OpenVINO target row, measured in OpenVINO (issue 17): `--runtime openvino` as shipped,
the row with one field changed (reduction floor 0, weightless ops on integers, symmetric
activations), lowprec's ONNX Runtime placement, and NNCF; FP32 at f32 (the reference) and at
OpenVINO's own default precision (bf16 where the CPU has it). Quality against FP32; speedup over
FP32 at f32 (1 thread, interleaved, medians).

An ablation: it switches fields of the target row for a run, so it imports lowprec_core._ops
(an exception the import contract names).

    .venv/bin/python -m bench.openvino_target [--models ocr_det,ocr_cls,ocr_rec,magika,minilm,digits] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import tempfile
from pathlib import Path

import lowprec_core as lp
from bench.anchors import nncf_default
from bench.compare import _session, time_interleaved
from bench.models import MODELS
from lowprec_core import _ops as ops

TARGET = "openvino"  # the row as a VNNI or AMX CPU gets it; "  MatMul and Gemm float" is openvino-avx2
# The weightless ops ORT runs on integers, tried in OpenVINO (whose own row places none).
INTEGER_OPS, GATES = ops.RUNTIME_INTEGER_OPS["onnxruntime"]
VARIANTS = {  # name -> (changes to the target row, QuantConfig fields)
    "lowprec --runtime openvino": ({}, {"target": TARGET}),
    "  reduction floor 0": ({"min_reduction": 0}, {"target": TARGET}),
    "  integer weightless ops": ({"integer_ops": INTEGER_OPS, "integer_op_float_inputs": GATES}, {"target": TARGET}),
    "  symmetric activations": ({}, {"target": TARGET, "preset": "performance"}),
    "  MatMul and Gemm float": ({"ops": frozenset({"Conv", "ConvTranspose"})}, {"target": TARGET}),
    "lowprec (ONNX Runtime placement)": ({}, {}),
}


@contextlib.contextmanager
def _row(**changes):
    saved = ops.TARGETS[TARGET]
    ops.TARGETS[TARGET] = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        ops.TARGETS[TARGET] = saved


def measure(name: str, workdir: Path, rounds: int) -> list[str]:
    bench = MODELS[name]()
    paths = {}
    for variant, (changes, fields) in VARIANTS.items():
        paths[variant] = workdir / f"{name}-{len(paths)}.onnx"
        with _row(**changes):
            lp.quantize(bench.path, paths[variant], data=bench.calib, config=lp.QuantConfig(**fields))
    nncf_default(bench.path, bench.calib, workdir / f"{name}-nncf.onnx", name)
    paths["NNCF"] = workdir / f"{name}-nncf.onnx"
    fp32 = _session(bench.path, 1, "openvino", "f32")
    sessions = {"FP32 (f32)": fp32, "FP32 at OpenVINO's default precision": _session(bench.path, 1, "openvino", None)}
    sessions.update({variant: _session(path, 1, "openvino", None) for variant, path in paths.items()})
    run = lambda sess: (lambda feed: sess.run(None, feed))  # noqa: E731
    cells = {variant: [f"{bench.evaluate(run(fp32), run(sess))[bench.headline]:.4f}"] for variant, sess in sessions.items()}
    for batch in bench.bench_batches:
        times = time_interleaved(sessions, bench.feed(batch), rounds if batch == 1 else max(rounds // 3, 10), budget_s=4.0)
        for variant in cells:
            cells[variant].append(f"{times['FP32 (f32)'] / times[variant]:.2f}x")
    small, large = bench.bench_batches
    return [f"| {name} ({bench.headline}; b={small}, {large}) | {variant} | " + " | ".join(values) + " |" for variant, values in cells.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_det,ocr_cls,ocr_rec,magika,minilm,digits")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cpu, isa = lp.cpu_description()
    lines = [f"CPU: {cpu}; integer ISA: {', '.join(isa)}; openvino {importlib.metadata.version('openvino')}; 1 thread.",
             f"Made with `python -m bench.openvino_target{' --models ' + args.models if args.models != parser.get_default('models') else ''}`.",
             "Indented rows change one field of the `openvino` row. Speedup: FP32 at f32 over the variant, medians.", "",
             "| model (metric; batches) | variant | quality | speedup b=1 | speedup large b |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="lowprec-ovtarget-") as tmp:
        for name in args.models.split(","):
            rows = measure(name, Path(tmp), args.rounds)
            lines += rows
            print("\n".join(rows), flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
