"""Models whose weights live in external data files, in and out (and the >2 GB path, scaled down)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import lowprec_core as lp
from lowprec_core import _model_io as model_io, _runtime as runtime


@pytest.fixture
def external_model(tmp_path, demo):
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(onnx.load(demo["model"]), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path, demo["calib"]


def test_external_data_in_and_out(external_model, tmp_path):
    source, data = external_model
    out = tmp_path / "out" / "int8.onnx"
    report = lp.quantize(source, out, data=data)
    assert (out.parent / "int8.onnx.data").is_file()
    loaded = model_io.load_model(out)
    assert loaded.data_files == ("int8.onnx.data",) and loaded.sha256 == report.output_sha256
    x = {"image": np.load(data)["image"][:4]}
    y = runtime.session(str(out)).run(None, x)[0]
    ref = runtime.session(str(source)).run(None, x)[0]
    assert np.abs(y - ref).max() < 0.1 * np.abs(ref).max()
    uri, manifest = lp.publish(out, str(tmp_path / "reg"), "ext", source=source)
    assert set(manifest.files) == {"model.onnx", "int8.onnx.data"}
    lp.fetch(uri, tmp_path / "fetched")
    assert runtime.session(str(tmp_path / "fetched" / "model.onnx")).run(None, x)[0].shape == y.shape


def test_quantizing_again_over_an_external_data_output_in_its_own_folder(external_model, tmp_path, monkeypatch):
    """onnx.save_model refuses a data file that exists relative to the working directory: run
    in the output's folder, a second quantize to the same name raised FileExistsError."""
    source, data = external_model
    out = tmp_path / "out" / "int8.onnx"
    out.parent.mkdir()
    monkeypatch.chdir(out.parent)
    first = lp.quantize(source, out, data=data)
    model_bytes, weight_bytes = out.read_bytes(), (out.parent / "int8.onnx.data").read_bytes()
    again = lp.quantize(source, out, data=data)
    assert again.output_sha256 == first.output_sha256
    assert out.read_bytes() == model_bytes and (out.parent / "int8.onnx.data").read_bytes() == weight_bytes
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx", "int8.onnx.data"]


def test_sha256_covers_the_external_data(external_model):
    source, _ = external_model
    before = model_io.load_model(source).sha256
    blob = source.parent / "weights.bin"
    raw = bytearray(blob.read_bytes())
    raw[-1] ^= 0xFF
    blob.write_bytes(bytes(raw))
    assert model_io.load_model(source).sha256 != before


def test_missing_or_escaping_external_data_is_a_model_error(external_model):
    source, _ = external_model
    (source.parent / "weights.bin").unlink()
    with pytest.raises(lp.ModelError, match="weights.bin"):
        model_io.load_model(source)


def test_models_over_the_protobuf_limit_go_through_external_data(tmp_path, demo, monkeypatch):
    # The 2 GB limit scaled down to 100 kB: the same code path as a real >2 GB model.
    monkeypatch.setattr(model_io, "_PROTOBUF_LIMIT", 100_000)
    monkeypatch.setattr(runtime, "PROTOBUF_LIMIT", 100_000)
    out = tmp_path / "int8.onnx"
    lp.quantize(demo["model"], out, data=demo["calib"])
    assert out.stat().st_size < 100_000 and (tmp_path / "int8.onnx.data").is_file()
    result = lp.validate(demo["model"], out, demo["eval"], metric="top1", labels=demo["labels"], max_drop=0.005)
    assert result.passed
