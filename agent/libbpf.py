"""A small, typed ctypes binding to libbpf.so.1: the only module that declares foreign functions.

Why not bcc or a generated binding: hostguard loads CO-RE objects built ahead of time, so all it needs
from libbpf is open, load, attach, maps and the ring buffer. Every symbol gets restype/argtypes here,
errors become OSError with the errno libbpf reports (libbpf >= 1.0 returns -errno or NULL + errno),
and libbpf's own log is routed to a Python callback.

Keep in sync with libbpf's headers: <bpf/libbpf.h> (objects, programs, maps, links, ring buffers)
and <bpf/bpf.h> (map element syscalls).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_module
import os
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = [
    "BpfLink",
    "BpfMap",
    "BpfObject",
    "BpfProgram",
    "RingBuffer",
    "expected_failures",
    "run_time_stats",
    "set_log_callback",
]

_lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
_libc = ctypes.CDLL(None, use_errno=True)   # the C library the interpreter already uses (no ldconfig run)

_c_p = ctypes.c_void_p


def _errcheck_ptr(result: int | None, func, args):  # noqa: ANN001 - ctypes protocol
    if not result:
        err = ctypes.get_errno() or errno_module.EINVAL
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}")
    return result


def _errcheck_int(result: int, func, args):  # noqa: ANN001 - ctypes protocol
    if result < 0:
        err = -result if result != -1 else (ctypes.get_errno() or errno_module.EINVAL)
        raise OSError(err, f"{func.__name__}: {os.strerror(err)}")
    return result


def _declare(name: str, restype, argtypes: list, errcheck=None) -> Callable:  # noqa: ANN001
    func = getattr(_lib, name)
    func.restype = restype
    func.argtypes = argtypes
    if errcheck is not None:
        func.errcheck = errcheck
    return func


# --- <bpf/libbpf.h>: logging -------------------------------------------------------------------
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, _c_p)
_libbpf_set_print = _declare("libbpf_set_print", _c_p, [_PRINT_FN])
_libc.vsnprintf.restype = ctypes.c_int
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _c_p]

# --- <bpf/libbpf.h>: objects ---------------------------------------------------------------------
_open_file = _declare("bpf_object__open_file", _c_p, [ctypes.c_char_p, _c_p], _errcheck_ptr)
_object_load = _declare("bpf_object__load", ctypes.c_int, [_c_p], _errcheck_int)
_object_close = _declare("bpf_object__close", None, [_c_p])
_object_next_map = _declare("bpf_object__next_map", _c_p, [_c_p, _c_p])
_object_next_program = _declare("bpf_object__next_program", _c_p, [_c_p, _c_p])
_object_find_map = _declare("bpf_object__find_map_by_name", _c_p, [_c_p, ctypes.c_char_p])

# --- <bpf/libbpf.h>: programs and links ----------------------------------------------------------
_program_name = _declare("bpf_program__name", ctypes.c_char_p, [_c_p])
_program_section = _declare("bpf_program__section_name", ctypes.c_char_p, [_c_p])
_program_set_autoload = _declare("bpf_program__set_autoload", ctypes.c_int, [_c_p, ctypes.c_bool],
                                 _errcheck_int)
_program_autoload = _declare("bpf_program__autoload", ctypes.c_bool, [_c_p])
_program_fd = _declare("bpf_program__fd", ctypes.c_int, [_c_p])
_program_attach = _declare("bpf_program__attach", _c_p, [_c_p], _errcheck_ptr)
_program_attach_cgroup = _declare("bpf_program__attach_cgroup", _c_p, [_c_p, ctypes.c_int],
                                  _errcheck_ptr)
_link_destroy = _declare("bpf_link__destroy", ctypes.c_int, [_c_p])

# --- <bpf/libbpf.h>: maps ------------------------------------------------------------------------
_map_name = _declare("bpf_map__name", ctypes.c_char_p, [_c_p])
_map_fd = _declare("bpf_map__fd", ctypes.c_int, [_c_p])
_map_reuse_fd = _declare("bpf_map__reuse_fd", ctypes.c_int, [_c_p, ctypes.c_int], _errcheck_int)
_map_set_max_entries = _declare("bpf_map__set_max_entries", ctypes.c_int, [_c_p, ctypes.c_uint32],
                                _errcheck_int)
_map_key_size = _declare("bpf_map__key_size", ctypes.c_uint32, [_c_p])
_map_value_size = _declare("bpf_map__value_size", ctypes.c_uint32, [_c_p])
_map_max_entries = _declare("bpf_map__max_entries", ctypes.c_uint32, [_c_p])
_map_set_initial_value = _declare("bpf_map__set_initial_value", ctypes.c_int, [_c_p, _c_p, ctypes.c_size_t],
                                  _errcheck_int)

# --- <bpf/bpf.h>: map elements -------------------------------------------------------------------
_map_update = _declare("bpf_map_update_elem", ctypes.c_int, [ctypes.c_int, _c_p, _c_p, ctypes.c_uint64])
_map_lookup = _declare("bpf_map_lookup_elem", ctypes.c_int, [ctypes.c_int, _c_p, _c_p])
_map_delete = _declare("bpf_map_delete_elem", ctypes.c_int, [ctypes.c_int, _c_p])
_map_next_key = _declare("bpf_map_get_next_key", ctypes.c_int, [ctypes.c_int, _c_p, _c_p])

# --- <bpf/libbpf.h>: ring buffers ----------------------------------------------------------------
_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, _c_p, _c_p, ctypes.c_size_t)
_ring_buffer_new = _declare("ring_buffer__new", _c_p, [ctypes.c_int, _SAMPLE_FN, _c_p, _c_p],
                            _errcheck_ptr)
_ring_buffer_poll = _declare("ring_buffer__poll", ctypes.c_int, [_c_p, ctypes.c_int])
_ring_buffer_free = _declare("ring_buffer__free", None, [_c_p])
_ring_buffer_epoll_fd = _declare("ring_buffer__epoll_fd", ctypes.c_int, [_c_p])

# --- <bpf/libbpf.h>, <bpf/bpf.h>: utilities ------------------------------------------------------
_num_possible_cpus = _declare("libbpf_num_possible_cpus", ctypes.c_int, [], _errcheck_int)
_enable_stats = _declare("bpf_enable_stats", ctypes.c_int, [ctypes.c_int], _errcheck_int)
BPF_STATS_RUN_TIME = 0

BPF_ANY = 0
BPF_NOEXIST = 1

LogCallback = Callable[[int, str], None]
"""Receives libbpf's log lines: (level, message); level 0 warn, 1 info, 2 debug."""

