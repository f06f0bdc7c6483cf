"""End to end: the real agent, its real BPF programs, real labelled containers.

Every test starts containers through dockerd with `hostguard.policy=<name>` and asserts on what
the kernel did (exit 137 for a kill, EPERM for a denied connect) and on the agent's log lines.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .agent_process import AgentProcess, docker_rm, docker_run, unique_name, write_policy
from .listeners import Listener
from .support import REPO

pytestmark = [pytest.mark.kernel, pytest.mark.docker]

KILLED = 137          # the exit status docker reports for a SIGKILLed main process
VIOLATION_KEYS = {"timestamp", "level", "event", "policy", "mode", "action", "kind", "container_id",
                  "container_name", "pid", "ppid", "uid", "comm", "exe"}


@pytest.fixture(scope="module")
def allowed() -> Iterator[Listener]:
    with Listener() as listener:
        yield listener


@pytest.fixture(scope="module")
def other() -> Iterator[Listener]:
    """A listener on a port the policies do not allow."""
    with Listener() as listener:
        yield listener


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, allowed: Listener) -> Path:
    directory = tmp_path_factory.mktemp("policies")
    body = f"""exec:
  allow: [/bin/busybox]
files:
  allow:
    - /var/task/
    - {{path: /tmp/, access: read-write}}
network:
  egress:
    - {{cidr: 127.0.0.1/32, ports: [{allowed.port}]}}
