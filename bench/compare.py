"""lowprec's default against ORT quantize_static (three variants) and nncf.quantize, side by side.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.compare [--models digits,minilm,ocr_rec,ocr_det] [--variants ...] [--quant-runs 3] [--out bench/RESULTS.md]

Each quantizer runs in a fresh process (its wall time and peak RSS are its own), --quant-runs
times, alternating with the other quantizers, and the table reports medians; then FP32 and
every INT8 model are loaded in this process, with 1 thread each, and timed interleaved round by
round. The table reports medians.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.anchors import IMPORTS, OPENVINO_IR, VARIANTS
from bench.models import MODELS
import lowprec_core as lp
from lowprec_core import LowprecError
from lowprec_core._benchmark import balanced_order, block_size, turn  # noqa: F401 - bench.threads takes block_size from here


def _quantize_child(model_name: str, variant: str, out: str, queue, source: str | None = None) -> None:
    try:
        bench = MODELS[model_name]()
        calib = bench.calib
        module, _, name = IMPORTS[variant].partition(":")
        imported = importlib.import_module(module)
        if name:
            getattr(imported, name)
        start = time.perf_counter()
        VARIANTS[variant](Path(source) if source else bench.path, calib, Path(out), model_name)
        seconds = time.perf_counter() - start
        queue.put({"seconds": seconds, "rss_mb": peak_rss_mb()})
    except BaseException as err:  # report any failure of an anchor as data, not a crash
        queue.put({"error": f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:120],
                   "trace": traceback.format_exc()})


def peak_rss_mb() -> float:
    """This process's own peak RSS since it started (VmHWM, which exec resets). Not ru_maxrss:
    a spawned child keeps the peak of the parent it was forked from, so every quantizer run
    from a parent holding 1.3 GB of earlier models reported at least 1.3 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the best there is


def quantize_in_child(model_name: str, variant: str, out: Path, source: Path | None = None) -> dict:
    """`source`: the FP32 model to quantize, where not the bench model's own file."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_quantize_child, args=(model_name, variant, str(out), queue, str(source) if source else None))
    proc.start()
    proc.join(timeout=1800)
    result = queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}
    if "error" not in result and variant not in OPENVINO_IR:  # IR is checked by OpenVINO reading it
        try:
            onnx.checker.check_model(str(out))
            ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        except Exception as err:
            result = {"error": f"invalid model: {str(err).splitlines()[0][:100]}"}
    return result


def _session(path: Path, threads: int | None, runtime: str = "onnxruntime", precision: str | None = "f32"):
    """A session in `runtime`. OpenVINO: `precision` f32 (the FP32 reference), or None for its
    own default (bf16 where the CPU has it; what an INT8 model gets in any case)."""
    if runtime == "openvino":
        return lp.serving_session(str(path), runtime="openvino", threads=threads, precision=precision)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_interleaved(sessions: dict[str, object], feed: dict, rounds: int, budget_s: float = 0.0, block: int = 1) -> dict[str, float]:
    """Median latency of each session (1 thread each), round by round, in the latency search's
    balanced order (every session right after every other one equally often: one order,
    reversed every other round, timed the session right after FP32 at f32 2-3 % slower than a
    copy of it timed last, PP-OCR cls in OpenVINO on Zen 4). `rounds` at least; more, up to 10x,
    while the whole loop has run under `budget_s`: a model that runs in milliseconds gets enough
    rounds for its medians to settle. A path stands for an ONNX Runtime session of it. `block`:
    runs per session per round, the first untimed (lowprec's benchmark does this for sessions on
    several threads: see _benchmark.THREADED_BLOCK)."""
    sessions = {name: _session(Path(s), threads=1) if isinstance(s, (str, Path)) else s for name, s in sessions.items()}
    for sess in sessions.values():
        for _ in range(3):
            sess.run(None, feed)
    times = {name: [] for name in sessions}
    names = list(sessions)
    started = time.perf_counter()
    r = 0
    while r < rounds or (r < 10 * rounds and time.perf_counter() - started < budget_s):
        for name in (names[j] for j in balanced_order(len(names), r)):
            times[name] += turn(sessions[name], feed, block)
        r += 1
    return {name: float(np.median(t)) for name, t in times.items()}


TIMING_BUDGET_S = 5.0  # per model and batch size: fast models time more rounds (time_interleaved)
FAST_QUANTIZER_S = 0.5  # a variant whose first run is quicker than this runs 5x as often


def quantize_interleaved(model_name: str, variants: list[str], workdir: Path, runs: int, source: Path | None = None) -> dict[str, dict]:
    """Each variant quantizes `runs` times (5x that when its first run is under
    FAST_QUANTIZER_S, where a run is cheap and the machine's noise is large against it), each
    run a fresh process, the variants alternating round by round (reversed every other round),
    so a slow minute of the machine falls on all of them. Seconds and peak RSS are medians; one
    failed run makes the variant's result that error. {variant: result, with "out": the model
    its last run wrote}."""
    done: dict[str, list[dict]] = {v: [] for v in variants}
    errors: dict[str, dict] = {}
    target = dict.fromkeys(variants, runs)
    index = 0
    while any(len(done[v]) < target[v] for v in variants if v not in errors):
        for variant in variants if index % 2 == 0 else variants[::-1]:
            if variant in errors or len(done[variant]) >= target[variant]:
                continue
            print(f"[{model_name}] quantizing with {variant} (run {len(done[variant]) + 1}) ...", file=sys.stderr, flush=True)
            result = quantize_in_child(model_name, variant, _out_path(workdir, model_name, variant), source)
            if "error" in result:
                errors[variant] = result
                continue
            done[variant].append(result)
            if len(done[variant]) == 1 and result["seconds"] < FAST_QUANTIZER_S:
                target[variant] = 5 * runs
        index += 1
    return {
        variant: errors.get(variant) or {
            "seconds": statistics.median(r["seconds"] for r in done[variant]),
            "rss_mb": statistics.median(r["rss_mb"] for r in done[variant]),
            "quant_runs": len(done[variant]),
            "out": _out_path(workdir, model_name, variant),
        }
        for variant in variants
    }


def _out_path(workdir: Path, model_name: str, variant: str) -> Path:
    return workdir / f"{model_name}-{variant.replace('/', '_')}{'.xml' if variant in OPENVINO_IR else '.onnx'}"


def _megabytes(path: Path) -> float:
    """The model's size on disk: an OpenVINO IR's .xml and its .bin together."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


