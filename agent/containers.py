"""Container discovery that feeds enforcement.

A container's policy has to be in the kernel before the container's first process
runs, so the enforcement side must hear about a container when dockerd creates it,
not when it starts. ``ContainerWatcher`` subscribes to dockerd's event stream
before it lists the containers that already exist (so nothing created in between
is missed), reports every container once, and reports each "create" event the
moment it arrives: ``docker run`` creates, attaches, then starts, and that gap is
the sink's window to register the container.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from agent.docker_api import ContainerEvent, DockerClient, DockerError, EventStream

__all__ = ["LABEL", "ContainerSink", "ContainerWatcher", "cgroup_leaf_names", "container_id_from_leaf"]

LABEL = "hostguard.policy"


def cgroup_leaf_names(container_id: str) -> tuple[str, str]:
    """Docker's cgroup leaf for a container: "<id>" (cgroupfs driver), "docker-<id>.scope" (systemd)."""
    return container_id, f"docker-{container_id}.scope"


def container_id_from_leaf(name: str) -> str:
    """The inverse of cgroup_leaf_names."""
    if name.startswith("docker-") and name.endswith(".scope"):
        return name[len("docker-"):-len(".scope")]
    return name

_JOIN_TIMEOUT = 5.0


class ContainerSink(Protocol):
    """Receives the set of containers as it changes; calls come from one thread at a time."""

    def container_added(self, container_id: str, name: str, policy_name: str | None) -> None:
        """A container exists; policy_name is its hostguard.policy label, None when it has none."""
        ...

    def container_removed(self, container_id: str) -> None:
        """A container that was added no longer exists."""
        ...


class ContainerWatcher:
    """Keeps a sink told about every container: adopts the ones that exist at start, then follows the event stream.

    Every container is reported to ``container_added`` once (on the listing or its
    "create" event, whichever comes first) and to ``container_removed`` once, on its
    "destroy". Stopping or restarting a container changes nothing: Docker labels
    are immutable, and the container keeps its identity. When the stream breaks
    (dockerd restarted), the watcher reconnects after ``reconnect_delay`` seconds,
    lists again, and reports what appeared and disappeared in between.

    Errors (dockerd unreachable, stream broken, a sink that raised) go to
    ``on_error``; the watcher never logs and its thread keeps going. The sink is
    called from the thread of ``start()`` during the initial sync and from the
    watcher thread afterwards, never concurrently. It should return quickly:
    dockerd drops events for a subscriber that falls 1024 events behind.
    """

    def __init__(
        self,
        client: DockerClient,
        sink: ContainerSink,
        on_error: Callable[[Exception], None] | None = None,
        reconnect_delay: float = 1.0,
    ) -> None:
        self._client = client
        self._sink = sink
        self._on_error = on_error
        self._reconnect_delay = reconnect_delay
        self._lock = threading.Lock()  # guards _known and _stream
        self._known: set[str] = set()  # ids reported added and not yet removed
        self._stream: EventStream | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def count(self) -> int:
        """Containers currently known (tagged or not)."""
        with self._lock:
            return len(self._known)

    def start(self) -> None:
        """Report the existing containers, then follow events in a daemon thread.

        Raises DockerError (and leaves nothing running) when the initial sync fails.
        """
        if self._thread is not None:
            raise RuntimeError("ContainerWatcher already started")
        self._stopping.clear()
        stream = self._sync()
        if stream is None:  # stop() raced with start()
            return
        self._thread = threading.Thread(
            target=self._run, args=(stream,), name="hostguard-container-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the watcher thread promptly by closing its event stream."""
        self._stopping.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    def _sync(self) -> EventStream | None:
        """Subscribe, then list and reconcile; returns the stream that continues from the listing.

        The stream replays from a moment before the subscription, so every change
        after the listing is in it; changes seen by both are deduplicated.
        """
        stream = self._client.events(since_ns=time.time_ns())
        with self._lock:
            if self._stopping.is_set():
                stream.close()
                return None
            self._stream = stream
        try:
            containers = self._client.list_containers()
        except BaseException:
            stream.close()
            raise
        listed = {info.id for info in containers}
        with self._lock:
            gone = self._known - listed
            self._known -= gone
        for container_id in sorted(gone):
            self._notify(self._sink.container_removed, container_id)
        for info in containers:
            self._add(info.id, info.name, info.labels.get(LABEL))
        return stream

    def _run(self, stream: EventStream | None) -> None:
        while not self._stopping.is_set():
            if stream is None:
                if self._stopping.wait(self._reconnect_delay):
                    break
                try:
                    stream = self._sync()
                except Exception as exc:
                    self._report(exc)
                    continue
                if stream is None:
                    break
            try:
                for event in stream:
                    self._handle(event)
                if not self._stopping.is_set():
                    self._report(DockerError("dockerd closed the event stream"))
            except Exception as exc:
                if not self._stopping.is_set():
                    self._report(exc)
            finally:
                stream.close()
                stream = None

    def _handle(self, event: ContainerEvent) -> None:
        if event.action == "destroy":
            with self._lock:
                known = event.id in self._known
                self._known.discard(event.id)
            if known:
                self._notify(self._sink.container_removed, event.id)
        elif event.action in ("create", "start"):
            # "start" only matters for a container whose create was never seen,
            # which the subscribe-then-list order should rule out.
            self._add(event.id, event.name, event.labels.get(LABEL))

    def _add(self, container_id: str, name: str, policy_name: str | None) -> None:
        with self._lock:
            if container_id in self._known:
                return
            self._known.add(container_id)
        self._notify(self._sink.container_added, container_id, name, policy_name)

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(exc)
        except Exception:
            pass  # an error handler that fails must not end the watcher thread
