"""The agent's run loop: wire the sensor, policies, container discovery and the violation log.

Threads: the main thread consumes the ring buffer and does the periodic work (lost-event counters,
policy reloads, SIGHUP); the container watcher and the DNS watcher run in their own threads and only
call the enforcer, which serialises map writes. Enforcement never waits for this loop: verdicts are
taken in the kernel, so a slow log only delays lines, and a full ring buffer only loses lines (counted).
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cgroups, compiler, events, libbpf, loader
from .containers import ContainerWatcher, container_id_from_leaf
from .dns import HostWatcher, Resolver
from .docker_api import DockerClient, DockerError
from .enforcement import Enforcer
from .holds import HOLD, HeldContainers
from .policy import Mode
from .policy_dir import PolicyDirectory

__all__ = ["AgentOptions", "run_agent"]

_STAT_EVENTS_LOST, _STAT_VIOLATIONS = 0, 1
_CGROUP_CACHE_SIZE = 65536
LOCK_FILE = Path("/run/hostguard.lock")


def _take_host_lock() -> int:
    """One agent per host: two would each fail-close the other's containers."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise OSError(f"another hostguard agent is running (pid {holder or '?'}, lock {LOCK_FILE})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@dataclass(frozen=True, slots=True)
class AgentOptions:
    policies: Path
    object_dir: Path
    docker_socket: str = "/var/run/docker.sock"
    docker: bool = True
    cgroups: tuple[tuple[Path, str], ...] = ()     # --cgroup DIR=POLICY
    resolv_conf: str = "/etc/resolv.conf"
    ringbuf_bytes: int = 8 << 20