_log_trampoline = None  # keeps the C callback alive for as long as libbpf may call it
_demoted = 0            # > 0 while failures are expected (feature probes): log them as debug


@contextlib.contextmanager
def expected_failures() -> Iterator[None]:
    """While probing features, libbpf's complaints are answers, not warnings: demote them to debug."""
    global _demoted
    _demoted += 1
    try:
        yield
    finally:
        _demoted -= 1


def set_log_callback(callback: LogCallback) -> None:
    """Route libbpf's log (verifier output included) to callback instead of stderr."""
    global _log_trampoline

    buf = ctypes.create_string_buffer(1 << 20)  # verifier logs come as one message; keep them whole

    def _print(level: int, fmt: bytes, args: int) -> int:
        _libc.vsnprintf(buf, len(buf), fmt, args)
        message = buf.value.decode(errors="replace").rstrip("\n")
        if message:
            callback(2 if _demoted else level, message)
        return 0

    _log_trampoline = _PRINT_FN(_print)
    _libbpf_set_print(_log_trampoline)


class BpfLink:
    """An attachment of a program; detached when destroyed."""

    __slots__ = ("_ptr", "description")

    def __init__(self, ptr: int, description: str) -> None:
        self._ptr = ptr
        self.description = description

    def destroy(self) -> None:
        if self._ptr:
            _link_destroy(self._ptr)
            self._ptr = None


