"""Publish and fetch against a real SeaweedFS S3 server."""

from __future__ import annotations

import json

import pytest

import lowprec_core as lp


@pytest.fixture
def int8_model(tmp_path, demo):
    out = tmp_path / "digits_int8.onnx"
    lp.quantize(demo["model"], out, data=demo["calib"])
    return out


def _keys(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_publish_then_fetch_verifies_every_hash(int8_model, bucket, demo, tmp_path):
    client, name = bucket
    report = tmp_path / "validation.json"
    report.write_text("{}")
    uri, manifest = lp.publish(int8_model, f"s3://{name}/models", "digits", source=str(demo["model"]), attach=[report])
    keys = _keys(client, name)
    version = f"models/digits/{manifest.version}"
    assert f"{version}/manifest.json" in keys
    assert f"{version}/revisions/{manifest.revision}/manifest.json" in keys
    assert f"{version}/revisions/{manifest.revision}/model.onnx" in keys
    assert f"{version}/revisions/{manifest.revision}/attachments/validation.json" in keys
    fetched = lp.fetch(uri, tmp_path / "fetched")
    assert fetched.files["model.onnx"].sha256 == manifest.files["model.onnx"].sha256
    assert (tmp_path / "fetched" / "model.onnx").read_bytes() == int8_model.read_bytes()


def test_fetch_detects_a_tampered_object(int8_model, bucket, tmp_path):
    client, name = bucket
    uri, manifest = lp.publish(int8_model, f"s3://{name}", "digits")
    client.put_object(Bucket=name, Key=f"digits/{manifest.version}/revisions/{manifest.revision}/model.onnx", Body=b"not the model")
    with pytest.raises(lp.IntegrityError, match="model.onnx: .*the manifest"):
        lp.fetch(uri, tmp_path / "fetched")


def test_wrong_bucket_is_a_clear_error_and_writes_nothing(int8_model, bucket):
    client, name = bucket
    with pytest.raises(lp.RegistryError, match="NoSuchBucket|404|not found"):
        lp.publish(int8_model, f"s3://{name}-missing", "digits")
    assert _keys(client, name) == []


def test_wrong_secret_is_rejected_by_the_server(int8_model, bucket, monkeypatch):
    client, name = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(lp.RegistryError, match="SignatureDoesNotMatch|403|AccessDenied"):
        lp.publish(int8_model, f"s3://{name}", "digits")
    assert _keys(client, name) == []


def test_failed_upload_leaves_no_version_behind(int8_model, bucket, tmp_path, monkeypatch):
    client, name = bucket
    from lowprec_core import _storage as storage

    real_put = storage.S3Store.put

    def flaky_put(self, key, path):
        if key.endswith("stats.json"):
            raise lp.RegistryError("simulated network failure")
        real_put(self, key, path)

    stats = tmp_path / "stats"
    stats.mkdir()
    (stats / "stats.json").write_text(json.dumps({}))
    (stats / "stats.npz").write_bytes(b"x")
    monkeypatch.setattr(storage.S3Store, "put", flaky_put)
    with pytest.raises(lp.RegistryError, match="simulated"):
        lp.publish(int8_model, f"s3://{name}", "digits", attach=[stats])
    assert _keys(client, name) == []
