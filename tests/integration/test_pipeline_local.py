"""The ptq pipeline end to end under kfp's local runner, against a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

import lowprec_core as lp
from lowprec_core import _registry as registry
from lowprec_core._model_io import file_sha256
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.run import PIPELINES as PIPELINE_FUNCS
from pipelines.run import compile_pipeline, run_local
from tests.conftest import SECRET_KEY

pytestmark = pytest.mark.slow
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.mark.parametrize("name", sorted(PIPELINE_FUNCS))
def test_compiled_yaml_is_committed_current_and_valid(tmp_path, name):
    fresh = compile_pipeline(tmp_path / f"{name}.yaml", name)
    committed = PIPELINES / f"{name}.yaml"
    assert fresh.read_text() == committed.read_text(), f"run `make compile` and commit pipelines/{name}.yaml"
    # Strict parses: a field the pipeline spec (or kfp-kubernetes' executor config) lacks fails here.
    spec, platform = yaml.safe_load_all(committed.read_text())
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])  # every step gets the S3 Secret
    for config in executors.values():
        parsed = json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        assert parsed.secret_as_env[0].secret_name == "lowprec-s3"
    for executor in spec["deploymentSpec"]["executors"].values():
        resources = executor["container"]["resources"]
        assert resources["resourceCpuRequest"] and resources["resourceMemoryLimit"]
    steps = [task for task in _tasks(spec) if task["componentRef"]["name"] in spec["deploymentSpec"]["executors"].keys() | _comps(spec)]
    assert steps and all("retryPolicy" in task and task["cachingOptions"] == {} for task in steps)  # retried, never cached
    assert "password" not in committed.read_text().lower() and "secret_access_key=" not in committed.read_text().lower()


def _run_digits(demo, tmp_path, bucket_name: str, **options) -> None:
    """ptq on the local demo files, publishing to the test bucket's registry."""
    run_local(pipeline_root=tmp_path / "kfp", model_uri=str(demo["model"]), calib_uri=str(demo["calib"]),
              eval_uri=str(demo["eval"]), registry_uri=f"s3://{bucket_name}/registry", name="digits", batches="1", **options)


def _comps(spec: dict) -> set[str]:
    """Components that run a container (not sub-DAGs)."""
    return {name for name, comp in spec["components"].items() if "executorLabel" in comp}


def _tasks(spec: dict):
    for component in [spec["root"], *spec["components"].values()]:
        yield from component.get("dag", {}).get("tasks", {}).values()


def test_ptq_pulls_from_s3_and_publishes_a_verifiable_version(bucket, demo, tmp_path, capfd):
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
    # The secret key reached every task (they read the bucket) and was written nowhere: not in
    # any task's log, output artifact, report, manifest or the compiled pipelines.
    logs = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()] + sorted(PIPELINES.glob("*.yaml"))
    assert written and "lowprec-ptq" in logs.out + logs.err
    for text in [logs.out, logs.err, *(p.read_bytes().decode("latin-1") for p in written)]:
        assert SECRET_KEY not in text


def test_gate_failure_publishes_nothing(bucket, demo, tmp_path):
    client, name = bucket
    _run_digits(demo, tmp_path, name, metric="mse", max_drop=0.0)  # any numeric difference fails the gate
    assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0


def test_accuracy_aware_ptq_reverts_layers_and_publishes(bucket, demo, tmp_path):
    _, name = bucket
    # max_drop below the default INT8 model's mse: layers must go back to float. Timing belongs to bench/.
    _run_digits(demo, tmp_path, name, metric="mse", max_drop=0.001, accuracy_aware=True, min_speedup=0.0)
    (uri, _), = registry.versions(f"s3://{name}/registry", "digits")
    lp.fetch(uri, tmp_path / "fetched")
    report = lp.QuantizeReport.model_validate_json((tmp_path / "fetched" / "reports" / "quantize.json").read_text())
    assert report.accuracy.met and report.accuracy.float_layers
    assert set(report.accuracy.float_layers) <= set(report.plan.config.ignore)
    validation = lp.ValidationReport.model_validate_json((tmp_path / "fetched" / "reports" / "validation.json").read_text())
    assert validation.passed and validation.drop <= 0.001


def test_input_shapes_reach_the_published_model_and_its_fp32_reference(bucket, demo, tmp_path):
    """The pipeline's input_shapes go to calibrate and quantize; validate and benchmark then run the
    FP32 model at the published model's sizes. The batch is named, the rest as the model has it."""
    _, name = bucket
    _run_digits(demo, tmp_path, name, input_shapes="image=n,1,8,8")
    (uri, _), = registry.versions(f"s3://{name}/registry", "digits")
    lp.fetch(uri, tmp_path / "fetched")
    report = lp.QuantizeReport.model_validate_json((tmp_path / "fetched" / "reports" / "quantize.json").read_text())
    assert report.plan.config.input_shapes == {"image": ("n", 1, 8, 8)}
    import onnx

    (image,) = onnx.load(tmp_path / "fetched" / "model.onnx").graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["n", 1, 8, 8]