"""
    write_policy(directory, "e2e", body)
    write_policy(directory, "e2e-audit", "mode: audit\n" + body)
    write_policy(directory, "e2e-netkill", body.replace("network:\n", "network:\n  on_violation: kill\n"))
    write_policy(directory, "e2e-edit", "exec:\n  allow: [/bin/busybox]\nfiles:\n  allow: [/var/task/]\n")
    write_policy(directory, "e2e-host", body.replace("cidr: 127.0.0.1/32", "host: localhost"))
    write_policy(directory, "e2e-node", body.replace("/bin/busybox", "/usr/local/bin/node"))
    return directory


@pytest.fixture(scope="module")
def agent(root: None, object_dir: Path, tracefs: None, busybox_image: str, policies: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = AgentProcess(policies, tmp_path_factory.mktemp("agent") / "agent.log")
    process.start()
    yield process
    assert 0 == process.stop()


def run(image: str, policy: str | None, *command: str, network_host: bool = False):
    name = unique_name("e2e")
    return name, docker_run(image, *command, policy=policy, name=name, network_host=network_host)


class TestReady:
    def test_ready_event_reports_hooks_policies_and_startup(self, agent: AgentProcess) -> None:
        """agent_ready says how many policies are loaded, which hooks enforce, and how long start-up took."""
        ready = next(line for line in agent.lines() if line["event"] == "agent_ready")
        assert 6 == ready["policies"]
        assert ["tp_btf/sched_process_exec"] == ready["hooks"]["exec"]
        assert "tracepoint/syscalls/sys_exit_openat" in ready["hooks"]["file"]
        assert {"cgroup/connect4", "cgroup/connect6", "cgroup/sendmsg4", "cgroup/sendmsg6",
                "cgroup/sock_create"} == set(ready["hooks"]["network"])
        assert ready["startup_ms"] > 0
        assert ready["lsm"] == "ok" or ready["lsm"].startswith("refused")


    def test_second_agent_refuses_to_start(self, agent: AgentProcess, policies: Path) -> None:
        """One agent per host: a second one exits at once and says why (two would fail-close each other)."""
        result = subprocess.run([sys.executable, "-m", "agent", "run", "--policies", str(policies)],
                                capture_output=True, text=True, timeout=30, cwd=REPO)
        assert 1 == result.returncode
        assert f"another hostguard agent is running (pid {agent.process.pid}" in result.stdout


class TestAllowed:
    def test_allowed_exec_open_write_and_connect_work(self, agent: AgentProcess, busybox_image: str,
                                                      allowed: Listener) -> None:
        """Everything the policy allows runs normally and logs no violation."""
        before = allowed.accepted
        name, result = run(busybox_image, "e2e", "sh", "-c",
                           f"cat /var/task/hello.txt && echo note > /tmp/note && cat /tmp/note && "
                           f"nc 127.0.0.1 {allowed.port} </dev/null && echo connected",
                           network_host=True)
        assert (0, "hello\nnote\nconnected\n") == (result.returncode, result.stdout)
        assert before + 1 == allowed.accepted
        assert [] == [l for l in agent.lines() if l.get("container_name") == name and l["event"] == "violation"]


class TestExec:
    def test_forbidden_exec_is_killed_and_logged(self, agent: AgentProcess, busybox_image: str) -> None:
        """A program outside exec.allow dies before it runs (137) and the violation names it with argv."""
        name, result = run(busybox_image, "e2e", "sh", "-c", "/opt/forbidden/busybox echo ran; echo status=$?")
        assert (0, "status=137\n") == (result.returncode, result.stdout)
        [violation] = agent.violations(name)
        assert VIOLATION_KEYS | {"path", "argv"} == set(violation)
        assert ("exec", "killed", "e2e", "enforce") == (violation["kind"], violation["action"],
                                                       violation["policy"], violation["mode"])
        assert "/opt/forbidden/busybox" == violation["path"]
        assert ["/opt/forbidden/busybox", "echo", "ran"] == violation["argv"]
        assert violation["timestamp"].endswith("Z")
        assert 64 == len(violation["container_id"])

    def test_entrypoint_that_violates_at_once_is_stopped(self, agent: AgentProcess, busybox_image: str) -> None:
        """No window at start: a container whose very first program is forbidden never runs it."""
        name, result = run(busybox_image, "e2e", "/opt/forbidden/busybox", "echo", "ran")
        assert (KILLED, "") == (result.returncode, result.stdout)
        [violation] = agent.violations(name)
        assert ("exec", "/opt/forbidden/busybox") == (violation["kind"], violation["path"])


class TestFiles:
    def test_forbidden_read_is_killed_and_logged(self, agent: AgentProcess, busybox_image: str) -> None:
        """Reading a file outside files.allow kills the reader before it gets a byte."""
        name, result = run(busybox_image, "e2e", "cat", "/srv/secret.txt")
        assert (KILLED, "") == (result.returncode, result.stdout)
        [violation] = agent.violations(name)
        assert VIOLATION_KEYS | {"path", "access"} == set(violation)
        assert ("file", "killed", "/srv/secret.txt", "read", "cat") == (
            violation["kind"], violation["action"], violation["path"], violation["access"], violation["comm"])

    def test_forbidden_write_is_killed_and_logged(self, agent: AgentProcess, busybox_image: str) -> None:
        """Writing where only reading is allowed kills the writer."""
        name, result = run(busybox_image, "e2e", "sh", "-c", "echo x > /var/task/new; echo survived")
        assert (KILLED, "") == (result.returncode, result.stdout)
        [violation] = agent.violations(name)
        assert ("file", "/var/task/new", "write") == (violation["kind"], violation["path"], violation["access"])

    def test_read_only_open_with_o_trunc_counts_as_a_write(self, agent: AgentProcess,
                                                           stripe_function_image: str) -> None:
        """O_RDONLY|O_TRUNC empties a file, so it needs write access (the flag is read from the syscall)."""
        script = "const fs = require('fs'); fs.openSync('/var/task/package.json', fs.constants.O_RDONLY | fs.constants.O_TRUNC)"
        name, result = run(stripe_function_image, "e2e-node", "/usr/local/bin/node", "-e", script)
        assert KILLED == result.returncode
        [violation] = agent.violations(name)
        assert ("/var/task/package.json", "read-write") == (violation["path"], violation["access"])

    def test_relative_paths_and_dotdot_are_resolved(self, agent: AgentProcess, busybox_image: str) -> None:
        """The kernel's own name for the file decides: ../ cannot climb out of an allowed directory."""
        name, result = run(busybox_image, "e2e", "sh", "-c", "cd /var/task && cat ../../srv/secret.txt")
        assert KILLED == result.returncode
        [violation] = agent.violations(name)
        assert "/srv/secret.txt" == violation["path"]

    def test_symlink_into_forbidden_file_is_resolved(self, agent: AgentProcess, busybox_image: str) -> None:
        """A symlink in an allowed directory pointing outside it is judged by its target."""
        name, result = run(busybox_image, "e2e", "sh", "-c", "ln -s /srv/secret.txt /tmp/link && cat /tmp/link")
        assert KILLED == result.returncode
        [violation] = agent.violations(name)
        assert "/srv/secret.txt" == violation["path"]


