"""What every benchmark shares: building the loop binary, running it on the host or in a container,
starting the real agent, and summarising samples as median with min-max."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.agent_process import AgentProcess, unique_name, write_policy
from tests.images import ensure_bench_image

__all__ = ["BUILD", "REPO", "agent", "build_loops", "bench_image", "run_loops", "summarize", "write_policy"]

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "bench"
LOOPS_IN_IMAGE = "/opt/bench/loops"


def build_loops() -> Path:
    """The static loop binary (bench/loops.c), rebuilt when its source changes."""
    source, binary = REPO / "bench" / "loops.c", BUILD / "loops"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-static", "-pthread", "-o", str(binary), str(source)], check=True)
    return binary


def bench_image() -> str:
    return ensure_bench_image(build_loops())


def run_loops(*args: str, policy: str | None = None, in_container: bool = False) -> float:
    """ns per operation of `loops ARGS`, on the host or in a container (tagged with policy if given)."""
    if in_container or policy is not None:
        command = ["docker", "run", "--rm", "--network", "host", "--name", unique_name("bench")]
        if policy is not None:
            command += ["--label", f"hostguard.policy={policy}"]
        command += [bench_image(), LOOPS_IN_IMAGE, *args]
    else:
        command = [str(build_loops()), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return json.loads(result.stdout)["ns_per_op"]


@contextlib.contextmanager
def agent(policies: Path, log_dir: Path, *extra_args: str) -> Iterator[AgentProcess]:
    """The real agent on a policy directory, ready when the block starts, stopped when it ends."""
    process = AgentProcess(policies, log_dir / "agent.log", list(extra_args))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def summarize(samples: list[float]) -> dict[str, float]:
    """median with min and max: the spread says how far to trust the median."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}
