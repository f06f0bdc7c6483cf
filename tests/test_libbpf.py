"""The ctypes binding to libbpf: objects, programs, map elements, the log and ring buffers, on a real kernel."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import compiler, libbpf

from .support import REPO

pytestmark = pytest.mark.kernel


def _declared_maps() -> list[str]:
    """The shared maps, in declaration order, as bpf/maps.h declares them."""
    return re.findall(r"^\}\s*(\w+)\s+SEC\(\"\.maps\"\)", (REPO / "bpf" / "maps.h").read_text(), re.MULTILINE)


def _declared_programs(source: str) -> list[tuple[str, str]]:
    """(program name, section) of every program in bpf/<source>, in order."""
    text = (REPO / "bpf" / source).read_text()
    pattern = r'SEC\("([^"]+)"\)\s*\n\s*int\s+(?:BPF_PROG\(\s*)?(\w+)'
    return [(name, section) for section, name in re.findall(pattern, text)]


def _possible_cpus() -> int:
    """Count /sys/devices/system/cpu/possible ("0-3,8-11") independently of libbpf."""
    count = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _cgroup_key(cgroup_id: int) -> bytes:
    return cgroup_id.to_bytes(8, "little")


@pytest.fixture(scope="module")
def loaded(root: None, object_dir: Path) -> Iterator[libbpf.BpfObject]:
    """cgroup.bpf.o loaded on its own and never attached: nothing but the test writes its maps."""
    obj = libbpf.BpfObject(object_dir / "cgroup.bpf.o")
    try:
        obj.map("events").set_max_entries(1 << 16)
        obj.load()
        yield obj
    finally:
        obj.close()


@pytest.fixture
def log_messages() -> Iterator[list[tuple[int, str]]]:
    """libbpf's log routed to a list for one test; the previous print function is put back afterwards.

    The binding offers no way to restore libbpf's print function, so this reaches into it: it keeps
    whatever trampoline was installed alive and reinstalls the previous C pointer.
    """
    saved_trampoline = libbpf._log_trampoline
    placeholder = libbpf._PRINT_FN(lambda level, fmt, args: 0)
    previous = libbpf._libbpf_set_print(placeholder)   # the pointer in force before this test
    messages: list[tuple[int, str]] = []
    libbpf.set_log_callback(lambda level, message: messages.append((level, message)))
    try:
        yield messages
    finally:
        libbpf._libbpf_set_print(libbpf._PRINT_FN(previous) if previous else libbpf._PRINT_FN())
        libbpf._log_trampoline = saved_trampoline
        del placeholder


class TestBpfObject:
    def test_open_lists_maps_and_programs(self, root: None, object_dir: Path) -> None:
        """An opened (not yet loaded) object lists every shared map, its .bss, and its programs with sections."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            names = [m.name for m in obj.maps()]
            assert _declared_maps() == [name for name in names if "." not in name]
            assert ["cgroup.bss"] == [name for name in names if "." in name]
            assert _declared_programs("cgroup.bpf.c") == [(p.name, p.section) for p in obj.programs()]

    def test_open_reports_btf_sizes_of_maps(self, root: None, object_dir: Path) -> None:
        """Key and value sizes come from the object's BTF and match the compiler's packers."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            expected = {"cgroups": (8, compiler.CGROUP.size), "pending": (compiler.PENDING_KEY.size, 8),
                        "policies": (4, compiler.POLICY.size),
                        "exec_rules": (compiler.PATH_KEY.size, compiler.RULE_VALUE.size),
                        "net4_rules": (compiler.NET4_KEY.size, compiler.PORTS.size),
                        "net6_rules": (compiler.NET6_KEY.size, compiler.PORTS.size)}
            actual = {name: (obj.map(name).key_size, obj.map(name).value_size) for name in expected}
            assert expected == actual

    def test_missing_file_raises_enoent(self, root: None, tmp_path: Path) -> None:
        """Opening a file that does not exist raises OSError with errno ENOENT."""
        with pytest.raises(OSError) as raised:
            libbpf.BpfObject(tmp_path / "absent.bpf.o")
        assert errno.ENOENT == raised.value.errno

    def test_unknown_map_name_raises_key_error(self, root: None, object_dir: Path) -> None:
        """map() of a name the object does not declare raises KeyError."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj, pytest.raises(KeyError):
            obj.map("no_such_map")


class TestBpfProgram:
    def test_autoload_setter_skips_a_program_at_load(self, root: None, object_dir: Path) -> None:
        """A program with autoload set to False reads back False and is not loaded; the others are."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            obj.map("events").set_max_entries(1 << 16)
            programs = {p.name: p for p in obj.programs()}
            programs["hg_cgroup_attach_task"].autoload = False
            expected = {name: name != "hg_cgroup_attach_task" for name in programs}
            assert expected == {name: p.autoload for name, p in programs.items()}
            obj.load()
            assert expected == {name: p.fd >= 0 for name, p in programs.items()}

    def test_autoload_setter_turns_back_on(self, root: None, object_dir: Path) -> None:
        """Setting autoload False then True leaves the program loadable again."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            program = next(obj.programs())
            program.autoload = False
            program.autoload = True
            assert True is program.autoload


