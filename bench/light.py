"""Speed of the default INT8 model against FP32 on CNN architectures the defaults were not
chosen on: onnx's light test models (the ONNX model zoo's classics at batch 1, weights made by
ConstantOfShape). Their weights are fills, so this measures speed and placement, never accuracy.

    .venv/bin/python -m bench.light [--rounds 30] [--out bench/RESULTS_LIGHT.md]
    .venv/bin/python -m bench.light --runtime openvino [--out ...]
    .venv/bin/python -m bench.light --anchors [--out ...]

Each model is quantized with the default config from two uniform [0, 1) images, then FP32 and
INT8 are timed interleaved in one process (1 thread, medians), as bench.compare does.

With `--anchors` (ONNX Runtime) each model's fills are first folded (below), the folded model
upgraded to opset 13, and that model quantized by lowprec's default and by bench.compare's ORT
anchors (quantize_static's six variants and NNCF's ONNX backend), all timed interleaved against
FP32: lowprec's speed against the fastest anchor on architectures the defaults were not chosen on.

With `--runtime openvino` each model's fills are first folded into initializers (NNCF's
OpenVINO backend quantizes constant weights only; lowprec folds them itself), and that model
is quantized by `lowprec quantize --runtime openvino` and by nncf.quantize on OpenVINO's
reading of it, then timed in OpenVINO's CPU plugin against FP32 at f32, beside the plugin's
own default for FP32 (bf16 where the CPU has it).
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
from bench import anchors
from bench.compare import _session, machine, time_interleaved

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
NAMES = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19", "zfnet512"]


_KINDS = {"(min_reduction)": "min_reduction", "into channel groups": "channel shuffle", "feeds float layers only": "activation fused in float"}


def _kind(why: str) -> str:
    return next((kind for marker, kind in _KINDS.items() if marker in why), why[:40])


def measure(name: str, workdir: Path, rounds: int) -> str:
    path = LIGHT / f"light_{name}.onnx"
    feeds = _images(path)
    out = workdir / f"{name}.onnx"
    report = lp.quantize(path, out, data=feeds)
    integer, floating = lp.kernel_counts(str(out))
    medians = time_interleaved({"fp32": path, "int8": out}, feeds[0], rounds)
    float_reasons = collections.Counter(_kind(why) for why in report.plan.skipped.values())
    return (f"| {name} | {len(report.plan.nodes)} | {integer}/{floating} | "
            f"{medians['fp32'] * 1e3:.1f} | {medians['int8'] * 1e3:.1f} | {medians['fp32'] / medians['int8']:.2f}x | "
            f"{'; '.join(f'{n}x {r}' for r, n in float_reasons.most_common(3))} |")


ANCHORS = ("ort-per-tensor", "ort-per-channel", "ort-pc-conv/matmul/gemm", "ort-per-tensor-prepared", "ort-per-channel-prepared",
           "ort-pc-conv/matmul/gemm-prepared", "nncf")


def _images(path: Path) -> list[dict]:
    """Two uniform [0, 1) images at the model's sizes (a free size taken as 1)."""
    rng = np.random.default_rng(0)
    specs = lp.input_specs(onnx.load(path))
    return [{s.name: rng.uniform(0, 1, [d if isinstance(d, int) and d > 0 else 1 for d in s.shape]).astype(s.dtype) for s in specs}
            for _ in range(2)]


def _quantized(path: Path, feeds: list[dict], variants, workdir: Path, name: str) -> dict[str, Path | str]:
    """Each variant's model of `path`, or the first line of why it failed."""
    models: dict[str, Path | str] = {}
    for variant in variants:
        out = workdir / f"{name}.{variant.replace('/', '-')}.{'xml' if variant in anchors.OPENVINO_IR else 'onnx'}"
        try:
            anchors.VARIANTS[variant](path, feeds, out, name)
        except Exception as err:  # an anchor that cannot quantize the model is a row entry, not a stop
            models[variant] = f"failed: {str(err).splitlines()[0][:80] if str(err) else type(err).__name__}"
            continue
        models[variant] = out
    return models


def measure_anchors(name: str, workdir: Path, rounds: int) -> str:
    """lowprec's default and the ORT anchors on the folded model at opset 13, timed in ONNX
    Runtime. The light models are opset 9, where NNCF refuses to quantize and quantize_static's
    per-channel models do not load (a DequantizeLinear axis needs opset 13): a user upgrades first."""
    path = anchors.opset13(folded(LIGHT / f"light_{name}.onnx", workdir), workdir / f"{name}.opset13.onnx")
    feeds = _images(path)
    models = _quantized(path, feeds, ("lowprec", *ANCHORS), workdir, name)
    timed = {"fp32": _session(path, 1)}
    for variant, model in models.items():
        if isinstance(model, Path):
            try:
                timed[variant] = _session(model, 1)
            except Exception as err:  # quantize_static writes models ORT refuses at old opsets: a row entry
                models[variant] = f"failed: ORT cannot load it: {str(err).split(' : ')[-1][:80]}"
    medians = time_interleaved(timed, feeds[0], rounds, budget_s=20.0)
    ratio = {k: f"{medians['fp32'] / medians[k]:.2f}x" if k in medians else models[k] for k in models}
    fastest = min((k for k in ANCHORS if k in medians), key=medians.get, default=None)
    lead = f"{medians[fastest] / medians['lowprec']:.2f} ({fastest})" if fastest and "lowprec" in medians else "-"
    return f"| {name} | {medians['fp32'] * 1e3:.1f} | {ratio['lowprec']} | {' | '.join(ratio[k] for k in ANCHORS)} | {lead} |"


