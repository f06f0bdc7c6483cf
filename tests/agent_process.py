"""The real agent as a child process (`python -m agent run`), and real containers to put under it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .support import REPO

LogLine = dict[str, Any]


class AgentProcess:
    """Runs the agent on a policy directory and reads its JSON log file."""

    def __init__(self, policies: Path, log_file: Path, extra_args: list[str] | None = None) -> None:
        self.policies = policies
        self.log_file = log_file
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LogLine:
        """Start the agent; returns its agent_ready line."""
        self.stdout = open(self.log_file.with_suffix(".stdout"), "wb")  # noqa: SIM115 - closed in stop()
        # Tests send nothing beyond loopback: policy host names resolve from /etc/hosts or not at all.
        resolv_conf = self.log_file.with_suffix(".resolv.conf")
        resolv_conf.write_text("nameserver 127.0.0.1\n")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--policies", str(self.policies),
             "--log-file", str(self.log_file), "--resolv-conf", str(resolv_conf), *self.extra_args],
            cwd=REPO, stdout=self.stdout, stderr=subprocess.STDOUT,
        )
        return self.wait_for(lambda line: line["event"] == "agent_ready", timeout=timeout)

    def lines(self) -> list[LogLine]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate: Callable[[LogLine], bool], timeout: float = 10.0,
                 after: int = 0) -> LogLine:
        """The first log line (from index `after` on) matching predicate; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines()[after:]:
                if predicate(line):
                    return line
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"agent exited with {self.process.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log line within {timeout}s; log:\n{self.output()}")
            time.sleep(0.05)

    def violations(self, container_name: str, timeout: float = 5.0) -> list[LogLine]:
        """The violations logged for a container, waiting until at least one arrives."""
        self.wait_for(lambda l: l["event"] == "violation" and l.get("container_name") == container_name,
                      timeout=timeout)
        return [l for l in self.lines() if l["event"] == "violation" and l.get("container_name") == container_name]

    def output(self) -> str:
        path = self.log_file.with_suffix(".stdout")
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stdout.close()
        return self.process.returncode


def unique_name(prefix: str) -> str:
    return f"hg-{prefix}-{uuid.uuid4().hex[:8]}"


def docker_run(image: str, *command: str, policy: str | None = None, name: str | None = None,
               network_host: bool = False, env: dict[str, str] | None = None,
               volumes: list[str] | None = None, detach: bool = False,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`docker run --rm` with the hostguard label when policy is given."""
    args = ["docker", "run", "--name", name or unique_name("c")]
    args += ["-d"] if detach else ["--rm"]
    if policy is not None:
        args += ["--label", f"hostguard.policy={policy}"]
    if network_host:
        args += ["--network", "host"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    for volume in volumes or []:
        args += ["-v", volume]
    args += [image, *command]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def docker_rm(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def write_policy(directory: Path, name: str, body: str) -> Path:
    """Write a policy file atomically (the agent may be reading the directory)."""
    path = directory / f"{name}.yaml"
    temp = directory / f".{name}.tmp"
    temp.write_text(f"apiVersion: hostguard/v1\nkind: Policy\nname: {name}\n{body}")
    os.replace(temp, path)
    return path
