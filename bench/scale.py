"""Benchmark 5: the cost of a tagged open and connect as policies and tagged containers grow.

The verdict must not depend on how big the policy is or how many containers are tagged: a lookup in
the `cgroups` hash and one longest-prefix match in an LPM trie. This benchmark checks that with the
real sensor, loaded in this process (no agent, no Docker), as tests/test_enforcement.py does:

- the network programs are attached to a runtime parent cgroup of our own
  (<unified>/hostguard-bench-<random>), and an Enforcer keeps the maps, as the agent's does;
- one policy, "bench", holds N rules (10, 1,000, 100,000): file prefix and exact rules, and egress
  CIDRs with ports (IPv4 and some IPv6). Among them are the exact rule of the file the loop opens, the
  egress rule of the loop's loopback listener and the exec rule of the loop binary; the other rules
  are real entries of the same LPM tries, half of them next to the measured key (sibling
  directories of the opened file, neighbouring loopback hosts), where the lookup descends deepest,
  half elsewhere (vendor trees and config files, private networks, IPv6);
- M containers (1, 100, 1,000) are announced with `container_added` under 64-hex-digit ids, and their
  cgroups are created afterwards, so the kernel tags them on mkdir, as for a `docker run`;
- bench/loops runs in the first container's cgroup (tagged) and in an untagged cgroup next to it
  (the baseline: the same hooks run, but only look the cgroup up). The added cost per operation is
  tagged minus untagged, from adjacent runs.

How the loop gets into a tagged cgroup: exec is judged in tagged cgroups, so the process moves itself
in first and then execs the loop binary, as runc init does: `sh -c 'echo $$ > cgroup.procs; exec
loops ...'`. The shell is moved in without an exec, so the kernel records it as the runtime's own
process (`runtime_exes`) and does not judge its set-up; the exec of the loop binary is judged like a
container's entrypoint, and the policy allows it with an exec rule (one of the N). From the exec on,
every open and connect of the loop is the container's own.

Controls, because a benchmark of an untagged process would look wonderfully flat: for every point,
the loop opening a file the policy does not allow must be killed (SIGKILL) and a connect to a port
the policy does not allow must fail with EPERM, each counting one violation; the measured runs must
count none (the `stats` map).

Two measures of "the verdict's cost":
- wall clock: ns per operation from inside the loop (tagged minus untagged). This is what a
  container pays, but a loopback connect costs tens of microseconds and its verdict about a hundred
  nanoseconds, so for connect this difference is noise; for open it is resolved only on a quiet host;
- the program itself (decisive): run_time_ns / run_cnt of hg_exit_openat and hg_connect4
  (BPF_ENABLE_STATS, held only during short profiling runs, since it adds two clock reads to every
  BPF program on the host), tagged and untagged. hg_exit_openat also runs for every other open on
  the host (untagged: a cgroup lookup); those runs are taken out of the tagged figure at the untagged
  cost per run (`foreign_runs` says how many there were per measured open).

Flatness is the ratio of each point's median to that of the smallest point (10 rules, 1 container);
the target is at most 1.10 for every point. Configurations alternate round by round (the order of
rule counts and container counts reverses every round), so drift affects them all alike.

Policy installs are timed: compiling each policy (once; later installs reuse the entries) and
writing it into the maps, at first and at every later switch between policy sizes. `lookup_path`
models the LPM lookup of the measured keys (nodes walked), which is what the verdict's growth with
rule count follows. The diagnostic puts the smallest policy alone and then beside the largest one
(another policy id, the same tries), alternating: the tries' size without their depth along the key.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent import cgroups, compiler, libbpf, loader
from agent.compiler import RuleSet
from agent.enforcement import Enforcer
from agent.policy import Access, EgressRule, FileRule, Mode, NetAction, Policy, PortRange

from .common import build_loops, summarize

__all__ = ["lookup_path", "make_policy", "relocate", "run", "table"]

RULES = (10, 1_000, 100_000)
CONTAINERS = (1, 100, 1_000)
QUICK_RULES = (10, 1_000)
QUICK_CONTAINERS = (1, 100)
COUNTS = {"open": 200_000, "connect": 20_000}
QUICK_COUNTS = {"open": 2_000, "connect": 200}
PROFILE_COUNTS = {"open": 50_000, "connect": 5_000}
QUICK_PROFILE_COUNTS = {"open": 1_000, "connect": 100}
ROUNDS = 5
OPS = ("open", "connect")
PROGRAMS = {"open": "hg_exit_openat", "connect": "hg_connect4"}
TARGET = 1.10                      # each point's cost at most 10% above the smallest point's
EGRESS_SHARE = 0.1                 # of the generated rules; the rest are file rules
POLICY_NAME = "bench"
ELSEWHERE_NAME = "bench-elsewhere"       # the diagnostic's second policy
LOOPBACK_PORTS = PortRange(1024, 65535)   # the loop's listener binds an ephemeral port
FORBIDDEN_PORT = 9                 # outside LOOPBACK_PORTS: the connect control
RUNTIME_PARENT_PREFIX = "hostguard-bench-"
ENTER_AND_EXEC = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
CONNECT_PROBE = """\
import errno, os, socket, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
sock = socket.socket()
try:
    sock.connect(("127.0.0.1", int(sys.argv[2])))