class TestBpfMap:
    def test_hash_map_round_trip(self, loaded: libbpf.BpfObject) -> None:
        """update, lookup, keys and delete round-trip on the cgroups hash map."""
        cgroups = loaded.map("cgroups")
        entries = {_cgroup_key(1001): compiler.CGROUP.pack(3, 0), _cgroup_key(1002): compiler.CGROUP.pack(4, 0)}
        try:
            for key, value in entries.items():
                cgroups.update(key, value)
            assert entries == {key: cgroups.lookup(key) for key in entries}
            assert set(entries) == set(cgroups.keys())
            assert [True, True] == [cgroups.delete(key) for key in entries]
            assert [] == list(cgroups.keys())
        finally:
            for key in entries:
                cgroups.delete(key)

    def test_update_replaces_a_value(self, loaded: libbpf.BpfObject) -> None:
        """A second update of the same key (BPF_ANY) replaces its value."""
        pending = loaded.map("pending")
        key = compiler.PENDING_KEY.pack(b"hostguard-test-replace")
        try:
            pending.update(key, compiler.CGROUP.pack(1, 0))
            pending.update(key, compiler.CGROUP.pack(2, 0))
            assert compiler.CGROUP.pack(2, 0) == pending.lookup(key)
        finally:
            pending.delete(key)

    def test_update_noexist_on_existing_key_raises_eexist(self, loaded: libbpf.BpfObject) -> None:
        """BPF_NOEXIST refuses an existing key with OSError EEXIST and leaves the value alone."""
        pending = loaded.map("pending")
        key = compiler.PENDING_KEY.pack(b"hostguard-test-noexist")
        try:
            pending.update(key, compiler.CGROUP.pack(1, 0))
            with pytest.raises(OSError) as raised:
                pending.update(key, compiler.CGROUP.pack(9, 0), libbpf.BPF_NOEXIST)
            assert (errno.EEXIST, compiler.CGROUP.pack(1, 0)) == (raised.value.errno, pending.lookup(key))
        finally:
            pending.delete(key)

    def test_lookup_of_missing_key_returns_none(self, loaded: libbpf.BpfObject) -> None:
        """Looking up a key that is not in the map returns None."""
        assert None is loaded.map("cgroups").lookup(_cgroup_key(0xDEAD_BEEF))

    def test_delete_of_missing_key_returns_false(self, loaded: libbpf.BpfObject) -> None:
        """Deleting a key that is not in the map returns False."""
        assert False is loaded.map("pending").delete(compiler.PENDING_KEY.pack(b"hostguard-test-absent"))

    @pytest.mark.parametrize("operation", ["lookup", "delete", "update"])
    def test_wrong_key_size_raises_value_error(self, loaded: libbpf.BpfObject, operation: str) -> None:
        """A key of the wrong size is refused with ValueError before any syscall."""
        cgroups = loaded.map("cgroups")
        args = (b"\0" * 4, compiler.CGROUP.pack(1, 0)) if operation == "update" else (b"\0" * 4,)
        with pytest.raises(ValueError, match="key is 4 bytes, map wants 8"):
            getattr(cgroups, operation)(*args)

    def test_wrong_value_size_raises_value_error(self, loaded: libbpf.BpfObject) -> None:
        """A value of the wrong size is refused with ValueError and nothing is written."""
        cgroups = loaded.map("cgroups")
        with pytest.raises(ValueError, match="value is 4 bytes, map wants 8"):
            cgroups.update(_cgroup_key(1003), b"\0" * 4)
        assert None is cgroups.lookup(_cgroup_key(1003))

    def test_lpm_trie_keys_come_back_exactly(self, loaded: libbpf.BpfObject) -> None:
        """Path keys written to an LPM trie are listed by keys() byte for byte (padding included)."""
        rules = loaded.map("exec_rules")
        keys = {compiler.path_key(7, "/usr/bin/node"), compiler.path_key(7, "/opt/")}
        try:
            for key in keys:
                rules.update(key, compiler.RULE_VALUE.pack(1))
            assert keys == set(rules.keys())
        finally:
            for key in keys:
                rules.delete(key)

    def test_lookup_percpu_returns_one_value_per_possible_cpu(self, loaded: libbpf.BpfObject) -> None:
        """lookup_percpu on `stats` returns a value of the map's size for every possible CPU."""
        values = loaded.map("stats").lookup_percpu((0).to_bytes(4, "little"))
        assert [8] * _possible_cpus() == [len(value) for value in values]

    def test_lookup_percpu_reads_the_counters(self, loaded: libbpf.BpfObject) -> None:
        """A never-hit counter reads zero on every CPU (the programs were never attached)."""
        values = loaded.map("stats").lookup_percpu((1).to_bytes(4, "little"))
        assert [0] * _possible_cpus() == [int.from_bytes(value, "little") for value in values]

    def test_map_properties_after_load(self, loaded: libbpf.BpfObject) -> None:
        """A loaded map has a file descriptor and keeps its declared limits (events as set before load)."""
        assert (True, 16384, 1 << 16) == (loaded.map("cgroups").fd >= 0, loaded.map("cgroups").max_entries,
                                          loaded.map("events").max_entries)


