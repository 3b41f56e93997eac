"""The one place lowprec reaches into kfp: a workaround for a bug in kfp's local DockerRunner.

kfp 2.17 starts each task's container with `auto_remove=True` and reads a container that is
already gone as exit code 0 (`kfp.local.docker_task_handler.run_docker_container`), so a
component that fails quickly passes its task. Upstream: kubeflow/pipelines#13332 (the fix is
pending in #13907). `auto_remove` cannot be overridden through `DockerRunner`'s arguments (kfp
passes it itself), so there is no supported way around it.

While `exit_codes_kept()` is active, containers are kept until their exit code is read and then
removed; on leaving it, kfp's own function is back. Only `run_local(runner="docker")` enters it.
`tests/unit/test_kfp_workaround.py` fails once kfp stops passing `auto_remove=True`: then delete
this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _run_keeping_exit_code(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    from kfp.local import docker_task_handler

    image = docker_task_handler.add_latest_tag_if_not_present(image)
    if not any(image in found.tags for found in client.images.list()):
        client.images.pull(image)
    container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                      volumes=volumes, **run_args)
    try:
        for line in container.logs(stream=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def exit_codes_kept() -> Iterator[None]:
    """Inside this block, kfp's DockerRunner reports a container's real exit code."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_keeping_exit_code
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
