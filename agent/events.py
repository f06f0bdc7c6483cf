"""Decoding of the kernel's violation events: ctypes mirrors of bpf/hostguard.h.

Every event starts with struct hg_event_header, whose first byte is an opcode; decode() dispatches on
it. tests/test_layout.py checks these mirrors against the BTF of the built objects, field by field.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass

__all__ = [
    "CgroupTagged",
    "ConnectEvent",
    "DecodeError",
    "ExecEvent",
    "FileEvent",
    "Violation",
    "decode",
]

# Keep in sync with bpf/hostguard.h.
EVENT_PATH_LEN = 256
EVENT_ARGV_LEN = 256
PENDING_NAME_LEN = 80
OP_EXEC, OP_FILE, OP_CONNECT, OP_CGROUP = 1, 2, 3, 4
ACTIONS = {1: "killed", 2: "denied", 3: "audited", 4: "held"}
ACCESS_READ, ACCESS_WRITE = 1, 2
PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp",
             socket.IPPROTO_ICMPV6: "icmpv6", socket.IPPROTO_RAW: "raw"}


class HgEventHeader(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("action", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
        ("policy_id", ctypes.c_uint32),
        ("ktime_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("exe_len", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
        ("exe", ctypes.c_char * EVENT_PATH_LEN),
    ]


class HgExecEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", HgEventHeader),
        ("path_len", ctypes.c_uint32),
        ("argv_len", ctypes.c_uint32),
        ("path", ctypes.c_char * EVENT_PATH_LEN),
        ("argv", ctypes.c_uint8 * EVENT_ARGV_LEN),
    ]


class HgFileEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", HgEventHeader),
        ("path_len", ctypes.c_uint32),
        ("access", ctypes.c_uint32),
        ("path", ctypes.c_char * EVENT_PATH_LEN),
    ]


class HgConnectEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", HgEventHeader),
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),
        ("at_socket", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
        ("addr", ctypes.c_uint8 * 16),
    ]


class HgCgroupEvent(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("inherited", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 2),
        ("policy_id", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("parent_id", ctypes.c_uint64),
        ("name", ctypes.c_char * PENDING_NAME_LEN),
    ]


STRUCTS: dict[str, type[ctypes.Structure]] = {
    "hg_event_header": HgEventHeader,
    "hg_exec_event": HgExecEvent,
    "hg_file_event": HgFileEvent,
    "hg_connect_event": HgConnectEvent,
    "hg_cgroup_event": HgCgroupEvent,
}
"""C struct name -> mirror, for the layout test."""


class DecodeError(ValueError):
    """A record the agent cannot read (unknown opcode, short record): counted and logged."""


@dataclass(frozen=True, slots=True)
class CgroupTagged:
    """The kernel put a new cgroup under a policy (a container starting, or a cgroup inside one)."""

    cgroup_id: int
    parent_id: int
    name: str
    policy_id: int
    inherited: bool


@dataclass(frozen=True, slots=True)
class Violation:
    """What every violation carries, whatever its kind."""

    kind: str
    action: str
    policy_id: int
    cgroup_id: int
    ktime_ns: int
    pid: int
    tid: int
    ppid: int
    uid: int
    comm: str
    exe: str

    def details(self) -> dict[str, object]:
        """The kind-specific log keys."""
        return {}


@dataclass(frozen=True, slots=True)
class ExecEvent(Violation):
    path: str
    argv: list[str]

    def details(self) -> dict[str, object]:
        return {"path": self.path, "argv": self.argv}


@dataclass(frozen=True, slots=True)
class FileEvent(Violation):
    path: str
    access: str

    def details(self) -> dict[str, object]:
        return {"path": self.path, "access": self.access}


@dataclass(frozen=True, slots=True)
class ConnectEvent(Violation):
    address: str
    port: int
    protocol: str

    def details(self) -> dict[str, object]:
        return {"address": self.address, "port": self.port, "protocol": self.protocol}


def _text(raw: bytes, full_length: int | None = None) -> str:
    text = raw.decode(errors="replace")
    if full_length is not None and full_length > len(raw):
        text += "..."
    return text


def _common(hdr: HgEventHeader, kind: str) -> dict[str, object]:
    return {
        "kind": kind,
        "action": ACTIONS.get(hdr.action, f"unknown({hdr.action})"),
        "policy_id": hdr.policy_id,
        "cgroup_id": hdr.cgroup_id,
        "ktime_ns": hdr.ktime_ns,
        "pid": hdr.pid,
        "tid": hdr.tid,
        "ppid": hdr.ppid,
        "uid": hdr.uid,
        "comm": _text(hdr.comm),
        "exe": _text(hdr.exe, hdr.exe_len),
    }


def _decode_exec(data: bytes) -> ExecEvent:
    event = HgExecEvent.from_buffer_copy(data)
    raw = bytes(event.argv[: event.argv_len]).rstrip(b"\0")
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0")] if raw else []
    return ExecEvent(**_common(event.hdr, "exec"), path=_text(event.path, event.path_len), argv=argv)


def _decode_file(data: bytes) -> FileEvent:
    event = HgFileEvent.from_buffer_copy(data)
    access = "read-write" if event.access & ACCESS_WRITE and event.access & ACCESS_READ else (
        "write" if event.access & ACCESS_WRITE else "read")
    return FileEvent(**_common(event.hdr, "file"), path=_text(event.path, event.path_len), access=access)


def _decode_connect(data: bytes) -> ConnectEvent:
    event = HgConnectEvent.from_buffer_copy(data)
    raw = bytes(event.addr)
    if event.at_socket:
        address = ""                    # refused at socket(): a raw or ICMP socket, no destination yet
    elif event.family == socket.AF_INET:
        address = str(ipaddress.IPv4Address(raw[:4]))
    else:
        address = str(ipaddress.IPv6Address(raw))
    return ConnectEvent(**_common(event.hdr, "connect"), address=address, port=event.port,
                        protocol=PROTOCOLS.get(event.protocol, str(event.protocol)))


def _decode_cgroup(data: bytes) -> CgroupTagged:
    event = HgCgroupEvent.from_buffer_copy(data)
    return CgroupTagged(cgroup_id=event.cgroup_id, parent_id=event.parent_id, name=_text(event.name),
                        policy_id=event.policy_id, inherited=bool(event.inherited))


_DECODERS = {
    OP_EXEC: (HgExecEvent, _decode_exec),
    OP_FILE: (HgFileEvent, _decode_file),
    OP_CONNECT: (HgConnectEvent, _decode_connect),
    OP_CGROUP: (HgCgroupEvent, _decode_cgroup),
}


def decode(data: bytes) -> Violation | CgroupTagged:
    """One ring buffer record -> its event; DecodeError when it cannot be read."""
    if not data:
        raise DecodeError("empty record")
    try:
        struct_type, decoder = _DECODERS[data[0]]
    except KeyError:
        raise DecodeError(f"unknown opcode {data[0]}") from None
    if len(data) < ctypes.sizeof(struct_type):
        raise DecodeError(f"opcode {data[0]}: {len(data)} bytes, expected {ctypes.sizeof(struct_type)}")
    return decoder(data)