class TestLog:
    def test_callback_receives_libbpf_warnings(self, root: None, object_dir: Path,
                                               log_messages: list[tuple[int, str]]) -> None:
        """A failed load reaches the callback as level-0 (warning) messages naming the failure."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            obj.map("policies").set_max_entries(0)       # the kernel refuses a hash map of no entries
            with pytest.raises(OSError) as raised:
                obj.load()
        warnings = [message for level, message in log_messages if level == 0]
        assert errno.EINVAL == raised.value.errno
        assert any("policies" in message and "failed to create" in message for message in warnings), warnings

    def test_callback_receives_debug_messages(self, root: None, object_dir: Path,
                                              log_messages: list[tuple[int, str]]) -> None:
        """Opening an object logs libbpf's debug lines (level 2), stripped of the trailing newline."""
        with libbpf.BpfObject(object_dir / "cgroup.bpf.o"):
            pass
        debug = [message for level, message in log_messages if level == 2]
        assert any("loading object" in message for message in debug), debug
        assert [] == [message for _, message in log_messages if message.endswith("\n")]

    def test_expected_failures_demotes_warnings_to_debug(self, root: None, object_dir: Path,
                                                         log_messages: list[tuple[int, str]]) -> None:
        """Inside expected_failures() the same failure's messages all arrive at level 2."""
        with libbpf.expected_failures(), libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
            obj.map("policies").set_max_entries(0)
            with pytest.raises(OSError):
                obj.load()
        assert {2} == {level for level, _ in log_messages}
        assert any("failed to create" in message for _, message in log_messages)

    def test_refused_lsm_probe_is_a_warning_unless_expected(self, root: None, object_dir: Path,
                                                            log_messages: list[tuple[int, str]]) -> None:
        """Loading probe.bpf.o's LSM program: a refusal warns, and warns at level 2 under expected_failures()."""
        def load_lsm() -> bool:
            with libbpf.BpfObject(object_dir / "probe.bpf.o") as obj:
                for program in obj.programs():
                    program.autoload = program.name == "hg_probe_lsm"
                try:
                    obj.load()
                except OSError:
                    return False
                return True

        accepted = load_lsm()
        plain = {level for level, _ in log_messages}
        log_messages.clear()
        with libbpf.expected_failures():
            load_lsm()
        demoted = {level for level, _ in log_messages}
        # A kernel that runs BPF LSM loads it: then there is nothing to warn about.
        assert (accepted, {2}) == (0 not in plain, demoted)

    def test_expected_failures_nests(self, root: None, object_dir: Path,
                                     log_messages: list[tuple[int, str]]) -> None:
        """Demotion lasts until the outermost expected_failures() exits, then warnings are warnings again."""
        def fail() -> set[int]:
            log_messages.clear()
            with libbpf.BpfObject(object_dir / "cgroup.bpf.o") as obj:
                obj.map("policies").set_max_entries(0)
                with pytest.raises(OSError):
                    obj.load()
            return {level for level, _ in log_messages}

        with libbpf.expected_failures():
            with libbpf.expected_failures():
                pass
            inside = fail()
        outside = fail()
        assert ({2}, True) == (inside, 0 in outside)


class TestRingBuffer:
    def test_poll_with_nothing_to_read_returns_zero(self, loaded: libbpf.BpfObject) -> None:
        """poll() on an empty ring buffer returns 0 (immediately and after a short wait) and calls nothing."""
        records: list[bytes] = []
        ring = libbpf.RingBuffer(loaded.map("events"), records.append)
        try:
            assert (0, 0, []) == (ring.poll(0), ring.poll(10), records)
        finally:
            ring.free()

    def test_epoll_fd_is_a_descriptor(self, loaded: libbpf.BpfObject) -> None:
        """The ring buffer exposes an epoll file descriptor for the agent's event loop."""
        ring = libbpf.RingBuffer(loaded.map("events"), lambda record: None)
        try:
            assert True is (ring.epoll_fd >= 0)
        finally:
            ring.free()

    def test_ring_buffer_on_a_non_ringbuf_map_raises(self, loaded: libbpf.BpfObject) -> None:
        """Building a ring buffer over a hash map fails with OSError (libbpf checks the map type)."""
        with pytest.raises(OSError):
            libbpf.RingBuffer(loaded.map("cgroups"), lambda record: None)
