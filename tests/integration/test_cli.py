"""The `lowprec` command as a user runs it: outputs, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import lowprec

def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowprec: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_calibrate_quantize_validate_benchmark_publish(tmp_path, demo):
    stats, out, registry = tmp_path / "stats", tmp_path / "int8.onnx", tmp_path / "registry"
    assert lowprec("calibrate", demo["model"], "--data", demo["calib"], "--out", stats).returncode == 0
    result = lowprec("quantize", demo["model"], "--stats", stats, "--out", out, "--report", tmp_path / "q.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "q.json").read_text())["plan"]["nodes"]
    result = lowprec("validate", demo["model"], out, "--data", demo["eval"], "--labels", demo["labels"],
                     "--metric", "top1", "--max-drop", "0.005", "--report", tmp_path / "v.json")
    assert result.returncode == 0 and result.stdout.startswith("PASS"), result.stdout + result.stderr
    result = lowprec("benchmark", demo["model"], out, "--batch", "1,4", "--repeats", "3", "--report", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    assert [r["batch"] for r in json.loads((tmp_path / "b.json").read_text())["results"]] == [1, 4]
    result = lowprec("publish", out, "--registry", registry, "--name", "digits", "--source", demo["model"],
                     "--attach", tmp_path / "v.json", stats)
    assert result.returncode == 0, result.stderr
    (version,) = list((registry / "digits").iterdir())
    revision = json.loads((version / "manifest.json").read_text())["revision"]
    assert (version / "revisions" / revision / "stats" / "stats.npz").is_file()
    result = lowprec("fetch", version, "--out", tmp_path / "fetched")
    assert result.returncode == 0 and "files verified" in result.stdout, result.stderr
    assert (tmp_path / "fetched" / "stats" / "stats.npz").read_bytes() == (stats / "stats.npz").read_bytes()


def test_an_exposed_intermediate_output_quantizes_and_validate_names_the_output_it_scores(tmp_path, demo):
    """An output added by name alone (how users expose an intermediate tensor) loads with its type
    inferred; a built-in metric scores the first output, and validate says which of the two."""
    model = onnx.load(demo["model"])
    model.graph.output.append(onnx.ValueInfoProto(name="/head/head.2/Relu_output_0"))
    source, out = tmp_path / "exposed.onnx", tmp_path / "int8.onnx"
    onnx.save(model, source)
    result = lowprec("quantize", source, "--data", demo["calib"], "--out", out)
    assert result.returncode == 0 and "declare no type or no shape" in result.stderr, result.stderr
    assert [o.name for o in onnx.load(out).graph.output] == ["logits", "/head/head.2/Relu_output_0"]
    result = lowprec("validate", source, out, "--data", demo["eval"], "--metric", "agreement", "--report", tmp_path / "v.json")
    assert result.returncode == 0 and "scored on output 'logits', the first of the models' 2" in result.stdout, result.stdout
    assert json.loads((tmp_path / "v.json").read_text())["outputs"] == 2
    result = lowprec("validate", demo["model"], demo["model"], "--data", demo["eval"], "--metric", "agreement")
    assert result.returncode == 0 and "scored on output" not in result.stdout


def test_an_embedding_table_in_8_bits_is_in_the_summary_the_report_and_the_page(tmp_path):
    from tests import models
    from lowprec_core._render import markdown
    from lowprec_core._reports import QuantizeReport

    source, out = tmp_path / "embed.onnx", tmp_path / "int8.onnx"
    onnx.save(models.token_embedding(), source)
    np.savez(tmp_path / "ids.npz", ids=np.random.default_rng(0).integers(0, 2048, (32, 6)))
    result = lowprec("quantize", source, "--data", tmp_path / "ids.npz", "--out", out, "--report", tmp_path / "q.json")
    assert result.returncode == 0 and "1 embedding table(s) in 8 bits" in result.stdout, result.stdout + result.stderr
    report = QuantizeReport.model_validate_json((tmp_path / "q.json").read_text())
    assert [t.initializer for t in report.plan.tables] == ["table"] and report.int8_bytes < 0.3 * report.fp32_bytes
    assert "embedding table `table` in 8 bits" in markdown(report)
    assert lowprec("report", "--quantize", tmp_path / "q.json", "--out", tmp_path / "page.html").returncode == 0
    assert "embedding table <code>table</code> in 8 bits" in (tmp_path / "page.html").read_text()


def test_failed_gate_exits_10(tmp_path, demo):
    out = tmp_path / "int8.onnx"
    assert lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", out).returncode == 0
    result = lowprec("validate", demo["model"], out, "--data", demo["eval"], "--metric", "mse", "--max-drop", "0")
    assert result.returncode == 10 and result.stdout.startswith("FAIL")


def test_not_an_onnx_file(tmp_path, demo):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("this is not a protobuf\n" * 10)
    result = lowprec("quantize", bogus, "--data", demo["calib"], "--out", tmp_path / "int8.onnx")
    _one_line_error(result, str(bogus), "not a valid ONNX model")
    assert result.returncode == 3
    assert not (tmp_path / "int8.onnx").exists()


def test_truncated_model(tmp_path, demo):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(demo["model"].read_bytes()[: demo["model"].stat().st_size // 2])
    result = lowprec("quantize", cut, "--data", demo["calib"], "--out", tmp_path / "int8.onnx")
    _one_line_error(result, str(cut))
    assert result.returncode == 3
    assert list(tmp_path.iterdir()) == [cut]


def test_data_without_the_model_input(tmp_path, demo):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((4, 1, 8, 8), np.float32))
    result = lowprec("quantize", demo["model"], "--data", wrong, "--out", tmp_path / "int8.onnx")
    _one_line_error(result, "missing model input 'image'")
    assert result.returncode == 4
    assert not (tmp_path / "int8.onnx").exists()


@pytest.mark.parametrize(
    ("array", "needle"),
    [(np.zeros((4, 1, 8, 8), np.float64), "dtype float64"), (np.zeros((4, 8, 8), np.float32), "rank 3")],
)
def test_data_with_wrong_dtype_or_rank(tmp_path, demo, array, needle):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=array)
    _one_line_error(lowprec("calibrate", demo["model"], "--data", wrong, "--out", tmp_path / "stats"), "'image'", needle)
    assert not (tmp_path / "stats" / "stats.json").exists()


def test_unknown_preset_lists_the_choices(tmp_path, demo):
    result = lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "o.onnx", "--preset", "fast")
    _one_line_error(result, "unknown preset 'fast'", "performance, mixed")
    assert result.returncode == 2


def test_min_reduction_decides_which_short_layers_stay_float(tmp_path, demo):
    default, every = tmp_path / "default.json", tmp_path / "every.json"
    assert lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "a.onnx", "--report", default,
                   "--min-reduction", "300").returncode == 0
    assert lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "b.onnx", "--report", every,
                   "--min-reduction", "0").returncode == 0
    plans = [json.loads(path.read_text())["plan"] for path in (default, every)]
    assert "/head/head.3/Gemm" in plans[0]["skipped"] and "/head/head.3/Gemm" in plans[1]["nodes"]
    # The last Gemm (64 products); with it float, the Gemm before it too (ORT would fuse it with
    # its ReLU into a float kernel). The first two convs (9 and 288 products) join the integer
    # third conv as a chain from the image either way.
    assert len(plans[1]["nodes"]) == len(plans[0]["nodes"]) + 2
    assert set(plans[1]["nodes"]) - set(plans[0]["nodes"]) == {"/head/head.1/Gemm", "/head/head.3/Gemm"}
    _one_line_error(lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "c.onnx", "--min-reduction", "-1"),
                    "min_reduction", "greater than or equal to 0")
    assert not (tmp_path / "c.onnx").exists()


def test_unknown_ignored_node_suggests_near_matches(tmp_path, demo):
    result = lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "o.onnx", "--ignore", "Conv_O")
    _one_line_error(result, "'Conv_O'", "did you mean")
    assert result.returncode == 2


def test_s3_errors_publish_nothing(tmp_path, demo, bucket, s3_env):
    import os

    client, name = bucket
    out = tmp_path / "int8.onnx"
    assert lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", out).returncode == 0
    result = lowprec("publish", out, "--registry", f"s3://{name}-nope/reg", "--name", "digits")
    _one_line_error(result, f"s3://{name}-nope")
    assert result.returncode == 6
    bad_env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    result = lowprec("publish", out, "--registry", f"s3://{name}/reg", "--name", "digits", env=bad_env)
    _one_line_error(result, "403", "check the credentials")
    result = lowprec("quantize", f"s3://{name}/missing.onnx", "--data", demo["calib"], "--out", tmp_path / "x.onnx")
    _one_line_error(result, f"s3://{name}/missing.onnx")
    assert client.list_objects_v2(Bucket=name).get("KeyCount", 0) == 0


def test_pipeline_run_failure_is_one_error_line_and_exit_8(tmp_path):
    result = lowprec("pipeline", "run", "--model", tmp_path / "absent.onnx", "--calib", "c.npz", "--eval", "e.npz",
                     "--registry", tmp_path / "reg", "--name", "m")
    assert result.returncode == 8
    assert result.stderr.strip().splitlines()[-1] == \
        "lowprec: error: pipeline 'ptq' failed: Pipeline 'lowprec-ptq' finished with status FAILURE. Inner task failed: 'calibrate'."
    assert not (tmp_path / "reg").exists()


def _tampered_version(tmp: Path, demo) -> str:
    """A published version one of whose files no longer matches its manifest."""
    import lowprec_core as lp

    lp.quantize(demo["model"], tmp / "int8.onnx", data=demo["calib"])
    uri, manifest = lp.publish(tmp / "int8.onnx", str(tmp / "registry"), "digits")
    version = tmp / "registry" / "digits" / manifest.version
    (version / "revisions" / manifest.revision / "model.onnx").write_bytes(b"not what was published")
    return uri


def _exit_code_cases(tmp: Path, demo) -> dict[int, list[str]]:
    """For every exit code of errors.py (and 0), one command that ends with it."""
    (tmp / "not_stats").mkdir()
    (tmp / "text.onnx").write_text("not a model")
    np.savez(tmp / "other.npz", pixels=np.zeros((2, 1, 8, 8), np.float32))
    quantize = ["quantize", demo["model"], "--out", tmp / "o.onnx"]
    return {
        0: [*quantize, "--data", demo["calib"]],
        2: [*quantize, "--data", demo["calib"], "--preset", "fast"],
        3: ["quantize", tmp / "text.onnx", "--data", demo["calib"], "--out", tmp / "o.onnx"],
        4: [*quantize, "--data", tmp / "other.npz"],
        5: [*quantize, "--stats", tmp / "not_stats"],
        6: ["fetch", f"{tmp / 'registry'}/absent/0123", "--out", tmp / "fetched"],
        7: ["fetch", _tampered_version(tmp, demo), "--out", tmp / "fetched"],
        8: ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--param", f"model_uri={demo['model']}",
            *(f"--param={key}=x" for key in ("calib_uri", "eval_uri", "registry_uri", "name"))],
        10: ["validate", demo["model"], demo["model"], "--data", demo["eval"], "--metric", "mse", "--max-drop", "-1"],
    }


def test_every_exit_code_in_process(tmp_path, demo, capsys):
    """main() as a caller in this process sees it: each code from the exception class that carries
    it, each error on one line of stderr, nothing on stdout but a verdict."""
    from lowprec_core import _errors as errors
    from lowprec_core._cli import main

    by_code = {cls.exit_code: cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.LowprecError)}
    cases = _exit_code_cases(tmp_path, demo)
    assert set(by_code) - {1} <= set(cases)  # every class but the base, whose code nothing raises as such
    for code, argv in cases.items():
        assert main([str(a) for a in argv]) == code, (code, argv, capsys.readouterr().err)
        err = capsys.readouterr().err.strip().splitlines()
        if code in (0, 10):
            assert not [line for line in err if line.startswith("lowprec: error")]
        else:
            assert len(err) == 1 and err[0].startswith("lowprec: error: "), (code, err)
    assert not (tmp_path / "fetched").exists()


def test_usage_errors_exit_2_in_process(capsys):
    from lowprec_core._cli import main

    for argv in (["quantize"], ["nonsense"], ["benchmark", "a.onnx", "b.onnx", "--batch", "1,x"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert "usage: lowprec" in capsys.readouterr().err


def test_the_per_layer_analysis_runs_when_its_result_is_shown_or_asked_for(tmp_path, demo, capsys):
    """Off by default (it costs more than quantizing); on with --html, which shows it, or --inspect-samples."""
    from lowprec_core._cli import main

    runs = {"default": [], "html": ["--html", tmp_path / "page.html"], "asked": ["--inspect-samples", "8"]}
    for label, extra in runs.items():
        code = main([str(a) for a in ("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / f"{label}.onnx",
                                      "--report", tmp_path / f"{label}.json", *extra)])
        assert code == 0
        layers = json.loads((tmp_path / f"{label}.json").read_text())["layers"]
        printed = capsys.readouterr().out
        if label == "default":
            assert layers is None and "worst layers" not in printed
        else:
            assert layers["samples"] == (32 if label == "html" else 8) and layers["layers"]
            assert "worst layers (own SQNR over" in printed


def test_every_option_has_help_and_shows_its_default(capsys):
    import argparse

    from lowprec_core._cli import _parser, main

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])
            else:
                yield path, action

    for path, action in walk(_parser(), ["lowprec"]):
        assert action.help, f"{' '.join(path)} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-iterations MAX_ITERATIONS most layers (or groups) reverted (default: 50)" in text
    assert "--batch-size BATCH_SIZE samples per inference run while calibrating (default: 16)" in text


@pytest.mark.slow
def test_demo_prints_a_line_per_step_and_keeps_kfp_logs_in_a_file(tmp_path):
    import os
    import re

    env = {**os.environ, "LOWPREC_HOME": str(tmp_path / "home")}
    result = subprocess.run([str(Path(sys.executable).parent / "lowprec"), "demo"], capture_output=True, text=True, env=env,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    log = Path(re.fullmatch(r"running the ptq pipeline on the digit classifier \(kfp's log: (.+)\)", lines[0])[1])
    assert log.parent == tmp_path / "home" / "logs" and "executor" in log.read_text()
    steps = [line.split() for line in lines[1:] if line.startswith("  ") and line.split()[-1] in ("success", "failure")]
    names = [name for name, _ in steps]  # in the order kfp ran them; validate and benchmark are independent
    assert sorted(names) == sorted(["calibrate", "quantize", "validate", "benchmark", "report", "publish"])
    assert names[:2] == ["calibrate", "quantize"] and names[-1] == "publish"
    assert all(state == "success" for _, state in steps)
    assert "top-1 accuracy" in result.stdout and "published digits" in result.stdout
    assert "{" not in result.stdout, "kfp's executor JSON stays in the log"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"], "nothing written to the working directory"


def test_quantize_says_so_when_it_quantized_nothing_and_why(tmp_path, demo):
    """A float64 MatMul has no float32 weight: the model comes out as it went in, and the
    command says so (it used to print "0 nodes quantized" and nothing else)."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(16, 8)), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], "mm")], "double",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "f64.onnx")
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(1).normal(size=(8, 16)))
    result = lowprec("quantize", tmp_path / "f64.onnx", "--data", tmp_path / "data.npz", "--out", tmp_path / "int8.onnx")
    assert result.returncode == 0, result.stderr
    assert "0 nodes quantized" in result.stdout
    assert "WARNING lowprec_core._api: nothing was quantized" in result.stderr and "weight is not a float32 constant (1)" in result.stderr, result.stderr
    result = lowprec("quantize", demo["model"], "--data", demo["calib"], "--out", tmp_path / "digits.onnx")
    assert result.returncode == 0 and "nothing was quantized" not in result.stderr
    result = lowprec("quantize", tmp_path / "digits.onnx", "--data", demo["calib"], "--out", tmp_path / "again.onnx")
    assert result.returncode == 0, result.stderr
    assert "already quantized: its weight comes out of a DequantizeLinear (5)" in result.stderr, result.stderr