DEFAULT_FP32 = "fp32 at the runtime's default precision"


def sized_for(bench, runtime: str, workdir: Path) -> Path | None:
    """In OpenVINO, a model with input_shapes sized first (what `--input-shape` gives lowprec):
    `bench.path` becomes the sized file, which is returned for every quantizer to read; else None."""
    if runtime != "openvino" or not bench.input_shapes:
        return None
    source = workdir / f"{bench.name}-fp32-sized.onnx"
    onnx.save(lp.fix_input_shapes(onnx.load(bench.path), bench.input_shapes), source)
    bench.path = source
    return source


def run_model(model_name: str, variants: list[str], workdir: Path, rounds: int, quant_runs: int = 1,
              runtime: str = "onnxruntime") -> list[dict]:
    """Quantize with every variant, then score and time every model in `runtime`. In OpenVINO, a
    model with input_shapes is sized first, and every quantizer and the FP32 reference get the
    sized model (what `--input-shape` gives lowprec)."""
    bench = MODELS[model_name]()
    source = sized_for(bench, runtime, workdir)
    paths = {"fp32": bench.path}
    rows = []
    unasked = None
    if runtime == "openvino":  # FP32 as OpenVINO runs it unasked: a baseline INT8 must beat too
        try:
            unasked = _session(bench.path, 1, runtime, precision=None)
        except LowprecError as err:  # the FP32 model itself does not run there: nothing to compare
            return [{"model": model_name, "variant": "fp32", "error": f"{str(err)[:100]} … {str(err)[-120:]}"}]
        if unasked.precision == "f32":
            unasked = None
    for variant, result in quantize_interleaved(model_name, variants, workdir, quant_runs, source).items():
        out = result.pop("out", None)
        row = {"model": model_name, "variant": variant, **result}
        if "error" not in result:
            try:
                ref, cand = _session(bench.path, None, runtime), _session(out, None, runtime, precision=None)
            except LowprecError as err:  # the runtime cannot run this quantizer's model: that is its result here
                row = {"model": model_name, "variant": variant, "error": str(err)[:160]}
                rows.append(row)
                continue
            paths[variant] = out
            row["mb"] = _megabytes(out)
            row["integer_kernels"], row["float_kernels"] = lp.kernel_counts(str(out)) if runtime == "onnxruntime" else ("-", "-")
            row.update(bench.evaluate(lambda f: ref.run(None, f), lambda f: cand.run(None, f)))
        rows.append(row)
    if unasked is not None:
        ref, cand = _session(bench.path, None, runtime), _session(bench.path, None, runtime, precision=None)
        rows.append({"model": model_name, "variant": f"{DEFAULT_FP32} ({unasked.precision})", "seconds": 0.0, "rss_mb": 0.0,
                     "quant_runs": 0, "mb": bench.path.stat().st_size / 1e6, "integer_kernels": "-", "float_kernels": "-",
                     **bench.evaluate(lambda f: ref.run(None, f), lambda f: cand.run(None, f))})
    small, large = bench.bench_batches
    for batch in (small, large):
        feed = bench.feed(batch)
        sessions = {name: _session(path, 1, runtime, precision="f32" if name == "fp32" else None) for name, path in paths.items()}
        if unasked is not None:
            sessions[rows[-1]["variant"]] = _session(bench.path, 1, runtime, precision=None)
        medians = time_interleaved(sessions, feed, rounds if batch == small else max(rounds // 4, 10), budget_s=TIMING_BUDGET_S)
        size = "small" if batch == small else "large"
        for row in rows:
            if row["variant"] in medians:
                row[f"speedup_b{size}"] = medians["fp32"] / medians[row["variant"]]
                if unasked is not None:
                    row[f"vs_default_b{size}"] = medians[rows[-1]["variant"]] / medians[row["variant"]]
    for row in rows:
        row["fp32_mb"] = bench.path.stat().st_size / 1e6
        row["headline"] = bench.headline
        row["batches"] = bench.bench_batches
    return rows


def machine() -> str:
    """The cores, the CPU and its integer ISA, as the results name them."""
    cpu, isa = lp.cpu_description()
    return f"{mp.cpu_count()} cores ({cpu or platform.processor() or platform.machine()}; integer ISA: {', '.join(isa) or 'none detected'})"


def render(rows: list[dict], command: str, rounds: int = 60, runtime: str = "onnxruntime") -> str:
    # OpenVINO's own default differs from f32 only where the CPU has bf16 (or f16): else no column.
    beside = runtime == "openvino" and any("vs_default_bsmall" in row for row in rows)
    lines = [
        "# lowprec vs anchors" + (" in OpenVINO" if runtime == "openvino" else ""),
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}; onnxruntime {ort.__version__}, onnx {onnx.__version__}"
        + (f", openvino {_openvino_version()}." if runtime == "openvino" else "."),
        *(["Every model scored and timed in OpenVINO's CPU plugin: FP32 at f32 (the reference the speedups divide), INT8 models",
           "at the plugin's default; 'vs default' divides FP32 at OpenVINO's own default precision (bf16 where the CPU has it)."]
          if runtime == "openvino" else []),
        *(["On this CPU OpenVINO's default precision is f32, the reference itself: no 'vs default' columns."]
          if runtime == "openvino" and not beside else []),
        "Speedups are FP32 median latency / INT8 median latency, 1 thread, timed interleaved in one process",
        f"(at least {rounds} rounds at batch 1 and {max(rounds // 4, 10)} at the large batch; more, up to 10x, while under {TIMING_BUDGET_S:.0f} s).",
        ("Kernels: not counted in OpenVINO (\"-/-\"); its compiled graph names no integer kernels the way ORT's does."
         if runtime == "openvino" else
         "Kernels: integer / float Conv-MatMul-Gemm kernels that ORT runs after its graph optimisation."),
        "Quant s and peak RSS: medians over fresh-process runs, the variants alternating run by run",
        f"({min((r['quant_runs'] for r in rows if r.get('quant_runs')), default=0)} runs each; 5x as many for a quantizer whose first run took under {FAST_QUANTIZER_S} s).",
        "",
        "| model | variant | quality | other metrics | quant s | peak RSS MB | MB (FP32) | kernels int/float | speedup b=1 | speedup large b |"
        + (" vs default b=1 | vs default large b |" if beside else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if beside else ""),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['variant']} | failed: {row['error']} | | | | | | | |")
            continue
        key = row["headline"]
        others = ", ".join(f"{k} {row[k]:.4f}" for k in row if isinstance(row[k], float) and k not in
                           {key, "seconds", "rss_mb", "mb", "fp32_mb", "speedup_bsmall", "speedup_blarge", "vs_default_bsmall",
                            "vs_default_blarge"})
        lines.append(
            f"| {row['model']} | {row['variant']} | {key} {row[key]:.4f} | {others} | {row['seconds']:.3f} | "
            f"{row['rss_mb']:.0f} | {row['mb']:.2f} ({row['fp32_mb']:.2f}) | {row['integer_kernels']}/{row['float_kernels']} | "
            f"{row.get('speedup_bsmall', float('nan')):.2f}x | {row.get('speedup_blarge', float('nan')):.2f}x (b={row['batches'][1]}) |"
            + (f" {row.get('vs_default_bsmall', float('nan')):.2f}x | {row.get('vs_default_blarge', float('nan')):.2f}x |"
               if beside else "")
        )
    return "\n".join(lines) + "\n"


def _openvino_version() -> str:
    return importlib.metadata.version("openvino")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--quant-runs", type=int, default=3, help="fresh-process quantization runs per variant (medians)")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"],
                        help="where every model is scored and timed (the quantizers are the same)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.runtime != "openvino":
        if args.variants != parser.get_default("variants") and set(variants) & OPENVINO_IR:
            parser.error(f"{', '.join(sorted(set(variants) & OPENVINO_IR))} writes OpenVINO IR: compare it with --runtime openvino")
        variants = [v for v in variants if v not in OPENVINO_IR]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lowprec-bench-") as tmp:
        for name in args.models.split(","):
            rows += run_model(name, variants, Path(tmp), args.rounds, args.quant_runs, args.runtime)
    command = "python -m bench.compare " + " ".join(sys.argv[1:])
    text = render(rows, command.strip(), args.rounds, args.runtime)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
