"""Minimal Docker Engine API client over the daemon's unix socket.

hostguard needs four things from dockerd: which containers exist, their labels,
their init pid, and a live feed of container events. The docker SDK would pull a
dependency tree into a security agent that pins its supply chain, so this module
speaks the Engine API (pinned to ``/v1.41``, Docker 20.10) with ``http.client``
over an ``AF_UNIX`` socket and nothing else.

Every call opens its own connection, so one ``DockerClient`` can be shared by
threads; an event stream holds its connection open until it ends or is closed.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any

__all__ = [
    "API_VERSION",
    "EVENT_ATTRIBUTE_KEYS",
    "ContainerEvent",
    "ContainerInfo",
    "DockerClient",
    "DockerError",
    "EventStream",
]

API_VERSION = "v1.41"

# Keys that dockerd mixes into a container event's Actor.Attributes next to the
# container's labels (moby daemon/events.go LogContainerEventWithAttributes and
# its callers). Seen on Docker 20.10.24: "name" and "image" on every event,
# "exitCode" on die/exec_die, "signal" on kill, "execID" on exec_*. Newer
# engines add "execDuration" to die; rename adds "oldName", resize "height" and
# "width", commit "comment", "imageID" and "imageRef". dockerd copies the labels
# first and then sets name and image, so a label called "name" or "image" never
# reaches an event, and a label sharing a key with an action attribute overwrites
# it; such labels are dropped here as well. "hostguard.policy" is not affected.
EVENT_ATTRIBUTE_KEYS = frozenset(
    {
        "name",
        "image",
        "exitCode",
        "execDuration",
        "signal",
        "execID",
        "oldName",
        "height",
        "width",
        "comment",
        "imageID",
        "imageRef",
    }
)

# Default cgroup parent of containers per CgroupDriver (dockerd without
# --cgroup-parent). With cgroupfs a container lives in <parent>/<id>; with
# systemd in <parent>/docker-<id>.scope.
_CGROUP_PARENTS = {"cgroupfs": "/docker", "systemd": "/system.slice"}

_MAX_EVENT_LINE = 1 << 20  # an event is a few hundred bytes; refuse runaway lines
_READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A container as dockerd reports it."""

    id: str  # full 64-hex id
    name: str  # without leading "/"
    labels: Mapping[str, str]
    running: bool
    pid: int  # 0 when not running


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One container event from ``GET /events``."""

    action: str  # Docker's Action as sent: "create", "start", "exec_start: sh ", ...
    id: str
    name: str
    labels: Mapping[str, str]  # Actor.Attributes minus EVENT_ATTRIBUTE_KEYS
    time_ns: int  # timeNano


class DockerError(OSError):
    """dockerd is unreachable, answered with an error, or sent something unreadable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # HTTP status when dockerd answered, else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP/1.1 connection whose transport is a unix stream socket."""

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _error_message(status: int, body: bytes) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    if not isinstance(message, str):
        message = body.decode("utf-8", "replace").strip()
    return f"dockerd answered {status}: {message}"


def _labels(raw: Any) -> Mapping[str, str]:
    if not raw:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise DockerError(f"labels are not an object: {raw!r}")
    return MappingProxyType({str(k): str(v) for k, v in raw.items()})


