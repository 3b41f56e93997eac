"""Registry logic against an in-memory ObjectStore whose writes can be interleaved or fail on cue:
orderings a real server produces only by chance. (tests/integration keeps the real SeaweedFS.)"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lowprec_core import _registry as registry
from lowprec_core._errors import RegistryError

URI = "mem://reg"


class MemoryStore:
    """The ObjectStore protocol in a dict; `before_put(key)` runs before each write lands."""

    uri = URI

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.before_put = lambda key: None
        self.fail_delete = False

    def check(self) -> None:
        pass

    def put(self, key: str, path: Path) -> None:
        self.before_put(key)
        self.objects[key] = Path(path).read_bytes()

    def get(self, key: str, path: Path) -> None:
        if key not in self.objects:
            raise RegistryError(f"not found: {key}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.objects[key])

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def delete(self, key: str) -> None:
        if self.fail_delete:
            raise RegistryError(f"delete of {key} refused")
        self.objects.pop(key, None)

    def holds(self, path: Path) -> bool:
        return False


@pytest.fixture
def store(monkeypatch) -> MemoryStore:
    memory = MemoryStore()
    monkeypatch.setattr(registry, "open_store", lambda uri: (memory, uri.removeprefix(URI).lstrip("/")))
    return memory


def _files(tmp_path: Path, report: str) -> dict[str, Path]:
    folder = tmp_path / report
    folder.mkdir(exist_ok=True)
    (folder / "m.onnx").write_bytes(b"int8-model")
    (folder / "r.json").write_text(report)
    return {"model.onnx": folder / "m.onnx", "reports/r.json": folder / "r.json"}


def _publish(files: dict[str, Path]):
    return registry.publish(files, URI, "m", source_uri=None, source_sha256="aa", config={})


def test_a_publisher_overtaken_midway_still_leaves_two_complete_revisions(store, tmp_path):
    """B publishes completely while A is between its revision manifest and the version's."""
    overtaken = []

    def overtake(key: str) -> None:
        if re.fullmatch(r"m/[0-9a-f]{16}/revisions/[^/]+/manifest\.json", key) and not overtaken:
            overtaken.append(key)
            _publish(_files(tmp_path, "b"))

    store.before_put = overtake
    uri, a = _publish(_files(tmp_path, "a"))
    assert overtaken, "B ran between A's revision manifest and the version's"
    b_revision = next(k.split("/")[3] for k in store.objects if "/revisions/" in k and a.revision not in k)
    assert registry.fetch(uri, tmp_path / "now").revision == a.revision  # the last to finish is the version
    assert (tmp_path / "now" / "reports" / "r.json").read_text() == "a"
    registry.fetch(uri, tmp_path / "b-out", revision=b_revision)
    assert (tmp_path / "b-out" / "reports" / "r.json").read_text() == "b"
    assert registry.gc(URI, min_age_s=0) == [], "both revisions are complete: nothing to collect"


def test_a_failed_version_write_keeps_the_complete_revision_and_the_old_version(store, tmp_path):
    uri, first = _publish(_files(tmp_path, "first"))

    def refuse_the_version(key: str) -> None:
        if key == f"m/{first.version}/manifest.json":
            raise RegistryError("503 on the version's manifest")

    store.before_put = refuse_the_version
    with pytest.raises(RegistryError, match="503"):
        _publish(_files(tmp_path, "second"))
    store.before_put = lambda key: None
    assert registry.fetch(uri, tmp_path / "out").revision == first.revision
    revisions = {k.split("/")[3] for k in store.objects if "/revisions/" in k}
    assert len(revisions) == 2, "the new revision was complete: it may be named, so it stays"
    assert registry.gc(URI, min_age_s=0) == []


def test_leftovers_of_a_cleanup_that_failed_are_collected_later(store, tmp_path):
    def fail_on_report(key: str) -> None:
        if key.endswith("reports/r.json"):
            raise RegistryError("connection reset")

    store.before_put = fail_on_report
    store.fail_delete = True
    with pytest.raises(RegistryError, match="connection reset"):  # the original error, not the cleanup's
        _publish(_files(tmp_path, "x"))
    assert registry.versions(URI, "m") == []
    left = sorted(store.objects)
    assert left and all("/revisions/" in key for key in left)
    store.fail_delete = False
    assert registry.gc(URI, min_age_s=3600) == [], "too young: a publish may still be writing it"
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert [u.removeprefix(f"{URI}/") for u in registry.gc(URI, now=later)] == left
    assert store.objects == {}


def test_a_manifest_naming_a_missing_object_fetches_nothing(store, tmp_path):
    uri, manifest = _publish(_files(tmp_path, "a"))
    del store.objects[f"m/{manifest.version}/revisions/{manifest.revision}/reports/r.json"]
    with pytest.raises(RegistryError, match="not found"):
        registry.fetch(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()