class BpfProgram:
    __slots__ = ("_ptr",)

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @property
    def name(self) -> str:
        return _program_name(self._ptr).decode()

    @property
    def section(self) -> str:
        return _program_section(self._ptr).decode()

    @property
    def autoload(self) -> bool:
        return bool(_program_autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        _program_set_autoload(self._ptr, value)

    @property
    def fd(self) -> int:
        return _program_fd(self._ptr)

    def attach(self) -> BpfLink:
        """Attach by section name (tracepoints, tp_btf, raw_tp, lsm, fentry)."""
        return BpfLink(_program_attach(self._ptr), f"{self.section}")

    def attach_cgroup(self, cgroup_fd: int, cgroup_path: str) -> BpfLink:
        """Attach a cgroup program (multi-attach via a BPF link: other tools' programs stay)."""
        return BpfLink(_program_attach_cgroup(self._ptr, cgroup_fd), f"{self.section}@{cgroup_path}")


class BpfMap:
    """A map of an object; element operations work once the object is loaded."""

    __slots__ = ("_ptr",)

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    @property
    def name(self) -> str:
        return _map_name(self._ptr).decode()

    @property
    def fd(self) -> int:
        return _map_fd(self._ptr)

    @property
    def key_size(self) -> int:
        return _map_key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return _map_value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return _map_max_entries(self._ptr)

    def set_max_entries(self, count: int) -> None:
        _map_set_max_entries(self._ptr, count)

    def set_initial_value(self, data: bytes) -> None:
        """The contents of a global data map (.rodata knobs) before the object is loaded."""
        _map_set_initial_value(self._ptr, data, len(data))

    def reuse_fd(self, fd: int) -> None:
        """Share an already created map (same name in another object) instead of creating one."""
        _map_reuse_fd(self._ptr, fd)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        self._check(key, value)
        if _map_update(self.fd, key, value, flags) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"update {self.name}: {os.strerror(err)}")

    def lookup(self, key: bytes) -> bytes | None:
        self._check(key)
        value = ctypes.create_string_buffer(self.value_size)
        if _map_lookup(self.fd, key, value) < 0:
            err = ctypes.get_errno()
            if err == errno_module.ENOENT:
                return None
            raise OSError(err, f"lookup {self.name}: {os.strerror(err)}")
        return value.raw

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        """A per-CPU map's value on every possible CPU (the kernel pads each to 8 bytes)."""
        self._check(key)
        stride = (self.value_size + 7) & ~7
        values = ctypes.create_string_buffer(stride * _num_possible_cpus())
        if _map_lookup(self.fd, key, values) < 0:
            err = ctypes.get_errno()
            if err == errno_module.ENOENT:
                return None
            raise OSError(err, f"lookup {self.name}: {os.strerror(err)}")
        raw = values.raw
        return [raw[i:i + self.value_size] for i in range(0, len(raw), stride)]

    def delete(self, key: bytes) -> bool:
        """Delete key; False when it was not there."""
        self._check(key)
        if _map_delete(self.fd, key) < 0:
            err = ctypes.get_errno()
            if err == errno_module.ENOENT:
                return False
            raise OSError(err, f"delete {self.name}: {os.strerror(err)}")
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key, as the kernel hands them out (entries may come and go meanwhile)."""
        prev = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while _map_next_key(self.fd, prev, nxt) == 0:
            key = nxt.raw
            yield key
            prev = key

    def _check(self, key: bytes, value: bytes | None = None) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"{self.name}: key is {len(key)} bytes, map wants {self.key_size}")
        if value is not None and len(value) != self.value_size:
            raise ValueError(f"{self.name}: value is {len(value)} bytes, map wants {self.value_size}")


class BpfObject:
    """An opened BPF object file: set it up, load it, then attach its programs."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._ptr = _open_file(self.path.encode(), None)

    def load(self) -> None:
        _object_load(self._ptr)

    def close(self) -> None:
        if self._ptr:
            _object_close(self._ptr)
            self._ptr = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def maps(self) -> Iterator[BpfMap]:
        ptr = _object_next_map(self._ptr, None)
        while ptr:
            yield BpfMap(ptr)
            ptr = _object_next_map(self._ptr, ptr)

    def programs(self) -> Iterator[BpfProgram]:
        ptr = _object_next_program(self._ptr, None)
        while ptr:
            yield BpfProgram(ptr)
            ptr = _object_next_program(self._ptr, ptr)

    def map(self, name: str) -> BpfMap:
        ptr = _object_find_map(self._ptr, name.encode())
        if not ptr:
            raise KeyError(f"{self.path}: no map {name!r}")
        return BpfMap(ptr)


@contextlib.contextmanager
def run_time_stats() -> Iterator[None]:
    """Count run_cnt/run_time_ns of every BPF program on the host while the block runs (and only then:
    the counting itself costs every program some time)."""
    fd = _enable_stats(BPF_STATS_RUN_TIME)
    try:
        yield
    finally:
        os.close(fd)


SampleCallback = Callable[[bytes], None]
"""Receives one ring buffer record as bytes (copied before the callback returns)."""


class RingBuffer:
    """Consumes one or more BPF ring buffers; poll() runs the callback for each record."""

    def __init__(self, ring_map: BpfMap, callback: SampleCallback) -> None:
        self.callback_errors = 0
        self.last_error: Exception | None = None

        def _sample(_ctx: int, data: int, size: int) -> int:
            try:
                callback(ctypes.string_at(data, size))
            except Exception as exc:  # noqa: BLE001 - counted, reported by the caller; loop goes on
                self.callback_errors += 1
                self.last_error = exc
            return 0

        self._trampoline = _SAMPLE_FN(_sample)
        self._ptr = _ring_buffer_new(ring_map.fd, self._trampoline, None, None)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for records; returns how many were consumed."""
        result = _ring_buffer_poll(self._ptr, timeout_ms)
        if result < 0 and result != -errno_module.EINTR:
            raise OSError(-result, f"ring_buffer__poll: {os.strerror(-result)}")
        return max(result, 0)

    @property
    def epoll_fd(self) -> int:
        return _ring_buffer_epoll_fd(self._ptr)

    def free(self) -> None:
        if self._ptr:
            _ring_buffer_free(self._ptr)
            self._ptr = None
