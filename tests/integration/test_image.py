"""The component image, built here with podman (scripts/build-image.sh) and used the way a
cluster uses it: one component's exact command from the compiled YAML, then the whole ptq
pipeline through kfp's DockerRunner, both against SeaweedFS on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from components._image import IMAGE
from lowprec_core import _registry as registry
from pipelines._kfp_docker import exit_codes_kept
from pipelines.run import init_local, run_local

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"
# Off CI a machine without podman skips these; CI installs it (the build script does) and must run them.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None and not os.environ.get("CI"), reason="podman is not installed (scripts/build-image.sh installs it)"),
]


@pytest.fixture(scope="module")
def image():
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "scripts" / "build-image.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def docker_host(image, tmp_path_factory):
    """`podman system service`: the Docker API on a unix socket, for the docker SDK and kfp."""
    socket = tmp_path_factory.mktemp("podman") / "podman.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 30
    while not socket.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode() if proc.poll() is not None else "no socket"
        time.sleep(0.2)
    try:
        yield f"unix://{socket}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def docker_env(docker_host, s3_env, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    return docker_host


def _upload(client, bucket: str, demo) -> dict[str, str]:
    keys = {"model": "fp32/digits.onnx", "calib": "data/calib.npz", "eval": "data/eval.npz", "labels": "data/labels.npy"}
    for what, key in keys.items():
        client.upload_file(str(demo[what]), bucket, key)
    return {what: f"s3://{bucket}/{key}" for what, key in keys.items()}


def test_the_image_runs_as_non_root_with_no_compiler(docker_env, image):
    import docker

    client = docker.from_env()
    try:
        config = client.images.get(image).attrs["Config"]
        assert config["User"] == "10001:10001"
        # Detached, then logs once it has exited: run(remove=True) follows a log stream that podman can
        # close before the last line lands (4 of 25 runs here lost it).
        run = client.containers.run(image, ["sh", "-c", "id -u; command -v gcc cc g++ || echo none; lowprec --help | head -1"],
                                    network_mode="none", detach=True)
        code = run.wait(timeout=120)["StatusCode"]
        out = run.logs(stdout=True, stderr=True).decode()
        run.remove(force=True)
    finally:
        client.close()
    assert code == 0, out
    uid, compilers, usage = out.strip().splitlines()
    assert (uid, compilers) == ("10001", "none") and usage.startswith("usage: lowprec")


def test_a_component_runs_its_compiled_command_in_the_image(docker_env, image, bucket, demo, tmp_path):
    """calibrate, exactly as pipelines/ptq.yaml tells a cluster to start it."""
    import docker

    client_s3, name = bucket
    uris = _upload(client_s3, name, demo)
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / "ptq.yaml").read_text()))
    container = spec["deploymentSpec"]["executors"]["exec-calibrate"]["container"]
    assert container["image"] == image
    executor_input = {
        "inputs": {"parameterValues": {"model_uri": uris["model"], "data_uri": uris["calib"]}},
        "outputs": {"artifacts": {"stats": {"artifacts": [{"name": "stats", "type": {"schemaTitle": "system.Artifact"},
                                                           "uri": "/out/stats", "metadata": {}}]}},
                    "outputFile": "/out/executor_output.json"},
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    client = docker.from_env()
    try:
        run = client.containers.run(image, args, entrypoint=container["command"], environment=env, network_mode="host",
                                    volumes={str(out): {"bind": "/out", "mode": "rw"}}, detach=True)
        code = run.wait(timeout=300)["StatusCode"]
        logs = run.logs().decode()
        run.remove(force=True)
    finally:
        client.close()
    assert code == 0, logs[-3000:]
    samples = len(next(iter(np.load(demo["calib"]).values())))
    assert json.loads((out / "stats" / "stats.json").read_text())["samples"] == samples
    output = json.loads((out / "executor_output.json").read_text())
    assert output["artifacts"]["stats"]["artifacts"][0]["metadata"]["samples"] == samples


def test_ptq_runs_in_containers_through_docker_runner(docker_env, image, bucket, demo, tmp_path):
    client_s3, name = bucket
    uris = _upload(client_s3, name, demo)
    run_local(runner="docker", pipeline_root=tmp_path / "kfp", model_uri=uris["model"], calib_uri=uris["calib"],
              eval_uri=uris["eval"], labels_uri=uris["labels"], registry_uri=f"s3://{name}/registry", name="digits",
              metric="top1", max_drop=0.005, batches="1", min_speedup=0.0, runtime="openvino")
    (uri, manifest), = registry.versions(f"s3://{name}/registry", "digits")
    assert {"model.onnx", "reports/report.html", "reports/validation.json"} <= set(manifest.files)
    registry.fetch(uri, tmp_path / "fetched")
    for report in ("validation.json", "benchmark.json"):  # validated and timed in the image's OpenVINO
        assert json.loads((tmp_path / "fetched" / "reports" / report).read_text())["runtime"] == "openvino"
    image_python = subprocess.run(["podman", "run", "--rm", "--network", "none", image, "python3", "-c",
                                   "import platform; print(platform.python_version())"],
                                  env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}, capture_output=True, text=True, timeout=120)
    assert manifest.packages["python"] == image_python.stdout.strip()  # published from inside the image


def test_a_failing_container_fails_its_task(docker_env, image, bucket, tmp_path):
    """kfp 2.17's DockerRunner read a removed container as success (kubeflow/pipelines#13332).
    One task, not the pipeline: the pipeline would retry it (set_retry) for a minute and a half."""
    from components import calibrate

    _, name = bucket
    init_local("docker", tmp_path / "kfp")
    with exit_codes_kept(), pytest.raises(RuntimeError, match="calibrate"):
        calibrate(model_uri=f"s3://{name}/absent.onnx", data_uri=f"s3://{name}/c.npz")
