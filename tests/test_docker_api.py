"""Tests of the Docker Engine API client against the real dockerd on this host.

The client is the agent's only source of truth about containers, and its value
lies in matching what dockerd actually sends (event attributes, list vs inspect
fields, chunked event streaming), so these tests talk to a real daemon and start
real containers instead of replaying recorded answers. Other tests may run
containers on the same daemon at the same time, so every check looks only at
containers these tests created.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.images import BUSYBOX_IMAGE
from tests.support import docker

from agent.docker_api import ContainerEvent, DockerClient, DockerError, EventStream

__all__: list[str] = []

pytestmark = pytest.mark.docker

IMAGE = BUSYBOX_IMAGE
WAIT = 15.0  # seconds; bound for anything that waits on dockerd


@pytest.fixture(scope="module", autouse=True)
def _image(busybox_image: str) -> None:
    """dockerd and the offline test image (conftest fails under CI, skips elsewhere)."""


@pytest.fixture
def client() -> DockerClient:
    """A client for the local daemon."""
    return DockerClient()


class EventCollector:
    """Drains an event stream in a thread so the test can wait with a bound."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.events: queue.Queue[ContainerEvent] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except BaseException as exc:
            self.error = exc

    def until(self, predicate: Callable[[ContainerEvent], bool]) -> list[ContainerEvent]:
        """Events up to and including the first one that satisfies predicate."""
        seen: list[ContainerEvent] = []
        deadline = time.monotonic() + WAIT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event within {WAIT}s; saw {seen}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            seen.append(event)
            if predicate(event):
                return seen

    def close(self) -> None:
        """Close the stream and wait for the thread."""
        self.stream.close()
        self.thread.join(WAIT)


@pytest.fixture
def collect(client: DockerClient) -> Iterator[Callable[[int | None], EventCollector]]:
    """Subscribe to events (optionally since a time) and close every subscription afterwards."""
    collectors: list[EventCollector] = []

    def subscribe(since_ns: int | None = None) -> EventCollector:
        collectors.append(EventCollector(client.events(since_ns=since_ns)))
        return collectors[-1]

    yield subscribe
    for collector in collectors:
        collector.close()


class TestPing:
    """DockerClient.ping."""

    def test_reachable_daemon(self, client: DockerClient) -> None:
        """A running dockerd answers the ping."""
        assert True is client.ping()

    def test_missing_socket(self, tmp_path: os.PathLike[str]) -> None:
        """A socket path with no daemon behind it gives False instead of raising."""
        assert False is DockerClient(os.path.join(tmp_path, "none.sock")).ping()


class TestListContainers:
    """DockerClient.list_containers."""

    def test_created_container_with_labels(self, client: DockerClient, name: Callable[[], str]) -> None:
        """A created, never started container is listed with its labels, not running and without pid."""
        container = name()
        container_id = docker(
            "create", "--name", container, "--label", "hostguard.policy=x", "--label", "team=a",
            IMAGE, "sleep", "30",
        )
        listed = {info.id: info for info in client.list_containers()}
        info = listed[container_id]
        assert (container, {"hostguard.policy": "x", "team": "a"}, False, 0) == (
            info.name, dict(info.labels), info.running, info.pid
        )

    def test_running_container_has_pid(self, client: DockerClient, name: Callable[[], str]) -> None:
        """A running container is listed as running with its init pid."""
        container_id = docker("run", "-d", "--name", name(), IMAGE, "sleep", "30")
        info = {info.id: info for info in client.list_containers()}[container_id]
        assert (True, True) == (info.running, info.pid > 0)

    def test_unreachable_daemon_raises(self, tmp_path: os.PathLike[str]) -> None:
        """Listing without a daemon raises DockerError."""
        with pytest.raises(DockerError):
            DockerClient(os.path.join(tmp_path, "none.sock")).list_containers()


class TestInspect:
    """DockerClient.inspect."""

    def test_running_container(self, client: DockerClient, name: Callable[[], str]) -> None:
        """Inspecting a running container gives its full id, name, labels and a pid."""
        container = name()
        container_id = docker("run", "-d", "--name", container, "--label", "hostguard.policy=y", IMAGE, "sleep", "30")
        info = client.inspect(container_id)
        assert info is not None
        assert (container_id, container, {"hostguard.policy": "y"}, True, True) == (
            info.id, info.name, dict(info.labels), info.running, info.pid > 0
        )

    def test_created_container(self, client: DockerClient, name: Callable[[], str]) -> None:
        """A created container inspects as not running with pid 0."""
        container_id = docker("create", "--name", name(), IMAGE, "true")
        info = client.inspect(container_id)
        assert info is not None
        assert (False, 0, {}) == (info.running, info.pid, dict(info.labels))

    def test_unknown_id(self, client: DockerClient) -> None:
        """An id no container has gives None."""
        assert None is client.inspect("0" * 64)


class TestEvents:
    """DockerClient.events."""

    def test_run_lifecycle(self, collect: Callable[..., EventCollector], name: Callable[[], str]) -> None:
        """A `docker run --rm` after subscribing yields create, start, die, destroy, each with the labels."""
        collector = collect()
        container = name()
        docker("run", "--rm", "--name", container, "--label", "hostguard.policy=x", IMAGE, "true")
        seen = collector.until(lambda e: e.name == container and e.action == "destroy")
        mine = [e for e in seen if e.name == container]
        actions = [e.action for e in mine]
        assert ["create", "start", "die", "destroy"] == [a for a in actions if a != "attach"]
        assert [{"hostguard.policy": "x"}] * len(mine) == [dict(e.labels) for e in mine]
        assert {mine[0].id} == {e.id for e in mine}
        assert 64 == len(mine[0].id)
        assert sorted(e.time_ns for e in mine) == [e.time_ns for e in mine]

    def test_since_replays_earlier_events(self, collect: Callable[..., EventCollector], name: Callable[[], str]) -> None:
        """Subscribing with since_ns from before a create still yields that create."""
        since = time.time_ns()
        container = name()
        container_id = docker("create", "--name", container, "--label", "hostguard.policy=z", IMAGE, "true")
        collector = collect(since)
        seen = collector.until(lambda e: e.id == container_id and e.action == "create")
        assert {"hostguard.policy": "z"} == dict(seen[-1].labels)

    def test_idle_stream_outlives_timeout(self, name: Callable[[], str]) -> None:
        """A stream idle for longer than the client's timeout still delivers the next event."""
        collector = EventCollector(DockerClient(timeout=0.2).events())
        try:
            time.sleep(0.6)
            container_id = docker("create", "--name", name(), IMAGE, "true")
            seen = collector.until(lambda e: e.id == container_id)
            assert ("create", None) == (seen[-1].action, collector.error)
        finally:
            collector.close()

    def test_close_ends_iteration(self, client: DockerClient) -> None:
        """Closing an idle stream from another thread ends the iteration at once without an error."""
        collector = EventCollector(client.events())
        time.sleep(0.1)
        started = time.monotonic()
        collector.close()
        assert (False, None) == (collector.thread.is_alive(), collector.error)
        assert time.monotonic() - started < 1.0


class TestCgroupParent:
    """DockerClient.cgroup_parent."""

    def test_cgroupfs_driver(self, client: DockerClient) -> None:
        """This host's dockerd uses the cgroupfs driver, so containers live under /docker."""
        assert "/docker" == client.cgroup_parent()
