"""Smoke test of the syscall-overhead benchmark: every configuration runs for a moment (no timing asserted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import peers, syscalls

pytestmark = [pytest.mark.kernel, pytest.mark.docker]


@pytest.fixture(scope="module")
def quick_result(root: None, object_dir: Path, tracefs: None, docker: None,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return syscalls.run(tmp_path_factory.mktemp("bench"), quick=True)


class TestRun:
    def test_every_configuration_measures_every_operation(self, quick_result: dict[str, Any]) -> None:
        """none, floor and hostguard run on the host and in a container; each peer runs or says why not."""
        measured = {key for key, ops in quick_result["ns_per_op"].items() if set(ops) == set(syscalls.OPS)}
        expected = {f"{config}/{placement}" for config in ("none", "floor", "hostguard")
                    for placement in ("host", "container")}
        assert expected <= measured
        for peer in peers.PEERS:
            assert f"{peer}/host" in measured or quick_result["unavailable"][peer]

    def test_kernel_program_costs_are_read(self, quick_result: dict[str, Any]) -> None:
        """The floor's and hostguard's programs on the open hook ran and their cost per run is known."""
        costs = quick_result["program_ns_per_run"]
        assert all(costs[f"{config}/{placement}"]["open"] > 0 for config in ("floor", "hostguard")
                   for placement in ("host", "container"))

    def test_comparison_holds_a_verdict_per_placement_and_op(self, quick_result: dict[str, Any]) -> None:
        """Each (placement, op) is met, missed, or explicitly within noise."""
        for placement in ("host", "container"):
            for op in syscalls.OPS:
                assert quick_result["comparison"][f"{placement}/{op}"]["met"] in (True, False, None)


class TestTable:
    def test_table_renders(self, quick_result: dict[str, Any]) -> None:
        """The table names every configuration."""
        text = "\n".join(syscalls.table(quick_result))
        assert all(config in text for config in ("none/host", "floor/container", "hostguard/container"))
