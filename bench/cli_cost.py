"""What quantizing costs as users run it: `lowprec quantize` with the command line's defaults
against a script that calls ORT's `quantize_static` (each variant), whole fresh processes
(interpreter start, imports, reading the data, writing the model), alternating run by run.

    .venv/bin/python -m bench.cli_cost [--models digits,ocr_det,...] [--runs 3] [--tune] [--out bench/results/cli_cost-<cpu>.md]

`--tune` adds `lowprec quantize --tune latency` (and, with openvino installed, the same with
`--runtime openvino`, beside that runtime's default), each with its cost over the same command
without the search: what the latency search adds to the command users run.

Both read the same calibration feeds, written once as a folder of .npz files (one feed each).
Reports medians of wall time and peak RSS (the command's own, from wait4 in a launcher) and the ratio to the
fastest ORT variant, with the CPU and its integer ISA.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.models import MODELS
import lowprec_core as lp
from lowprec_core import cpu_description

ORT_VARIANTS = ("ort_per_tensor", "ort_per_channel", "ort_per_channel_ops")
LOWPREC = Path(sys.executable).parent / "lowprec"


# Linux carries a process's RSS high-water mark across fork and exec: a command started from
# this process reports at least this process's peak (100 MB once it has loaded a bench model),
# which hid digits' real figures. So a small launcher starts it and reports its wait4: the floor
# is then the launcher's 10 MB.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def _timed(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one fresh process."""
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], stdout=subprocess.PIPE, stderr=errors, text=True, check=True)
        seconds, rss_kb, code = done.stdout.split()
        if int(code) != 0:
            errors.seek(0)
            raise RuntimeError(f"exit {code}: {errors.read().decode(errors='replace')[-400:]}")
    return float(seconds), int(rss_kb) / 1024


