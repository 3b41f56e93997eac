"""Registry logic on a file:// registry: layout, revisions, fetch containment, gc."""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lowprec_core._errors import ConfigError, IntegrityError, RegistryError
from lowprec_core._registry import MANIFEST, fetch, file_uri, gc, publish, version_id, versions
from lowprec_core._storage import FileStore


@pytest.fixture
def files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"model-bytes")
    (tmp_path / "r.json").write_text("{}")
    return {"model.onnx": tmp_path / "m.onnx", "reports/r.json": tmp_path / "r.json"}


def _publish(files, registry, name="m"):
    return publish(files, str(registry), name, source_uri=None, source_sha256="aa", config={})


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_version_is_content_addressed():
    assert version_id("aa", {"preset": "mixed"}) == version_id("aa", {"preset": "mixed"})
    assert version_id("aa", {"preset": "mixed"}) != version_id("aa", {"preset": "performance"})


def test_publish_fetch_round_trip(files, tmp_path):
    uri, manifest = publish(files, f"file://{tmp_path}/reg", "m", source_uri=None, source_sha256="aa", config={})
    assert manifest.files["model.onnx"].bytes == len(b"model-bytes")
    assert fetch(uri, tmp_path / "out").version == manifest.version
    assert (tmp_path / "out" / "reports" / "r.json").read_text() == "{}"
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["revision"] == manifest.revision
    assert [u for u, _ in versions(str(tmp_path / "reg"), "m")] == [uri]
    assert not [p for p in (tmp_path / "out").rglob(".*")], "no temporary file is left"


def test_tampering_is_detected_and_leaves_no_bytes_behind(files, tmp_path):
    uri, manifest = _publish(files, tmp_path / "reg")
    fetch(uri, tmp_path / "out")
    before = _tree(tmp_path / "out")
    Path(file_uri(uri, manifest, "model.onnx").removeprefix("file://")).write_bytes(b"evil-bytes!")
    with pytest.raises(IntegrityError, match="model.onnx"):
        fetch(uri, tmp_path / "out")
    assert _tree(tmp_path / "out") == before, "an earlier verified copy is not replaced"
    with pytest.raises(IntegrityError, match="model.onnx"):
        fetch(uri, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists(), "a failed fetch removes what it wrote, folders included"


def test_a_folder_without_manifest_is_not_a_version(tmp_path):
    (tmp_path / "reg" / "m" / "v1").mkdir(parents=True)
    (tmp_path / "reg" / "m" / "v1" / "model.onnx").write_bytes(b"x")
    with pytest.raises(RegistryError, match="not a published version"):
        fetch(str(tmp_path / "reg" / "m" / "v1"), tmp_path / "out")
    assert versions(str(tmp_path / "reg"), "m") == []


@pytest.mark.parametrize("name", ["", "../escape", "a b", "x/y", "m\n", ".hidden", "a" * 129])
def test_bad_names_are_refused(files, tmp_path, name):
    with pytest.raises(ConfigError, match="invalid model name"):
        _publish(files, tmp_path / "reg", name)
    assert not (tmp_path / "reg").exists()


def test_republishing_the_same_files_is_a_no_op(files, tmp_path):
    uri, first = _publish(files, tmp_path / "reg")
    again_uri, again = _publish(files, tmp_path / "reg")
    assert (again_uri, again.revision) == (uri, first.revision)
    assert [p.name for p in (tmp_path / "reg" / "m" / first.version / "revisions").iterdir()] == [first.revision]


def test_republishing_other_files_keeps_the_earlier_revision(files, tmp_path):
    uri, first = _publish(files, tmp_path / "reg")
    files["reports/r.json"].write_text('{"run": 2}')
    _, second = _publish(files, tmp_path / "reg")
    assert second.version == first.version and second.revision != first.revision
    assert fetch(uri, tmp_path / "now").revision == second.revision
    assert (tmp_path / "now" / "reports" / "r.json").read_text() == '{"run": 2}'
    assert fetch(uri, tmp_path / "then", revision=first.revision).revision == first.revision
    assert (tmp_path / "then" / "reports" / "r.json").read_text() == "{}"


def test_a_failed_upload_keeps_the_published_version(files, tmp_path, monkeypatch):
    uri, first = _publish(files, tmp_path / "reg")
    files["reports/r.json"].write_text('{"run": 2}')
    real_put = FileStore.put

    def full_disk(self, key, path):
        if key.endswith("r.json"):
            raise RegistryError("cannot write: No space left on device")
        real_put(self, key, path)

    monkeypatch.setattr(FileStore, "put", full_disk)
    with pytest.raises(RegistryError, match="No space"):
        _publish(files, tmp_path / "reg")
    monkeypatch.undo()
    assert fetch(uri, tmp_path / "out").revision == first.revision
    assert (tmp_path / "out" / "reports" / "r.json").read_text() == "{}"
    revisions = tmp_path / "reg" / "m" / first.version / "revisions"
    assert [p.name for p in revisions.iterdir()] == [first.revision], "the failed revision removed its own objects"


def test_an_os_error_in_the_store_is_a_registry_error(files, tmp_path, monkeypatch):
    import shutil

    def no_space(src, dst, **_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", no_space)
    with pytest.raises(RegistryError, match="No space left on device"):
        _publish(files, tmp_path / "reg")
    monkeypatch.undo()
    assert versions(str(tmp_path / "reg"), "m") == []


def _tamper_manifest(uri, edit):
    root = Path(uri.removeprefix("file://"))
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


@pytest.mark.parametrize("path", ["../../payload.txt", "/abs/dir/A.txt", "C:/x.txt", "a/../../b", "a//b", "./a", "a\\..\\b",
                                  MANIFEST, ".hidden"])
def test_fetch_refuses_a_manifest_path_that_leaves_out(files, tmp_path, path):
    uri, _ = _publish(files, tmp_path / "reg")
    _tamper_manifest(uri, lambda d: d["files"].__setitem__(path, d["files"]["model.onnx"]))
    with pytest.raises(IntegrityError, match="file path|manifest"):
        fetch(uri, tmp_path / "a" / "out")
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "payload.txt").exists()


def test_fetch_does_not_write_through_a_symlink(files, tmp_path):
    uri, _ = _publish(files, tmp_path / "reg")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "reports").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match="symbolic link"):
        fetch(uri, tmp_path / "out")
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reports"]


