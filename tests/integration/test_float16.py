"""float16 sources: models stored in float16, made by ONNX Runtime's own converter
(`convert_float_to_float16`) from the bundled digit classifier and the CRNN strip reader.

They quantize as their float32 originals do, keep their float16 inputs and outputs, and
validate and benchmark in ONNX Runtime, whose NCHWc layout pass kills the process on the
reader's float16 head (onnxruntime#28392)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.transformers.float16 import convert_float_to_float16

import lowprec_core as lp
from lowprec_core import _runtime as runtime
from examples import digit_strips
from tests.conftest import DEMO, lowprec
from tests.strip_models import exact

pytestmark = pytest.mark.slow

_HALF, _FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


def _half(source, path, *, keep_io_types: bool = False):
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types)
    onnx.save(model, str(path))
    return path


def _io_types(path) -> list[int]:
    graph = onnx.load(str(path)).graph
    return [value.type.tensor_type.elem_type for value in (*graph.input, *graph.output)]


def _top1(path, images: np.ndarray, labels: np.ndarray) -> float:
    return float((runtime.serving_session(str(path)).run(None, {"image": images})[0].argmax(1) == labels).mean())


def test_a_float16_classifier_quantizes_as_its_float32_source_does(tmp_path):
    source = _half(DEMO / "digits.onnx", tmp_path / "digits_f16.onnx")
    calib = tmp_path / "calib16.npz"
    np.savez(calib, image=np.load(DEMO / "digits_calib.npz")["image"].astype(np.float16))
    out = tmp_path / "int8.onnx"
    done = lowprec("quantize", source, "--data", calib, "--out", out)
    assert done.returncode == 0, done.stderr
    # Every layer, as from the float32 model (before: "0 nodes quantized, 5 left in float").
    assert "5 nodes quantized, 0 left in float" in done.stdout, done.stdout
    assert "nothing was quantized" not in done.stderr
    assert _io_types(out) == [_HALF, _HALF]  # the source's interface
    assert runtime.kernel_counts(str(out)) == (5, 0)  # ORT runs all five in integer kernels
    images = np.load(DEMO / "digits_eval.npz")["image"].astype(np.float16)
    labels = np.load(DEMO / "digits_eval_labels.npy")
    fp16, int8 = _top1(source, images, labels), _top1(out, images, labels)
    assert fp16 >= 0.95 and int8 >= fp16 - 0.01, (fp16, int8)  # measured 0.99 and 0.99
    again = tmp_path / "again.onnx"
    assert lowprec("quantize", source, "--data", calib, "--out", again).returncode == 0
    assert again.read_bytes() == out.read_bytes()


def test_float16_weights_behind_float32_inputs_load_in_the_order_ort_wrote_them(tmp_path):
    """keep_io_types: float32 inputs and outputs, float16 inside. ORT's converter appends the
    input Casts after the nodes that read them; ORT sorts on load, and so does lowprec."""
    source = _half(DEMO / "digits.onnx", tmp_path / "digits_f16_io32.onnx", keep_io_types=True)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(str(source))
    calib = np.load(DEMO / "digits_calib.npz")["image"]
    out = tmp_path / "int8.onnx"
    result = lp.quantize(source, out, data=[{"image": calib[i : i + 16]} for i in range(0, len(calib), 16)])
    assert len(result.plan.layers()) == 5 and not result.plan.left_float()
    assert _io_types(out) == [_FLOAT, _FLOAT]
    images, labels = np.load(DEMO / "digits_eval.npz")["image"], np.load(DEMO / "digits_eval_labels.npy")
    assert _top1(out, images, labels) >= _top1(source, images, labels) - 0.01


def test_a_float16_reader_validates_and_benchmarks_where_ort_would_crash_on_it(tmp_path):
    data = digit_strips.strips()
    source = _half(digit_strips.MODEL, tmp_path / "strips_f16.onnx")
    calib = tmp_path / "calib16.npz"
    np.savez(calib, image=data["calib_x"].astype(np.float16))
    out = tmp_path / "int8.onnx"
    done = lowprec("quantize", source, "--data", calib, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "4 nodes quantized, 0 left in float" in done.stdout, done.stdout  # the float32 reader's two convs and two MatMuls
    checked = lowprec("validate", source, out, "--data", calib, "--metric", "agreement")
    assert checked.returncode == 0 and "PASS" in checked.stdout, (checked.returncode, checked.stderr)  # was -11: a segfault
    timed = lowprec("benchmark", source, out, "--batch", "1")
    assert timed.returncode == 0, (timed.returncode, timed.stderr)
    half = {**data, "eval_x": data["eval_x"].astype(np.float16)}
    decode = lambda probs: digit_strips.decode(probs.astype(np.float32))  # noqa: E731
    runtime.probe_float16(onnx.load(str(source)), source)  # as validate and benchmark do before their sessions
    fp16 = exact(runtime.serving_session(str(source)), half, decode)
    int8 = exact(runtime.serving_session(str(out)), half, decode)
    assert fp16 >= 0.9 and int8 >= fp16 - 0.01, (fp16, int8)  # measured 0.9325 and 0.93, as from float32
