"""Accuracy-aware quantization side by side: lowprec against nncf.quantize_with_accuracy_control.

Both tools get the same calibration feeds, the same evaluation samples and the same per-sample
metric. Reported per tool: the final drop (measured afresh on the whole evaluation set, the
same way for both), quantizable layers left in float, full validation passes (passes over
every evaluation sample, the FP32 one included), wall time, and speedup over FP32 at batch 1
and at a large batch (1 thread, interleaved, medians).

    python -m bench.compare_aaq --out bench/RESULTS_AAQ.md
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.compare import machine, time_interleaved
from bench.models import MODELS, SHARED
from bench.plugins import ocr_exact


@dataclass
class Task:
    model: str
    metric: str  # lowprec's --metric
    max_drop: float
    score: Callable[[list[np.ndarray], list[np.ndarray], object], float]  # (outputs, fp32 outputs, label) of one sample
    labels: Callable[[], np.ndarray | None]


def _cosine(out, ref, label) -> float:
    a, b = out[0].reshape(-1).astype(np.float64), ref[0].reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


TASKS = {
    "digits-top1": Task("digits", "top1", 0.01, lambda out, ref, label: float(out[0].argmax() == label),
                        lambda: np.load(Path(__file__).resolve().parents[1] / "lowprec_core" / "_demo" / "digits_eval_labels.npy")),
    "minilm-cosine": Task("minilm", "cosine", 0.01, _cosine, lambda: None),
    "ocr_rec-exact": Task("ocr_rec", "bench.plugins:ocr_exact", 0.01, lambda out, ref, label: float(ocr_exact(out, [label])[0]),
                          lambda: np.array([str(s) for s in np.load(SHARED / "ocr_rec_lines.npz")["eval_y"]])),
    # Tighter than the default INT8 model meets, so both searches have to revert layers.
    "minilm-cosine-0.001": Task("minilm", "cosine", 0.001, _cosine, lambda: None),
}


def _samples(feeds: list[dict]) -> list[dict]:
    return [{k: v[i : i + 1] for k, v in feed.items()} for feed in feeds for i in range(next(iter(feed.values())).shape[0])]


def _session(model) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def float_layers(path: Path) -> int:
    """Conv/MatMul/Gemm with a constant weight (initializer or Constant node) that no DequantizeLinear feeds."""
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits and n.input[1] not in dq)


def run_lowprec(task: Task, bench, labels, out: Path, tune: str = "none") -> dict:
    import lowprec_core as lp
    from lowprec_core import AccuracyBudget, MetricBudget

    budget = AccuracyBudget(metrics=(MetricBudget(metric=task.metric, max_drop=task.max_drop),), min_speedup=0)
    quantize = lp.quantize  # its module loads on first use: before the clock, as nncf's import is
    start = time.perf_counter()
    report = quantize(bench.path, out, data=bench.calib, eval_data=bench.eval_feeds, labels=labels, accuracy=budget, tune=tune)
    seconds = time.perf_counter() - start
    # The latency search's scored candidates are passes too; the kept one's is also the search's first.
    missed = sum(c.within_budget is False for c in report.tuning.candidates) if report.tuning else 0
    return {"seconds": seconds, "full_passes": report.accuracy.full_passes + missed, "met": report.accuracy.met}


def run_lowprec_tuned(task: Task, bench, labels, out: Path) -> dict:
    """lowprec with --tune latency: the fastest placement within the budget, then the search over float layers."""
    return run_lowprec(task, bench, labels, out, tune="latency")


def run_nncf(task: Task, bench, labels, out: Path) -> dict:
    import nncf

    items = list(enumerate(_samples(bench.eval_feeds)))
    reference = [_session(bench.path).run(None, feed) for _, feed in items]
    passes = {"full": 0, "calls": 0}

    def validation_fn(model, data):
        sess = _session(model)
        batch = list(data)
        passes["calls"] += 1
        passes["full"] += len(batch) == len(items)
        values = [task.score(sess.run(None, feed), reference[i], None if labels is None else labels[i]) for i, feed in batch]
        return float(np.mean(values)), values

    calib = nncf.Dataset(bench.calib)
    validation = nncf.Dataset(items, lambda item: item[1])
    model_type = nncf.ModelType.TRANSFORMER if task.model == "minilm" else None
    start = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(bench.path), calib, validation, validation_fn, max_drop=task.max_drop,
        subset_size=sum(len(next(iter(f.values()))) for f in bench.calib), model_type=model_type,
    )
    seconds = time.perf_counter() - start
    onnx.save(quantized, out)
    return {"seconds": seconds, "full_passes": passes["full"], "met": None}


def _child(tool: str, name: str, out: str, queue) -> None:
    try:
        task = TASKS[name]
        bench = MODELS[task.model]()
        importlib.import_module("nncf" if tool == "nncf" else "lowprec_core")  # before the clock
        queue.put(RUNNERS[tool](task, bench, task.labels(), Path(out)))
    except BaseException as err:  # an anchor's failure is a result, not a crash
        queue.put({"error": f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"})


def run_limited(tool: str, name: str, out: Path, limit: float) -> dict:
    """One tool on one task in a fresh process; past `limit` seconds it is stopped and says so."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, name, str(out), queue))
    proc.start()
    proc.join(timeout=limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"error": f"not finished after {limit:.0f} s (stopped)"}
    return queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}


