"""The registry under faults, against the real SeaweedFS: a proxy on 127.0.0.1 resets, stalls and
refuses requests; publishers race and are killed. After each, exit code and one line, and the
registry shows no partial or damaged version: what was published before still fetches."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from lowprec_core import _registry as registry
from lowprec_core._cli import main
from tests.conftest import ACCESS_KEY, LOWPREC, SECRET_KEY
from tests.faultproxy import FaultProxy


@pytest.fixture
def proxy(s3_env, monkeypatch):
    server = FaultProxy(s3_env)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("LOWPREC_S3_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("LOWPREC_S3_READ_TIMEOUT", "2")
    yield server
    server.stop()


@pytest.fixture
def int8(tmp_path, demo):
    """An INT8 digit model and a 3 MB report to publish with it (big enough for several TCP writes)."""
    import lowprec_core as lp

    out = tmp_path / "int8.onnx"
    lp.quantize(demo["model"], out, data=demo["calib"])
    report = tmp_path / "report.json"
    report.write_text('{"pad": "' + "x" * (3 << 20) + '"}')
    return out, report


def _keys(client, bucket) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def _published(tmp_path, bucket: str) -> registry.Manifest:
    (uri, manifest), = registry.versions(f"s3://{bucket}/reg", "digits")
    registry.fetch(uri, tmp_path / f"check-{time.monotonic_ns()}")  # verifies every file
    return manifest


FAULTS = {
    "reset mid-body": dict(method="PUT", path="report.json", fault="reset", after_bytes=200_000),
    "503 always": dict(method="PUT", path="report.json", fault="status", status=503, code="ServiceUnavailable"),
    "403 AccessDenied": dict(method="PUT", path="report.json", fault="status", status=403, code="AccessDenied"),
    "stall past the read timeout": dict(method="PUT", path="report.json", fault="stall"),
    "503 on the manifest": dict(method="PUT", path="/manifest.json", fault="status", status=503, code="SlowDown"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failed_republish_keeps_the_published_version(fault, proxy, bucket, int8, tmp_path, capsys):
    client, name = bucket
    model, report = int8
    code, _ = _cli(capsys, "publish", model, "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", report)
    assert code == 0
    first = _published(tmp_path, name)
    before = _keys(client, name)
    report.write_text(report.read_text().replace("x", "y", 10))  # other bytes: a new revision
    proxy.add(**FAULTS[fault])
    started = time.monotonic()
    code, lines = _cli(capsys, "publish", model, "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", report)
    assert code == 6, lines
    assert len(lines) == 1 and lines[0].startswith("lowprec: error: S3 upload to s3://"), lines
    assert time.monotonic() - started < 30, "timeouts and retries are bounded"
    proxy.clear()
    assert _published(tmp_path, name).revision == first.revision
    assert _keys(client, name) == before, "the failed revision's objects were removed"


def test_503_once_is_retried_and_publishes(proxy, bucket, int8, tmp_path, capsys):
    _, name = bucket
    model, report = int8
    rule = proxy.add(method="PUT", path="report.json", fault="status", status=503, code="ServiceUnavailable", times=1)
    code, lines = _cli(capsys, "publish", model, "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", report)
    assert code == 0, lines
    assert rule.hits == 1
    assert set(_published(tmp_path, name).files) == {"model.onnx", "attachments/report.json"}


def test_the_deadline_bounds_a_stalled_publish(proxy, bucket, int8, tmp_path, capsys, monkeypatch):
    _, name = bucket
    model, report = int8
    monkeypatch.setenv("LOWPREC_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("LOWPREC_S3_DEADLINE", "1.5")
    proxy.add(method="PUT", path="report.json", fault="stall")
    started = time.monotonic()
    code, lines = _cli(capsys, "publish", model, "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", report)
    assert code == 6 and "deadline passed (LOWPREC_S3_DEADLINE)" in lines[-1], lines
    assert time.monotonic() - started < 8  # without the deadline: 3 attempts of 1 s each, plus backoff
    assert registry.versions(f"s3://{name}/reg", "digits") == []


def test_a_fetch_that_fails_midway_writes_nothing(proxy, bucket, int8, tmp_path, capsys):
    _, name = bucket
    model, report = int8
    code, _ = _cli(capsys, "publish", model, "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", report)
    (uri, _), = registry.versions(f"s3://{name}/reg", "digits")
    proxy.add(method="GET", path="report.json", fault="status", status=503, code="ServiceUnavailable")
    code, lines = _cli(capsys, "fetch", uri, "--out", tmp_path / "out")
    assert code == 6 and len(lines) == 1 and "report.json failed: ServiceUnavailable" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_concurrent_publishers_each_leave_a_fetchable_version(s3_env, bucket, int8, tmp_path):
    """Four publishes of one model with different attachments, as four ptq runs of it would do."""
    client, name = bucket
    model, _ = int8
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_env}
    for round_ in range(3):
        reports = []
        for n in range(4):
            (tmp_path / f"p{n}").mkdir(exist_ok=True)
            reports.append(tmp_path / f"p{n}" / "report.json")
            reports[-1].write_text(f'{{"round": {round_}, "publisher": {n}, "pad": "{"z" * 400_000}"}}')
        procs = [subprocess.Popen([*LOWPREC, "publish", str(model), "--registry", f"s3://{name}/reg", "--name", "digits",
                                   "--attach", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for path in reports]
        results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
        assert all(code == 0 for code, _, _ in results), results
        (uri, current), = registry.versions(f"s3://{name}/reg", "digits")
        registry.fetch(uri, tmp_path / f"round{round_}")  # the version verifies
        written = (tmp_path / f"round{round_}" / "attachments" / "report.json").read_text()
        assert f'"round": {round_}' in written
        revisions = {k.split("/")[4] for k in _keys(client, name) if "/revisions/" in k}
        assert len(revisions) == 4 * (round_ + 1), "every publisher wrote its own revision"
        for revision in sorted(revisions):
            registry.fetch(uri, tmp_path / f"r{round_}-{revision}", revision=revision)
    assert registry.gc(f"s3://{name}/reg", min_age_s=0, dry_run=True) == []


def test_a_publish_killed_midway_leaves_no_visible_version(proxy, bucket, int8, tmp_path):
    """Stopped while the model's upload stalls (the report already in): SIGTERM removes what it
    wrote; SIGKILL leaves it, invisible, and `gc` lists and removes it."""
    client, name = bucket
    model, report = int8
    env = {**os.environ, "LOWPREC_S3_READ_TIMEOUT": "3"}
    command = [*LOWPREC, "publish", str(model), "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", str(report)]
    for stop in (signal.SIGTERM, signal.SIGKILL):
        proxy.add(method="PUT", path="model.onnx", fault="stall")
        seen = len(proxy.requests)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while not any("model.onnx" in path for _, path in proxy.requests[seen:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("report.json" in path for _, path in proxy.requests[seen:]), "the report went in first"
        proc.send_signal(stop)
        code = proc.wait(timeout=60)
        assert code == (128 + stop if stop == signal.SIGTERM else -stop), proc.stderr.read()
        proxy.clear()
        assert registry.versions(f"s3://{name}/reg", "digits") == []
        left = registry.gc(f"s3://{name}/reg", min_age_s=0, dry_run=True)
        if stop == signal.SIGTERM:
            assert left == [] and _keys(client, name) == [], "the stopped publish removed its objects"
        else:
            assert [uri.rsplit("/", 2)[-2:] for uri in left] == [["attachments", "report.json"]]
            assert registry.gc(f"s3://{name}/reg", min_age_s=0) == left
            assert _keys(client, name) == []


def test_the_secret_key_is_never_written(s3_env, bucket, int8, tmp_path):
    """publish and fetch at -vv: the secret appears in no output, the access key id only at -vv."""
    _, name = bucket
    model, report = int8
    env = {**os.environ}
    publish = [*LOWPREC, "publish", str(model), "--registry", f"s3://{name}/reg", "--name", "digits", "--attach", str(report)]
    quiet = subprocess.run(publish, capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    (uri, _), = registry.versions(f"s3://{name}/reg", "digits")
    loud = subprocess.run([*LOWPREC, "-vv", "fetch", uri, "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert loud.returncode == 0, loud.stderr
    assert ACCESS_KEY not in quiet.stdout + quiet.stderr
    assert ACCESS_KEY in loud.stderr, "botocore's debug output is where the key id may appear"
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    for text in [quiet.stdout, quiet.stderr, loud.stdout, loud.stderr, *(p.read_text(errors="replace") for p in files)]:
        assert SECRET_KEY not in text
