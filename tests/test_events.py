"""Unit tests for agent.events: ring buffer records built with the ctypes mirrors, then decoded."""

from __future__ import annotations

import ctypes
import socket

import pytest

from agent.events import (
    EVENT_ARGV_LEN,
    EVENT_PATH_LEN,
    OP_CGROUP,
    OP_CONNECT,
    OP_EXEC,
    OP_FILE,
    CgroupTagged,
    ConnectEvent,
    DecodeError,
    ExecEvent,
    FileEvent,
    HgCgroupEvent,
    HgConnectEvent,
    HgEventHeader,
    HgExecEvent,
    HgFileEvent,
    Violation,
    decode,
)

EXE = b"/usr/local/bin/node"
COMMON = {
    "action": "denied",
    "policy_id": 7,
    "cgroup_id": 4242,
    "ktime_ns": 123_456_789,
    "pid": 100,
    "tid": 101,
    "ppid": 1,
    "uid": 1000,
    "comm": "node",
    "exe": EXE.decode(),
}


def header(opcode: int, action: int = 2, exe: bytes = EXE, exe_len: int | None = None) -> HgEventHeader:
    """A header with the values of COMMON (action 2 is "denied")."""
    return HgEventHeader(
        opcode=opcode, action=action, policy_id=7, ktime_ns=123_456_789, cgroup_id=4242, pid=100, tid=101,
        ppid=1, uid=1000, comm=b"node", exe_len=len(exe) if exe_len is None else exe_len, exe=exe,
    )


def argv_bytes(data: bytes) -> ctypes.Array:
    """The argv field holding data, zero-padded."""
    return (ctypes.c_uint8 * EVENT_ARGV_LEN).from_buffer_copy(data.ljust(EVENT_ARGV_LEN, b"\0"))


def exec_record(path: bytes = b"/bin/sh", path_len: int | None = None, argv: bytes = b"sh\0-c\0id\0",
                argv_len: int | None = None, **hdr: object) -> bytes:
    event = HgExecEvent(
        hdr=header(OP_EXEC, **hdr), path_len=len(path) if path_len is None else path_len,
        argv_len=len(argv) if argv_len is None else argv_len, path=path, argv=argv_bytes(argv),
    )
    return bytes(event)


def file_record(access: int, path: bytes = b"/etc/shadow", path_len: int | None = None) -> bytes:
    event = HgFileEvent(hdr=header(OP_FILE), path_len=len(path) if path_len is None else path_len,
                        access=access, path=path)
    return bytes(event)


def connect_record(family: int, addr: bytes, port: int = 443, protocol: int = socket.IPPROTO_TCP) -> bytes:
    event = HgConnectEvent(hdr=header(OP_CONNECT), family=family, port=port, protocol=protocol,
                           addr=(ctypes.c_uint8 * 16).from_buffer_copy(addr.ljust(16, b"\0")))
    return bytes(event)


