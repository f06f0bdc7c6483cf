"""Containers the kernel held because they started before the agent heard of them.

Normally Docker's "create" event puts a container's cgroup name in `pending` long before the
cgroup exists. If the agent lost that race (it was busy or stalled), the kernel tags the new cgroup
HG_POLICY_HOLD and stops the container's first program with SIGSTOP before its first instruction.
This module asks dockerd for the container's labels, puts it under its policy (or releases it when
it has no label), and judges each held exec with the same `exec_rules` map the kernel uses: allowed
or audited programs continue (SIGCONT), forbidden ones are killed.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import compiler, events
from .containers import LABEL, container_id_from_leaf
from .docker_api import DockerClient, DockerError
from .enforcement import Enforcer

__all__ = ["HOLD", "HeldContainers"]

HOLD = 0xFFFFFFFF
"""HG_POLICY_HOLD in bpf/hostguard.h."""

_MODE_AUDIT = 1


@dataclass
class _Held:
    container_id: str
    execs: list[events.ExecEvent] = field(default_factory=list)


@dataclass
class HeldContainers:
    enforcer: Enforcer
    client: DockerClient
    log: Any
    log_violation: Callable[[events.Violation], None]
    _held: dict[int, _Held] = field(default_factory=dict)      # cgroup id -> what waits on it

    def cgroup_held(self, event: events.CgroupTagged) -> None:
        """The kernel held a new runtime cgroup: resolve its container now."""
        self._held.setdefault(event.cgroup_id, _Held(container_id_from_leaf(event.name)))
        self._resolve(event.cgroup_id)

    def exec_held(self, event: events.ExecEvent) -> None:
        """A program was stopped before its first instruction in a held cgroup."""
        if self._policy_of(event.cgroup_id) != HOLD:
            self._judge(event)              # resolved meanwhile
            return
        held = self._held.setdefault(event.cgroup_id, _Held(_container_id_of(event.pid)))
        held.execs.append(event)
        self._resolve(event.cgroup_id)

    def retry(self) -> None:
        """Try again for containers dockerd could not tell us about (it was unreachable)."""
        for cgroup_id in list(self._held):
            self._resolve(cgroup_id)

    def release_all(self) -> None:
        """The agent is stopping: nothing may stay stopped once enforcement ends."""
        for held in self._held.values():
            for event in held.execs:
                _signal(event.pid, signal.SIGCONT)
        self._held.clear()

    def _resolve(self, cgroup_id: int) -> None:
        held = self._held[cgroup_id]
        if self._policy_of(cgroup_id) == HOLD:
            try:
                info = self.client.inspect(held.container_id) if held.container_id else None
            except DockerError as error:
                self.log.warning("held_container_unresolved", container_id=held.container_id,
                                 error=str(error), note="its first program stays stopped; retrying")
                return
            policy_name = info.labels.get(LABEL) if info else None
            if info is not None and policy_name is not None:
                self.enforcer.container_added(info.id, info.name, policy_name)
            else:
                self.enforcer.release_cgroup(cgroup_id)
        # (or Docker's create event, read meanwhile, has already put the cgroup under its policy)
        tagged = self.enforcer.containers.get(held.container_id)
        self.log.warning("container_held", container_id=held.container_id,
                         container_name=tagged.name if tagged else "",
                         policy=tagged.policy_name if tagged else None,
                         note="it started before the agent heard of it: its first program waits, "
                              "stopped, for this policy")
        for event in held.execs:
            self._judge(event)
        del self._held[cgroup_id]

    def _policy_of(self, cgroup_id: int) -> int | None:
        value = self.enforcer.maps["cgroups"].lookup(cgroup_id.to_bytes(8, "little"))
        return compiler.CGROUP.unpack(value)[0] if value else None

    def _judge(self, event: events.ExecEvent) -> None:
        policy_id = self._policy_of(event.cgroup_id)
        held_ms = round((time.clock_gettime_ns(time.CLOCK_BOOTTIME) - event.ktime_ns) / 1e6, 1)
        if policy_id is None or policy_id == HOLD or self._allowed(policy_id, event.path):
            _signal(event.pid, signal.SIGCONT)
            self.log.info("held_program_resumed", pid=event.pid, path=event.path, held_ms=held_ms)
            return
        settings = self.enforcer.maps["policies"].lookup(policy_id.to_bytes(4, "little"))
        audit = settings is not None and compiler.POLICY.unpack(settings)[0] == _MODE_AUDIT
        _signal(event.pid, signal.SIGCONT if audit else signal.SIGKILL)
        self.log_violation(_with(event, policy_id, "audited" if audit else "killed"))

    def _allowed(self, policy_id: int, path: str) -> bool:
        """The kernel's own question, asked of the same LPM trie (key built as lookup_path_rule does)."""
        raw = (path.encode() + b"\0")[: compiler.PATH_KEY_LEN]
        key = compiler.PATH_KEY.pack(32 + 8 * len(raw), policy_id, raw)
        return self.enforcer.maps["exec_rules"].lookup(key) is not None


def _container_id_of(pid: int) -> str:
    """The container of a process, from the leaf of its cgroup2 path ("0::/docker/<id>")."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as cgroup:
            for line in cgroup:
                if line.startswith("0::"):
                    return container_id_from_leaf(line.strip().rsplit("/", 1)[-1])
    except OSError:
        pass
    return ""


def _with(event: events.ExecEvent, policy_id: int, action: str) -> events.ExecEvent:
    fields = {name: getattr(event, name) for name in event.__dataclass_fields__}
    fields.update(policy_id=policy_id, action=action)
    return events.ExecEvent(**fields)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

