"""Tests of container discovery against the real dockerd on this host.

What matters here is timing and completeness against the real daemon: a
container created while the watcher starts must not slip through, and a
`docker run` must reach the sink before the container starts. Neither can be
shown with a fake daemon, so these tests create real containers; a unix-socket
relay in front of the real socket stands in for a dockerd restart. Other tests
may use the same daemon concurrently, so assertions look only at containers
these tests created.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.images import BUSYBOX_IMAGE
from tests.support import docker

from agent.containers import LABEL, ContainerWatcher
from agent.docker_api import DockerClient

__all__: list[str] = []

pytestmark = pytest.mark.docker

IMAGE = BUSYBOX_IMAGE
DOCKER_SOCKET = "/var/run/docker.sock"
WAIT = 15.0  # seconds; bound for anything that waits on dockerd


@pytest.fixture(scope="module", autouse=True)
def _image(busybox_image: str) -> None:
    """dockerd and the offline test image (conftest fails under CI, skips elsewhere)."""


class RecordingSink:
    """A ContainerSink that records every call, with the wall-clock time of the call."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str | None, str | None, int]] = []
        self._changed = threading.Condition()

    def container_added(self, container_id: str, name: str, policy_name: str | None) -> None:
        with self._changed:
            self.records.append(("added", container_id, name, policy_name, time.time_ns()))
            self._changed.notify_all()

    def container_removed(self, container_id: str) -> None:
        with self._changed:
            self.records.append(("removed", container_id, None, None, time.time_ns()))
            self._changed.notify_all()

    def of(self, container_id: str) -> list[tuple[str, str | None, str | None]]:
        """The calls about one container, without times."""
        with self._changed:
            return [(kind, name, policy) for kind, cid, name, policy, _ in self.records if cid == container_id]

    def wait_for(self, kind: str, container_id: str) -> int:
        """Wait until a call of this kind about this container arrives; return its time."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for record in self.records:
                    if record[0] == kind and record[1] == container_id:
                        return record[4]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {kind} for {container_id} within {WAIT}s: {self.records}")
                self._changed.wait(remaining)

    def live(self) -> set[str]:
        """Ids added and not removed since."""
        with self._changed:
            ids: set[str] = set()
            for kind, cid, *_ in self.records:
                (ids.add if kind == "added" else ids.discard)(cid)
            return ids


class Relay:
    """Forwards a unix socket to dockerd's and can cut every connection, as a dockerd restart would."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._up = True
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._up:
                    downstream.close()
                    continue
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(DOCKER_SOCKET)
                self._open += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self) -> None:
        """Cut all connections and refuse new ones."""
        with self._lock:
            self._up = False
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def up(self) -> None:
        """Accept connections again."""
        with self._lock:
            self._up = True

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self.down()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()


@pytest.fixture
def sink() -> RecordingSink:
    """A fresh recording sink."""
    return RecordingSink()


@pytest.fixture
def watcher_for(sink: RecordingSink) -> Iterator[Callable[..., ContainerWatcher]]:
    """Make watchers that report into the sink; every one is stopped afterwards."""
    watchers: list[ContainerWatcher] = []

    def make(socket_path: str = DOCKER_SOCKET, **kwargs: object) -> ContainerWatcher:
        watchers.append(ContainerWatcher(DockerClient(socket_path), sink, **kwargs))  # type: ignore[arg-type]
        return watchers[-1]

    yield make
    for watcher in watchers:
        watcher.stop()