def measure(task: Task, bench, labels, path: Path) -> float:
    """FP32 score minus INT8 score over every evaluation sample, one at a time."""
    fp32, int8 = _session(bench.path), _session(path)
    scores = []
    for i, feed in enumerate(_samples(bench.eval_feeds)):
        ref = fp32.run(None, feed)
        label = None if labels is None else labels[i]
        scores.append((task.score(ref, ref, label), task.score(int8.run(None, feed), ref, label)))
    fp, q = np.mean(scores, axis=0)
    return float(fp - q)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--tools", default="lowprec,nncf", help=f"comma-separated, of: {', '.join(RUNNERS)}")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--limit", type=float, default=1200, help="seconds one tool may take on one task")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    command = "python -m bench.compare_aaq " + " ".join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory(prefix="lowprec-aaq-") as tmp:
        for name in args.tasks.split(","):
            task = TASKS[name]
            bench = MODELS[task.model]()
            labels = task.labels()
            paths = {"fp32": bench.path}
            for tool in args.tools.split(","):
                out = Path(tmp) / f"{name}-{tool}.onnx"
                print(f"[{name}] {tool} ...", file=sys.stderr, flush=True)
                row = run_limited(tool, name, out, args.limit)
                if "error" in row:
                    rows.append({"task": name, "tool": tool, **row})
                    continue
                row.update(task=name, tool=tool, drop=measure(task, bench, labels, out), float_layers=float_layers(out))
                paths[tool] = out
                rows.append(row)
            for batch in bench.bench_batches:
                feed = bench.feed(batch)
                medians = time_interleaved(paths, feed, args.rounds if batch == 1 else max(args.rounds // 4, 10))
                for row in rows:
                    if row["task"] == name and row.get("tool") in medians:
                        row[f"speedup_b{batch}"] = medians["fp32"] / medians[row["tool"]]
                        row.setdefault("batches", []).append(batch)
            if args.out:  # after every task, so a long anchor cannot take the finished rows with it
                args.out.write_text(render(rows, command))
    print(render(rows, command))


def render(rows: list[dict], command: str) -> str:
    lines = [
        "# Accuracy-aware quantization: lowprec vs NNCF",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {machine()}; onnxruntime {ort.__version__}. Drop: FP32 minus INT8 on the task's metric over every evaluation sample, "
        "measured afresh for both tools. Full passes: passes over the whole evaluation set, FP32's included.",
        "",
        "| task | max drop | tool | drop | float layers | full passes | wall s | speedup b=1 | speedup large b |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        task = TASKS[row["task"]]
        if "error" in row:
            lines.append(f"| {row['task']} | {task.max_drop} | {row['tool']} | {row['error']} | | | | | |")
            continue
        batches = row.get("batches", [1, 1])
        lines.append(
            f"| {row['task']} | {task.max_drop} | {row['tool']} | {row['drop']:.4f} | {row['float_layers']} | {row['full_passes']} | "
            f"{row['seconds']:.1f} | {row.get(f'speedup_b{batches[0]}', float('nan')):.2f}x | "
            f"{row.get(f'speedup_b{batches[-1]}', float('nan')):.2f}x (b={batches[-1]}) |"
        )
    return "\n".join(lines) + "\n"


RUNNERS = {"lowprec": run_lowprec, "lowprec-tune": run_lowprec_tuned, "nncf": run_nncf}

if __name__ == "__main__":
    main()