class TestExecEvent:
    """Decoding of exec violations."""

    def test_decodes_every_field(self) -> None:
        """An exec record decodes to an ExecEvent with the header fields, path and argv."""
        expected = ExecEvent(kind="exec", **COMMON, path="/bin/sh", argv=["sh", "-c", "id"])
        assert expected == decode(exec_record())

    def test_argv_splits_on_nul(self) -> None:
        """argv is split on NULs, the trailing NUL giving no empty argument."""
        record = exec_record(argv=b"node\0server.js\0--port\x008080\0")
        assert ["node", "server.js", "--port", "8080"] == decode(record).argv

    def test_argv_keeps_empty_arguments_in_the_middle(self) -> None:
        """An empty argument between two others is kept."""
        assert ["echo", "", "x"] == decode(exec_record(argv=b"echo\0\0x\0")).argv

    def test_argv_only_up_to_argv_len(self) -> None:
        """Bytes after argv_len are not part of argv."""
        assert ["sh"] == decode(exec_record(argv=b"sh\0stale\0", argv_len=3)).argv

    def test_argv_cut_mid_argument(self) -> None:
        """An argv cut inside an argument keeps the part that was copied."""
        assert ["python3", "-c", "impo"] == decode(exec_record(argv=b"python3\0-c\0import os\0", argv_len=15)).argv

    def test_empty_argv(self) -> None:
        """argv_len 0 (the copy failed) gives an empty list."""
        assert [] == decode(exec_record(argv=b"", argv_len=0)).argv

    def test_path_not_truncated_when_length_matches(self) -> None:
        """A path whose path_len equals the stored bytes has no truncation marker."""
        assert "/usr/bin/python3" == decode(exec_record(path=b"/usr/bin/python3")).path

    def test_truncated_path_gets_marker(self) -> None:
        """A path longer than the stored bytes (path_len bigger) ends with "..."."""
        stored = b"/" + b"d" * (EVENT_PATH_LEN - 2)
        assert stored.decode() + "..." == decode(exec_record(path=stored, path_len=400)).path

    def test_truncated_exe_gets_marker(self) -> None:
        """The header's exe is marked the same way when exe_len exceeds the stored bytes."""
        assert "/opt/ap..." == decode(exec_record(exe=b"/opt/ap", exe_len=300)).exe

    def test_empty_path(self) -> None:
        """A path the kernel could not name (path_len 0) decodes to an empty string."""
        assert "" == decode(exec_record(path=b"", path_len=0)).path

    def test_invalid_utf8_is_replaced(self) -> None:
        """Bytes that are not UTF-8 become replacement characters rather than an error."""
        assert "/tmp/\ufffd" == decode(exec_record(path=b"/tmp/\xff")).path

    @pytest.mark.parametrize(("code", "name"), [(1, "killed"), (2, "denied"), (3, "audited"), (9, "unknown(9)")])
    def test_action_names(self, code: int, name: str) -> None:
        """Action codes 1/2/3 are killed/denied/audited; others are named unknown(n)."""
        assert name == decode(exec_record(action=code)).action


class TestFileEvent:
    """Decoding of file violations."""

    def test_decodes_every_field(self) -> None:
        """A file record decodes to a FileEvent with the header fields, path and access."""
        expected = FileEvent(kind="file", **COMMON, path="/etc/shadow", access="read")
        assert expected == decode(file_record(1))

    @pytest.mark.parametrize(("bits", "access"), [(1, "read"), (3, "read-write"), (2, "write")])
    def test_access_names(self, bits: int, access: str) -> None:
        """Access bits 1/3/2 are read/read-write/write."""
        assert access == decode(file_record(bits)).access

    def test_truncated_path_gets_marker(self) -> None:
        """A file path longer than the stored bytes ends with "..."."""
        assert "/var/lo..." == decode(file_record(1, path=b"/var/lo", path_len=4096)).path


