"""The typed records every config, plan and report is: checked when built or read, frozen, and
round-tripped through JSON unchanged."""

from __future__ import annotations

import json
import math
import pickle

import pytest

import lowprec_core as lp
from lowprec_core._config import build
from lowprec_core._errors import ConfigError
from lowprec_core._quantize.plan import ActivationQuant, FloatEdit, QuantPlan, WeightQuant
from lowprec_core._records import ValidationError
from lowprec_core._registry import parse_manifest


def test_json_lists_and_objects_become_the_declared_tuples_and_records():
    budget = lp.AccuracyBudget.model_validate({"metrics": [{"metric": "top1", "max_drop": 1}], "min_speedup": 2})
    assert budget.metrics == (lp.MetricBudget(metric="top1", max_drop=1.0),)
    assert isinstance(budget.metrics, tuple) and isinstance(budget.metrics[0].max_drop, float)
    assert isinstance(budget.min_speedup, float)
    config = lp.QuantConfig(ignore=["conv1", "Add"])
    assert config.ignore == ("conv1", "Add") and hash(config) == hash(lp.QuantConfig(ignore=("conv1", "Add")))


@pytest.mark.parametrize(("values", "where", "needle"), [
    ({"min_reduction": -1}, "min_reduction", "greater than or equal to 0, got -1"),
    ({"smooth_quant_alpha": 1.5}, "smooth_quant_alpha", "less than or equal to 1.0, got 1.5"),
    ({"per_channel": 1}, "per_channel", "true or false, got 1"),
    ({"min_reduction": True}, "min_reduction", "an integer or null, got True"),
    ({"min_reduction": "64"}, "min_reduction", "an integer or null, got '64'"),
    ({"ignore": "conv1"}, "ignore", "a list, got 'conv1'"),
    ({"ignore": ["conv1", 3]}, "ignore.1", "a string, got 3"),
    ({"bias_correction": "some"}, "bias_correction", "one of: none, fast, full; got 'some'"),
    ({"preset": "fast"}, "preset", "unknown preset 'fast'; expected one of: performance, mixed"),
    ({"presets": "mixed"}, "presets", "unknown field; expected one of: preset, target,"),
])
def test_a_bad_config_value_is_named_with_what_was_expected(values, where, needle):
    with pytest.raises(ConfigError) as caught:
        build(lp.QuantConfig, **values)
    assert str(caught.value).startswith(f"{where}: ") and needle in str(caught.value)
    with pytest.raises(ValidationError):  # the same check when the Python API builds one
        lp.QuantConfig(**values)


def test_numpy_scalars_become_python_values():
    import numpy as np

    report = lp.ValidationReport(metric="top1", output="y", samples=np.int64(4), reference_score=np.float32(0.5),
                                 candidate_score=0.5, drop=np.float64(0.0), max_drop=0.01, passed=np.float64(0.0) <= 0.01)
    assert [type(v) for v in (report.samples, report.reference_score, report.passed)] == [int, float, bool]
    assert json.loads(report.model_dump_json())["passed"] is True


def test_nested_errors_give_the_path_and_required_fields_are_required():
    with pytest.raises(ValidationError) as caught:
        lp.AccuracyBudget(metrics=[{"metric": "top1"}, {"metric": "f1", "max_drop": -0.5}])
    assert caught.value.loc == ("metrics", 1, "max_drop")
    with pytest.raises(ValidationError, match="metrics: required field is missing"):
        lp.AccuracyBudget()
    with pytest.raises(ValidationError, match="metrics: expected at least 1 item"):
        lp.AccuracyBudget(metrics=[])
    with pytest.raises(ValidationError, match="expected an object for AccuracyBudget, got"):
        lp.AccuracyBudget.model_validate(["top1"])
    with pytest.raises(ValidationError) as caught:  # inside an optional record: the inner field
        lp.QuantizeReport.model_validate({"source": "a", "source_sha256": "b", "output": "c", "output_sha256": "d",
                                          "fp32_bytes": 1, "int8_bytes": 1, "calibration_samples": 1, "seconds": 0.1,
                                          "plan": {"model_sha256": "e", "config": {}}, "layers": {"samples": "many", "layers": []}})
    assert caught.value.loc == ("layers", "samples") and caught.value.msg == "expected an integer, got 'many'"


