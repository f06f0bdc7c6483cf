"""Smoke test of bench/agent_costs.py: a quick run against the real agent yields every figure, and renders."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import pytest

from bench import agent_costs

pytestmark = [pytest.mark.kernel, pytest.mark.docker]

SUMMARIES = {
    "throughput": ["max_zero_loss_burst", "min_lossy_burst", "drain_rate", "max_zero_loss_rate",
                   "min_lossy_rate", "generator_rate"],
    "startup": ["startup_ms", "wall_ms", "cpu_ms_to_ready", "idle_hwm_mb", "idle_rss_mb"],
    "memory": ["idle_hwm_mb", "idle_rss_mb"],
}
NUMBERS = {
    "throughput": ["ringbuf_kb", "ring_capacity_events", "paced_seconds", "lossy_runs", "lossy_runs_exact"],
    "memory": ["load_agent_idle_hwm_mb", "load_hwm_mb", "load_rss_mb"],
}
CPU_KEYS = ["agent_cpu_s", "wall_s", "ns_per_op", "cpu_s_per_million", "cpu_s_per_million_less_idle"]
TARGETS = ["violations_per_s_zero_loss", "loss_counted_exactly", "ready_ms", "ready_wall_ms", "idle_peak_rss_mb"]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_number(value.get(k)) for k in ("median", "min", "max", "n"))


@pytest.fixture(scope="module")
def quick_result(root: None, object_dir: Path, tracefs: None, docker: None,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of the benchmark, shared by the tests of this module."""
    return agent_costs.run(tmp_path_factory.mktemp("agent-costs"), quick=True)


class TestRun:
    """run(quick=True) measures throughput, loss, start-up, memory and CPU with the real agent."""

    def test_every_figure_is_a_number(self, quick_result: dict[str, Any]) -> None:
        """Every summary has median, min, max and n, and every scalar figure is a number."""
        missing = [f"{section}.{key}" for section, keys in SUMMARIES.items() for key in keys
                   if not _is_summary(quick_result[section].get(key))]
        missing += [f"{section}.{key}" for section, keys in NUMBERS.items() for key in keys
                    if not _is_number(quick_result[section].get(key))]
        missing += [f"cpu.{where}.{key}" for where in ("untagged_host", "tagged_container") for key in CPU_KEYS
                    if not _is_summary(quick_result["cpu"][where].get(key))]
        missing += [] if _is_summary(quick_result["cpu"]["idle"].get("cpu_s_per_s")) else ["cpu.idle"]
        assert [] == missing

    def test_loss_is_counted_exactly(self, quick_result: dict[str, Any]) -> None:
        """The quick run's tiny ring buffer loses events, and each lossy run adds up to what was generated."""
        throughput = quick_result["throughput"]
        assert throughput["lossy_runs"] > 0
        assert [] == [r for r in throughput["runs"] if r["logged"] + r["lost"] != r["generated"]]
        assert throughput["big_burst"]["exact"]

    def test_targets_say_whether_they_are_met(self, quick_result: dict[str, Any]) -> None:
        """Each of the issue's targets has a measured value, the target and a boolean `met`."""
        targets = quick_result["targets"]
        assert TARGETS == list(targets)
        for target in targets.values():
            assert isinstance(target["met"], bool)
            assert target["measured"] is not None and target["target"] is not None

    def test_peer_start_up_is_measured_or_explained(self, quick_result: dict[str, Any]) -> None:
        """Each peer tracer's spawn-to-attached time is a number, or the reason it cannot run here."""
        ready = quick_result["startup"]["peers_ready"]
        assert {"bpftrace", "bcc-tools"} == set(ready)
        assert all(isinstance(v, float) or v.startswith("cannot run here: ") for v in ready.values())


class TestTable:
    """table() renders one line per measure with measured value, target and verdict."""

    def test_renders_the_quick_result(self, quick_result: dict[str, Any]) -> None:
        """Every target appears with `met` or `MISSED`."""
        lines = agent_costs.table(quick_result)
        assert lines and all(isinstance(line, str) for line in lines)
        verdicts = [line for line in lines if line.endswith((" met", " MISSED"))]
        assert len(verdicts) >= len(TARGETS)

    def test_renders_figures_that_were_not_reached(self, quick_result: dict[str, Any]) -> None:
        """A search that found no loss (or no clean run) reads "not reached" instead of failing."""
        result = {**quick_result, "throughput": {**quick_result["throughput"], "min_lossy_rate": None,
                                                 "max_zero_loss_burst": None}}
        assert any("not reached" in line for line in agent_costs.table(result))