def folded(path: Path, workdir: Path) -> Path:
    """A copy of the light model with each ConstantOfShape of a constant shape made the
    initializer it fills, and no initializer listed as an input (IR version 4 at least, where
    initializers need not be inputs).
    Every fill, unlike prepare's folding (model_io._filled leaves those over 16M elements as
    nodes): AlexNet's, VGG's and ZFNet's first fully-connected weights must be constants for
    NNCF to quantize them, and both tools read this one model."""
    model = onnx.load(path)
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            value = onnx.numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(1, np.float32)
            fill = np.full(constants[node.input[0]].astype(np.int64), value.reshape(-1)[0], dtype=value.dtype)
            model.graph.initializer.append(onnx.numpy_helper.from_array(fill, node.output[0]))
            continue
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    # IR 3 lists every initializer as a graph input too, which ORT treats as a value the caller
    # may override: no constant folding, and weights its QDQ fusions cannot take as constants.
    read = {name for node in kept for name in node.input}
    kept_inits = [init for init in model.graph.initializer if init.name in read]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer} and i.name in read]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)
    out = workdir / f"{path.stem}.folded.onnx"
    onnx.save(model, out)
    return out


def measure_openvino(name: str, workdir: Path, rounds: int) -> str:
    path = folded(LIGHT / f"light_{name}.onnx", workdir)
    feeds = _images(path)
    sessions = {"fp32": _session(path, 1, "openvino", "f32"), "default": _session(path, 1, "openvino", None)}
    models = _quantized(path, feeds, ("lowprec-openvino", "nncf-openvino"), workdir, name)
    for variant, model in models.items():
        sessions[variant.removesuffix("-openvino")] = _session(model, 1, "openvino", None) if isinstance(model, Path) else model
    failed = {k: v for k, v in sessions.items() if isinstance(v, str)}
    medians = time_interleaved({k: v for k, v in sessions.items() if k not in failed}, feeds[0], rounds, budget_s=20.0)
    ratio = {k: f"{medians['fp32'] / medians[k]:.2f}x" if k in medians else failed[k] for k in sessions}
    lead = f"{medians['nncf'] / medians['lowprec']:.2f}" if {"nncf", "lowprec"} <= medians.keys() else "-"
    return f"| {name} | {medians['fp32'] * 1e3:.1f} | {ratio['default']} | {ratio['lowprec']} | {ratio['nncf']} | {lead} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(NAMES))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--runtime", choices=["onnxruntime", "openvino"], default="onnxruntime")
    parser.add_argument("--anchors", action="store_true", help="ONNX Runtime: time the ORT anchors too, on the folded models")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.runtime == "openvino":
        return main_openvino(args)
    if args.anchors:
        return main_anchors(args)
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
    _table(lines, measure, args)


def _table(lines: list[str], row, args) -> None:
    """`row(name, workdir, rounds)` for each model, printed as it comes, then the whole table
    to --out (or stdout)."""
    with tempfile.TemporaryDirectory(prefix="lowprec-light-") as tmp:
        for name in args.models.split(","):
            lines.append(row(name, Path(tmp), args.rounds))
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


def main_anchors(args) -> None:
    lines = [
        "# lowprec and the ORT anchors on onnx's light CNNs (speed only: their weights are fills)",
        "",
        f"`python -m bench.light --anchors --rounds {args.rounds}`. Machine: {machine()}; onnxruntime {ort.__version__}, "
        f"lowprec {lp.__version__}. Batch 1, 1 thread, every session timed interleaved, medians. Speedups divide FP32; "
        "every quantizer reads the same model, its fills folded and upgraded to opset 13, and the same two images. Lead: the fastest "
        "anchor's latency over lowprec's (> 1: lowprec is faster).",
        "",
        f"| model | FP32 ms | lowprec | {' | '.join(ANCHORS)} | lead |",
        f"|---|---|---|{'---|' * len(ANCHORS)}---|",
    ]
    _table(lines, measure_anchors, args)


def main_openvino(args) -> None:
    import openvino as ov

    lines = [
        "# lowprec and NNCF in OpenVINO on onnx's light CNNs (speed only: their weights are fills)",
        "",
        f"`python -m bench.light --runtime openvino --rounds {args.rounds}`. Machine: {machine()}; OpenVINO "
        f"{ov.get_version().split('-')[0]}, lowprec {lp.__version__}. Batch 1, 1 thread, every session timed interleaved, "
        "medians. Speedups divide FP32 at f32; 'FP32 default' is FP32 at the plugin's own precision (bf16 where the "
        "CPU has it); lowprec is `quantize --runtime openvino`, NNCF is nncf.quantize on OpenVINO's reading of the "
        "model, both from the same two images and the same model with its fills folded.",
        "",
        "| model | FP32 ms | FP32 default | lowprec | NNCF | lowprec / NNCF speed |",
        "|---|---|---|---|---|---|",
    ]
    _table(lines, measure_openvino, args)


if __name__ == "__main__":
    main()
