"""A full ring buffer loses log lines, never silently: the agent counts every lost event exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from .agent_process import AgentProcess, docker_run, unique_name, write_policy

pytestmark = [pytest.mark.kernel, pytest.mark.docker]

BURST = 500


def test_lost_events_are_counted_exactly(root: None, object_dir: Path, tracefs: None, busybox_image: str,
                                         tmp_path: Path) -> None:
    """With a 4 KiB ring buffer, a burst of audited violations is logged plus counted as lost, to the event."""
    policies = tmp_path / "policies"
    policies.mkdir()
    write_policy(policies, "burst", "mode: audit\nexec:\n  allow: [/bin/busybox]\n")
    agent = AgentProcess(policies, tmp_path / "agent.log", extra_args=["--ringbuf-kb", "4"])
    agent.start()
    try:
        name = unique_name("burst")
        result = docker_run(busybox_image, "cat", *["/srv/secret.txt"] * BURST, policy="burst", name=name)
        assert (0, "secret\n" * BURST) == (result.returncode, result.stdout)
        lost = agent.wait_for(lambda l: l["event"] == "events_lost", timeout=10)
        agent.wait_for(lambda l: l["event"] == "violation" and l["container_name"] == name)
    finally:
        assert 0 == agent.stop()
    lines = agent.lines()
    logged = sum(1 for l in lines if l["event"] == "violation" and l["container_name"] == name)
    lost_total = max(l["lost_total"] for l in lines if l["event"] == "events_lost")
    assert lost["lost"] > 0
    assert BURST == logged + lost_total
