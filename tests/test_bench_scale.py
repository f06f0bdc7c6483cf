"""Smoke test of bench/scale.py: a quick run with the real sensor yields every figure and renders, and
the pieces it rests on (the generated policies, the LPM lookup model) say what they claim."""

from __future__ import annotations

import ipaddress
import numbers
import time
from pathlib import Path
from typing import Any

import pytest

from agent import cgroups, compiler
from agent.policy import Access, FileRule, PortRange
from bench import scale

QUICK_BOUND_S = 30.0          # what the suite's --quick promises per benchmark
MEASURES = ("untagged", "tagged", "added", "verdict", "untagged_program")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_number(value.get(k)) for k in ("median", "min", "max", "n"))


def _bench_cgroups() -> set[Path]:
    return set(cgroups.find_unified_mount().glob(f"{scale.RUNTIME_PARENT_PREFIX}*"))


@pytest.fixture(scope="module")
def quick_run(root: None, object_dir: Path, tracefs: None,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run, with its duration and the benchmark cgroups it left behind."""
    before = _bench_cgroups()
    started = time.monotonic()
    result = scale.run(tmp_path_factory.mktemp("scale"), quick=True, object_dir=object_dir)
    return {"result": result, "seconds": time.monotonic() - started, "left": _bench_cgroups() - before}


def _targets(tmp_path: Path) -> scale.Targets:
    return scale.Targets(tmp_path / "srv" / "svc-000000" / "payload.json", tmp_path / "srv" / "secret.key",
                         Path("/opt/bench/loops"))


def _net4(address: str, policy_id: int = 1, prefix: int = 32) -> bytes:
    return compiler.NET4_KEY.pack(32 + prefix, policy_id, ipaddress.ip_address(address).packed)


@pytest.mark.kernel
class TestRun:
    """run(quick=True) measures every (rules, containers) point with the real sensor and cleans up."""

    def test_every_point_has_every_figure(self, quick_run: dict[str, Any]) -> None:
        """Each op at each quick point has untagged, tagged, added and program figures as summaries."""
        result = quick_run["result"]
        points = {(p["op"], p["rules"], p["containers"]): p for p in result["points"]}
        expected = {(op, rules, containers) for op in scale.OPS for rules in scale.QUICK_RULES
                    for containers in scale.QUICK_CONTAINERS}
        assert expected == set(points)
        assert [] == [f"{key}.{m}" for key, p in points.items() for m in MEASURES if not _is_summary(p.get(m))]
        assert all(p["tagged"]["median"] > 0 and p["untagged"]["median"] > 0 for p in points.values())

    def test_controls_prove_the_loop_was_tagged(self, quick_run: dict[str, Any]) -> None:
        """At every point a forbidden open was killed and a forbidden connect denied, one violation each."""
        controls = quick_run["result"]["controls"]
        assert len(controls) == len(scale.QUICK_RULES) * len(scale.QUICK_CONTAINERS)
        assert all(c == {"forbidden_open": "killed", "forbidden_connect": "EPERM", "violations": 2}
                   for c in controls.values())

    def test_flatness_is_judged_per_op(self, quick_run: dict[str, Any]) -> None:
        """Each op has a verdict ratio for every point, the smallest point at 1, and a boolean met."""
        result = quick_run["result"]
        for op in scale.OPS:
            verdict = result["flatness"][op]["verdict"]
            assert len(verdict["ratios"]) == len(scale.QUICK_RULES) * len(scale.QUICK_CONTAINERS)
            assert verdict["ratios"]["10/1"] == pytest.approx(1.0)
            assert isinstance(result["flatness"][op]["met"], bool)
        assert isinstance(result["met"], bool)

    def test_installs_and_diagnostic_are_measured(self, quick_run: dict[str, Any]) -> None:
        """Every policy size has compile and write times, entry counts and lookup paths; the diagnostic ran."""
        result = quick_run["result"]
        assert [str(rules) for rules in scale.QUICK_RULES] == list(result["installs"])
        for install in result["installs"].values():
            assert all(_is_number(install[k]) for k in ("compile_s", "first_write_s", "compile_egress_s"))
            assert install["entries"]["file_rules"] > 0 and install["entries"]["net4_rules"] > 0
            assert all(install["lookup_path"][op]["nodes"] >= 1 for op in scale.OPS)
        diagnostic = result["diagnostic"]
        assert all(_is_summary(diagnostic[side][op]["verdict"]) for side in ("alone", "beside") for op in scale.OPS)

    def test_is_quick_and_leaves_no_cgroup(self, quick_run: dict[str, Any]) -> None:
        """The quick run stays within the smoke-test bound and removes every cgroup it created."""
        assert quick_run["seconds"] < QUICK_BOUND_S
        assert set() == quick_run["left"]


@pytest.mark.kernel
class TestTable:
    """table(result) renders the quick run as lines."""

    def test_renders_points_flatness_and_installs(self, quick_run: dict[str, Any]) -> None:
        """One line per point, a flatness line per op, the overall target and a line per policy size."""
        result = quick_run["result"]
        lines = scale.table(result)
        assert all(isinstance(line, str) and line for line in lines)
        assert len(result["points"]) == sum(line.lstrip().startswith(scale.OPS) for line in lines)
        assert len(scale.OPS) == sum("flatness" in line for line in lines)
        assert any("target" in line and ("met" in line or "MISSED" in line) for line in lines[-10:])
        assert len(scale.QUICK_RULES) == sum(line.lstrip().startswith("policy of") for line in lines)


class TestMakePolicy:
    """make_policy builds a policy of exactly the requested size that allows what the loops do."""

    @pytest.mark.parametrize("rules", [3, 10, 1_000])
    def test_has_exactly_the_requested_rules(self, tmp_path: Path, rules: int) -> None:
        """Exec, file and egress rules add up to the requested count."""
        policy = scale.make_policy(rules, _targets(tmp_path))
        assert rules == len(policy.exec_allow) + len(policy.file_allow) + len(policy.egress)

    def test_allows_the_loops(self, tmp_path: Path) -> None:
        """The loop binary may run, the measured file may be read, the loopback listener's ports are open."""
        targets = _targets(tmp_path)
        policy = scale.make_policy(1_000, targets)
        assert (str(targets.loops),) == policy.exec_allow
        assert FileRule(str(targets.open_path), Access.READ) in policy.file_allow
        loopback = [rule for rule in policy.egress if rule.network == ipaddress.ip_network("127.0.0.1/32")]
        assert [(PortRange(1024, 65535),)] == [rule.ports for rule in loopback]
        assert not any(str(targets.forbidden_path).startswith(rule.path) for rule in policy.file_allow
                       if rule.path.endswith("/"))

    def test_compiles_without_error(self, tmp_path: Path) -> None:
        """The generated rules fit the kernel maps' limits (ports per destination, path length)."""
        rules = compiler.compile_policy(scale.make_policy(1_000, _targets(tmp_path)), 1)
        assert rules.file_rules and rules.net4_rules and rules.net6_rules

    def test_refuses_fewer_rules_than_the_loops_need(self, tmp_path: Path) -> None:
        """Fewer than three rules cannot allow the loop binary, its file and its listener."""
        with pytest.raises(ValueError):
            scale.make_policy(2, _targets(tmp_path))


class TestRelocate:
    """relocate moves compiled entries to another policy id exactly as compiling under it would."""

    def test_equals_compiling_under_the_new_id(self, tmp_path: Path) -> None:
        """A policy compiled under id 1 and relocated to id 7 has the entries compiled under id 7."""
        policy = scale.make_policy(100, _targets(tmp_path))
        assert compiler.compile_policy(policy, 7) == scale.relocate(compiler.compile_policy(policy, 1), 7)


class TestLookupPath:
    """lookup_path models the nodes an LPM trie lookup walks through."""

    def test_single_entry_is_one_node(self) -> None:
        """A trie holding only the key is one node."""
        assert {"nodes": 1, "words": 1} == scale.lookup_path([_net4("127.0.0.1")], _net4("127.0.0.1"))

    def test_counts_branch_points_along_the_key(self) -> None:
        """A neighbour adds the node where it parts from the key; a covering network adds its own node."""
        entries = [_net4("127.0.0.1"), _net4("127.0.0.2"), _net4("127.0.0.0", prefix=8)]
        assert 3 == scale.lookup_path(entries, _net4("127.0.0.1"))["nodes"]

    def test_entries_off_the_path_do_not_lengthen_it(self) -> None:
        """Entries of another policy id add one branch node at most, however many there are."""
        others = [_net4(f"127.0.{i // 256}.{i % 256}", policy_id=2) for i in range(1_000)]
        assert 2 == scale.lookup_path([_net4("127.0.0.1"), *others], _net4("127.0.0.1"))["nodes"]