except OSError as error:
    print(errno.errorcode.get(error.errno, error.errno))
else:
    print("connected")
"""
"""Moves itself into a cgroup, then connects: the egress programs judge the connect."""

_STAT_EVENTS_LOST, _STAT_VIOLATIONS = 0, 1          # enum hg_stat


class ScaleError(RuntimeError):
    """The set-up is not what the benchmark claims to measure (e.g. the loop was not tagged)."""


# --- the policies ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Targets:
    """What the loops touch: the file they open, the binary the policy must let run."""

    open_path: Path
    forbidden_path: Path
    loops: Path


def make_policy(rules: int, targets: Targets) -> Policy:
    """A policy of exactly `rules` rules (exec + file + egress entries of the policy file), no baseline.

    Three rules allow what the loops do: exec of the loop binary, an exact rule for the opened file,
    127.0.0.1/32 on the ports the listener may get. The others are generated: 10% egress, 90% files,
    each half in the measured key's neighbourhood and half elsewhere.
    """
    if rules < 3:
        raise ValueError("a policy needs at least the 3 rules the loops use")
    generated = rules - 3
    egress_count = round(generated * EGRESS_SHARE)
    file_count = generated - egress_count
    files: list[FileRule] = [FileRule(str(targets.open_path), Access.READ)]
    siblings = targets.open_path.parent.parent          # .../srv: svc-000000/payload.json is measured
    for i in range(file_count):
        number = i // 2 + 1
        if i % 4 == 0:       # a sibling service's tree
            files.append(FileRule(f"{siblings}/svc-{number:06d}/", Access.READ))
        elif i % 4 == 1:     # one file of a sibling service, writable
            files.append(FileRule(f"{siblings}/svc-{number:06d}/state.json", Access.READ | Access.WRITE))
        elif i % 4 == 2:     # a vendor tree
            files.append(FileRule(f"/opt/vendor/pkg-{number:06d}/lib/", Access.READ))
        else:                # a config file
            files.append(FileRule(f"/etc/app/conf.d/{number:06d}.conf", Access.READ))
    egress: list[EgressRule] = [
        EgressRule(ipaddress.ip_network("127.0.0.1/32"), None, (LOOPBACK_PORTS,))]
    for i in range(egress_count):
        number = i // 2 + 2
        if i % 10 == 9:      # IPv6 networks (their own trie)
            network = ipaddress.ip_network(f"2001:db8:{number % 65536:x}::/48")
            egress.append(EgressRule(network, None, (PortRange(443, 443),)))
        elif i % 2 == 0:     # neighbouring loopback hosts (sidecars): next to the measured key
            network = ipaddress.ip_network(f"127.0.{number // 256 % 256}.{number % 256}/32")
            egress.append(EgressRule(network, None, (PortRange(8080, 8080),)))
        else:                # private service networks, a few ports each
            network = ipaddress.ip_network(f"10.{number // 256 % 256}.{number % 256}.0/24")
            egress.append(EgressRule(network, None, (PortRange(443, 443), PortRange(8000, 8100))))
    policy = Policy(name=POLICY_NAME, mode=Mode.ENFORCE, baseline=False, exec_allow=(str(targets.loops),),
                    file_allow=tuple(files), on_violation=NetAction.DENY, egress=tuple(egress),
                    source=f"<bench scale: {rules} rules>")
    assert 1 + len(policy.file_allow) + len(policy.egress) == rules
    return policy


def relocate(rules: RuleSet, policy_id: int) -> RuleSet:
    """rules as compiled for another policy id: every rule key starts (u32 prefix length, u32 policy id)."""
    new_id = policy_id.to_bytes(4, "little")

    def moved(entries: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        return {key[:4] + new_id + key[8:]: value for key, value in entries.items()}

    return RuleSet(rules.policy, moved(rules.exec_rules), moved(rules.file_rules), moved(rules.net4_rules),
                   moved(rules.net6_rules))


@dataclass
class _BenchEnforcer(Enforcer):
    """The agent's Enforcer, compiling each policy once and timing it.

    The benchmark puts the same few policies back in force round after round, sometimes under a new
    policy id; compiling 100,000 rules takes long enough (see `installs` in the result) that doing it
    every time would make the run mostly compilation. A policy compiled under one id is relocated to
    another (relocate(), checked against the compiler by the tests). Map writes are not cached: every
    switch rewrites the maps.
    """

    compile_seconds: dict[int, float] = field(default_factory=dict)
    relocate_seconds: float = 0.0
    _compiled: dict[int, tuple[Policy, RuleSet]] = field(default_factory=dict)
    _relocated: dict[tuple[int, int], RuleSet] = field(default_factory=dict)

    def _compile(self, name: str, policy: Policy | None) -> tuple[RuleSet, bool]:
        if policy is None:
            return super()._compile(name, policy)
        policy_id = self._slot(name).policy_id
        if id(policy) not in self._compiled:
            started = time.perf_counter()
            rules, _known = super()._compile(name, policy)
            self.compile_seconds[id(policy)] = time.perf_counter() - started
            self._compiled[id(policy)] = (policy, rules)
            self._relocated[(id(policy), policy_id)] = rules
        if (id(policy), policy_id) not in self._relocated:
            started = time.perf_counter()
            self._relocated[(id(policy), policy_id)] = relocate(self._compiled[id(policy)][1], policy_id)
            self.relocate_seconds += time.perf_counter() - started
        return self._relocated[(id(policy), policy_id)], True

    def policy_id(self, name: str) -> int:
        """The id name is installed under."""
        return next(i for i in range(1, 1 << 16) if self.policy_name(i) == name)

    def install(self, policies: dict[str, Policy]) -> dict[str, float]:
        """set_policies, timed: compile_s compiling, write_s writing the maps (relocations left out)."""
        compiled_before, relocated_before = sum(self.compile_seconds.values()), self.relocate_seconds
        started = time.perf_counter()
        self.set_policies(policies)
        seconds = time.perf_counter() - started
        compile_s = sum(self.compile_seconds.values()) - compiled_before
        return {"compile_s": compile_s, "write_s": seconds - compile_s - (self.relocate_seconds - relocated_before)}

    def rules_of(self, name: str, policy: Policy) -> RuleSet:
        """The entries policy is in force with under name (compiled earlier: no recompilation)."""
        return self._relocated[(id(policy), self.policy_id(name))]


# --- cgroups and processes ------------------------------------------------------------------------
def _remove_cgroup_tree(directory: Path) -> None:
    """rmdir a cgroup and everything below it, deepest first (retrying while exited tasks drain)."""
    if not directory.is_dir():
        return
    for current, _dirs, _files in os.walk(directory, topdown=False):
        for attempt in range(50):
            try:
                os.rmdir(current)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != errno.EBUSY or attempt == 49:
                    raise
                time.sleep(0.02)


def _run_in(cgroup: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run argv with its process moved into cgroup before the exec (see the module docstring)."""
    return subprocess.run(["/bin/sh", "-c", ENTER_AND_EXEC, "sh", str(cgroup), *argv],
                          capture_output=True, text=True, timeout=timeout)


