"""Compile and run pipelines: YAML for a cluster; kfp's local runners for one machine, either in
subprocesses of this Python or in the component image through a Docker-compatible API socket."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from kfp import compiler, local

from lowprec_core import ConfigError, PipelineError

from ._kfp_docker import exit_codes_kept
from .ptq import ptq
from .ptq_many import ptq_many

log = logging.getLogger(__name__)

PIPELINES: dict[str, Callable] = {"ptq": ptq, "ptq_many": ptq_many}
COMPILED = Path(__file__).resolve().parent  # pipelines/NAME.yaml, committed
RUNNERS = ("subprocess", "docker")
# What a component container is given of this process's environment (S3 access: on a cluster
# these come from the Kubernetes Secret instead).
PASSED_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")


def compile_pipeline(out: str | os.PathLike[str], name: str = "ptq") -> Path:
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; expected one of: {', '.join(PIPELINES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PIPELINES[name], str(out))
    return out


def run_local(
    *,
    pipeline: str = "ptq",
    runner: str = "subprocess",
    pipeline_root: str | os.PathLike[str] | None = None,
    **arguments,
) -> None:
    """Run a pipeline end to end on this machine; raises PipelineError if any task fails.

    runner "subprocess": components run in subprocesses of this Python (the installed lowprec).
    runner "docker": each component runs in its image (components/_image.py) through the Docker
    API at DOCKER_HOST (Docker, or `podman system service`), on the host network so that an S3
    endpoint on 127.0.0.1 is reachable, with this process's AWS_* variables."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; expected one of: {', '.join(PIPELINES)}")
    with tempfile.TemporaryDirectory(prefix="lowprec-kfp-") as tmp, warnings.catch_warnings():
        # Requests and limits are for a cluster; kfp warns once a task that a local run ignores them.
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner", category=UserWarning)
        init_local(runner, Path(pipeline_root or tmp))
        try:
            with _safe_path(), exit_codes_kept() if runner == "docker" else contextlib.nullcontext():
                PIPELINES[pipeline](**arguments)
        except RuntimeError as err:  # kfp's local runner reports a failed task this way
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(err).strip().splitlines()[0])
            raise PipelineError(f"pipeline {pipeline!r} failed: {message}") from None


@contextlib.contextmanager
def _safe_path():
    """The subprocess runner starts each task as `python3 -m kfp.dsl.executor_main` in this
    process's working directory, and `-m` puts that directory first on sys.path: a stray
    `onnxruntime.py` there would be imported by every task. PYTHONSAFEPATH=1 (Python 3.11+)
    keeps it off; the component image sets it too."""
    previous = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = previous


def init_local(runner: str, pipeline_root: Path) -> None:
    """Point kfp's local execution at `runner`, keeping outputs under `pipeline_root`."""
    if runner not in RUNNERS:
        raise ConfigError(f"unknown runner {runner!r}; expected one of: {', '.join(RUNNERS)}")
    root = pipeline_root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if runner == "subprocess":
        chosen = local.SubprocessRunner(use_venv=False)
    else:
        root.chmod(0o777)  # the image's user (uid 10001) writes the outputs under it
        chosen = local.DockerRunner(network_mode="host", environment={k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    local.init(runner=chosen, pipeline_root=str(root), raise_on_error=True)


def package(name: str, tmp: str | os.PathLike[str]) -> Path:
    """The compiled pipeline to submit: the committed YAML shipped with the package, else compiled now."""
    committed = COMPILED / f"{name}.yaml"
    return committed if committed.is_file() else compile_pipeline(Path(tmp) / f"{name}.yaml", name)


def typed_arguments(name: str, pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE strings as the pipeline's typed parameters; unknown or missing ones are refused
    here, before anything reaches a cluster."""
    import inspect

    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; expected one of: {', '.join(PIPELINES)}")
    signature = inspect.signature(PIPELINES[name].pipeline_func)
    arguments: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in signature.parameters:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE with KEY one of: {', '.join(signature.parameters)}")
        kind = signature.parameters[key].annotation
        kind = {"str": str, "float": float, "int": int, "bool": bool, "dict": dict}.get(kind, kind) if isinstance(kind, str) else kind
        try:
            if kind is dict:  # node labels: a JSON object of strings
                value = json.loads(text)
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise ValueError(text)
                arguments[key] = value
            elif kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                arguments[key] = text.lower() in ("true", "1", "yes")
            else:
                arguments[key] = kind(text)
        except ValueError:
            expected = 'a JSON object of strings, e.g. {"node-pool": "serving"}' if kind is dict else f"a {kind.__name__}"
            raise ConfigError(f"--param {pair!r}: {key} takes {expected}") from None
    missing = [k for k, p in signature.parameters.items() if p.default is inspect.Parameter.empty and k not in arguments]
    if missing:
        raise ConfigError(f"pipeline {name!r} needs --param for: {', '.join(missing)}")
    return arguments


def kfp_cron(schedule: str) -> str:
    """A cron schedule as Kubeflow Pipelines reads it: six fields, seconds first. Five-field
    (classic) schedules get second 0."""
    fields = schedule.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(f"--schedule {schedule!r}: expected a cron expression of 5 fields (min hour day month weekday) or 6 (seconds first)")
    return " ".join(fields)


def submit(
    host: str,
    *,
    pipeline: str = "ptq",
    arguments: dict[str, object],
    schedule: str | None = None,
    experiment: str = "lowprec",
    namespace: str | None = None,
    run_name: str | None = None,
    client_factory: Callable[..., object] | None = None,
) -> str:
    """Submit a run (or, with a cron `schedule`, a recurring run) to a Kubeflow Pipelines API;
    returns its id. Credentials come from the cluster (KF_PIPELINES_SA_TOKEN_PATH in a pod)."""
    cron = kfp_cron(schedule) if schedule else None
    name = run_name or f"lowprec-{pipeline}"
    quiet = logging.getLogger("urllib3.connectionpool")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its retries would print three warnings before our one-line error
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
            return _submit(client_factory, host, namespace, pipeline, arguments, cron, name, experiment)
    except (ConfigError, PipelineError):
        raise
    except Exception as err:  # kfp_server_api, urllib3 and requests raise their own trees
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"cannot submit to Kubeflow Pipelines at {host}: {first}") from None
    finally:
        quiet.setLevel(level)


def _submit(client_factory, host: str, namespace: str | None, pipeline: str, arguments: dict[str, object],
            cron: str | None, name: str, experiment: str) -> str:
    if client_factory is None:
        from kfp import Client as client_factory
    client = client_factory(host=host, namespace=namespace)
    with tempfile.TemporaryDirectory(prefix="lowprec-submit-") as tmp:
        path = str(package(pipeline, tmp))
        if cron is None:
            result = client.create_run_from_pipeline_package(
                path, arguments=arguments, run_name=name, experiment_name=experiment, namespace=namespace)
            return result.run_id
        found = client.create_experiment(experiment, namespace=namespace)
        job = client.create_recurring_run(
            experiment_id=found.experiment_id, job_name=name, cron_expression=cron, pipeline_package_path=path,
            params=arguments, max_concurrency=1, no_catchup=True)
        return job.recurring_run_id
