"""Benchmark 1: what hostguard adds to an openat+close, a loopback connect and a fork+execve.

The same static loop binary (bench/loops.c) runs in every configuration, timed from inside:
  none       nothing attached (a)
  floor      hostguard's hook points with programs that only return (b): the least any agent pays
  hostguard  the real agent (c: untagged host process; d: tagged container whose policy allows the op)
  peers      bpftrace and bcc's tools on the same hooks (e), where they can run here
Placements: "host" (an ordinary host process) and "container" (a Docker container: untagged for
none/floor, tagged for hostguard), because cgroup programs only run inside the runtime's cgroup.
Configurations alternate round by round, so drift in the machine affects them all alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent import cgroups, libbpf

from . import peers
from .common import BUILD, REPO, agent, run_loops, summarize, write_policy

__all__ = ["run", "table"]

OPS = ("open", "connect", "exec")
PROGRAMS = {"open": "exit_openat", "connect": "connect4", "exec": "exec"}   # hg_<x> and floor_<x>
COUNTS = {"open": 200_000, "connect": 20_000, "exec": 1_000}
QUICK_COUNTS = {"open": 2_000, "connect": 200, "exec": 20}
OPEN_PATH = "/var/task/hello.txt"     # exists in the bench image; on the host we open build/bench/hello.txt
TARGET_UNTAGGED = 1.5                 # hostguard's added cost over the floor's, untagged host process
TARGET_TAGGED = 2.0                   # ... tagged container, allowed operation


def _policy_body() -> str:
    """A policy of realistic size (about a hundred rules) that allows what the loops do."""
    files = "\n".join(f"    - /srv/app{i}/" for i in range(40))
    files += "\n" + "\n".join(f"    - /etc/app{i}.conf" for i in range(40))
    egress = "\n".join(f"    - {{cidr: 10.{i}.0.0/16, ports: [443, 8443]}}" for i in range(20))
    return f"""exec:
  allow: [/opt/bench/loops]
files:
  allow:
    - /var/task/
{files}
network:
  egress:
    - {{cidr: 127.0.0.1/32}}
{egress}
"""


def build_floor() -> Path:
    source, obj = REPO / "bench" / "floor.bpf.c", BUILD / "floor.bpf.o"
    if not obj.exists() or obj.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "vmlinux.h"], check=True)
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{REPO / 'bpf'}",
                        "-c", str(source), "-o", str(obj)], check=True)
    return obj


def _docker_parent() -> Path:
    parent = cgroups.find_unified_mount() / "docker"
    parent.mkdir(exist_ok=True)
    return parent


@contextlib.contextmanager
def _floor() -> Iterator[None]:
    links = []
    obj = libbpf.BpfObject(build_floor())
    try:
        obj.load()
        parent = _docker_parent()
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for program in obj.programs():
                if program.section.startswith("cgroup/"):
                    links.append(program.attach_cgroup(fd, str(parent)))
                else:
                    links.append(program.attach())
        finally:
            os.close(fd)
        yield
    finally:
        for link in links:
            link.destroy()
        obj.close()


def _program_totals() -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) of every loaded BPF program by name, as bpftool reports them."""
    listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                        check=True).stdout)
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in listing if "name" in p}