def _loops(cgroup: Path, loops: Path, op: str, count: int, open_path: Path) -> float:
    """ns per operation of the loop binary in cgroup."""
    args = ["open", str(open_path)] if op == "open" else [op]
    done = _run_in(cgroup, str(loops), *args, str(count))
    if done.returncode != 0:
        raise ScaleError(f"loops {' '.join(args)} {count} in {cgroup.name} failed ({done.returncode}): "
                         f"{done.stderr.strip()}")
    return float(json.loads(done.stdout)["ns_per_op"])


class _Stats:
    """The sensor's per-CPU counters (`stats`), summed over CPUs."""

    def __init__(self, sensor: loader.Sensor) -> None:
        self._map = sensor.maps["stats"]

    def __getitem__(self, index: int) -> int:
        values = self._map.lookup_percpu(index.to_bytes(4, "little")) or []
        return sum(int.from_bytes(value[:8], "little") for value in values)

    @property
    def violations(self) -> int:
        return self[_STAT_VIOLATIONS]


# --- BPF program statistics -----------------------------------------------------------------------
class _ProgramStats:
    """run_time_ns and run_cnt of this process's BPF programs, by name (BPF_ENABLE_STATS)."""

    def __init__(self, program_fds: set[int]) -> None:
        self._fds = self._names(program_fds)
        self.problem = "" if self._fds else "program statistics unavailable (bpftool missing or failed)"

    @staticmethod
    def program_fds() -> set[int]:
        """This process's BPF program fds (the sensor's are the ones its load() added)."""
        fds = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-prog":
                    fds.add(int(fd))
        return fds

    @staticmethod
    def _names(program_fds: set[int]) -> dict[str, int]:
        """Program name -> fd: fdinfo names each fd's program id, bpftool names the ids."""
        ids: dict[int, int] = {}
        for fd in program_fds:
            try:
                with open(f"/proc/self/fdinfo/{fd}", encoding="utf-8") as info:
                    fields = dict(line.split(":", 1) for line in info if ":" in line)
                ids[int(fields["prog_id"])] = fd
            except (OSError, KeyError, ValueError):
                continue
        try:
            done = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                  timeout=60, check=True)
            listing = json.loads(done.stdout)
        except (OSError, subprocess.SubprocessError, ValueError):
            return {}
        return {prog["name"]: ids[prog["id"]] for prog in listing if prog.get("id") in ids}

    def _read(self, name: str) -> tuple[int, int]:
        with open(f"/proc/self/fdinfo/{self._fds[name]}", encoding="utf-8") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
        return int(fields["run_time_ns"]), int(fields["run_cnt"])

    def measure(self, name: str, action: Callable[[], object]) -> tuple[int, int]:
        """(run_time_ns, run_cnt) program `name` added while action() ran with statistics on."""
        with libbpf.run_time_stats():
            time_before, count_before = self._read(name)
            action()
            time_after, count_after = self._read(name)
        return time_after - time_before, count_after - count_before


