"""A byte-sequence classifier the defaults were not chosen on: Magika, on real files.

A one-hot of the bytes feeds a dense embedding, a convolution and a dense head, with LayerNorm
and tanh-GELU spelled out in Mul/Add between them (jax2tf). Both GELUs become ORT's FastGelu
(ORT's own fusion does not match jax2tf's order of operands). Its head's bias is a [1, 214]
Add after the MatMul, which ORT folds into a Gemm: before [1, N] biases were quantized that Gemm
ran in float on dequantized weights. On the same files (bench/RESULTS.md) ORT's per-tensor and
per-channel quantize_static and NNCF agree with FP32 on under 1 % of them: they quantize the
elementwise ops too.
"""

from __future__ import annotations

import collections
import importlib.util
import os

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from lowprec_core._runtime import FLOAT_KERNELS, INTEGER_KERNELS, optimized_graph
from examples import magika

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("magika") is None and not os.environ.get("CI"), reason="make venv installs magika"),
]


def test_magika_names_fp32s_file_type_on_real_files(tmp_path):
    calib, rows = magika.split(150)
    assert len({path.suffix for path in magika.corpus()}) >= 30  # sources, XML, PEM, images, audio, archives, ...
    out = tmp_path / "magika-int8.onnx"
    report = lp.quantize(magika.model_path(), out, data=[{"bytes": calib[i : i + 50]} for i in range(0, len(calib), 50)])

    onnx.checker.check_model(onnx.load(out))
    assert len(report.plan.nodes) == 3  # the byte embedding, the convolution and the head
    graph = optimized_graph(out.read_bytes()).graph
    kernels = collections.Counter(node.op_type for node in graph.node)
    assert sum(kernels[k] for k in INTEGER_KERNELS) == 3 and kernels["QGemm"] == 1, kernels
    assert sum(kernels[k] for k in FLOAT_KERNELS) == 0, kernels
    assert kernels["FastGelu"] == 2 and kernels["Tanh"] == 0, kernels

    fp32, int8 = (runtime.session(str(path)).run(None, {"bytes": rows})[0] for path in (magika.model_path(), out))
    labels = magika.labels()
    assert len({labels[i] for i in fp32.argmax(1)}) >= 15  # the files are of many types, not one
    agree = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    # Measured 0.980 (242 of 247). ORT restricted to Conv/MatMul/Gemm: 0.972, as lowprec was before
    # one-hot codes took 0 and 127 (the int16 guard had given 62 of the 64 embedding channels 7 bits).
    assert agree >= 0.97, agree


def test_magika_for_openvino_names_fp32s_file_type_at_the_plugins_own_precision(tmp_path):
    """Served in OpenVINO as a user would (the plugin's default precision: bf16 on a CPU that has
    it), the INT8 model agrees with FP32 at f32. Its LayerNorms, E[x^2] - E[x]^2 as jax2tf writes
    them, cancelled to nothing in bf16: 0.919 before lowprec centred them for OpenVINO, 0.984
    after (Zen 4, AVX512_BF16)."""
    pytest.importorskip("openvino")
    calib, rows = magika.split(150)
    out = tmp_path / "magika-openvino.onnx"
    lp.quantize(magika.model_path(), out, data=[{"bytes": calib[i : i + 50]} for i in range(0, len(calib), 50)],
                config=lp.QuantConfig(target="openvino"))
    fp32 = runtime.serving_session(str(magika.model_path()), runtime="openvino", precision="f32").run(None, {"bytes": rows})[0]
    int8 = runtime.serving_session(str(out), runtime="openvino").run(None, {"bytes": rows})[0]
    agree = float(np.mean(fp32.argmax(1) == int8.argmax(1)))
    assert agree >= 0.97, agree
