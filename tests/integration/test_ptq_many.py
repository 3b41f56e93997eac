"""ptq_many under kfp's local runner against SeaweedFS: three real models under one prefix,
quantized in a ParallelFor; a second run finds nothing left to do."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import io
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lowprec_core import _registry as registry
from lowprec_core._config import QuantConfig
from lowprec_core._errors import ConfigError
from lowprec_core._fleet import pending
from pipelines.ptq_many import PARALLELISM
from pipelines.run import run_local

pytestmark = pytest.mark.slow
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
LINES = Path(__file__).resolve().parents[1] / "data" / "ppocr_rec_lines.npz"
OCR = importlib.util.find_spec("rapidocr_onnxruntime")


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _fleet(demo) -> dict[str, dict[str, bytes]]:
    """digits, and PP-OCRv4 recognition and detection on real text lines (detection reads them
    padded to 64 rows, a multiple of its stride)."""
    lines = np.load(LINES)
    x = lambda images: ((images.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)  # noqa: E731
    page = lambda images: np.pad(x(images), ((0, 0), (0, 0), (0, 16), (0, 0)), constant_values=1.0)  # noqa: E731
    models = Path(OCR.origin).parent / "models"
    return {
        "digits": {"model.onnx": demo["model"].read_bytes(), "calib.npz": demo["calib"].read_bytes(),
                   "eval.npz": demo["eval"].read_bytes(), "labels.npy": demo["labels"].read_bytes()},
        "ppocr-rec": {"model.onnx": (models / "ch_PP-OCRv4_rec_infer.onnx").read_bytes(),
                      "calib.npz": _npz(x=x(lines["calib_img"][:8])), "eval.npz": _npz(x=x(lines["eval_img"][:8]))},
        "ppocr-det": {"model.onnx": (models / "ch_PP-OCRv4_det_infer.onnx").read_bytes(),
                      "calib.npz": _npz(x=page(lines["calib_img"][:8])), "eval.npz": _npz(x=page(lines["eval_img"][:8]))},
    }


@pytest.mark.skipif(OCR is None and not os.environ.get("CI"), reason="rapidocr-onnxruntime is installed by `make venv`")
def test_ptq_many_quantizes_every_new_model_once(bucket, demo, tmp_path):
    client, name = bucket
    for model, files in _fleet(demo).items():
        for filename, body in files.items():
            client.put_object(Bucket=name, Key=f"models/{model}/{filename}", Body=body)
    prefix, reg = f"s3://{name}/models", f"s3://{name}/registry"
    arguments = dict(models_prefix=prefix, registry_uri=reg, metric="cosine", max_drop=0.02, batches="1", min_speedup=0.0)
    assert [m.model_name for m in pending(prefix, reg, QuantConfig())] == ["digits", "ppocr-det", "ppocr-rec"]

    run_local(pipeline="ptq_many", pipeline_root=tmp_path / "first", **arguments)

    assert pending(prefix, reg, QuantConfig()) == []
    for model in ("digits", "ppocr-rec", "ppocr-det"):
        (uri, manifest), = registry.versions(reg, model)
        source = client.get_object(Bucket=name, Key=f"models/{model}/model.onnx")["Body"].read()
        assert manifest.source["uri"] == f"{prefix}/{model}/model.onnx"
        assert manifest.version == registry.version_id(manifest.source["sha256"], QuantConfig().model_dump(mode="json"))
        assert manifest.source["sha256"] == hashlib.sha256(source).hexdigest()

    started = time.monotonic()
    run_local(pipeline="ptq_many", pipeline_root=tmp_path / "second", **arguments)
    assert time.monotonic() - started < 30  # only the listing step ran
    for model in ("digits", "ppocr-rec", "ppocr-det"):
        assert len(registry.versions(reg, model)) == 1
    assert not any((tmp_path / "second").rglob("model.onnx")), "the second run quantized something"


def test_ptq_many_runs_the_models_in_parallel_with_a_limit():
    spec, platform = yaml.safe_load_all((PIPELINES / "ptq_many.yaml").read_text())  # the pipeline, then its Kubernetes settings
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"]["parallelismLimit"] == PARALLELISM
    assert loop["parameterIterator"]["items"]["inputParameter"]
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]  # the S3 Secret reaches the steps


def test_a_model_folder_without_data_is_named_in_the_error(bucket, demo):
    client, name = bucket
    client.upload_file(str(demo["model"]), name, "models/lonely/model.onnx")
    client.upload_file(str(demo["calib"]), name, "models/lonely/calib.npz")
    with pytest.raises(ConfigError, match=r"models/lonely/ has no eval\.npz"):
        pending(f"s3://{name}/models", f"s3://{name}/registry", QuantConfig())
