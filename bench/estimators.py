"""Quality of each activation range estimator on the public models: how the default was chosen.

    .venv/bin/python -m bench.estimators [--models ...]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from unittest import mock

import onnxruntime as ort

import lowprec_core as lp
from bench.models import MODELS
from lowprec_core._quantize import ranges

SETTINGS = {
    "minmax": ({"activation_range": "minmax"}, False),
    "mean_minmax": ({"activation_range": "mean_minmax"}, False),
    "quantile": ({"activation_range": "quantile"}, False),
    "mse, no outlier-channel guard": ({"activation_range": "mse"}, True),
    "mse (default)": ({}, False),
    "mse, no bias correction": ({"bias_correction": "none"}, False),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    names = args.models.split(",")
    benches = {name: MODELS[name]() for name in names}
    print("| setting | " + " | ".join(f"{n} {benches[n].headline}" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        stats = {}
        for name, bench in benches.items():
            stats[name] = Path(tmp) / f"{name}-stats"
            lp.calibrate(bench.path, bench.calib, stats[name])
        for label, (overrides, no_guard) in SETTINGS.items():
            cells = []
            for name, bench in benches.items():
                out = Path(tmp) / f"{name}.onnx"
                guard_off = mock.patch.object(ranges, "outlier_channel_max", lambda s: None)
                with guard_off if no_guard else contextlib.nullcontext():
                    lp.quantize(bench.path, out, stats=stats[name], config=lp.QuantConfig(**overrides))
                ref = ort.InferenceSession(str(bench.path), providers=["CPUExecutionProvider"])
                cand = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
                cells.append(f"{bench.evaluate(lambda f: ref.run(None, f), lambda f: cand.run(None, f))[bench.headline]:.4f}")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