def process_uptime_ms() -> float:
    """Milliseconds since this process started (the kernel's start time, not the import's)."""
    with open("/proc/self/stat", encoding="ascii") as stat:
        start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="ascii") as uptime:
        now = float(uptime.read().split()[0])
    return max(0.0, (now - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000.0)


class _ContainerIndex:
    """cgroup id -> container id -> name, learned from the kernel's tagging events and discovery, and
    kept after the container is gone: its last violations are often read after `docker run --rm` has
    removed it. A filesystem look-up is the fallback."""

    def __init__(self, enforcer: Enforcer) -> None:
        self._enforcer = enforcer
        self._by_cgroup: OrderedDict[int, str] = OrderedDict()
        self._names: OrderedDict[str, str] = OrderedDict()

    def named(self, container_id: str, name: str) -> None:
        self._names[container_id] = name
        self._names.move_to_end(container_id)
        while len(self._names) > _CGROUP_CACHE_SIZE:
            self._names.popitem(last=False)

    def tagged(self, event: events.CgroupTagged) -> None:
        if event.inherited:
            container_id = self._by_cgroup.get(event.parent_id)
        else:
            container_id = container_id_from_leaf(event.name)
        if container_id:
            self._by_cgroup[event.cgroup_id] = container_id
            while len(self._by_cgroup) > _CGROUP_CACHE_SIZE:
                self._by_cgroup.popitem(last=False)

    def container(self, cgroup_id: int) -> tuple[str, str]:
        container_id = self._by_cgroup.get(cgroup_id)
        if container_id is None:
            found = self._enforcer.container_for_cgroup(cgroup_id)
            if found is None:
                return "", ""
            self._by_cgroup[cgroup_id] = found.container_id
            self.named(found.container_id, found.name)
            return found.container_id, found.name
        return container_id, self._names.get(container_id, "")


class Agent:
    """One running agent; run_agent() builds it, runs it, and tears it down."""

    def __init__(self, options: AgentOptions, log: Any, sink_reopen: Any) -> None:
        self.options = options
        self.log = log
        self._sink_reopen = sink_reopen
        self._stop = False
        self._hup = False
        self._lost_reported = 0
        self._decode_errors = 0
        self.sensor: loader.Sensor | None = None
        self.watcher: ContainerWatcher | None = None
        self.holds: HeldContainers | None = None
        self.hosts: HostWatcher | None = None

    # --- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._lock_fd = _take_host_lock()
        features = loader.probe_features(self.options.object_dir)
        unified = cgroups.find_unified_mount()
        client = DockerClient(self.options.docker_socket) if self.options.docker else None
        try:
            runtime_parent = client.cgroup_parent() if client else None
        except DockerError as error:
            raise OSError(f"dockerd does not answer at {self.options.docker_socket} ({error}); "
                          "start it, or run with --no-docker and tag cgroups with --cgroup") from error

        self.sensor = loader.Sensor(self.options.object_dir, ringbuf_bytes=self.options.ringbuf_bytes,
                                    lsm=features.lsm == "ok", net_signal=features.net_signal == "ok")
        self.sensor.load()
        for section in self.sensor.skipped:
            self.log.warning("hook_unavailable", hook=section, reason="tracepoint absent on this kernel")
        self.enforcer = Enforcer(self.sensor.maps, unified, runtime_parent, self._report)
        self.index = _ContainerIndex(self.enforcer)
        self._network_parents: list[Path] = []
        if client is not None and runtime_parent is not None:
            parent_dir = unified / runtime_parent.lstrip("/")
            parent_dir.mkdir(parents=True, exist_ok=True)   # dockerd creates it on first start anyway
            self._attach_network(parent_dir)
            self.enforcer.watch_runtime_parent(parent_dir, shared=runtime_parent == "/system.slice")
            self.holds = HeldContainers(self.enforcer, client, self.log, self._log_violation)
        self.ring = libbpf.RingBuffer(self.sensor.maps["events"], self._on_record)

        self.policy_dir = PolicyDirectory(self.options.policies)
        self.hosts = HostWatcher(Resolver(resolv_conf=self.options.resolv_conf), self._on_hosts, self._on_dns_error)
        self._reload_policies(initial=True)
        self.hosts.start()
        for directory, policy_name in self.options.cgroups:
            self._tag_cgroup(unified, directory, policy_name)

        if client is not None:
            self.watcher = ContainerWatcher(client, self, on_error=self._on_watch_error)
            self.watcher.start()
        self.ring.poll(0)      # cgroup events of containers adopted just now

        self.log.info(
            "agent_ready",
            policies=len(self.enforcer.policy_names),
            containers=len(self.enforcer.containers),
            containers_seen=self.watcher.count if self.watcher else 0,
            hooks=self.sensor.hooks,
            enforcement=self.sensor.enforcement,
            lsm=features.lsm,
            fentry=features.fentry,
            net_signal=features.net_signal,
            docker=runtime_parent is not None,
            network_cgroups=[str(path) for path in self._network_parents],
            startup_ms=round(process_uptime_ms(), 1),
        )

    def _attach_network(self, directory: Path) -> None:
        """Egress programs on directory, unless a cgroup above it already has them."""
        if any(directory == parent or parent in directory.parents for parent in self._network_parents):
            return
        self.sensor.attach_cgroup(directory)
        self._network_parents.append(directory)

    def _tag_cgroup(self, unified: Path, directory: Path, policy_name: str) -> None:
        """--cgroup DIR=POLICY: a workload no runtime announces, tagged with everything below it."""
        directory = directory if directory.is_absolute() and unified in directory.parents \
            else unified / str(directory).lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        self._attach_network(directory)
        self.enforcer.tag_cgroup(directory, policy_name)
        self.index.named(f"cgroup:{directory}", str(directory))
        self.log.info("cgroup_tagged", cgroup=str(directory), policy=policy_name)

    # --- container sink (called from the watcher thread) ----------------------------------------
    def container_added(self, container_id: str, name: str, policy_name: str | None) -> None:
        self.enforcer.container_added(container_id, name, policy_name)
        if policy_name is not None:
            self.index.named(container_id, name)
            self.log.info("container_tagged", container_id=container_id, container_name=name,
                          policy=policy_name)

    def container_removed(self, container_id: str) -> None:
        tagged = self.enforcer.containers.get(container_id)
        self.enforcer.container_removed(container_id)
        if tagged is not None:
            self.log.info("container_untagged", container_id=container_id, container_name=tagged.name,
                          policy=tagged.policy_name)

    # --- callbacks --------------------------------------------------------------------------------
    def _report(self, event: str, **keys: Any) -> None:
        self.log.error(event, **keys)

    def _on_watch_error(self, error: Exception) -> None:
        level = self.log.warning if isinstance(error, DockerError) else self.log.error
        level("docker_watch_error", error=str(error))

    def _on_hosts(self, addresses: dict) -> None:
        self.enforcer.set_hosts(addresses)
        self.log.info("hosts_resolved", hosts={host: [str(a) for a in addrs]
                                               for host, addrs in sorted(addresses.items())})

    def _on_dns_error(self, host: str, why: str) -> None:
        self.log.warning("dns_error", host=host, error=why, note="last good addresses stay in force")

    def _on_record(self, data: bytes) -> None:
        try:
            event = events.decode(data)
        except events.DecodeError as error:
            self._decode_errors += 1
            self.log.error("event_decode_error", error=str(error), decode_errors=self._decode_errors)
            return
        if isinstance(event, events.CgroupTagged):
            self.index.tagged(event)
            if event.policy_id == HOLD:
                self.holds.cgroup_held(event)
            elif not event.inherited and event.parent_id not in self._network_parent_ids():
                self.log.warning("egress_unenforced", container_id=container_id_from_leaf(event.name),
                                 cgroup_id=event.cgroup_id,
                                 reason="the container's cgroup is outside the runtime's parent, where "
                                        "the egress programs are attached (docker run --cgroup-parent?): "
                                        "exec and file rules apply, egress rules do not")
            return
        if isinstance(event, events.ExecEvent) and event.action == "held":
            self.holds.exec_held(event)
            return
        self._log_violation(event)

    def _network_parent_ids(self) -> set[int]:
        return {cgroups.cgroup_id(parent) for parent in self._network_parents}

    def _log_violation(self, event: events.Violation) -> None:
        policy_name = self.enforcer.policy_name(event.policy_id) or f"#{event.policy_id}"
        policy = self.enforcer.policy(policy_name)
        mode = policy.mode.value if policy else Mode.ENFORCE.value
        container_id, container_name = self.index.container(event.cgroup_id)
        self.log.warning(
            "violation",
            policy=policy_name,
            mode=mode,
            action=event.action,
            kind=event.kind,
            container_id=container_id,
            container_name=container_name,
            pid=event.pid,
            ppid=event.ppid,
            uid=event.uid,
            comm=event.comm,
            exe=event.exe,
            **event.details(),
        )

    # --- periodic work ----------------------------------------------------------------------------
    def _reload_policies(self, initial: bool = False) -> None:
        result = self.policy_dir.load()
        for error in result.errors:
            self.log.error("policy_error", file=error.file, line=error.line, field=error.field,
                           message=error.message, error=str(error))
        try:
            self.enforcer.set_policies(result.policies)
        except compiler.CompileError as error:
            self.log.error("policy_error", error=str(error), note="previous policies stay in force")
            return
        assert self.hosts is not None
        self.hosts.set_hosts({rule.host for policy in result.policies.values()
                              for rule in policy.egress if rule.host})
        self.log.info("policies_loaded", directory=str(self.options.policies),
                      policies=sorted(result.policies), kept_last_good=result.kept,
                      errors=len(result.errors), initial=initial)

    def _check_counters(self) -> None:
        stats = self.sensor.maps["stats"]
        lost = sum(int.from_bytes(v, "little") for v in
                   stats.lookup_percpu(_STAT_EVENTS_LOST.to_bytes(4, "little")) or [])
        if lost > self._lost_reported:
            self.log.warning("events_lost", lost=lost - self._lost_reported, lost_total=lost,
                             violations_total=self.violations_total(),
                             note="violations were enforced; only their log lines were lost")
            self._lost_reported = lost
        if self.ring.callback_errors:
            self.log.error("event_handler_error", errors=self.ring.callback_errors,
                           error=repr(self.ring.last_error))
            self.ring.callback_errors = 0

    def violations_total(self) -> int:
        stats = self.sensor.maps["stats"]
        return sum(int.from_bytes(v, "little") for v in
                   stats.lookup_percpu(_STAT_VIOLATIONS.to_bytes(4, "little")) or [])

    def run(self) -> None:
        signal.signal(signal.SIGHUP, self._on_sighup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        next_tick = time.monotonic() + 1.0
        while not self._stop:
            self.ring.poll(100)
            if self._hup:
                self._hup = False
                try:
                    self._sink_reopen()
                    self.log.info("sighup", note="log file reopened, policies reloaded")
                except OSError as error:
                    self.log.error("log_reopen_failed", error=str(error), note="still writing the old file")
                self._reload_policies()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                self._check_counters()
                if self.holds is not None:
                    self.holds.retry()
                if self.policy_dir.changed():
                    self._reload_policies()
        self.ring.poll(0)
        self._check_counters()

    def _on_sighup(self, *_: object) -> None:
        self._hup = True

    def _on_stop(self, *_: object) -> None:
        self._stop = True

    def close(self) -> None:
        if self.holds is not None:
            self.holds.release_all()
        if self.watcher is not None:
            self.watcher.stop()
        if self.hosts is not None:
            self.hosts.stop()
        if self.sensor is not None:
            self.sensor.close()
        self.log.info("agent_stopped")


def run_agent(options: AgentOptions, log: Any, sink_reopen: Any) -> int:
    agent = Agent(options, log, sink_reopen)
    try:
        agent.start()
        agent.run()
    finally:
        agent.close()
    return 0