class TestDockerExec:
    def test_docker_exec_runs_under_the_containers_policy(self, agent: AgentProcess, busybox_image: str) -> None:
        """runc joining the container for `docker exec` is not judged; the command it runs is."""
        name = unique_name("exec")
        started = docker_run(busybox_image, "sleep", "30", policy="e2e", name=name, detach=True)
        assert 0 == started.returncode, started.stderr
        try:
            allowed = subprocess.run(["docker", "exec", name, "cat", "/var/task/hello.txt"],
                                     capture_output=True, text=True, timeout=30)
            forbidden = subprocess.run(["docker", "exec", name, "cat", "/srv/secret.txt"],
                                       capture_output=True, text=True, timeout=30)
        finally:
            docker_rm(name)
        assert (0, "hello\n", KILLED) == (allowed.returncode, allowed.stdout, forbidden.returncode)
        [violation] = agent.violations(name)
        assert ("file", "/srv/secret.txt", "cat") == (violation["kind"], violation["path"], violation["comm"])


class TestNetwork:
    def test_connect_to_forbidden_port_fails_with_eperm(self, agent: AgentProcess, busybox_image: str,
                                                         other: Listener) -> None:
        """connect() to a port the policy does not list fails with EPERM and nothing reaches the listener."""
        name, result = run(busybox_image, "e2e", "nc", "127.0.0.1", str(other.port), network_host=True)
        assert 1 == result.returncode
        assert "Operation not permitted" in result.stderr
        assert 0 == other.accepted
        [violation] = agent.violations(name)
        assert VIOLATION_KEYS | {"address", "port", "protocol"} == set(violation)
        assert ("connect", "denied", "127.0.0.1", other.port, "tcp") == (
            violation["kind"], violation["action"], violation["address"], violation["port"], violation["protocol"])

    def test_connect_to_forbidden_address_fails_with_eperm(self, agent: AgentProcess, busybox_image: str,
                                                            allowed: Listener) -> None:
        """The allowed port on another address is still refused."""
        name, result = run(busybox_image, "e2e", "nc", "127.0.0.2", str(allowed.port), network_host=True)
        assert "Operation not permitted" in result.stderr
        [violation] = agent.violations(name)
        assert ("127.0.0.2", allowed.port) == (violation["address"], violation["port"])

    def test_ipv4_mapped_ipv6_is_judged_as_ipv4(self, agent: AgentProcess, busybox_image: str,
                                                allowed: Listener) -> None:
        """::ffff:127.0.0.1 is 127.0.0.1: allowed on the allowed port."""
        before = allowed.accepted
        name, result = run(busybox_image, "e2e", "nc", "::ffff:127.0.0.1", str(allowed.port), network_host=True)
        assert (0, before + 1) == (result.returncode, allowed.accepted)

    def test_on_violation_kill_kills_the_connecting_process(self, agent: AgentProcess, busybox_image: str,
                                                             other: Listener) -> None:
        """With on_violation: kill the connect is refused and the process is killed."""
        name, result = run(busybox_image, "e2e-netkill", "nc", "127.0.0.1", str(other.port), network_host=True)
        assert KILLED == result.returncode
        [violation] = agent.violations(name)
        assert ("connect", "killed") == (violation["kind"], violation["action"])


    def test_host_rule_allows_the_addresses_the_name_resolves_to(self, agent: AgentProcess, busybox_image: str,
                                                                 allowed: Listener, other: Listener) -> None:
        """{host: localhost} allows what localhost resolves to (here from /etc/hosts), on its ports only."""
        resolved = agent.wait_for(lambda l: l["event"] == "hosts_resolved" and "localhost" in l["hosts"])
        assert "127.0.0.1" in resolved["hosts"]["localhost"]
        before = allowed.accepted
        name, result = run(busybox_image, "e2e-host", "sh", "-c",
                           f"nc 127.0.0.1 {allowed.port} </dev/null && nc 127.0.0.1 {other.port} </dev/null",
                           network_host=True)
        assert (1, before + 1) == (result.returncode, allowed.accepted)
        [violation] = agent.violations(name)
        assert other.port == violation["port"]

    def test_unconnected_udp_send_is_egress_too(self, agent: AgentProcess, stripe_function_image: str,
                                                allowed: Listener) -> None:
        """sendto() on an unconnected UDP socket is checked like connect(): EPERM to a forbidden port."""
        script = ("const s = require('dgram').createSocket('udp4');"
                  f"s.send('x', {allowed.port + 1}, '127.0.0.1', (e) => {{ console.log(e ? e.code : 'sent'); s.close(); }});")
        name, result = run(stripe_function_image, "e2e-node", "/usr/local/bin/node", "-e", script,
                           network_host=True)
        assert (0, "EPERM\n") == (result.returncode, result.stdout)
        [violation] = agent.violations(name)
        assert ("connect", "udp", allowed.port + 1) == (violation["kind"], violation["protocol"], violation["port"])


    def test_raw_and_icmp_sockets_are_refused(self, agent: AgentProcess, busybox_image: str) -> None:
        """ping needs a raw or ICMP socket, whose packets no connect hook sees: socket() fails with EPERM."""
        name, result = run(busybox_image, "e2e", "ping", "-c", "1", "-W", "1", "127.0.0.1", network_host=True)
        assert 1 == result.returncode
        assert "permission denied" in result.stderr    # busybox's words for EPERM from socket()
        [violation, *_] = agent.violations(name)
        assert ("connect", "denied", "", 0) == (violation["kind"], violation["action"], violation["address"],
                                               violation["port"])
        assert violation["protocol"] in {"icmp", "raw"}


