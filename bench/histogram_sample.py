"""How many values per calibration batch the range histograms need: quality and calibration time per cap.

    .venv/bin/python -m bench.histogram_sample [--models ...] [--caps 131072,16384,4096]

min/max and the per-channel statistics always see every value; a batch of more than `cap` values
feeds the histogram (the MSE and quantile range estimators) a prime-stride sample of about `cap`
(lowprec's default: 131072).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import onnxruntime as ort

import lowprec_core as lp
from bench.models import MODELS
from lowprec_core._calibration import observers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--caps", default="131072,16384,4096")
    args = parser.parse_args()
    names = args.models.split(",")
    caps = [int(c) for c in args.caps.split(",")]
    benches = {name: MODELS[name]() for name in names}
    print("| values per batch | " + " | ".join(f"{n} {benches[n].headline} (calibration s)" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for cap in caps:
            cells = []
            for name, bench in benches.items():
                stats, out = Path(tmp) / f"{name}-{cap}", Path(tmp) / f"{name}-{cap}.onnx"
                with mock.patch.object(observers, "_HISTOGRAM_SAMPLE", cap):
                    start = time.perf_counter()
                    lp.calibrate(bench.path, bench.calib, stats)
                    seconds = time.perf_counter() - start
                lp.quantize(bench.path, out, stats=stats)
                ref = ort.InferenceSession(str(bench.path), providers=["CPUExecutionProvider"])
                cand = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
                quality = bench.evaluate(lambda f: ref.run(None, f), lambda f: cand.run(None, f))[bench.headline]
                cells.append(f"{quality:.4f} ({seconds:.2f})")
            print(f"| {cap} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