class TestConnectEvent:
    """Decoding of connect violations."""

    def test_decodes_every_field(self) -> None:
        """A connect record decodes to a ConnectEvent with address, port and protocol name."""
        expected = ConnectEvent(kind="connect", **COMMON, address="203.0.113.9", port=443, protocol="tcp")
        assert expected == decode(connect_record(socket.AF_INET, bytes([203, 0, 113, 9])))

    def test_ipv4_uses_the_first_four_bytes(self) -> None:
        """For AF_INET only the first 4 address bytes count, whatever follows."""
        record = connect_record(socket.AF_INET, bytes([10, 0, 0, 5]) + b"\xff" * 12)
        assert "10.0.0.5" == decode(record).address

    def test_ipv6_address(self) -> None:
        """For AF_INET6 all 16 bytes form the address."""
        record = connect_record(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
        assert "2001:db8::1" == decode(record).address

    def test_port_is_host_order(self) -> None:
        """The port field is taken as is (the kernel stores it in host byte order)."""
        assert 8080 == decode(connect_record(socket.AF_INET, bytes([127, 0, 0, 1]), port=8080)).port

    @pytest.mark.parametrize(("number", "name"), [
        (socket.IPPROTO_TCP, "tcp"), (socket.IPPROTO_UDP, "udp"), (socket.IPPROTO_ICMP, "icmp"),
        (socket.IPPROTO_ICMPV6, "icmpv6"), (132, "132"),
    ])
    def test_protocol_names(self, number: int, name: str) -> None:
        """Known protocols are named, others given as their number."""
        assert name == decode(connect_record(socket.AF_INET, bytes([127, 0, 0, 1]), protocol=number)).protocol


class TestCgroupTagged:
    """Decoding of cgroup tagging events."""

    def test_decodes_every_field(self) -> None:
        """A cgroup record decodes to CgroupTagged with ids, name, policy and origin."""
        record = bytes(HgCgroupEvent(opcode=OP_CGROUP, inherited=0, policy_id=3, cgroup_id=9001, parent_id=9000,
                                     name=b"docker-0123abcd.scope"))
        assert CgroupTagged(cgroup_id=9001, parent_id=9000, name="docker-0123abcd.scope", policy_id=3,
                            inherited=False) == decode(record)

    def test_inherited_flag(self) -> None:
        """inherited 1 means the tag came from the parent cgroup."""
        record = bytes(HgCgroupEvent(opcode=OP_CGROUP, inherited=1, policy_id=3, cgroup_id=9002, parent_id=9001,
                                     name=b"child"))
        assert True is decode(record).inherited

    def test_is_not_a_violation(self) -> None:
        """A tagging event is not a Violation."""
        record = bytes(HgCgroupEvent(opcode=OP_CGROUP, cgroup_id=1, parent_id=0, name=b"x"))
        assert False is isinstance(decode(record), Violation)


class TestDecodeErrors:
    """Records decode() refuses."""

    def test_empty_record(self) -> None:
        """An empty record raises DecodeError."""
        with pytest.raises(DecodeError, match="empty record"):
            decode(b"")

    @pytest.mark.parametrize("opcode", [0, 5, 255])
    def test_unknown_opcode(self, opcode: int) -> None:
        """A first byte that is no opcode raises DecodeError naming it."""
        with pytest.raises(DecodeError, match=f"unknown opcode {opcode}"):
            decode(bytes([opcode]) + bytes(ctypes.sizeof(HgExecEvent)))

    @pytest.mark.parametrize("record", [
        exec_record(), file_record(1), connect_record(socket.AF_INET, bytes(4)),
        bytes(HgCgroupEvent(opcode=OP_CGROUP)),
    ], ids=["exec", "file", "connect", "cgroup"])
    def test_short_record(self, record: bytes) -> None:
        """A record one byte shorter than its struct raises DecodeError."""
        with pytest.raises(DecodeError, match=f"{len(record) - 1} bytes, expected {len(record)}"):
            decode(record[:-1])

    def test_opcode_byte_alone(self) -> None:
        """A record holding only a valid opcode raises DecodeError."""
        with pytest.raises(DecodeError):
            decode(bytes([OP_FILE]))

    def test_decode_error_is_a_value_error(self) -> None:
        """DecodeError is a ValueError."""
        assert issubclass(DecodeError, ValueError)


class TestViolationDetails:
    """Violation.details(): the kind-specific log keys."""

    def test_exec_details(self) -> None:
        """An exec violation's details are its path and argv."""
        assert {"path": "/bin/sh", "argv": ["sh", "-c", "id"]} == decode(exec_record()).details()

    def test_file_details(self) -> None:
        """A file violation's details are its path and access."""
        assert {"path": "/etc/shadow", "access": "read-write"} == decode(file_record(3)).details()

    def test_connect_details(self) -> None:
        """A connect violation's details are address, port and protocol."""
        record = connect_record(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::1"), port=53,
                                protocol=socket.IPPROTO_UDP)
        assert {"address": "::1", "port": 53, "protocol": "udp"} == decode(record).details()

    def test_base_violation_has_no_details(self) -> None:
        """The base class adds no keys."""
        assert {} == Violation(kind="x", **COMMON).details()