class TestContainerWatcher:
    """ContainerWatcher against the real dockerd."""

    def test_adopts_existing_container(
        self, sink: RecordingSink, watcher_for: Callable[..., ContainerWatcher], name: Callable[[], str]
    ) -> None:
        """A container created before start() is reported, with its policy label, by the time start() returns."""
        container = name()
        container_id = docker("create", "--name", container, "--label", f"{LABEL}=web", IMAGE, "sleep", "30")
        watcher_for().start()
        assert [("added", container, "web")] == sink.of(container_id)

    def test_created_then_removed(
        self, sink: RecordingSink, watcher_for: Callable[..., ContainerWatcher], name: Callable[[], str]
    ) -> None:
        """A container created after start() is added once with its policy and removed after `docker rm -f`."""
        watcher = watcher_for()
        watcher.start()
        container = name()
        container_id = docker("run", "-d", "--name", container, "--label", f"{LABEL}=api", IMAGE, "sleep", "30")
        sink.wait_for("added", container_id)
        docker("rm", "-f", container)
        sink.wait_for("removed", container_id)
        watcher.stop()
        assert [("added", container, "api"), ("removed", None, None)] == sink.of(container_id)
        assert len(sink.live()) == watcher.count

    def test_unlabelled_container(
        self, sink: RecordingSink, watcher_for: Callable[..., ContainerWatcher], name: Callable[[], str]
    ) -> None:
        """A container without the policy label is still reported, with policy_name None."""
        watcher_for().start()
        container = name()
        container_id = docker("create", "--name", container, "--label", "other=1", IMAGE, "true")
        sink.wait_for("added", container_id)
        assert [("added", container, None)] == sink.of(container_id)

    def test_added_before_start(
        self, sink: RecordingSink, watcher_for: Callable[..., ContainerWatcher], name: Callable[[], str]
    ) -> None:
        """For a `docker run`, the sink hears of the container before dockerd's start event."""
        client = DockerClient()
        watcher_for().start()
        with client.events(since_ns=time.time_ns()) as stream:
            timer = threading.Timer(WAIT, stream.close)  # bounds the wait for the start event
            timer.start()
            container = name()
            container_id = docker("run", "-d", "--name", container, "--label", f"{LABEL}=fn", IMAGE, "sleep", "30")
            started_ns = next((e.time_ns for e in stream if e.id == container_id and e.action == "start"), None)
            timer.cancel()
        assert started_ns is not None, f"no start event within {WAIT}s"
        added_ns = sink.wait_for("added", container_id)
        assert True is (added_ns < started_ns), f"added {added_ns}, started {started_ns}"

    def test_restart_keeps_container(
        self, sink: RecordingSink, watcher_for: Callable[..., ContainerWatcher], name: Callable[[], str]
    ) -> None:
        """Stopping and starting a container (die, start) neither removes nor re-adds it."""
        watcher_for().start()
        container = name()
        container_id = docker("run", "-d", "--name", container, "--label", f"{LABEL}=job", IMAGE, "sleep", "30")
        docker("restart", "-t", "0", container)
        docker("rm", "-f", container)
        sink.wait_for("removed", container_id)
        assert [("added", container, "job"), ("removed", None, None)] == sink.of(container_id)

    def test_stop_is_prompt(self, watcher_for: Callable[..., ContainerWatcher]) -> None:
        """stop() ends the watcher thread within a second."""
        before = set(threading.enumerate())
        watcher = watcher_for()
        watcher.start()
        threads = set(threading.enumerate()) - before
        started = time.monotonic()
        watcher.stop()
        elapsed = time.monotonic() - started
        assert (1, []) == (len(threads), [t for t in threads if t.is_alive()])
        assert elapsed < 1.0

    def test_reconnect_reconciles(
        self,
        sink: RecordingSink,
        watcher_for: Callable[..., ContainerWatcher],
        name: Callable[[], str],
        tmp_path: Path,
    ) -> None:
        """After the stream breaks, the watcher reconnects and reports what appeared and vanished meanwhile."""
        relay = Relay(str(tmp_path / "docker.sock"))
        errors: list[Exception] = []
        try:
            vanishing, appearing = name(), name()
            vanishing_id = docker("create", "--name", vanishing, "--label", f"{LABEL}=old", IMAGE, "true")
            watcher = watcher_for(relay.path, on_error=errors.append, reconnect_delay=0.05)
            watcher.start()
            relay.down()
            deadline = time.monotonic() + WAIT
            while not errors and time.monotonic() < deadline:
                time.sleep(0.01)
            docker("rm", "-f", vanishing)
            appearing_id = docker("create", "--name", appearing, "--label", f"{LABEL}=new", IMAGE, "true")
            relay.up()
            sink.wait_for("removed", vanishing_id)
            sink.wait_for("added", appearing_id)
            watcher.stop()
        finally:
            relay.close()
        assert [("added", vanishing, "old"), ("removed", None, None)] == sink.of(vanishing_id)
        assert [("added", appearing, "new")] == sink.of(appearing_id)
        assert True is bool(errors)
