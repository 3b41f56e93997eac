"""The ptq pipeline end to end under kfp's local runner, against a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

import lowprec_core as lp
from lowprec_core import registry
from lowprec_core.model_io import file_sha256
from pipelines.run import compile_pipeline, run_local

pytestmark = pytest.mark.slow
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_compiled_yaml_is_committed_and_current(tmp_path):
    fresh = compile_pipeline(tmp_path / "ptq.yaml")
    assert fresh.read_text() == (PIPELINES / "ptq.yaml").read_text(), "run `make compile` and commit pipelines/ptq.yaml"


def test_ptq_pulls_from_s3_and_publishes_a_verifiable_version(bucket, demo, tmp_path):
    client, name = bucket
    for key, path in (("fp32/digits.onnx", demo["model"]), ("data/calib.npz", demo["calib"]),
                      ("data/eval.npz", demo["eval"]), ("data/labels.npy", demo["labels"])):
        client.upload_file(str(path), name, key)

    run_local(
        pipeline_root=tmp_path / "kfp",
        model_uri=f"s3://{name}/fp32/digits.onnx",
        calib_uri=f"s3://{name}/data/calib.npz",
        eval_uri=f"s3://{name}/data/eval.npz",
        labels_uri=f"s3://{name}/data/labels.npy",
        registry_uri=f"s3://{name}/registry",
        name="digits",
        metric="top1",
        max_drop=0.005,
        batches="1",
    )

    (uri, manifest), = registry.versions(f"s3://{name}/registry", "digits")
    assert uri == f"s3://{name}/registry/digits/{manifest.version}"
    assert set(manifest.files) >= {"model.onnx", "stats/stats.json", "stats/stats.npz", "reports/quantize.json",
                                   "reports/validation.json", "reports/benchmark.json", "reports/report.html",
                                   "reports/inspect.json"}
    assert manifest.source == {"uri": f"s3://{name}/fp32/digits.onnx", "sha256": file_sha256(demo["model"])}
    fetched = lp.fetch(uri, tmp_path / "fetched")  # raises IntegrityError on any hash mismatch
    assert fetched.version == manifest.version
    validation = lp.ValidationReport.model_validate_json((tmp_path / "fetched" / "reports" / "validation.json").read_text())
    assert validation.passed and validation.drop <= 0.005


def test_gate_failure_publishes_nothing(bucket, demo, tmp_path):
    client, name = bucket
    run_local(
        pipeline_root=tmp_path / "kfp",
        model_uri=str(demo["model"]),
        calib_uri=str(demo["calib"]),
        eval_uri=str(demo["eval"]),
        registry_uri=f"s3://{name}/registry",
        name="digits",
        metric="mse",
        max_drop=0.0,  # any numeric difference fails the gate
        batches="1",
    )
    assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0


def test_accuracy_aware_ptq_reverts_layers_and_publishes(bucket, demo, tmp_path):
    _, name = bucket
    run_local(
        pipeline_root=tmp_path / "kfp",
        model_uri=str(demo["model"]),
        calib_uri=str(demo["calib"]),
        eval_uri=str(demo["eval"]),
        registry_uri=f"s3://{name}/registry",
        name="digits",
        metric="mse",
        max_drop=0.001,  # the default INT8 model is at 0.0046: layers must go back to float
        batches="1",
        accuracy_aware=True,
        min_speedup=0.0,  # timing belongs to bench/
    )
    (uri, _), = registry.versions(f"s3://{name}/registry", "digits")
    lp.fetch(uri, tmp_path / "fetched")
    report = lp.QuantizeReport.model_validate_json((tmp_path / "fetched" / "reports" / "quantize.json").read_text())
    assert report.accuracy.met and report.accuracy.float_layers
    assert set(report.accuracy.float_layers) <= set(report.plan.config.ignore)
    validation = lp.ValidationReport.model_validate_json((tmp_path / "fetched" / "reports" / "validation.json").read_text())
    assert validation.passed and validation.drop <= 0.001
