"""A corpus of hostile and broken inputs through the `lowprec` command: models, data, registry
manifests, names and plugins. Each case asserts the exit code, one error line naming the bad
value, no traceback, and that nothing was written or published."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import lowprec_core as lp
from lowprec_core import _registry as registry
from lowprec_core._cli import main
from tests import models


@dataclass
class World:
    root: Path
    demo: dict
    int8: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo) -> World:
    root = tmp_path_factory.mktemp("world")
    int8 = root / "int8.onnx"
    lp.quantize(demo["model"], int8, data=demo["calib"])
    return World(root, demo, int8)


# ---- builders: each writes one bad thing under `tmp` and returns its path ----

def _model_file(tmp: Path, proto: onnx.ModelProto, name: str = "bad.onnx") -> Path:
    (tmp / name).write_bytes(proto.SerializeToString())
    return tmp / name


def _truncated(w: World, tmp: Path) -> Path:
    raw = Path(w.demo["model"]).read_bytes()
    (tmp / "cut.onnx").write_bytes(raw[: len(raw) // 2])
    return tmp / "cut.onnx"


def _text(w: World, tmp: Path) -> Path:
    (tmp / "notes.onnx").write_text("this is not a model\n")
    return tmp / "notes.onnx"


def _empty(w: World, tmp: Path) -> Path:
    (tmp / "empty.onnx").write_bytes(b"")
    return tmp / "empty.onnx"


def _random(w: World, tmp: Path) -> Path:
    (tmp / "noise.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return tmp / "noise.onnx"


def _missing_input(w: World, tmp: Path) -> Path:
    proto = models.mlp()
    proto.graph.node[0].input[1] = "no_such_tensor"
    return _model_file(tmp, proto)


def _cyclic(w: World, tmp: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Identity", ["a"], ["y"], name="out")]
    return _model_file(tmp, helper.make_model(helper.make_graph(nodes, "cycle", [x], [y]), opset_imports=[helper.make_opsetid("", 17)], ir_version=9))


def _no_nodes(w: World, tmp: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    return _model_file(tmp, helper.make_model(helper.make_graph([], "empty", [x], [x]), opset_imports=[helper.make_opsetid("", 17)], ir_version=9))


def _external(location: str, make_file: bool) -> Callable[[World, Path], Path]:
    def build(w: World, tmp: Path) -> Path:
        proto = onnx.load(w.demo["model"])
        folder = tmp / "m"
        folder.mkdir()
        onnx.save_model(proto, folder / "model.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
        edited = onnx.load(folder / "model.onnx", load_external_data=False)
        for tensor in edited.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        if make_file:
            (tmp / "outside.bin").write_bytes((folder / "w.bin").read_bytes())
        (folder / "w.bin").unlink()
        return _model_file(folder, edited, "model.onnx")
    return build


def _huge_input(w: World, tmp: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000000, 1000000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000000, 1000000])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "huge", [x], [y])
    return _model_file(tmp, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), "huge.onnx")


def _two_inputs(tmp: Path) -> Path:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], name="add")], "two", [a, b], [y])
    return _model_file(tmp, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), "two.onnx")


def _npz(tmp: Path, name: str = "data.npz", **arrays) -> Path:
    np.savez(tmp / name, **arrays)
    return tmp / name


def _images(n: int = 8, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8)).astype(dtype)


def _object_array(w, tmp):
    path = tmp / "pickled.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("image.npy", "w") as handle:
            np.lib.format.write_array(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return path


def _bad_crc(w, tmp):
    path = _npz(tmp, image=_images())
    raw = bytearray(path.read_bytes())
    start = raw.index(b"image.npy") + len(b"image.npy") + 200  # inside the stored array bytes
    raw[start] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def _not_npy_member(w, tmp):
    path = tmp / "mixed.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.txt", "1 2 3")
    return path


def _claims_32_tib(w, tmp):
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 20, 1, 1 << 11, 1 << 11)}
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\x00" * 16
    path = tmp / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.npy", npy)
    return path


def _zip_bomb_claim(w, tmp):
    path = _npz(tmp, image=_images())
    raw = bytearray(path.read_bytes())
    # Central directory and local header both: uncompressed size patched to 4 GiB - 1 for a stored member.
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(sig)
        raw[at + offset: at + offset + 4] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def _truncated_npz(w, tmp):
    path = _npz(tmp, image=_images())
    path.write_bytes(path.read_bytes()[:300])
    return path


def _folder(tmp: Path, *feeds: dict) -> Path:
    folder = tmp / "feeds"
    folder.mkdir()
    for i, feed in enumerate(feeds):
        np.savez(folder / f"{i:03d}.npz", **feed)
    return folder


# ---- the corpus: (id, argv builder, exit code, text the error line must hold) ----

@dataclass
class Case:
    id: str
    argv: Callable[[World, Path], list]
    code: int
    needle: str


def _quantize_model(build, needle="") -> Callable:
    return lambda w, tmp: ["quantize", build(w, tmp), "--data", w.demo["calib"], "--out", tmp / "out" / "int8.onnx"]


def _quantize_data(build) -> Callable:
    return lambda w, tmp: ["quantize", w.demo["model"], "--data", build(w, tmp), "--out", tmp / "out" / "int8.onnx"]


BAD_MODELS = {
    "truncated": (_truncated, "not a valid ONNX model"),
    "text": (_text, "not a valid ONNX model"),
    "empty": (_empty, "empty"),
    "random bytes": (_random, "not a valid ONNX model"),
    "missing input": (_missing_input, "no_such_tensor"),
    "cycle": (_cyclic, "checker"),
    "no nodes": (_no_nodes, "no graph nodes"),
    "external data outside": (_external("../outside.bin", True), "outside the model's folder"),
    "external data absolute": (_external("/etc/hostname", False), "outside the model's folder"),
    "external data missing": (_external("gone.bin", False), "gone.bin"),
    "missing file": (lambda w, tmp: tmp / "absent.onnx", "not found"),
    "a folder": (lambda w, tmp: tmp, "not found"),
}

BAD_DATA = {
    "pickled object array": (_object_array, "unpickling"),
    "bad CRC": (_bad_crc, "image.npy"),
    "member not .npy": (_not_npy_member, "image.txt' is not a .npy array"),
    "header claims 32 TiB": (_claims_32_tib, "claims shape"),
    "size claim past the bytes": (_zip_bomb_claim, "image.npy"),
    "truncated zip": (_truncated_npz, "not a readable .npz"),
    "not a zip": (lambda w, tmp: (tmp / "x.npz").write_text("hello") and tmp / "x.npz", "not a readable .npz"),
    "empty npz": (lambda w, tmp: _npz(tmp), "holds no arrays"),
    "missing input": (lambda w, tmp: _npz(tmp, pixels=_images()), "missing model input 'image'"),
    "extra input": (lambda w, tmp: _npz(tmp, image=_images(), extra=_images()), "'extra' is not a model input"),
    "wrong dtype": (lambda w, tmp: _npz(tmp, image=_images(dtype=np.float64)), "dtype float64"),
    "wrong rank": (lambda w, tmp: _npz(tmp, image=np.zeros((8, 64), np.float32)), "rank 2"),
    "wrong size": (lambda w, tmp: _npz(tmp, image=np.zeros((8, 1, 9, 8), np.float32)), "size 9 on axis 2"),
    "all NaN": (lambda w, tmp: _npz(tmp, image=np.full((8, 1, 8, 8), np.nan, np.float32)), "NaN"),
    "one NaN": (lambda w, tmp: _npz(tmp, image=np.where(np.arange(512).reshape(8, 1, 8, 8) == 7, np.nan, _images())), "1 NaN"),
    "all Inf": (lambda w, tmp: _npz(tmp, image=np.full((8, 1, 8, 8), np.inf, np.float32)), "all ±Inf"),
    "missing data": (lambda w, tmp: tmp / "absent.npz", "data not found"),
    "empty folder": (lambda w, tmp: (tmp / "f").mkdir() or tmp / "f", "holds no .npz"),
    "folder with a bad member": (lambda w, tmp: _folder(tmp, {"image": _images()}, {"image": _images()[:, :, :4]}), "size 4"),
}


def _tampered_fetch(edit: Callable[[dict], None]) -> Callable:
    def build(w: World, tmp: Path) -> list:
        uri, _ = lp.publish(w.int8, str(tmp / "reg"), "digits")
        root = Path(uri.removeprefix("file://"))
        data = json.loads((root / "manifest.json").read_text())
        edit(data)
        (root / "manifest.json").write_text(json.dumps(data))
        return ["fetch", uri, "--out", tmp / "out" / "x"]
    return build


def _add_path(path: str) -> Callable[[dict], None]:
    return lambda d: d["files"].__setitem__(path, d["files"]["model.onnx"])


BAD_MANIFESTS = {
    "parent path": (_add_path("../../payload.txt"), "'../../payload.txt'"),
    "deep parent path": (_add_path("../../../../../../etc/hostname"), "etc/hostname"),
    "absolute path": (_add_path("/abs/dir/A.txt"), "is absolute"),
    "drive path": (_add_path("C:/Windows/x.dll"), "is absolute"),
    "backslash path": (_add_path("a\\..\\..\\b"), "backslash"),
    "dot part": (_add_path("./a"), "'.' part"),
    "empty part": (_add_path("a//b"), "empty"),
    "inner parent": (_add_path("a/../../b"), "'..' part"),
    "hidden part": (_add_path("a/.hidden"), "hidden"),
    "manifest path": (_add_path("manifest.json"), "overwrite the manifest"),
    "file and folder": (_add_path("model.onnx/inner"), "also a folder"),
    "NUL in path": (_add_path("a\x00b"), "control character"),
    "sha not hex": (lambda d: d["files"]["model.onnx"].__setitem__("sha256", "zz"), "64 lowercase hex"),
    "negative size": (lambda d: d["files"]["model.onnx"].__setitem__("bytes", -1), "negative"),
    "missing field": (lambda d: d.pop("files"), "files"),
    "bad revision": (lambda d: d.__setitem__("revision", "../../x"), "revision"),
    "bad name": (lambda d: d.__setitem__("name", "../x"), "invalid model name"),
    "wrong size": (lambda d: d["files"]["model.onnx"].__setitem__("bytes", 3), "the manifest records 3"),
    "wrong sha": (lambda d: d["files"]["model.onnx"].__setitem__("sha256", "0" * 64), "does not match"),
}


def _cases() -> list[Case]:
    cases = []
    for label, (build, needle) in BAD_MODELS.items():
        cases.append(Case(f"quantize model: {label}", _quantize_model(build), 3, needle))
    for label in ("truncated", "cycle", "external data outside"):
        build, needle = BAD_MODELS[label]
        cases.append(Case(f"calibrate model: {label}", lambda w, tmp, b=build: ["calibrate", b(w, tmp), "--data", w.demo["calib"],
                                                                               "--out", tmp / "out"], 3, needle))
        cases.append(Case(f"validate model: {label}", lambda w, tmp, b=build: ["validate", w.demo["model"], b(w, tmp), "--data",
                                                                              w.demo["eval"], "--metric", "agreement",
                                                                              "--report", tmp / "out" / "v.json"], 3, needle))
        cases.append(Case(f"publish model: {label}", lambda w, tmp, b=build: ["publish", b(w, tmp), "--registry", tmp / "reg",
                                                                             "--name", "digits"], 3, needle))
    for label, (build, needle) in BAD_DATA.items():
        cases.append(Case(f"quantize data: {label}", _quantize_data(build), 4, needle))
    for label in ("all NaN", "header claims 32 TiB", "pickled object array"):
        build, needle = BAD_DATA[label]
        cases.append(Case(f"validate data: {label}", lambda w, tmp, b=build: ["validate", w.demo["model"], w.int8, "--data", b(w, tmp),
                                                                             "--metric", "agreement", "--report", tmp / "out" / "v.json"],
                          4, needle))
        cases.append(Case(f"calibrate data: {label}", lambda w, tmp, b=build: ["calibrate", w.demo["model"], "--data", b(w, tmp),
                                                                              "--out", tmp / "out"], 4, needle))
    cases.append(Case("folder feeds disagree on samples", lambda w, tmp: [
        "calibrate", _two_inputs(tmp), "--data", _folder(tmp, {"a": np.zeros((4, 4), np.float32), "b": np.zeros((3, 4), np.float32)}),
        "--out", tmp / "out"], 4, "disagree on the number of samples ('a' 4, 'b' 3)"))
    cases.append(Case("labels pickled", lambda w, tmp: [
        "validate", w.demo["model"], w.int8, "--data", w.demo["eval"], "--metric", "top1", "--labels",
        (np.save(tmp / "l.npy", np.array([{}], dtype=object), allow_pickle=True), tmp / "l.npy")[1],
        "--report", tmp / "out" / "v.json"], 4, "l.npy"))
    cases.append(Case("benchmark a 4 TB input without data", lambda w, tmp: [
        "benchmark", _huge_input(w, tmp), _huge_input(w, tmp), "--batch", "1", "--report", tmp / "out" / "b.json"], 4, "GiB of made-up"))
    for label, (edit, needle) in BAD_MANIFESTS.items():
        code = 7
        cases.append(Case(f"fetch manifest: {label}", _tampered_fetch(edit), code, needle))
    for label, name in {"newline": "digits\n", "slash": "a/b", "parent": "..", "space": "a b", "empty": "", "leading dot": ".d",
                        "too long": "d" * 129, "leading dash": "-d"}.items():
        cases.append(Case(f"publish name: {label}", lambda w, tmp, n=name: ["publish", w.int8, "--registry", tmp / "reg", f"--name={n}"],
                          2, "invalid model name"))
    cases += [
        Case("publish attachment missing", lambda w, tmp: ["publish", w.int8, "--registry", tmp / "reg", "--name", "d", "--attach",
                                                           tmp / "nope.json"], 2, "nope.json"),
        Case("publish attachment hidden", lambda w, tmp: ["publish", w.int8, "--registry", tmp / "reg", "--name", "d", "--attach",
                                                          (tmp / ".secret").write_text("x") and tmp / ".secret"], 2, "hidden"),
        Case("publish to an unknown scheme", lambda w, tmp: ["publish", w.int8, "--registry", "ftp://host/reg", "--name", "d"], 6, "ftp"),
        Case("publish from another source", lambda w, tmp: ["publish", w.int8, "--registry", tmp / "reg", "--name", "d", "--source",
                                                            _model_file(tmp, models.mlp(), "other.onnx")], 2, "quantized from"),
        Case("fetch a folder that is no version", lambda w, tmp: ["fetch", (tmp / "v").mkdir() or tmp / "v", "--out", tmp / "out"], 6, "not a published version"),
        Case("fetch a malformed revision", lambda w, tmp: ["fetch", tmp / "v", "--out", tmp / "out", "--revision", "../x"], 2, "'../x'"),
        Case("fetch into the registry", lambda w, tmp: ["fetch", lp.publish(w.int8, str(tmp / "reg"), "d")[0].removeprefix("file://"),
                                                        "--out", Path(lp.publish(w.int8, str(tmp / "reg"), "d")[0].removeprefix("file://")) / "x"],
             2, "inside the registry folder"),
        Case("gc with a negative age", lambda w, tmp: ["gc", "--registry", tmp / "reg", "--min-age", "-1"], 2, "--min-age"),
        Case("metric plugin file missing", lambda w, tmp: ["validate", w.demo["model"], w.int8, "--data", w.demo["eval"],
                                                           "--metric", f"{tmp}/absent.py:score"], 2, "absent.py"),
        Case("metric plugin module missing", lambda w, tmp: ["validate", w.demo["model"], w.int8, "--data", w.demo["eval"],
                                                             "--metric", "no_such_plugin_pkg:score"], 2, "no_such_plugin_pkg"),
        Case("metric plugin raises on load", lambda w, tmp: ["validate", w.demo["model"], w.int8, "--data", w.demo["eval"], "--metric",
                                                             f"{_plugin(tmp, 'raise RuntimeError(chr(98) + chr(111) + chr(111) + chr(109))')}:score"],
             4, "failed while loading: RuntimeError: boom"),
        Case("metric plugin raises on a batch", lambda w, tmp: ["validate", w.demo["model"], w.int8, "--data", w.demo["eval"], "--metric",
                                                                f"{_plugin(tmp, 'def score(outputs, labels):', '    return 1 / 0')}:score",
                                                                "--report", tmp / "out" / "v.json"],
             4, "failed: ZeroDivisionError"),
    ]
    return cases


def _plugin(tmp: Path, *lines: str) -> Path:
    path = tmp / "my_metric.py"
    path.write_text("\n".join(lines) + "\n")
    return path


CASES = _cases()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in case.argv(world, tmp_path)]
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1 and lines[0].startswith("lowprec: error: "), err
    assert case.needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing is written for a refused input"
    assert _snapshot(tmp_path) == before, "no file changed: no registry object, no output, no temporary file"
    assert not (tmp_path.parent / "payload.txt").exists()


def test_cli_errors_are_one_line_without_traceback_in_a_real_process(world, tmp_path):
    """The in-process corpus above, spot-checked as a user runs it: the console script, stderr whole."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / "lowprec"
    for case in [c for c in CASES if c.id in ("quantize data: header claims 32 TiB", "fetch manifest: parent path",
                                               "metric plugin raises on a batch")]:
        case_dir = tmp_path / case.id.replace(" ", "_").replace(":", "")
        case_dir.mkdir()
        result = subprocess.run([str(script), *map(str, case.argv(world, case_dir))], capture_output=True, text=True, timeout=120,
                                cwd=case_dir)
        assert result.returncode == case.code, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("lowprec: error: "), result.stderr


def test_a_module_in_the_working_directory_is_never_imported(world, tmp_path):
    """`./onnxruntime.py` beside the user: not imported by the CLI, nor by the pipeline's tasks."""
    import subprocess
    import sys

    marker = tmp_path / "imported.txt"
    (tmp_path / "onnxruntime.py").write_text(f"open({str(marker)!r}, 'a').write('shadow\\n')\nraise SystemExit(99)\n")
    (tmp_path / "numpy.py").write_text(f"open({str(marker)!r}, 'a').write('shadow\\n')\nraise SystemExit(99)\n")
    script = Path(sys.executable).parent / "lowprec"
    demo = world.demo
    result = subprocess.run([str(script), "pipeline", "run", "--model", demo["model"], "--calib", demo["calib"], "--eval", demo["eval"],
                             "--labels", demo["labels"], "--metric", "top1", "--registry", tmp_path / "reg", "--name", "digits",
                             "--batch", "1"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists(), "a module from the working directory was imported"
    assert registry.versions(str(tmp_path / "reg"), "digits")
