"""pipelines/_kfp_docker.py patches kfp only inside a block, and only while kfp still needs it."""

import inspect

from kfp.local import docker_task_handler

from pipelines._kfp_docker import exit_codes_kept


def test_the_upstream_bug_is_still_there():
    """When this fails, kfp no longer auto-removes task containers (kubeflow/pipelines#13332 is
    fixed): delete pipelines/_kfp_docker.py and its two callers."""
    assert "auto_remove=True" in inspect.getsource(docker_task_handler.run_docker_container)


def test_the_patch_is_undone_on_leaving_the_block():
    original = docker_task_handler.run_docker_container
    try:
        with exit_codes_kept():
            assert docker_task_handler.run_docker_container is not original
            raise KeyError("a failing pipeline")
    except KeyError:
        pass
    assert docker_task_handler.run_docker_container is original


class _Container:
    def __init__(self, code):
        self.code, self.removed = code, False

    def logs(self, stream):
        return iter([b"task log\n"])

    def wait(self):
        return {"StatusCode": self.code}

    def remove(self, force):
        self.removed = True


class _Client:
    """Just enough of docker.DockerClient: one local image, containers that exit with `code`."""

    def __init__(self, code):
        self.container = _Container(code)
        self.images = type("Images", (), {"list": lambda _: [type("Image", (), {"tags": ["lowprec:1"]})()]})()
        self.run_args = None
        client = self

        class Containers:
            def run(self, **kwargs):
                client.run_args = kwargs
                return client.container

        self.containers = Containers()


def test_a_failed_container_reports_its_exit_code_and_is_removed(capsys):
    client = _Client(code=4)
    with exit_codes_kept():
        code = docker_task_handler.run_docker_container(client, "lowprec:1", ["calibrate"], {})
    assert code == 4
    assert client.container.removed
    assert "auto_remove" not in client.run_args
    assert "task log" in capsys.readouterr().out