class TestAuditMode:
    def test_audit_mode_stops_nothing_and_logs_audited(self, agent: AgentProcess, busybox_image: str,
                                                       other: Listener) -> None:
        """In audit mode the forbidden exec, read and connect all happen, each logged as audited."""
        before = other.accepted
        name, result = run(busybox_image, "e2e-audit", "sh", "-c",
                           f"cat /srv/secret.txt; /opt/forbidden/busybox true; echo exec=$?; "
                           f"nc 127.0.0.1 {other.port} </dev/null; echo nc=$?", network_host=True)
        assert (0, "secret\nexec=0\nnc=0\n") == (result.returncode, result.stdout)
        assert before + 1 == other.accepted
        agent.wait_for(lambda l: l.get("container_name") == name and l.get("kind") == "connect")
        kinds = {(l["kind"], l["action"], l["mode"]) for l in agent.violations(name)}
        assert {("file", "audited", "audit"), ("exec", "audited", "audit"), ("connect", "audited", "audit")} == kinds


class TestUntagged:
    def test_untagged_container_is_untouched(self, agent: AgentProcess, busybox_image: str, other: Listener) -> None:
        """A container without the label reads, runs and connects freely and is never logged."""
        name, result = run(busybox_image, None, "sh", "-c",
                           f"cat /srv/secret.txt && /opt/forbidden/busybox echo ran && "
                           f"nc 127.0.0.1 {other.port} </dev/null && echo done", network_host=True)
        assert (0, "secret\nran\ndone\n") == (result.returncode, result.stdout)
        assert [] == [l for l in agent.lines() if l.get("container_name") == name and l["event"] == "violation"]


