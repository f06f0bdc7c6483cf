"""Shared fixtures: the built BPF objects, root, and the rule that CI never skips a real test.

Under CI=true a kernel or Docker test that would skip fails instead: a green run must mean the
enforcement really ran.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .support import OBJECT_DIR, REPO, skip_or_fail

STRIPE_FUNCTION = REPO / "examples" / "stripe-function"
STRIPE_FUNCTION_IMAGE = "hostguard-test/stripe-function:1"


@pytest.fixture(scope="session")
def object_dir() -> Path:
    """The built CO-RE objects (`make -C bpf`)."""
    if not (OBJECT_DIR / "exec.bpf.o").exists():
        result = subprocess.run(["make", "-s", "-C", str(REPO / "bpf")], capture_output=True, text=True)
        if result.returncode != 0:
            skip_or_fail(f"BPF objects not built and `make -C bpf` failed: {result.stderr[-500:]}")
    return OBJECT_DIR


@pytest.fixture(scope="session")
def root() -> None:
    """Loading BPF programs needs root."""
    if os.geteuid() != 0:
        skip_or_fail("needs root to load BPF programs")


@pytest.fixture(scope="session")
def docker() -> None:
    """A reachable dockerd (dev.sh test starts one)."""
    from .images import docker_problem

    problem = docker_problem()
    if problem:
        skip_or_fail(problem)


@pytest.fixture(scope="session")
def busybox_image(docker: None) -> str:
    from .images import ensure_busybox_image

    return ensure_busybox_image()


@pytest.fixture(scope="session")
def stripe_function_dir() -> Path:
    """The seed example with its production dependencies (dev.sh test runs `npm ci` too)."""
    if not (STRIPE_FUNCTION / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=STRIPE_FUNCTION,
                       check=True, capture_output=True, timeout=300)
    return STRIPE_FUNCTION


@pytest.fixture(scope="session")
def stripe_function_image(docker: None, stripe_function_dir: Path) -> str:
    from .images import ensure_node_image

    return ensure_node_image(stripe_function_dir, STRIPE_FUNCTION_IMAGE)


@pytest.fixture(scope="session")
def tracefs() -> None:
    """The agent mounts nothing itself; dev.sh mounts tracefs for the syscall tracepoints."""
    if not Path("/sys/kernel/tracing/events/syscalls").is_dir():
        skip_or_fail("tracefs is not mounted at /sys/kernel/tracing (dev.sh mounts it)")


@pytest.fixture
def name(request: pytest.FixtureRequest):  # noqa: ANN201 - returns a name factory
    """Unique container names that are force-removed when the test ends."""
    import secrets

    names: list[str] = []

    def make() -> str:
        names.append(f"hg-test-{secrets.token_hex(4)}")
        return names[-1]

    def cleanup() -> None:
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=30)

    request.addfinalizer(cleanup)
    return make
