"""Containers already running when the agent starts are adopted: their policy applies from then on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_process import AgentProcess, docker_rm, docker_run, unique_name, write_policy

pytestmark = [pytest.mark.kernel, pytest.mark.docker]


@pytest.fixture
def early_container(busybox_image: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A tagged container started before the agent; it reads the secret once /var/task/go/now exists."""
    signal_dir = tmp_path / "go"
    signal_dir.mkdir()
    name = unique_name("early")
    script = "while [ ! -e /var/task/go/now ]; do sleep 0.05; done; cat /srv/secret.txt && echo done"
    started = docker_run(busybox_image, "sh", "-c", script, policy="adopt", name=name, detach=True,
                         volumes=[f"{signal_dir}:/var/task/go"])
    assert 0 == started.returncode, started.stderr
    yield name, signal_dir
    docker_rm(name)


def test_running_container_is_adopted(root: None, object_dir: Path, tracefs: None, early_container,
                                      tmp_path: Path) -> None:
    """The agent finds the running container at start, tags its cgroup, and the next violation is killed."""
    import subprocess

    name, signal_dir = early_container
    policies = tmp_path / "policies"
    policies.mkdir()
    write_policy(policies, "adopt", "exec:\n  allow: [/bin/busybox]\nfiles:\n  allow: [/var/task/]\n")
    agent = AgentProcess(policies, tmp_path / "agent.log")
    try:
        ready = agent.start()
        assert ready["containers"] >= 1
        (signal_dir / "now").touch()
        waited = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=30)
        assert "137" == waited.stdout.strip()
        [violation] = agent.violations(name)
        assert ("file", "/srv/secret.txt", "killed") == (violation["kind"], violation["path"], violation["action"])
    finally:
        assert 0 == agent.stop()
