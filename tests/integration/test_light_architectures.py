"""Classic CNN architectures as the ONNX model zoo stores them: onnx's own light test models.

They ship inside the onnx package (IR 3, opset 9, every initializer also a graph input, every
weight made by ConstantOfShape), so they check structure, never accuracy: that they load and
upgrade, that the INT8 graph passes onnx.checker, and that after ORT's optimisation every layer
the plan quantized runs as an integer kernel. Before this test all of them failed to load.
"""

from __future__ import annotations

import collections
import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core._data import input_specs
from lowprec_core._runtime import INTEGER_KERNELS, optimized_graph, session
from tests.integration.test_quantize_ort import _float_layers_read_float_weights, _kernels

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "inception_v1", "densenet121"])
def test_a_zoo_architecture_quantizes_to_integer_kernels(name, tmp_path):
    path = LIGHT / f"light_{name}.onnx"
    model = onnx.load(path)
    assert model.ir_version == 3 and model.opset_import[0].version == 9
    rng = np.random.default_rng(0)
    feeds = [
        {s.name: rng.uniform(0, 1, [d if isinstance(d, int) and d > 0 else 1 for d in s.shape]).astype(s.dtype) for s in input_specs(model)}
        for _ in range(2)
    ]
    out = tmp_path / "int8.onnx"
    report = lp.quantize(path, out, data=feeds, inspect_samples=0)

    onnx.checker.check_model(onnx.load(out))
    assert len(report.plan.nodes) >= 10
    ops = collections.Counter(n.op_type for n in optimized_graph(out.read_bytes()).graph.node)
    assert sum(ops[k] for k in INTEGER_KERNELS) >= len(report.plan.nodes), ops
    want = session(str(path)).run(None, feeds[0])[0]
    got = session(str(out)).run(None, feeds[0])[0]
    assert got.shape == want.shape and np.isfinite(got).all()


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is None and not os.environ.get("CI"), reason="make venv installs nudenet")
def test_a_yolov8_detector_quantizes_to_integer_kernels(tmp_path):
    """YOLOv8n as the `nudenet` package ships it (opset 17, 320x320): SiLU as Sigmoid x Mul, C2f
    blocks of Split and Concat, SPPF max pools, nearest Resize and the DFL head's Softmax. A
    structure check (the images are uniform noise): valid, every planned conv an integer
    kernel, none float on dequantized weights, boxes where FP32 puts them."""
    path = Path(importlib.util.find_spec("nudenet").origin).parent / "320n.onnx"
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 3, 320, 320)).astype(np.float32)
    out = tmp_path / "int8.onnx"
    report = lp.quantize(path, out, data=[{"images": images[:2]}, {"images": images[2:]}])

    onnx.checker.check_model(onnx.load(out))
    assert len(report.plan.nodes) >= 55  # of 64 convs: the first and a few thin ones stay float
    ops = _kernels(out)
    assert sum(ops[k] for k in INTEGER_KERNELS) == len(report.plan.nodes), ops
    assert _float_layers_read_float_weights(out)
    want = session(str(path)).run(None, {"images": images[:1]})[0]
    got = session(str(out)).run(None, {"images": images[:1]})[0]
    assert got.shape == want.shape == (1, 22, 2100)
    assert np.abs(got[:, :4] - want[:, :4]).mean() < 2.0  # box coordinates in pixels of 320: measured 0.50
