"""`lowprec pipeline submit`'s logic against a recording stand-in for kfp.Client (no KFP API
server runs here; the CLI test covers an unreachable host with the real client)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from lowprec_core._errors import ConfigError
from pipelines.run import COMPILED, kfp_cron, submit, typed_arguments

PTQ = ["model_uri=s3://m/fp32.onnx", "calib_uri=s3://m/c.npz", "eval_uri=s3://m/e.npz", "registry_uri=s3://r/reg", "name=resnet"]


class Recorder:
    def __init__(self, host, namespace=None):
        self.calls = [("init", host, namespace)]
        Recorder.last = self

    def create_run_from_pipeline_package(self, path, **kwargs):
        self.calls.append(("run", yaml.safe_load_all(open(path)).__next__()["pipelineInfo"]["name"], kwargs))
        return SimpleNamespace(run_id="run-1")

    def create_experiment(self, name, namespace=None):
        self.calls.append(("experiment", name, namespace))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs))
        return SimpleNamespace(recurring_run_id="rec-1")


def test_parameters_are_typed_by_the_pipeline_signature():
    args = typed_arguments("ptq", [*PTQ, "max_drop=0.02", "accuracy_aware=true", "min-speedup=1.1",
                                   'serving_nodes={"node-pool": "serving-amx"}', "threads=8"])
    assert args["max_drop"] == 0.02 and args["accuracy_aware"] is True and args["min_speedup"] == 1.1
    assert args["name"] == "resnet" and args["serving_nodes"] == {"node-pool": "serving-amx"} and args["threads"] == "8"


@pytest.mark.parametrize(("pairs", "needle"), [
    (PTQ[:-1], "needs --param for: name"),
    ([*PTQ, "max_drop=lots"], "max_drop takes a float"),
    ([*PTQ, "accuracy_aware=maybe"], "accuracy_aware takes a bool"),
    ([*PTQ, "serving_nodes=serving"], "serving_nodes takes a JSON object of strings"),
    ([*PTQ, 'serving_nodes={"pool": 4}'], "serving_nodes takes a JSON object of strings"),
    ([*PTQ, "bucket=x"], "KEY one of: model_uri"),
    ([*PTQ, "novalue"], "expected KEY=VALUE"),
])
def test_bad_parameters_are_refused_before_any_call(pairs, needle):
    with pytest.raises(ConfigError, match=needle):
        typed_arguments("ptq", pairs)


def test_a_run_uploads_the_committed_package_with_its_arguments():
    args = typed_arguments("ptq", PTQ)
    assert submit("http://kfp:8888", arguments=args, namespace="team", client_factory=Recorder) == "run-1"
    init, (kind, pipeline_name, kwargs) = Recorder.last.calls
    assert init == ("init", "http://kfp:8888", "team")
    assert (kind, pipeline_name) == ("run", "lowprec-ptq")
    assert kwargs["arguments"] == args and kwargs["experiment_name"] == "lowprec" and kwargs["namespace"] == "team"


def test_a_schedule_makes_a_recurring_run_with_kfp_six_field_cron():
    args = typed_arguments("ptq_many", ["models_prefix=s3://m/models", "registry_uri=s3://r/reg"])
    assert submit("http://kfp:8888", pipeline="ptq_many", arguments=args, schedule="30 2 * * 1", client_factory=Recorder) == "rec-1"
    _, experiment, (kind, kwargs) = Recorder.last.calls
    assert experiment == ("experiment", "lowprec", None)
    assert kind == "recurring" and kwargs["cron_expression"] == "0 30 2 * * 1" and kwargs["experiment_id"] == "exp-1"
    assert kwargs["pipeline_package_path"] == str(COMPILED / "ptq_many.yaml") and kwargs["params"] == args
    assert kwargs["max_concurrency"] == 1 and kwargs["no_catchup"] is True


def test_cron_forms():
    assert kfp_cron("0 0 3 * * *") == "0 0 3 * * *"
    with pytest.raises(ConfigError, match="5 fields"):
        kfp_cron("daily")


def test_a_client_error_is_one_pipeline_error_naming_the_host():
    def broken(host, namespace=None):
        raise OSError("connection refused")

    with pytest.raises(Exception, match=r"cannot submit to Kubeflow Pipelines at http://kfp:8888: connection refused"):
        submit("http://kfp:8888", arguments=typed_arguments("ptq", PTQ), client_factory=broken)


@pytest.mark.parametrize("name", ["ptq", "ptq_many"])
def test_quantize_and_benchmark_run_on_the_serving_nodes(name):
    """The committed package pins the two steps that time the model (the accuracy-aware search's
    speed check, the benchmark) to the `serving_nodes` parameter's nodeSelector, and only those."""
    documents = list(yaml.safe_load_all((COMPILED / f"{name}.yaml").read_text()))
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pinned = {executor for executor, spec in executors.items() if "nodeSelector" in spec}
    assert pinned == {"exec-quantize", "exec-benchmark"}
    for executor in pinned:
        assert executors[executor]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "serving_nodes"