def _info_from_inspect(data: Any) -> ContainerInfo:
    try:
        state = data.get("State") or {}
        config = data.get("Config") or {}
        running = bool(state.get("Running"))
        return ContainerInfo(
            id=data["Id"],
            name=str(data.get("Name") or "").lstrip("/"),
            labels=_labels(config.get("Labels")),
            running=running,
            pid=int(state.get("Pid") or 0) if running else 0,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DockerError(f"unexpected inspect answer: {exc!r}") from exc


def _info_from_list(item: Any) -> ContainerInfo:
    try:
        names = [str(n).lstrip("/") for n in item.get("Names") or ()]
        # Legacy links add names like "/other/alias"; the container's own has no "/".
        own = [n for n in names if "/" not in n]
        return ContainerInfo(
            id=item["Id"],
            name=(own or names or [""])[0],
            labels=_labels(item.get("Labels")),
            running=item.get("State") == "running",
            pid=0,
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise DockerError(f"unexpected container list entry: {exc!r}") from exc


def _parse_event(line: bytes) -> ContainerEvent | None:
    """Decode one line of the event stream; None for events that are not about containers."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise DockerError(f"malformed event: {line[:200]!r}") from exc
    if not isinstance(message, dict):
        raise DockerError(f"malformed event: {line[:200]!r}")
    if message.get("Type", "container") != "container":
        return None
    actor = message.get("Actor")
    if not isinstance(actor, dict):
        actor = {}
    attributes = actor.get("Attributes") or {}
    if not isinstance(attributes, dict):
        raise DockerError(f"malformed event attributes: {line[:200]!r}")
    time_ns = message.get("timeNano")
    if not isinstance(time_ns, int):
        time_ns = int(message.get("time") or 0) * 1_000_000_000
    return ContainerEvent(
        action=str(message.get("Action") or message.get("status") or ""),
        id=str(actor.get("ID") or message.get("id") or ""),
        name=str(attributes.get("name", "")),
        labels=MappingProxyType(
            {str(k): str(v) for k, v in attributes.items() if k not in EVENT_ATTRIBUTE_KEYS}
        ),
        time_ns=time_ns,
    )


class EventStream(Iterator[ContainerEvent]):
    """An open ``GET /events`` response that yields each container event as it arrives.

    Iteration ends when dockerd closes the stream or ``close()`` is called (from any
    thread: it shuts the socket down, which wakes a blocked reader); a broken stream
    raises ``DockerError``. Nothing is read ahead beyond what the socket delivered.
    """

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        sock: socket.socket,
        response: http.client.HTTPResponse,
    ) -> None:
        self._conn = conn
        self._sock = sock
        self._response = response
        self._buffer = b""
        self._closed = False
        self._done = False
        self._reading = threading.Lock()  # held by the thread inside __next__

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> ContainerEvent:
        with self._reading:
            while True:
                event = _parse_event(self._next_line())
                if event is not None:
                    return event

    def _next_line(self) -> bytes:
        while True:
            if self._closed:
                self._release()
                raise StopIteration
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                if line.strip():
                    return line
                continue
            if len(self._buffer) > _MAX_EVENT_LINE:
                self._release()
                raise DockerError("event line too long")
            if self._done:
                raise StopIteration
            try:
                data = self._response.read1(_READ_SIZE)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._release()
                if self._closed:
                    raise StopIteration from None
                raise DockerError(f"event stream broke: {exc!r}") from exc
            if not data:
                self._release()
                raise StopIteration
            self._buffer += data

    def _release(self) -> None:
        self._done = True
        self._response.close()
        self._conn.close()
        self._sock.close()

    def close(self) -> None:
        """End the stream; safe to call from another thread and more than once."""
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # A reader blocked in __next__ wakes up on the shutdown and releases the
        # connection itself; closing its buffered file under it would block here.
        if self._reading.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._reading.release()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DockerClient:
    """Talks to dockerd's Engine API; each call uses its own connection, so it is thread-safe."""

    def __init__(self, socket_path: str = "/var/run/docker.sock", timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        url = f"/{API_VERSION}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def _open(
        self, path: str, query: Mapping[str, str] | None = None
    ) -> tuple[_UnixHTTPConnection, socket.socket, http.client.HTTPResponse]:
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", self._url(path, query), headers={"Accept": "application/json"})
            sock = conn.sock  # kept: the connection forgets it if the response says "close"
            if sock is None:
                raise http.client.NotConnected("no socket after sending the request")
            return conn, sock, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerError(f"cannot reach dockerd at {self.socket_path}: {exc!r}") from exc

    def _get(self, path: str, query: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        conn, _, response = self._open(path, query)
        try:
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerError(f"reading {path} from dockerd failed: {exc!r}") from exc
        finally:
            conn.close()

    def _get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        status, body = self._get(path, query)
        if status != 200:
            raise DockerError(_error_message(status, body), status)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise DockerError(f"{path} answered with malformed JSON") from exc

    def ping(self) -> bool:
        """True when dockerd answers ``/_ping``; never raises."""
        try:
            status, body = self._get("/_ping")
        except DockerError:
            return False
        return status == 200 and body.strip() == b"OK"

    def list_containers(self) -> list[ContainerInfo]:
        """Every container in any state, created-but-not-started ones included.

        The list endpoint has no pid, so running containers are inspected for it;
        one that is gone by then is left out, one that stopped is reported stopped.
        """
        items = self._get_json("/containers/json", {"all": "1"})
        if not isinstance(items, list):
            raise DockerError("container list is not a JSON array")
        result = []
        for item in items:
            info = _info_from_list(item)
            if info.running:
                inspected = self.inspect(info.id)
                if inspected is None:
                    continue
                info = inspected
            result.append(info)
        return result

    def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container with this id (or name, or unique id prefix); None if there is none."""
        path = "/containers/" + urllib.parse.quote(container_id, safe="") + "/json"
        status, body = self._get(path)
        if status == 404:
            return None
        if status != 200:
            raise DockerError(_error_message(status, body), status)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise DockerError("inspect answered with malformed JSON") from exc
        return _info_from_inspect(data)

    def events(self, since_ns: int | None = None) -> EventStream:
        """Subscribe to container events; the subscription exists when this returns.

        With ``since_ns`` dockerd first replays the events it still holds (its last
        256) from that wall-clock time on, then streams live ones. The returned
        stream never times out while idle; close it to stop.
        """
        query = {"filters": json.dumps({"type": ["container"]})}
        if since_ns is not None:
            seconds, nanos = divmod(since_ns, 1_000_000_000)
            query["since"] = f"{seconds}.{nanos:09d}"
        conn, sock, response = self._open("/events", query)
        if response.status != 200:
            try:
                body = response.read()
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                conn.close()
            raise DockerError(_error_message(response.status, body), response.status)
        sock.settimeout(None)
        return EventStream(conn, sock, response)

    def cgroup_parent(self) -> str:
        """The cgroup under which dockerd puts containers, from its CgroupDriver.

        "cgroupfs" -> "/docker" (container cgroup /docker/<id>); "systemd" ->
        "/system.slice" (container cgroup /system.slice/docker-<id>.scope). These are
        dockerd's defaults: a daemon started with --cgroup-parent is not visible in
        /info. Other drivers (e.g. "none" when rootless without cgroups) raise.
        """
        info = self._get_json("/info")
        driver = info.get("CgroupDriver") if isinstance(info, dict) else None
        try:
            return _CGROUP_PARENTS[driver]
        except KeyError:
            raise DockerError(f"unsupported cgroup driver {driver!r}") from None