def _program_cost(config: str, placement: str, counts: dict[str, int], policy: str | None) -> dict[str, float]:
    """ns per run of the program on each op's hook, from the kernel's own statistics (switched on
    only for this pass: they cost every program a little)."""
    prefix = {"floor": "floor_", "hostguard": "hg_"}[config]
    costs = {}
    with libbpf.run_time_stats():
        for op in OPS:
            name = prefix + PROGRAMS[op]
            before = _program_totals().get(name, (0, 0))
            _measure(placement, {o: counts[o] // 10 or 1 for o in OPS}, policy=policy, only=op)
            after = _program_totals().get(name, (0, 0))
            runs = after[1] - before[1]
            costs[op] = (after[0] - before[0]) / runs if runs else 0.0
    return costs


def _measure(placement: str, counts: dict[str, int], policy: str | None = None,
             only: str | None = None) -> dict[str, float]:
    host_file = BUILD / "hello.txt"
    BUILD.mkdir(parents=True, exist_ok=True)
    host_file.write_text("hello\n")
    samples = {}
    for op in OPS if only is None else (only,):
        args = ([op, OPEN_PATH if placement == "container" else str(host_file)] if op == "open" else [op])
        samples[op] = run_loops(*args, str(counts[op]), policy=policy, in_container=placement == "container")
    return samples


def run(workdir: Path, quick: bool = False, rounds: int = 5) -> dict[str, Any]:
    """Alternate the configurations `rounds` times; ns/op per (configuration, placement, op)."""
    counts = QUICK_COUNTS if quick else COUNTS
    rounds = 1 if quick else rounds
    policies = workdir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    write_policy(policies, "bench", _policy_body())

    samples: dict[str, dict[str, list[float]]] = {}
    program_ns: dict[str, dict[str, float]] = {}
    unavailable: dict[str, str] = {}

    def record(config: str, placement: str, result: dict[str, float]) -> None:
        for op, value in result.items():
            samples.setdefault(f"{config}/{placement}", {}).setdefault(op, []).append(value)

    configs: list[tuple[str, Callable[[], contextlib.AbstractContextManager]]] = [
        ("none", contextlib.nullcontext),
        ("floor", _floor),
        ("hostguard", lambda: agent(policies, workdir)),
    ]
    for round_index in range(rounds):
        for config, setup in configs:
            policy = "bench" if config == "hostguard" else None
            with setup():
                record(config, "host", _measure("host", counts))
                record(config, "container", _measure("container", counts, policy=policy))
                if config != "none" and round_index == rounds - 1:
                    program_ns[f"{config}/host"] = _program_cost(config, "host", counts, None)
                    program_ns[f"{config}/container"] = _program_cost(config, "container", counts, policy)
        for peer in peers.PEERS:
            if peer in unavailable:
                continue
            try:
                with peers.running(peer):
                    record(peer, "host", _measure("host", counts))
            except peers.PeerUnavailable as reason:
                unavailable[peer] = str(reason)

    medians = {key: {op: summarize(values) for op, values in ops.items()} for key, ops in samples.items()}
    return {"counts": counts, "rounds": rounds, "ns_per_op": medians, "unavailable": unavailable,
            "program_ns_per_run": program_ns, "comparison": _compare(medians)}


def _compare(medians: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Ratios to no agent, and hostguard's added cost as a multiple of the floor's added cost."""
    out: dict[str, Any] = {}
    for placement, target, label in (("host", TARGET_UNTAGGED, "untagged host process"),
                                     ("container", TARGET_TAGGED, "tagged container, allowed op")):
        base = medians.get(f"none/{placement}")
        floor = medians.get(f"floor/{placement}")
        ours = medians.get(f"hostguard/{placement}")
        if not (base and floor and ours):
            continue
        for op in OPS:
            b, f, h = base[op]["median"], floor[op]["median"], ours[op]["median"]
            floor_added, ours_added = f - b, h - b
            # an added cost smaller than the baseline's own spread cannot be told from noise
            noise = base[op]["max"] - base[op]["min"]
            resolved = floor_added > noise
            multiple = ours_added / floor_added if resolved else None
            out[f"{placement}/{op}"] = {
                "what": label, "none_ns": b, "noise_ns": noise, "floor_ratio": f / b, "hostguard_ratio": h / b,
                "floor_added_ns": floor_added, "hostguard_added_ns": ours_added,
                "multiple_of_floor": multiple, "target_multiple": target,
                "met": None if multiple is None else multiple <= target,
            }
    for key, ops in medians.items():
        config, placement = key.split("/")
        if config in peers.PEERS and medians.get(f"none/{placement}"):
            for op in OPS:
                out[f"{config}/{op}"] = {"ratio": ops[op]["median"] / medians[f"none/{placement}"][op]["median"]}
    return out


def table(result: dict[str, Any]) -> list[str]:
    lines = ["syscall overhead (ns/op, median [min-max] over rounds)"]
    for key, ops in sorted(result["ns_per_op"].items()):
        cells = "  ".join(f"{op} {v['median']:.0f} [{v['min']:.0f}-{v['max']:.0f}]" for op, v in ops.items())
        lines.append(f"  {key:22s} {cells}")
    lines.append("hostguard vs the empty floor (added ns over no agent; multiple of the floor's added cost)")
    for key, c in result["comparison"].items():
        if "multiple_of_floor" in c:
            verdict = {True: "met", False: "MISSED", None: "within noise: cannot tell"}[c["met"]]
            multiple = f"{c['multiple_of_floor']:.2f}x" if c["multiple_of_floor"] is not None else "-"
            lines.append(f"  {key:18s} floor +{c['floor_added_ns']:.0f} ns ({c['floor_ratio']:.3f}x)  "
                         f"hostguard +{c['hostguard_added_ns']:.0f} ns ({c['hostguard_ratio']:.3f}x)  "
                         f"noise {c['noise_ns']:.0f} ns  = {multiple} of floor  "
                         f"target <= {c['target_multiple']}x  {verdict}")
        else:
            lines.append(f"  {key:18s} {c['ratio']:.3f}x no agent")
    lines.append("program run time on the hook (kernel statistics, ns per run)")
    for key, costs in sorted(result["program_ns_per_run"].items()):
        lines.append(f"  {key:22s} " + "  ".join(f"{op} {ns:.0f}" for op, ns in costs.items()))
    for peer, reason in result["unavailable"].items():
        lines.append(f"  {peer}: cannot run here: {reason}")
    return lines
