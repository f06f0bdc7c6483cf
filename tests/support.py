"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OBJECT_DIR = REPO / "build" / "bpf"
IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine that lacks something; fail in CI, where nothing may be missing."""
    if IN_CI:
        pytest.fail(f"CI=true and this test cannot run: {reason}")
    pytest.skip(reason)  # reached only outside CI: under CI=true the line above failed


DOCKER_WAIT = 15.0  # seconds; bound for anything that waits on dockerd


def docker(*args: str) -> str:
    """Run the docker CLI and return its stripped stdout (CalledProcessError on failure)."""
    done = subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=DOCKER_WAIT)
    return done.stdout.strip()
