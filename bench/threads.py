"""INT8's lead over FP32 as the thread count grows, in the serving runtime.

Each variant quantizes each model once (fresh processes, as bench.compare runs them), and
`lowprec-tune@N` runs the latency search at N threads (`quantize --tune latency --tune-threads N`,
what the ptq pipeline does for a pod of N cores). Then, at each thread count, FP32 (f32), every
INT8 model and, in OpenVINO where it differs, FP32 at the plugin's own default precision are timed
interleaved in one process at batch 1 and at the model's large batch. A speedup measured at one
thread says little about a pod of eight cores: this is the table that says how much.

    .venv/bin/python -m bench.threads --models ocr_det,magika --threads 1,2,4,8,16 [--runtime openvino] --out FILE
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lowprec_core as lp
from bench.compare import DEFAULT_FP32, TIMING_BUDGET_S, _session, block_size, machine, quantize_interleaved, sized_for, time_interleaved
from bench.models import MODELS

DEFAULT_VARIANTS = {"onnxruntime": "lowprec,ort-per-tensor,nncf", "openvino": "lowprec-openvino,nncf-openvino"}
TUNED = "lowprec-tune@"


def _tuned(bench, runtime: str, threads: int, out: Path) -> None:
    config = lp.QuantConfig(target=lp.runtime_target(runtime)) if runtime == "openvino" else lp.QuantConfig()
    lp.quantize(bench.path, out, data=bench.calib, config=config, tune="latency", tune_threads=threads)


def run_model(model_name: str, variants: list[str], thread_counts: list[int], runtime: str, workdir: Path, rounds: int,
              block: int | None = None) -> list[dict]:
    """One row per model (FP32 at the runtime's default included, in OpenVINO): its quality and,
    per thread count, its speedup over FP32 at f32 at batch 1 and the large batch. `block`: runs
    per session per round above 1 thread, the first untimed (None: lowprec benchmark's, 4)."""
    bench = MODELS[model_name]()
    source = sized_for(bench, runtime, workdir)  # silero VAD in OpenVINO: its call length fixed
    paths: dict[str, Path] = {}
    rows: dict[str, dict] = {}
    for variant, result in quantize_interleaved(model_name, variants, workdir, 1, source).items():
        rows[variant] = {"model": model_name, "variant": variant}
        if "error" in result:
            rows[variant]["error"] = result["error"]
        else:
            paths[variant] = result["out"]
    for threads in thread_counts:
        if threads > 1 and any(v.startswith("lowprec") for v in variants):
            name, out = f"{TUNED}{threads}", workdir / f"{model_name}-tuned-{threads}.onnx"
            print(f"[{model_name}] latency search at {threads} threads ...", file=sys.stderr, flush=True)
            _tuned(bench, runtime, threads, out)
            paths[name], rows[name] = out, {"model": model_name, "variant": name}
    reference = _session(bench.path, None, runtime)
    for variant, path in list(paths.items()):
        try:
            candidate = _session(path, None, runtime, precision=None)
        except lp.LowprecError as err:  # the runtime cannot run this quantizer's model: that is its result here
            rows[variant]["error"] = str(err)[:160]
            del paths[variant]
            continue
        rows[variant]["quality"] = bench.evaluate(lambda f: reference.run(None, f), lambda f: candidate.run(None, f))[bench.headline]
    default = None
    if runtime == "openvino" and _session(bench.path, 1, runtime, precision=None).precision != "f32":
        default = DEFAULT_FP32
        rows[default] = {"model": model_name, "variant": f"{DEFAULT_FP32} (bf16)", "quality": float("nan")}
    small, large = bench.bench_batches
    for threads in thread_counts:
        for batch in (small, large):
            sessions = {"fp32": _session(bench.path, threads, runtime, precision="f32")}
            sessions.update({v: _session(p, threads, runtime, precision=None) for v, p in paths.items()})
            if default is not None:
                sessions[default] = _session(bench.path, threads, runtime, precision=None)
            medians = time_interleaved(sessions, bench.feed(batch), rounds if batch == small else max(rounds // 4, 10),
                                       budget_s=TIMING_BUDGET_S,
                                       block=1 if threads == 1 else block or block_size(threads))
            for name, row in rows.items():
                if name in medians:
                    row[(threads, batch == small)] = medians["fp32"] / medians[name]
    for row in rows.values():
        row["headline"], row["batches"] = bench.headline, bench.bench_batches
    return list(rows.values())


def render(rows: list[dict], thread_counts: list[int], runtime: str, command: str, block: int | None = None) -> str:
    head = " | ".join(f"{t} thread{'s' if t > 1 else ''} b=1 / large" for t in thread_counts)
    lines = [
        "# INT8 speedup over FP32 by thread count" + (" in OpenVINO" if runtime == "openvino" else " in ONNX Runtime"),
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}; made on {datetime.date.today()} at commit {_commit()}.",
        "Speedup: FP32 (f32) median latency over the model's, both run at that thread count, timed interleaved in",
        f"one process (balanced order; at least the given rounds, more while under {TIMING_BUDGET_S:.0f} s). `{TUNED}N`: the latency",
        "search run at N threads. Quality: the headline metric bench.compare scores, in this runtime.",
        f"Above 1 thread each session runs {block or block_size(2)} times in its turn, the first untimed: a threaded session right",
        "after another's run finds its workers parked and its caches cold (lowprec_core._benchmark.THREADED_BLOCK).",
        "",
        f"| model | variant | quality | {head} |",
        "|---|---|---|" + "---|" * len(thread_counts),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['variant']} | failed: {row['error'][:120]} |" + " |" * len(thread_counts))
            continue
        quality = "" if row["quality"] != row["quality"] else f"{row['headline']} {row['quality']:.4f}"
        cells = [f"{row.get((t, True), float('nan')):.2f}x / {row.get((t, False), float('nan')):.2f}x (b={row['batches'][1]})"
                 for t in thread_counts]
        lines.append(f"| {row['model']} | {row['variant']} | {quality} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_det,ocr_rec,magika,columns")
    parser.add_argument("--threads", default=",".join(str(t) for t in (1, 2, 4, 8, 16) if t <= (os.cpu_count() or 1)),
                        help="thread counts, comma-separated (default: powers of 2 up to this machine's cores)")
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"))
    parser.add_argument("--variants", default=None, help="bench.compare's variant names (default: lowprec's and the anchors' for the runtime)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--block", type=int, default=None,
                        help="above 1 thread, runs per session per round, the first untimed (default: lowprec benchmark's; "
                             "1: run by run, as before 2026-12-07)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    variants = (args.variants or DEFAULT_VARIANTS[args.runtime]).split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += run_model(name, variants, thread_counts, args.runtime, Path(tmp), args.rounds, args.block)
    text = render(rows, thread_counts, args.runtime, "python -m bench.threads " + " ".join(sys.argv[1:]), args.block)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
