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