def _check_model(path: Path) -> bool:
    """Whether the model quantizes anything (a DequantizeLinear in its graph or an If body's). A
    quantizer that wrote a model the ONNX checker refuses or ORT cannot load (as bench.compare
    checks) has not produced one."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise RuntimeError(f"invalid model: {str(err).splitlines()[0][:120]}") from None
    return _has_quantizers(onnx.load(str(path), load_external_data=False).graph)


def _has_quantizers(graph) -> bool:
    return any(node.op_type == "DequantizeLinear" or any(_has_quantizers(a.g) for a in node.attribute if a.HasField("g"))
               for node in graph.node)


DEFAULT = "lowprec (CLI defaults)"
TUNE = "--tune latency"


def _lowprec_variants(tune: bool, input_shapes: dict | None = None) -> dict[str, list[str]]:
    """label -> extra lowprec quantize arguments. OpenVINO's get the model's input sizes where it
    needs them (silero VAD's call length), as a user serving it there passes them."""
    variants = {DEFAULT: []}
    if tune:
        variants[f"lowprec {TUNE}"] = TUNE.split()
        try:
            import openvino  # noqa: F401
        except ImportError:
            return variants
        openvino = ["--runtime", "openvino"]
        for name, sizes in (input_shapes or {}).items():
            openvino += ["--input-shape", f"{name}={','.join(map(str, sizes))}"]
        label = "lowprec " + " ".join(openvino)
        variants[label] = openvino
        variants[f"{label} {TUNE}"] = [*openvino, *TUNE.split()]
    return variants


def measure(name: str, runs: int, workdir: Path, tune: bool = False) -> dict[str, dict]:
    bench = MODELS[name]()
    folder = workdir / f"{name}-calib"
    folder.mkdir()
    for i, feed in enumerate(bench.calib):
        np.savez(folder / f"{i:04d}.npz", **feed)
    lowprec = _lowprec_variants(tune, bench.input_shapes)
    outputs = {label: workdir / f"{name}-{index}.onnx" for index, label in enumerate((*lowprec, *ORT_VARIANTS))}
    commands = {label: [str(LOWPREC), "quantize", str(bench.path), "--data", str(folder), "--out", str(outputs[label]), *extra]
                for label, extra in lowprec.items()}
    for variant in ORT_VARIANTS:
        commands[variant] = [sys.executable, "-m", "bench.ort_quantize", str(bench.path), str(folder),
                             str(outputs[variant]), variant]
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    errors: dict[str, str] = {}
    quantized: dict[str, bool] = {}
    for _ in range(runs):
        for label, command in commands.items():  # alternating: drift hits every quantizer alike
            if label in errors:
                continue
            try:
                samples[label].append(_timed(command))
                quantized[label] = _check_model(outputs[label])
            except RuntimeError as err:
                errors[label] = " ".join(str(err).split())[:160]
    out = {}
    for label in commands:
        if label in errors:
            out[label] = {"error": errors[label]}
        else:
            out[label] = {"seconds": statistics.median(s for s, _ in samples[label]),
                          "rss_mb": statistics.median(r for _, r in samples[label]), "runs": len(samples[label]),
                          "quantized": quantized[label]}
    return out


def render(results: dict[str, dict[str, dict]], runs: int, command: str) -> str:
    cpu, isa = cpu_description()
    lines = [
        "# Quantization cost of the command users run",
        "",
        f"Machine: {cpu or platform.processor()} ({os.cpu_count()} cores; integer ISA: {', '.join(isa) or 'none detected'}).",
        f"Made with `{command}`: medians of {runs} fresh processes per quantizer, alternating.",
        "Ratio: lowprec's wall time and peak RSS over those of the fastest ORT variant that produced a model and quantized something"
        " in it (< 1: lowprec is cheaper); a model with no DequantizeLinear anywhere is marked \"quantized nothing\".",
        f"Search cost (`{TUNE}` rows): wall time over that of the same command without the search.",
        "",
        "| model | quantizer | wall s | peak RSS MB | time ratio | RSS ratio | search cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        done = {k: v for k, v in rows.items() if "error" not in v and k in ORT_VARIANTS and v["quantized"]}
        fastest = min(done, key=lambda k: done[k]["seconds"]) if done else None
        ours = rows[DEFAULT]
        for label, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | {label} | failed: {row['error']} | | | | |")
                continue
            ratio = ("", "")
            if label.startswith("lowprec") and fastest is not None:
                ratio = (f"{row['seconds'] / done[fastest]['seconds']:.2f}", f"{row['rss_mb'] / done[fastest]['rss_mb']:.2f}")
            untuned = rows.get(label.replace(f" {TUNE}", "") if label != f"lowprec {TUNE}" else DEFAULT, {})
            cost = f"{row['seconds'] / untuned['seconds']:.2f}x" if label.endswith(TUNE) and "seconds" in untuned else ""
            mark = " (fastest ORT)" if label == fastest else "" if row["quantized"] else " (quantized nothing)"
            lines.append(f"| {name} | {label}{mark} | {row['seconds']:.2f} | {row['rss_mb']:.0f} | {ratio[0]} | {ratio[1]} | {cost} |")
        if fastest is None and "error" not in ours:
            lines.append(f"| {name} | (no ORT variant produced a quantized model) | | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,ocr_cls,ocr_rec,ocr_det,magika,vad")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tune", action="store_true", help=f"add lowprec {TUNE} rows (and OpenVINO's, where installed)")
    parser.add_argument("--out", help="markdown file to write (default: print)")
    args = parser.parse_args()
    # pip compiles an installed wheel's modules, as it did ORT's; an editable checkout run under
    # PYTHONDONTWRITEBYTECODE would recompile lowprec's ~40 modules in every process (76 ms here).
    for package in (Path(lp.__file__).parent, Path(__file__).parent):
        compileall.compile_dir(package, quiet=1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="lowprec-cli-cost-") as tmp:
        for name in args.models.split(","):
            results[name] = measure(name, args.runs, Path(tmp), args.tune)
            print(f"{name}: " + ", ".join(f"{k} {v.get('seconds', float('nan')):.2f} s" for k, v in results[name].items()),
                  file=sys.stderr)
    text = render(results, args.runs, "python -m bench.cli_cost " + " ".join(sys.argv[1:]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