def test_fetch_into_the_registry_folder_is_refused(files, tmp_path):
    uri, _ = _publish(files, tmp_path / "reg")
    before = _tree(tmp_path / "reg")
    with pytest.raises(ConfigError, match="inside the registry folder"):
        fetch(uri, Path(uri.removeprefix("file://")))
    assert _tree(tmp_path / "reg") == before


def test_format_1_versions_are_still_fetched(tmp_path):
    """What earlier releases published: files beside the manifest, no revision."""
    import hashlib

    folder = tmp_path / "reg" / "m" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"old")
    manifest = {"format": "lowprec-manifest/1", "name": "m", "version": "0123456789abcdef", "created": "2026-01-01T00:00:00+00:00",
                "source": {"uri": None, "sha256": "aa"}, "config": {}, "packages": {},
                "files": {"model.onnx": {"sha256": hashlib.sha256(b"old").hexdigest(), "bytes": 3}}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert fetch(str(folder), tmp_path / "out").revision is None
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"old"


def test_gc_removes_only_old_incomplete_revisions(files, tmp_path):
    uri, manifest = _publish(files, tmp_path / "reg")
    version = tmp_path / "reg" / "m" / manifest.version
    old = version / "revisions" / "20200101T000000Z-0badc0de"
    young = version / "revisions" / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-00c0ffee"
    for folder in (old, young):
        (folder / "reports").mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"half")
        (folder / "reports" / "r.json").write_bytes(b"{")
    listed = gc(str(tmp_path / "reg"), dry_run=True)
    assert sorted(Path(u.removeprefix("file://")) for u in listed) == [old / "model.onnx", old / "reports" / "r.json"]
    assert old.exists(), "a dry run removes nothing"
    assert gc(str(tmp_path / "reg"), "m") == listed
    assert not old.exists() and young.exists()
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert len(gc(str(tmp_path / "reg"), now=later)) == 2
    assert fetch(uri, tmp_path / "out").revision == manifest.revision, "the complete revision is untouched"
