"""Calibration peak RSS with 100 vs 1,000 samples, lowprec against ORT's calibrator, one model.

    .venv/bin/python -m bench.calib_memory [--model ocr_rec]

Each run is a fresh process; the samples stream from a generator that cycles the real
calibration set, so the data itself is never held. The ratio 1000/100 is the headline.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from bench.compare import peak_rss_mb
from bench.models import MODELS


def _feeds(model_name: str, samples: int):
    bench = MODELS[model_name]()
    rows = [{k: v[i : i + 1] for k, v in feed.items()} for feed in bench.calib for i in range(len(next(iter(feed.values()))))]
    for index in range(samples):
        yield rows[index % len(rows)]


def _child(tool: str, model_name: str, samples: int, queue) -> None:
    bench = MODELS[model_name]()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "lowprec":
            import lowprec_core

            lowprec_core.calibrate(bench.path, _feeds(model_name, samples), Path(tmp) / "stats")
        else:
            from onnxruntime.quantization import CalibrationDataReader, quantize_static

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = _feeds(model_name, samples)

                def get_next(self):
                    return next(self.it, None)

            quantize_static(str(bench.path), str(Path(tmp) / "q.onnx"), Reader())
    queue.put((peak_rss_mb(), time.perf_counter() - start))


def measure(tool: str, model_name: str, samples: int) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(tool, model_name, samples, queue))
    proc.start()
    proc.join()
    return queue.get() if not queue.empty() else (float("nan"), float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ocr_rec")
    parser.add_argument("--tools", default="lowprec,ort")
    args = parser.parse_args()
    print("| tool | samples | peak RSS MB | seconds |\n|---|---|---|---|")
    for tool in args.tools.split(","):
        small = measure(tool, args.model, 100)
        large = measure(tool, args.model, 1000)
        print(f"| {tool} | 100 | {small[0]:.0f} | {small[1]:.1f} |")
        print(f"| {tool} | 1000 | {large[0]:.0f} | {large[1]:.1f} |")
        print(f"| {tool} | ratio 1000/100 | {large[0] / small[0]:.3f} | |")


if __name__ == "__main__":
    main()
