"""The lost race: a container that starts while the agent cannot listen is held, not unchecked.

The agent is frozen (SIGSTOP) so that Docker's create event waits unread while the container starts.
The kernel holds the unknown runtime cgroup and stops its first program before its first
instruction; once the agent runs again it resolves the container and judges that program.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_process import AgentProcess, docker_rm, docker_run, unique_name, write_policy

pytestmark = [pytest.mark.kernel, pytest.mark.docker]


@pytest.fixture(scope="module")
def agent(root: None, object_dir: Path, tracefs: None, busybox_image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    policies = tmp_path_factory.mktemp("policies")
    write_policy(policies, "held", "exec:\n  allow: [/bin/busybox]\nfiles:\n  allow: [/var/task/]\n")
    process = AgentProcess(policies, tmp_path_factory.mktemp("agent") / "agent.log")
    process.start()
    yield process
    assert 0 == process.stop()


def _start_while_frozen(agent: AgentProcess, image: str, policy: str | None, *command: str) -> str:
    """Start a container detached while the agent is stopped; return its name once the agent runs again."""
    name = unique_name("held")
    agent.send(signal.SIGSTOP)
    try:
        started = docker_run(image, *command, policy=policy, name=name, detach=True)
        assert 0 == started.returncode, started.stderr
        time.sleep(0.3)
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                               capture_output=True, text=True).stdout.strip()
        assert "true" == state            # started, and its first program is waiting
    finally:
        agent.send(signal.SIGCONT)
    return name


def _wait(name: str) -> tuple[int, str]:
    status = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=30).stdout.strip()
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stdout
    docker_rm(name)
    return int(status), logs


class TestHeld:
    def test_held_container_gets_its_policy_before_its_first_instruction(self, agent: AgentProcess,
                                                                         busybox_image: str) -> None:
        """The held entrypoint continues under the policy: its forbidden read is killed."""
        name = _start_while_frozen(agent, busybox_image, "held", "sh", "-c", "cat /srv/secret.txt && echo read")
        assert (137, "") == _wait(name)
        [violation] = agent.violations(name)
        assert ("file", "/srv/secret.txt") == (violation["kind"], violation["path"])
        held = agent.wait_for(lambda l: l["event"] == "container_held" and l["container_name"] == name)
        assert "held" == held["policy"]

    def test_held_forbidden_entrypoint_is_killed(self, agent: AgentProcess, busybox_image: str) -> None:
        """A held first program that the policy forbids never runs."""
        name = _start_while_frozen(agent, busybox_image, "held", "/opt/forbidden/busybox", "echo", "ran")
        assert (137, "") == _wait(name)
        [violation] = agent.violations(name)
        assert ("exec", "killed", "/opt/forbidden/busybox") == (
            violation["kind"], violation["action"], violation["path"])

    def test_held_untagged_container_is_released(self, agent: AgentProcess, busybox_image: str) -> None:
        """An untagged container caught by the hold runs on, untouched."""
        name = _start_while_frozen(agent, busybox_image, None, "sh", "-c", "cat /srv/secret.txt")
        assert (0, "secret\n") == _wait(name)
        agent.wait_for(lambda l: l["event"] == "container_held" and l["policy"] is None)
        agent.wait_for(lambda l: l["event"] == "held_program_resumed" and l["path"] == "/bin/busybox")