def test_records_are_frozen_and_copies_are_checked():
    config = lp.QuantConfig()
    with pytest.raises(AttributeError, match="frozen"):
        config.preset = "performance"
    assert config.model_copy(update={"preset": "performance"}).preset == "performance" and config.preset == "mixed"
    with pytest.raises(ValidationError, match="preset"):
        config.model_copy(update={"preset": "fast"})
    assert pickle.loads(pickle.dumps(config)) == config


def test_each_record_gets_its_own_empty_list():
    first, second = QuantPlan(model_sha256="a", config=lp.QuantConfig()), QuantPlan(model_sha256="b", config=lp.QuantConfig())
    first.nodes.append("conv1")
    assert second.nodes == []


def test_a_plan_round_trips_through_json_unchanged():
    body = QuantPlan(model_sha256="b" * 64, config=lp.QuantConfig(min_reduction=0), nodes=["inner"])
    plan = QuantPlan(
        model_sha256="a" * 64, config=lp.QuantConfig(ignore=("x",), integer_ops="all"),
        activations=[ActivationQuant(tensor="t", scale=0.5, zero_point=3, dtype="uint8", readers=["n"])],
        weights=[WeightQuant(initializer="w", axis=0, dtype="int8", narrow=[2])],
        edits=[FloatEdit(initializer="b", by="bias_correction", add=[0.25, -1.0])],
        skipped={"mm": "short"}, bodies={"if/then_branch": body})
    text = plan.model_dump_json(indent=1)
    again = QuantPlan.model_validate_json(text)
    assert again == plan and again.bodies["if/then_branch"].layers() == ["inner"]
    assert again.model_dump_json(indent=1) == text
    assert json.loads(text)["config"]["ignore"] == ["x"]


def test_the_config_stamped_into_models_leaves_late_fields_out_at_their_defaults():
    assert "integer_ops" not in lp.QuantConfig().model_dump(mode="json")
    assert lp.QuantConfig.model_validate(lp.QuantConfig(integer_ops="none").model_dump()).integer_ops == "none"


def test_json_has_no_infinity_and_reports_skip_fields_they_do_not_know():
    layer = lp.LayerError(layer="c", op_type="Conv", output="y", output_sqnr_db=math.inf, own_sqnr_db=40.0,
                          weight_sqnr_db=None, input_sqnr_db=None, action="keep")
    assert json.loads(layer.model_dump_json())["output_sqnr_db"] is None
    data = {"metric": "top1", "output": "y", "samples": 4, "reference_score": 1.0, "candidate_score": 0.5,
            "drop": 0.5, "max_drop": 0.01, "passed": False, "written_by": "a newer lowprec"}
    assert lp.ValidationReport.model_validate(data).runtime == "onnxruntime"


def test_an_untrusted_manifest_is_refused_at_the_bad_field():
    manifest = {"name": "m", "version": "0" * 16, "created": "now", "source": {}, "config": {}, "packages": {},
                "files": {"model.onnx": {"sha256": "f" * 64, "bytes": 10}}}
    assert parse_manifest(json.dumps(manifest).encode(), "here").files["model.onnx"].bytes == 10
    for bad, where in (({"model.onnx": {"sha256": "F" * 64, "bytes": 10}}, "files.model.onnx.sha256"),
                       ({"model.onnx": {"sha256": "f" * 64, "bytes": "10"}}, "files.model.onnx.bytes"),
                       ({"../x": {"sha256": "f" * 64, "bytes": 10}}, "files")):
        with pytest.raises(lp.IntegrityError, match=f"manifest refused at {where}"):
            parse_manifest(json.dumps({**manifest, "files": bad}).encode(), "here")
    with pytest.raises(lp.IntegrityError, match="refused at top level: expected JSON"):
        parse_manifest(b"{not json", "here")
