"""Cgroups tagged directly (--cgroup DIR=POLICY, --no-docker): workloads no container runtime announces.

The same verdicts as for containers, on plain host processes moved into a tagged cgroup: the
process's first exec there is judged like an entrypoint, everything after it like container code.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import cgroups

from .agent_process import AgentProcess, write_policy
from .listeners import Listener

pytestmark = pytest.mark.kernel

KILLED = -9


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("direct")
    (directory / "allowed.txt").write_text("allowed\n")
    (directory / "secret.txt").write_text("secret\n")
    shutil.copy("/bin/busybox", directory / "forbidden-busybox")
    return directory


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    with Listener() as listening:
        yield listening


@pytest.fixture(scope="module")
def tagged_cgroup(root: None) -> Iterator[Path]:
    directory = cgroups.find_unified_mount() / f"hostguard-direct-{secrets.token_hex(4)}"
    yield directory
    for child in sorted(directory.glob("**/"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir()


@pytest.fixture(scope="module")
def agent(root: None, object_dir: Path, tracefs: None, workdir: Path, listener: Listener, tagged_cgroup: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    policies = tmp_path_factory.mktemp("policies")
    busybox = os.path.realpath("/bin/busybox")      # exec rules name the file the kernel runs (merged /usr)
    write_policy(policies, "direct", f"""exec:
  allow: [{busybox}]
files:
  allow: [{workdir}/allowed.txt]
network:
  egress:
    - {{cidr: 127.0.0.1/32, ports: [{listener.port}]}}
""")
    process = AgentProcess(policies, tmp_path_factory.mktemp("agent") / "agent.log",
                           ["--no-docker", "--cgroup", f"{tagged_cgroup}=direct"])
    process.start()
    yield process
    assert 0 == process.stop()


def in_cgroup(cgroup: Path | None, *command: str) -> subprocess.CompletedProcess[str]:
    """Run command as a process moved into cgroup first (None: left where it is)."""
    script = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"' if cgroup else 'exec "$@"'
    return subprocess.run(["/bin/busybox", "sh", "-c", script, "sh", *command],
                          capture_output=True, text=True, timeout=30)


class TestDirectCgroup:
    def test_ready_without_docker(self, agent: AgentProcess, tagged_cgroup: Path) -> None:
        """The agent runs without dockerd and guards the tagged cgroup's egress itself."""
        ready = next(l for l in agent.lines() if l["event"] == "agent_ready")
        assert (False, [str(tagged_cgroup)]) == (ready["docker"], ready["network_cgroups"])

    def test_allowed_read_and_connect_work(self, agent: AgentProcess, tagged_cgroup: Path, workdir: Path,
                                           listener: Listener) -> None:
        """What the policy allows runs normally."""
        before = listener.accepted
        read = in_cgroup(tagged_cgroup, "/bin/busybox", "cat", str(workdir / "allowed.txt"))
        connect = in_cgroup(tagged_cgroup, "/bin/busybox", "nc", "127.0.0.1", str(listener.port))
        assert (0, "allowed\n", 0, before + 1) == (read.returncode, read.stdout, connect.returncode,
                                                   listener.accepted)

    def test_forbidden_exec_read_and_connect_are_stopped(self, agent: AgentProcess, tagged_cgroup: Path,
                                                         workdir: Path, listener: Listener) -> None:
        """A forbidden program is killed, a forbidden read is killed, a forbidden connect gets EPERM."""
        exec_result = in_cgroup(tagged_cgroup, str(workdir / "forbidden-busybox"), "true")
        read = in_cgroup(tagged_cgroup, "/bin/busybox", "cat", str(workdir / "secret.txt"))
        connect = in_cgroup(tagged_cgroup, "/bin/busybox", "nc", "127.0.0.1", str(listener.port + 1))
        assert (KILLED, KILLED) == (exec_result.returncode, read.returncode)
        assert "Operation not permitted" in connect.stderr
        agent.wait_for(lambda l: l["event"] == "violation" and l["kind"] == "connect")
        kinds = sorted(l["kind"] for l in agent.violations(str(tagged_cgroup)))
        assert ["connect", "exec", "file"] == kinds

    def test_cgroups_created_below_inherit_the_policy(self, agent: AgentProcess, tagged_cgroup: Path,
                                                      workdir: Path) -> None:
        """A cgroup made inside the tagged one later is under the same policy, in the kernel."""
        child = tagged_cgroup / "job"
        child.mkdir()
        read = in_cgroup(child, "/bin/busybox", "cat", str(workdir / "secret.txt"))
        assert KILLED == read.returncode

    def test_untagged_process_is_untouched(self, agent: AgentProcess, workdir: Path) -> None:
        """The same forbidden read outside the tagged cgroup works."""
        read = in_cgroup(None, "/bin/busybox", "cat", str(workdir / "secret.txt"))
        assert (0, "secret\n") == (read.returncode, read.stdout)