def test_benchmark_times_a_model_with_a_fixed_batch_at_that_batch(tmp_path, demo):
    """Many models are exported with their batch fixed at 1. The default batches (1, 8) then
    failed inside ORT at batch 8, a traceback and exit 1."""
    model = onnx.load(demo["model"])
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1  # clears the symbolic batch
    onnx.save(model, tmp_path / "batch1.onnx")
    out = tmp_path / "int8.onnx"
    assert lowprec("quantize", tmp_path / "batch1.onnx", "--data", demo["calib"], "--out", out).returncode == 0
    result = lowprec("benchmark", tmp_path / "batch1.onnx", out, "--repeats", "3", "--report", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    assert [r["batch"] for r in json.loads((tmp_path / "b.json").read_text())["results"]] == [1]
    _one_line_error(lowprec("benchmark", tmp_path / "batch1.onnx", out, "--batch", "1,4"),
                    "batch 4: input 'image' fixes its batch axis at 1", "expected --batch 1")
    # The accuracy-aware search scores layers on subsets it gathers into batches: of 1 here (of
    # 16, it failed inside ORT, a traceback). A budget the default misses makes it gather them.
    result = lowprec("quantize", tmp_path / "batch1.onnx", "--data", demo["calib"], "--out", tmp_path / "aaq.onnx",
                     "--eval", demo["eval"], "--metric", "cosine=0.00001", "--min-speedup", "0", "--report", tmp_path / "q.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "q.json").read_text())["accuracy"]["subset_evaluations"] > 0
