"""The one writer of hostguard's policy maps.

Container discovery only says "container X is under policy name Y" (or gone); policy loading only
says "these are the policies now". This module turns both into map entries:

- every policy name in use gets a stable policy id; its rules are compiled and written under that
  id, and a reload rewrites them in place (new and changed entries first, then removals), so a
  container never sees an empty policy;
- a name that no policy file defines compiles to the fail-closed policy (baseline only, enforced)
  until a file defines it;
- a container is announced in `pending` by its cgroup leaf names before it starts (the kernel tags
  its cgroup the moment it is created) and, if its cgroup already exists, tagged directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups, compiler
from .compiler import RuleSet
from .containers import cgroup_leaf_names
from .libbpf import BpfMap
from .policy import Policy

__all__ = ["Enforcer", "Tagged"]

RULE_MAPS = ("exec_rules", "file_rules", "net4_rules", "net6_rules")
DIRECT_PREFIX = "cgroup:"
"""Container ids of cgroups tagged directly (--cgroup DIR=POLICY) are "cgroup:<dir>"."""
_RUNTIME_PARENT_OWNED, _RUNTIME_PARENT_SHARED = 1, 2   # enum hg_runtime_parent

Reporter = Callable[..., None]
"""Called as report(event, **keys) for things an operator must hear about (e.g. unknown policy)."""


@dataclass(frozen=True, slots=True)
class Tagged:
    """A container the enforcer has put under a policy."""

    container_id: str
    name: str
    policy_name: str


@dataclass
class _PolicySlot:
    policy_id: int
    rules: RuleSet | None = None
    known: bool = False           # a policy file defines it (else: fail-closed)


@dataclass
class Enforcer:
    """Keeps the kernel maps equal to (policies, containers); thread-safe."""

    maps: Mapping[str, BpfMap]
    cgroup_root: Path             # the unified hierarchy's mount point
    runtime_parent: str | None    # the container runtime's cgroup parent, e.g. "/docker"; None: no runtime
    report: Reporter
    hosts: compiler.HostAddresses = field(default_factory=dict)
    _policies: dict[str, Policy] = field(default_factory=dict)
    _slots: dict[str, _PolicySlot] = field(default_factory=dict)
    _containers: dict[str, Tagged] = field(default_factory=dict)
    _next_id: int = 1
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- policies -------------------------------------------------------------------------------
    def set_policies(self, policies: Mapping[str, Policy]) -> None:
        """Put exactly these policies in force; containers keep their names, rules change in place.

        Raises compiler.CompileError before touching any map when a policy cannot be expressed.
        """
        with self._lock:
            staged = {name: self._compile(name, policies.get(name)) for name in self._names(policies)}
            self._policies = dict(policies)
            for name, (rules, known) in staged.items():
                self._install(name, rules, known)
            for name in [n for n in self._slots if n not in staged]:
                self._uninstall(name)

    def set_hosts(self, hosts: compiler.HostAddresses) -> None:
        """New addresses for policy host names: recompile the policies that use hosts."""
        with self._lock:
            self.hosts = dict(hosts)
            for name, slot in self._slots.items():
                if slot.known and any(rule.host for rule in self._policies[name].egress):
                    rules, known = self._compile(name, self._policies[name])
                    self._install(name, rules, known)

    @property
    def policy_names(self) -> list[str]:
        with self._lock:
            return sorted(self._policies)

    def policy(self, name: str) -> Policy | None:
        """The policy file's content in force under name (None: unknown name, failing closed)."""
        with self._lock:
            return self._policies.get(name)

    def policy_name(self, policy_id: int) -> str | None:
        with self._lock:
            for name, slot in self._slots.items():
                if slot.policy_id == policy_id:
                    return name
        return None

    def _names(self, policies: Mapping[str, Policy]) -> set[str]:
        return set(policies) | {tagged.policy_name for tagged in self._containers.values()}

    def _compile(self, name: str, policy: Policy | None) -> tuple[RuleSet, bool]:
        slot = self._slot(name)
        known = policy is not None
        return compiler.compile_policy(policy or compiler.fail_closed_policy(name), slot.policy_id,
                                       self.hosts), known

    def _slot(self, name: str) -> _PolicySlot:
        slot = self._slots.get(name)
        if slot is None:
            slot = _PolicySlot(self._next_id)
            self._next_id += 1
            self._slots[name] = slot
        return slot

    def _install(self, name: str, rules: RuleSet, known: bool) -> None:
        slot = self._slot(name)
        old = slot.rules
        policy_key = compiler.RULE_VALUE.pack(slot.policy_id)
        for map_name in RULE_MAPS:
            bpf_map = self.maps[map_name]
            new_entries = getattr(rules, map_name)
            old_entries = getattr(old, map_name) if old else {}
            for key, value in new_entries.items():
                if old_entries.get(key) != value:
                    bpf_map.update(key, value)
        self.maps["policies"].update(policy_key, rules.policy)
        if old:
            for map_name in RULE_MAPS:
                new_entries = getattr(rules, map_name)
                for key in getattr(old, map_name):
                    if key not in new_entries:
                        self.maps[map_name].delete(key)
        slot.rules = rules
        slot.known = known

    def _uninstall(self, name: str) -> None:
        slot = self._slots.pop(name)
        if slot.rules:
            for map_name in RULE_MAPS:
                for key in getattr(slot.rules, map_name):
                    self.maps[map_name].delete(key)
        self.maps["policies"].delete(compiler.RULE_VALUE.pack(slot.policy_id))

    # --- containers -----------------------------------------------------------------------------
    def container_added(self, container_id: str, name: str, policy_name: str | None) -> None:
        """Put a container under policy_name before it starts (None: untagged, left alone)."""
        with self._lock:
            previous = self._containers.get(container_id)
            if policy_name is None:
                if previous is not None:
                    self.container_removed(container_id)
                return
            self._containers[container_id] = Tagged(container_id, name, policy_name)
            value = self._ensure_policy(policy_name, container_id, name)
            for leaf in cgroup_leaf_names(container_id):
                self.maps["pending"].update(compiler.PENDING_KEY.pack(leaf.encode()), value)
            self._tag_existing_cgroups(container_id, value)
            if previous is not None and previous.policy_name != policy_name:
                self._release_if_unused(previous.policy_name)

    def tag_cgroup(self, directory: Path, policy_name: str) -> None:
        """Put a cgroup and everything below it, now and later, under policy_name: for workloads no
        container runtime announces (systemd units, CI jobs, a test harness)."""
        with self._lock:
            container_id = DIRECT_PREFIX + str(directory)
            self._containers[container_id] = Tagged(container_id, str(directory), policy_name)
            self._tag_existing_cgroups(container_id, self._ensure_policy(policy_name, container_id,
                                                                          str(directory)))

    def _ensure_policy(self, policy_name: str, container_id: str, name: str) -> bytes:
        """The `cgroups` map value for policy_name, installing its rules (or fail-closed ones) first."""
        if policy_name not in self._slots or not self._slots[policy_name].known:
            rules, known = self._compile(policy_name, self._policies.get(policy_name))
            self._install(policy_name, rules, known)
            if not known:
                self.report("unknown_policy", container_id=container_id, container_name=name,
                            policy=policy_name,
                            message="no policy file defines this name: the container gets only "
                                    "the baseline, enforced (fail closed)")
        return compiler.CGROUP.pack(self._slots[policy_name].policy_id, 0)

    def container_removed(self, container_id: str) -> None:
        """Forget a container; the kernel drops its cgroup entries when the cgroup goes away."""
        with self._lock:
            tagged = self._containers.pop(container_id, None)
            if tagged is None:
                return
            for leaf in cgroup_leaf_names(container_id):
                self.maps["pending"].delete(compiler.PENDING_KEY.pack(leaf.encode()))
            self._release_if_unused(tagged.policy_name)

    def _release_if_unused(self, policy_name: str) -> None:
        """Drop a fail-closed stand-in that no container uses any more."""
        if policy_name in self._slots and policy_name not in self._policies and not any(
                t.policy_name == policy_name for t in self._containers.values()):
            self._uninstall(policy_name)

    def watch_runtime_parent(self, directory: Path, shared: bool) -> None:
        """New container cgroups under directory that the agent has not announced are held by the
        kernel. shared: the parent also holds host services (systemd's system.slice), so only
        "docker-*" children are containers."""
        kind = _RUNTIME_PARENT_SHARED if shared else _RUNTIME_PARENT_OWNED
        self.maps["runtime_parents"].update(cgroups.cgroup_id(directory).to_bytes(8, "little"), bytes([kind]))

    def release_cgroup(self, cgroup_id: int) -> None:
        """A held cgroup turned out to be an untagged container: leave it alone from now on."""
        with self._lock:
            self.maps["cgroups"].delete(cgroup_id.to_bytes(8, "little"))

    @property
    def containers(self) -> dict[str, Tagged]:
        with self._lock:
            return dict(self._containers)

    def container_for_cgroup(self, cgroup_id: int) -> Tagged | None:
        """The tagged container whose cgroup (or a cgroup below it) has this id."""
        with self._lock:
            for tagged in self._containers.values():
                for directory in self._cgroup_dirs(tagged.container_id):
                    for cgroup in cgroups.subtree(directory):
                        try:
                            if cgroups.cgroup_id(cgroup) == cgroup_id:
                                return tagged
                        except OSError:
                            continue
        return None

    def _cgroup_dirs(self, container_id: str) -> list[Path]:
        if container_id.startswith(DIRECT_PREFIX):
            return [Path(container_id[len(DIRECT_PREFIX):])]
        if self.runtime_parent is None:
            return []
        parent = self.cgroup_root / self.runtime_parent.lstrip("/")
        return [parent / leaf for leaf in cgroup_leaf_names(container_id)]

    def _tag_existing_cgroups(self, container_id: str, value: bytes) -> None:
        """A container that already runs (adopted at start, or its create event came late)."""
        for directory in self._cgroup_dirs(container_id):
            for cgroup in cgroups.subtree(directory):
                try:
                    key = cgroups.cgroup_id(cgroup).to_bytes(8, "little")
                except OSError:
                    continue           # removed meanwhile
                self.maps["cgroups"].update(key, value)