# --- the benchmark --------------------------------------------------------------------------------
@dataclass
class _Bench:
    """The sensor, its runtime parent, the containers and the measurements of one run."""

    sensor: loader.Sensor
    parent: Path
    enforcer: _BenchEnforcer
    targets: Targets
    untagged: Path
    program_fds: set[int]
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    containers: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def measured(self) -> Path:
        return self.containers[0][1]

    def set_containers(self, count: int) -> float:
        """Grow or shrink the tagged containers to count; seconds taken."""
        started = time.perf_counter()
        while len(self.containers) > count:
            container_id, directory = self.containers.pop()
            _remove_cgroup_tree(directory)
            self.enforcer.container_removed(container_id)
        while len(self.containers) < count:
            container_id = secrets.token_hex(32)
            self.enforcer.container_added(container_id, f"bench-{len(self.containers)}", POLICY_NAME)
            directory = self.parent / container_id
            directory.mkdir()                    # the kernel tags it now, from `pending`
            self.containers.append((container_id, directory))
        self.check_tagged()
        return time.perf_counter() - started

    def check_tagged(self) -> None:
        """Every container cgroup is in `cgroups` under the bench policy; the baseline cgroup is not."""
        tag = compiler.CGROUP.pack(self.enforcer.policy_id(POLICY_NAME), 0)
        cgroups_map = self.sensor.maps["cgroups"]
        for _container_id, directory in self.containers:
            if cgroups_map.lookup(cgroups.cgroup_id(directory).to_bytes(8, "little")) != tag:
                raise ScaleError(f"{directory} was not tagged by the kernel on mkdir")
        if cgroups_map.lookup(cgroups.cgroup_id(self.untagged).to_bytes(8, "little")) is not None:
            raise ScaleError(f"the baseline cgroup {self.untagged} is tagged")

    def controls(self) -> dict[str, Any]:
        """A forbidden open is killed and a forbidden connect denied in the measured cgroup."""
        stats = _Stats(self.sensor)
        before = stats.violations
        done = _run_in(self.measured, str(self.targets.loops), "open", str(self.targets.forbidden_path), "1",
                       timeout=60)
        killed = done.returncode == -9
        after_open = stats.violations
        probe = subprocess.run([sys.executable, "-c", CONNECT_PROBE, str(self.measured), str(FORBIDDEN_PORT)],
                               capture_output=True, text=True, timeout=60)
        denied = probe.stdout.strip()
        after_connect = stats.violations
        result = {"forbidden_open": "killed" if killed else f"exit {done.returncode}",
                  "forbidden_connect": denied or f"exit {probe.returncode}: {probe.stderr.strip()[-200:]}",
                  "violations": after_connect - before}
        if not (killed and after_open - before == 1 and denied == "EPERM" and after_connect - after_open == 1):
            raise ScaleError(f"the measured cgroup is not under the policy: {result}")
        return result

    def measure(self, op: str, count: int, tagged_first: bool) -> tuple[float, float]:
        """(untagged, tagged) ns per operation from adjacent runs; no violation may be counted."""
        stats = _Stats(self.sensor)
        results = {}
        for tagged in ((True, False) if tagged_first else (False, True)):
            cgroup = self.measured if tagged else self.untagged
            before = stats.violations
            results[tagged] = _loops(cgroup, self.targets.loops, op, count, self.targets.open_path)
            if stats.violations != before:
                raise ScaleError(f"{op} in {'tagged' if tagged else 'untagged'} cgroup counted "
                                 f"{stats.violations - before} violations: the policy does not allow the loop")
        return results[False], results[True]

    def profile(self, programs: _ProgramStats, op: str, count: int) -> dict[str, float]:
        """ns per run of the op's program: untagged, tagged (the verdict), and the share of foreign runs.

        hg_exit_openat runs for every open on the host: other processes' opens during the window are
        untagged runs. They are taken out of the tagged figure at the untagged cost per run, measured
        right after; the untagged figure is all untagged runs anyway.
        """
        def loop(cgroup: Path) -> Callable[[], object]:
            return lambda: _loops(cgroup, self.targets.loops, op, count, self.targets.open_path)

        tagged_ns, tagged_runs = programs.measure(PROGRAMS[op], loop(self.measured))
        untagged_ns, untagged_runs = programs.measure(PROGRAMS[op], loop(self.untagged))
        if min(tagged_runs, untagged_runs) < count:
            raise ScaleError(f"{PROGRAMS[op]} ran {min(tagged_runs, untagged_runs)} times for {count} {op}s")
        untagged = untagged_ns / untagged_runs
        foreign = tagged_runs - count
        return {"tagged": (tagged_ns - foreign * untagged) / count, "untagged": untagged,
                "foreign": foreign / count}


