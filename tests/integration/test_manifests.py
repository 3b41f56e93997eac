"""What a cluster gets, checked offline: the kustomize base renders and validates strictly
against the Kubernetes schemas, the YAML is lint-clean, the Dockerfile is hadolint-clean, and
the scheduled submitter's command is one the CLI accepts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components._image import IMAGE
from lowprec_core._cli import _parser
from pipelines.ptq import S3_KEYS, S3_SECRET
from pipelines.run import typed_arguments

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None and not os.environ.get("CI"), reason="kubectl is not installed")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    if KUBECTL is None:
        pytest.fail("kubectl is needed to render the kustomize base")
    out = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    result = subprocess.run([KUBECTL, "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out.write_text(result.stdout)
    return out


@needs_kubectl
def test_the_base_renders_and_validates_strictly(rendered):
    result = subprocess.run([str(BIN / "kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered.read_text()))
    assert kinds == ["ConfigMap", "ConfigMap", "CronJob", "RoleBinding", "Secret", "ServiceAccount"]
    assert result.stdout.count("passed for resource") == len(kinds)


@needs_kubectl
def test_the_secret_is_a_template_that_every_consumer_agrees_on(rendered):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered.read_text())}
    secret = docs[("Secret", S3_SECRET)]
    assert set(secret["stringData"]) == set(S3_KEYS)  # what the pipeline steps map into their environment
    assert all(v == "REPLACE_ME" or "example" in v or v == "us-east-1" for v in secret["stringData"].values())
    launcher = yaml.safe_load(docs[("ConfigMap", "kfp-launcher")]["data"]["providers"])
    ref = launcher["s3"]["default"]["credentials"]["secretRef"]
    assert ref["secretName"] == S3_SECRET and {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["stringData"])


@needs_kubectl
def test_the_cronjob_submits_a_command_the_cli_accepts(rendered):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered.read_text())}
    job = docs[("CronJob", "lowprec-nightly")]
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    home = next(e["value"] for e in container["env"] if e["name"] == "HOME")
    assert any(m["mountPath"] == home for m in container["volumeMounts"])  # kfp.Client can write its context file
    values = docs[("ConfigMap", "lowprec-schedule")]["data"]
    env = {e["name"]: values[e["valueFrom"]["configMapKeyRef"]["key"]] for e in container["env"] if "configMapKeyRef" in e.get("valueFrom", {})}
    env["NAMESPACE"] = "kubeflow"  # the downward API's metadata.namespace
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]  # as the kubelet expands them
    parsed = _parser().parse_args(args)
    assert (parsed.command, parsed.action, parsed.pipeline) == ("pipeline", "submit", "ptq_many")
    assert parsed.host == values["KFP_HOST"] and parsed.namespace == "kubeflow"
    arguments = typed_arguments(parsed.pipeline, parsed.param)
    assert arguments["models_prefix"] == values["MODELS_PREFIX"] and arguments["registry_uri"] == values["REGISTRY_URI"]


def test_the_yaml_is_lint_clean():
    result = subprocess.run([str(BIN / "yamllint"), "--strict", "manifests", ".yamllint.yaml"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_dockerfile_is_hadolint_clean():
    result = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
