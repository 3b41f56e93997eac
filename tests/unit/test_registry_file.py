import pytest

from lowprec_core.errors import ConfigError, IntegrityError, RegistryError
from lowprec_core.registry import fetch, publish, version_id, versions


@pytest.fixture
def files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"model-bytes")
    (tmp_path / "r.json").write_text("{}")
    return {"model.onnx": tmp_path / "m.onnx", "reports/r.json": tmp_path / "r.json"}


def test_version_is_content_addressed():
    assert version_id("aa", {"preset": "mixed"}) == version_id("aa", {"preset": "mixed"})
    assert version_id("aa", {"preset": "mixed"}) != version_id("aa", {"preset": "performance"})


def test_publish_fetch_round_trip(files, tmp_path):
    uri, manifest = publish(files, f"file://{tmp_path}/reg", "m", source_uri=None, source_sha256="aa", config={})
    assert manifest.files["model.onnx"].bytes == len(b"model-bytes")
    assert fetch(uri, tmp_path / "out").version == manifest.version
    assert (tmp_path / "out" / "reports" / "r.json").read_text() == "{}"
    assert [u for u, _ in versions(str(tmp_path / "reg"), "m")] == [uri]


def test_tampering_is_detected(files, tmp_path):
    uri, manifest = publish(files, str(tmp_path / "reg"), "m", source_uri=None, source_sha256="aa", config={})
    (tmp_path / "reg" / "m" / manifest.version / "model.onnx").write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="model.onnx"):
        fetch(uri, tmp_path / "out")


def test_a_folder_without_manifest_is_not_a_version(tmp_path):
    (tmp_path / "reg" / "m" / "v1").mkdir(parents=True)
    (tmp_path / "reg" / "m" / "v1" / "model.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match="not a published version"):
        fetch(str(tmp_path / "reg" / "m" / "v1"), tmp_path / "out")
    assert versions(str(tmp_path / "reg"), "m") == []


@pytest.mark.parametrize("name", ["", "../escape", "a b", "x/y"])
def test_bad_names_are_refused(files, tmp_path, name):
    with pytest.raises(ConfigError, match="invalid model name"):
        publish(files, str(tmp_path / "reg"), name, source_uri=None, source_sha256="aa", config={})
    assert not (tmp_path / "reg").exists()