def _entries(rules: RuleSet) -> dict[str, int]:
    return {name: len(getattr(rules, name)) for name in ("exec_rules", "file_rules", "net4_rules", "net6_rules")}


def lookup_path(entries: Iterable[bytes], key: bytes) -> dict[str, int]:
    """What an LPM trie lookup of key walks through, modelled on kernel/bpf/lpm_trie.c.

    The trie is a binary trie compressed to its branch points: a node for every entry and one for
    every bit where entries part ways. A lookup descends from the root through every node whose
    prefix is a prefix of the key and compares, at each, the key with the node's prefix from the
    first bit on (64 bits at a time). `nodes` counts those nodes, `words` the 64-bit comparisons:
    the cost grows with how many entries share a prefix with the key, not with the trie's size.
    Keys are the maps' bytes: a u32 prefix length, then the data.
    """
    key_len = int.from_bytes(key[:4], "little")
    key_data = int.from_bytes(key[4:], "big")
    bits = 8 * (len(key) - 4)
    on_path: set[int] = set()        # prefix lengths of entries the key falls under
    parting: set[int] = set()        # bits where an entry leaves the key's path
    deepest = -1
    for entry in entries:
        length = int.from_bytes(entry[:4], "little")
        common = min(bits - (int.from_bytes(entry[4:], "big") ^ key_data).bit_length(), length, key_len)
        if common == length:
            on_path.add(length)
        else:
            parting.add(common)
        deepest = max(deepest, common)
    nodes = on_path | {bit for bit in parting if bit < deepest}
    return {"nodes": len(nodes), "words": sum(-(-bit // 64) for bit in nodes)}


def _measured_keys(targets: Targets, policy_id: int) -> dict[str, bytes]:
    """The keys the programs look up for the measured open and connect."""
    return {"open": compiler.path_key(policy_id, str(targets.open_path)),
            "connect": compiler.NET4_KEY.pack(32 + 32, policy_id, bytes([127, 0, 0, 1]))}


def _trie_entries(rule_sets: Iterable[RuleSet]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"open": [], "connect": []}
    for rules in rule_sets:
        out["open"] += rules.file_rules
        out["connect"] += rules.net4_rules
    return out


def _prepare_targets(workdir: Path) -> Targets:
    root = workdir.resolve()
    measured = root / "srv" / "svc-000000" / "payload.json"
    measured.parent.mkdir(parents=True, exist_ok=True)
    measured.write_text('{"hello": "world"}\n')
    forbidden = root / "srv" / "secret.key"
    forbidden.write_text("not for the container\n")
    return Targets(measured, forbidden, build_loops().resolve())


@contextlib.contextmanager
def _bench(workdir: Path, object_dir: Path) -> Iterator[_Bench]:
    """Sensor loaded, network programs on a runtime parent of our own; everything undone at the end."""
    targets = _prepare_targets(workdir)
    unified = cgroups.find_unified_mount()
    parent = unified / f"{RUNTIME_PARENT_PREFIX}{secrets.token_hex(6)}"
    sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
    parent.mkdir()
    try:
        others = _ProgramStats.program_fds()
        sensor.load()
        ours = _ProgramStats.program_fds() - others
        sensor.attach_cgroup(parent)
        untagged = parent / "untagged"
        untagged.mkdir()
        reports: list[tuple[str, dict[str, Any]]] = []
        enforcer = _BenchEnforcer(sensor.maps, unified, f"/{parent.name}",
                                  lambda event, **keys: reports.append((event, keys)))
        yield _Bench(sensor, parent, enforcer, targets, untagged, ours, reports)
    finally:
        try:
            _remove_cgroup_tree(parent)
        finally:
            sensor.close()


def _alternate(values: tuple[int, ...], round_index: int) -> tuple[int, ...]:
    return values if round_index % 2 == 0 else tuple(reversed(values))


def _measure_point(bench: _Bench, programs: _ProgramStats, entry: dict[str, dict[str, list[float]]],
                   counts: dict[str, int], profile_counts: dict[str, int], round_index: int) -> None:
    """One round of one point: for each op an adjacent untagged/tagged pair, then its programs' cost."""
    for op_index, op in enumerate(OPS):
        samples = entry.setdefault(op, {})
        untagged, tagged = bench.measure(op, counts[op], (round_index + op_index) % 2 == 0)
        samples.setdefault("untagged", []).append(untagged)
        samples.setdefault("tagged", []).append(tagged)
        samples.setdefault("added", []).append(tagged - untagged)
        if not programs.problem:
            ns = bench.profile(programs, op, profile_counts[op])
            samples.setdefault("verdict", []).append(ns["tagged"])
            samples.setdefault("untagged_program", []).append(ns["untagged"])
            samples.setdefault("foreign_runs", []).append(ns["foreign"])


def _summaries(entry: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {op: {name: summarize(values) for name, values in samples.items()} for op, samples in entry.items()}


def run(workdir: Path, quick: bool = False, rounds: int = ROUNDS,
        object_dir: Path | None = None) -> dict[str, Any]:
    """Alternate every (rules, containers) point `rounds` times; ns per op, tagged and untagged.

    Then, as a diagnostic, the smallest policy alone and next to the largest one (installed under
    another policy id, in the same tries): whether the verdict depends on the tries' size or on the
    entries along the measured key.
    """
    rule_points = QUICK_RULES if quick else RULES
    container_points = QUICK_CONTAINERS if quick else CONTAINERS
    counts = QUICK_COUNTS if quick else COUNTS
    profile_counts = QUICK_PROFILE_COUNTS if quick else PROFILE_COUNTS
    rounds = 1 if quick else rounds
    workdir.mkdir(parents=True, exist_ok=True)

    samples: dict[tuple[int, int], dict[str, dict[str, list[float]]]] = {}
    installs: dict[int, dict[str, Any]] = {}
    switches: dict[int, list[float]] = {}
    container_seconds: dict[int, list[float]] = {}
    controls: dict[str, Any] = {}
    diagnostic: dict[str, Any] = {}
    with _bench(workdir, object_dir or loader.default_object_dir()) as bench:
        programs = _ProgramStats(bench.program_fds)
        policies = {rules: make_policy(rules, bench.targets) for rules in rule_points}
        current = None
        for round_index in range(rounds):
            for rules in _alternate(rule_points, round_index):
                if rules != current:
                    timing = bench.enforcer.install({POLICY_NAME: policies[rules]})
                    current = rules
                    if rules not in installs:
                        installs[rules] = {"compile_s": timing["compile_s"], "first_write_s": timing["write_s"]}
                    else:
                        switches.setdefault(rules, []).append(timing["write_s"])
                for containers in _alternate(container_points, round_index):
                    container_seconds.setdefault(containers, []).append(bench.set_containers(containers))
                    if f"{rules}/{containers}" not in controls:
                        controls[f"{rules}/{containers}"] = bench.controls()
                    _measure_point(bench, programs, samples.setdefault((rules, containers), {}), counts,
                                   profile_counts, round_index)

        policy_id = bench.enforcer.policy_id(POLICY_NAME)
        keys = _measured_keys(bench.targets, policy_id)
        for rules, policy in policies.items():
            compiled = bench.enforcer.rules_of(POLICY_NAME, policy)
            started = time.perf_counter()
            compiler.compile_policy(replace(policy, egress=()), policy_id)
            files_s = time.perf_counter() - started
            entries = _trie_entries([compiled])
            installs[rules].update({
                "entries": _entries(compiled), "file_rules": len(policy.file_allow),
                "egress_rules": len(policy.egress), "compile_files_s": files_s,
                "compile_egress_s": max(0.0, installs[rules]["compile_s"] - files_s),
                "switch_s": summarize(switches[rules]) if switches.get(rules) else None,
                "lookup_path": {op: lookup_path(entries[op], keys[op]) for op in OPS},
            })

        smallest, largest = rule_points[0], rule_points[-1]
        bench.set_containers(1)
        sides: dict[str, dict[str, dict[str, list[float]]]] = {"alone": {}, "beside": {}}
        configs = {"alone": {POLICY_NAME: policies[smallest]},
                   "beside": {POLICY_NAME: policies[smallest], ELSEWHERE_NAME: policies[largest]}}
        beside_writes: list[float] = []
        for round_index in range(rounds):
            for side in ("alone", "beside") if round_index % 2 == 0 else ("beside", "alone"):
                timing = bench.enforcer.install(configs[side])
                if side == "beside":
                    beside_writes.append(timing["write_s"])
                    bench.controls()
                _measure_point(bench, programs, sides[side], counts, profile_counts, round_index)
        if ELSEWHERE_NAME not in bench.enforcer.policy_names:
            bench.enforcer.install(configs["beside"])
        entries = _trie_entries([bench.enforcer.rules_of(POLICY_NAME, policies[smallest]),
                                 bench.enforcer.rules_of(ELSEWHERE_NAME, policies[largest])])
        diagnostic = {
            "policy_rules": smallest, "elsewhere_rules": largest, "elsewhere_write_s": summarize(beside_writes),
            "alone": _summaries(sides["alone"]), "beside": _summaries(sides["beside"]),
            "lookup_path": {op: lookup_path(entries[op], keys[op]) for op in OPS},
        }
        events_lost = _Stats(bench.sensor)[_STAT_EVENTS_LOST]
        reports = [event for event, _keys in bench.reports]

    points = [{"op": op, "rules": rules, "containers": containers, **measures}
              for (rules, containers), entry in sorted(samples.items())
              for op, measures in _summaries(entry).items()]
    points.sort(key=lambda p: (OPS.index(p["op"]), p["rules"], p["containers"]))
    flatness = _flatness(points)
    return {
        "rules": list(rule_points), "containers": list(container_points), "counts": counts,
        "profile_counts": profile_counts, "rounds": rounds, "target_ratio": TARGET,
        "points": points, "flatness": flatness, "met": all(f["met"] for f in flatness.values()),
        "installs": {str(k): v for k, v in installs.items()},
        "container_setup_s": {str(k): summarize(v) for k, v in container_seconds.items()},
        "diagnostic": diagnostic, "controls": controls, "program_stats": programs.problem or "ok",
        "reports": reports, "events_lost": events_lost,
    }


def _flatness(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Per op: each point's median over the smallest point's, for the verdict and the wall clock.

    The verdict (the program's own time) decides. The wall clock's added cost decides too when it
    can: with 3 rounds or more, when its typical spread (median over points of max - min) is smaller
    than the cost itself; otherwise its "met" is None (for connect: microseconds of noise around a
    verdict of about a hundred nanoseconds).
    """
    out: dict[str, Any] = {}
    for op in OPS:
        rows = [p for p in points if p["op"] == op]
        if not rows:
            continue
        reference = min(rows, key=lambda p: (p["rules"], p["containers"]))
        measures: dict[str, Any] = {}
        for measure in ("verdict", "added"):
            if measure not in reference:
                continue
            base = reference[measure]["median"]
            ratios = {f"{p['rules']}/{p['containers']}": (p[measure]["median"] / base if base > 0 else None)
                      for p in rows}
            worst = max(ratios.values()) if base > 0 else None
            axes = {  # the two axes: rules at the fewest containers, containers at the fewest rules
                "rules": max((ratios[f"{p['rules']}/{p['containers']}"] for p in rows
                              if p["containers"] == reference["containers"]), default=None) if base > 0 else None,
                "containers": max((ratios[f"{p['rules']}/{p['containers']}"] for p in rows
                                   if p["rules"] == reference["rules"]), default=None) if base > 0 else None,
            }
            spread = statistics.median(p[measure]["max"] - p[measure]["min"] for p in rows)
            resolved = base > 0 and (measure == "verdict" or (reference[measure]["n"] >= 3 and spread < base))
            measures[measure] = {"reference_ns": base, "ratios": ratios, "worst": worst, "axes": axes,
                                 "spread_ns": spread, "resolved": resolved,
                                 "met": (worst is not None and worst <= TARGET) if resolved else None}
        decided = [m["met"] for m in measures.values() if m["met"] is not None]
        out[op] = {**measures, "met": bool(decided) and all(decided)}
    return out


def _ns(summary: dict[str, float] | None, sign: bool = False) -> str:
    if not summary:
        return "n/a"
    fmt = "{:+.0f}" if sign else "{:.0f}"
    return f"{fmt.format(summary['median'])} [{fmt.format(summary['min'])}..{fmt.format(summary['max'])}]"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def table(result: dict[str, Any]) -> list[str]:
    """The points, the flatness verdicts, the installs and the diagnostic, as lines for the report."""
    target = result["target_ratio"]
    lines = [f"scale: tagged open/connect vs policy rules and tagged containers (ns, median [min..max] over "
             f"{result['rounds']} rounds; ratio: vs 10 rules / 1 container, target <= {target:.2f})",
             f"  {'op':8s}{'rules':>8s}{'ctrs':>6s}  {'untagged ns/op':>19s}  {'tagged ns/op':>19s}  "
             f"{'added ns/op':>20s} {'ratio':>6s}  {'verdict ns/run':>15s} {'ratio':>6s}"]
    flat = result["flatness"]
    for p in result["points"]:
        point = f"{p['rules']}/{p['containers']}"
        op_flat = flat.get(p["op"], {})
        added_resolved = op_flat.get("added", {}).get("resolved", False)
        lines.append(f"  {p['op']:8s}{p['rules']:>8d}{p['containers']:>6d}  {_ns(p['untagged']):>19s}  "
                     f"{_ns(p['tagged']):>19s}  {_ns(p['added'], sign=True):>20s} "
                     f"{_ratio(op_flat.get('added', {}).get('ratios', {}).get(point)) if added_resolved else '-':>6s}  "
                     f"{_ns(p.get('verdict')):>15s} "
                     f"{_ratio(op_flat.get('verdict', {}).get('ratios', {}).get(point)):>6s}")
    for op, f in flat.items():
        parts = []
        if "verdict" in f:
            v = f["verdict"]
            parts.append(f"verdict (program run time) worst {_ratio(v['worst'])}x of {v['reference_ns']:.0f} ns "
                         f"(rules axis {_ratio(v['axes']['rules'])}x, containers axis "
                         f"{_ratio(v['axes']['containers'])}x)")
        if "added" in f:
            a = f["added"]
            if result["rounds"] < 3:
                parts.append("wall clock not judged (fewer than 3 rounds)")
            elif a["resolved"]:
                parts.append(f"wall clock added worst {_ratio(a['worst'])}x of {a['reference_ns']:.0f} ns "
                             f"(spread {a['spread_ns']:.0f} ns)")
            else:
                parts.append(f"wall clock cannot resolve it (spread {a['spread_ns']:.0f} ns vs "
                             f"{a['reference_ns']:.0f} ns added)")
        lines.append(f"  flatness {op:8s} {'; '.join(parts)}: {'met' if f['met'] else 'MISSED'}")
    lines.append(f"  target (flat within {100 * (target - 1):.0f}% from the smallest to the largest point): "
                 f"{'met' if result['met'] else 'MISSED'}")
    for rules, install in result["installs"].items():
        entries, switch, path = install["entries"], install["switch_s"], install["lookup_path"]
        lines.append(f"  policy of {int(rules):,d} rules ({install['file_rules']} file, {install['egress_rules']} "
                     f"egress, 1 exec; {entries['file_rules']} file / {entries['net4_rules']} net4 / "
                     f"{entries['net6_rules']} net6 entries): compile {install['compile_s']:.3f} s (egress part "
                     f"{install['compile_egress_s']:.3f} s), first write {install['first_write_s']:.3f} s"
                     + (f", later switches {switch['median']:.3f} s [{switch['min']:.3f}..{switch['max']:.3f}]"
                        if switch else "")
                     + f"; lookup walks {path['open']['nodes']} file / {path['connect']['nodes']} net4 trie nodes")
    untagged = {op: [p["untagged_program"]["median"] for p in result["points"] if p["op"] == op
                     and "untagged_program" in p] for op in OPS}
    if all(untagged.values()):
        foreign = [p["foreign_runs"]["median"] for p in result["points"] if p["op"] == "open"]
        lines.append("  untagged program ns/run (the cgroup lookup only): " + ", ".join(
            f"{op} {min(v):.0f}..{max(v):.0f}" for op, v in untagged.items())
            + f"; other processes' opens per measured open, taken out: {statistics.median(foreign):.2f}")
    d = result["diagnostic"]
    if d:
        cells = []
        for op in OPS:
            alone, beside = d["alone"][op].get("verdict"), d["beside"][op].get("verdict")
            if alone and beside:
                cells.append(f"{op} {alone['median']:.0f} -> {beside['median']:.0f} ns "
                             f"({beside['median'] / alone['median']:.2f}x, lookup walks "
                             f"{d['lookup_path'][op]['nodes']} nodes)")
        lines.append(f"  size vs depth: the {d['policy_rules']}-rule policy's verdict alone -> with the "
                     f"{d['elsewhere_rules']:,d}-rule policy in the same tries under another id "
                     f"(written in {d['elsewhere_write_s']['median']:.3f} s): " + "; ".join(cells))
    if result["program_stats"] != "ok":
        lines.append(f"  {result['program_stats']}")
    return lines