class TestPolicyChanges:
    def test_policy_edit_takes_effect_and_bad_edit_keeps_last_good(self, agent: AgentProcess, busybox_image: str,
                                                                   policies: Path) -> None:
        """Editing a policy applies at once; a broken edit is reported by file, line and field and changes nothing."""
        name, result = run(busybox_image, "e2e-edit", "cat", "/srv/secret.txt")
        assert KILLED == result.returncode

        mark = len(agent.lines())
        write_policy(policies, "e2e-edit", "exec:\n  allow: [/bin/busybox]\nfiles:\n  allow: [/var/task/, /srv/]\n")
        agent.wait_for(lambda l: l["event"] == "policies_loaded" and not l["initial"], after=mark)
        name, result = run(busybox_image, "e2e-edit", "cat", "/srv/secret.txt")
        assert (0, "secret\n") == (result.returncode, result.stdout)

        mark = len(agent.lines())
        bad = write_policy(policies, "e2e-edit", "exec:\n  allow: [/bin/busybox]\nfiles:\n  alow: [/]\n")
        error = agent.wait_for(lambda l: l["event"] == "policy_error", after=mark)
        assert (str(bad), 7, "files.alow") == (error["file"], error["line"], error["field"])
        loaded = agent.wait_for(lambda l: l["event"] == "policies_loaded", after=mark)
        assert ["e2e-edit"] == loaded["kept_last_good"]
        name, result = run(busybox_image, "e2e-edit", "sh", "-c", "cat /srv/secret.txt && ls /")
        assert (KILLED, "secret\n") == (result.returncode, result.stdout)   # /srv/ still allowed, / is not

    def test_sighup_reloads_policies(self, agent: AgentProcess) -> None:
        """SIGHUP reopens the log file and reloads the policy directory."""
        mark = len(agent.lines())
        agent.send(signal.SIGHUP)
        agent.wait_for(lambda l: l["event"] == "sighup", after=mark)
        agent.wait_for(lambda l: l["event"] == "policies_loaded", after=mark)


class TestUnknownPolicy:
    def test_unknown_policy_name_fails_closed(self, agent: AgentProcess, busybox_image: str) -> None:
        """A label naming no policy gets only the baseline: its entrypoint is not allowed, and an error says why."""
        policy = unique_name("missing")
        name, result = run(busybox_image, policy, "cat", "/var/task/hello.txt")
        assert KILLED == result.returncode
        error = agent.wait_for(lambda l: l["event"] == "unknown_policy" and l["policy"] == policy)
        assert ("error", name) == (error["level"], error["container_name"])
        [violation] = agent.violations(name)
        assert ("exec", policy) == (violation["kind"], violation["policy"])


class TestCustomCgroupParent:
    def test_container_outside_the_runtime_parent_is_warned_about(self, agent: AgentProcess,
                                                                  busybox_image: str) -> None:
        """--cgroup-parent elsewhere: file rules still apply, and the missing egress enforcement is logged."""
        name = unique_name("parent")
        systemd = "systemd" == subprocess.run(["docker", "info", "-f", "{{.CgroupDriver}}"],
                                              capture_output=True, text=True).stdout.strip()
        parent = "hostguard-elsewhere.slice" if systemd else "/hostguard-elsewhere"
        try:
            result = subprocess.run(["docker", "run", "--rm", "--name", name, "--cgroup-parent", parent,
                                     "--label", "hostguard.policy=e2e", busybox_image,
                                     "cat", "/srv/secret.txt"], capture_output=True, text=True, timeout=60)
        finally:
            for leftover in Path("/sys/fs/cgroup").glob("**/hostguard-elsewhere*"):
                with contextlib.suppress(OSError):   # systemd removes its slices itself
                    leftover.rmdir()
        assert KILLED == result.returncode
        warning = agent.wait_for(lambda l: l["event"] == "egress_unenforced")
        [violation] = agent.violations(name)
        assert warning["container_id"] == violation["container_id"]
