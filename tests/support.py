"""Helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import loader

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


@contextlib.contextmanager
def loaded_sensor(object_dir: Path) -> Iterator[loader.Sensor]:
    """hostguard's objects loaded and attached (small ring buffer), closed even when a test fails."""
    sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
    try:
        sensor.load()
        yield sensor
    finally:
        sensor.close()
