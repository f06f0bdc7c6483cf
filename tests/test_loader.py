"""The Sensor loads the four objects as one unit (one set of maps), attaches their hooks and detaches them.

Other BPF users may load programs at the same time (other test runs, another agent), so these tests
identify this process's programs, maps and links by the ids behind its own file descriptors
(/proc/self/fdinfo) instead of counting everything the kernel holds.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import cgroups, loader

from .support import REPO, loaded_sensor, skip_or_fail

pytestmark = pytest.mark.kernel


def _sections(source: str) -> list[str]:
    """The program sections of bpf/<source>, in order (the license section excluded)."""
    text = (REPO / "bpf" / source).read_text()
    return [s for s in re.findall(r'^SEC\("([^"]+)"\)', text, re.MULTILINE) if s != "license"]


SHARED_MAPS = tuple(re.findall(r"^\}\s*(\w+)\s+SEC\(\"\.maps\"\)", (REPO / "bpf" / "maps.h").read_text(),
                               re.MULTILINE))
FILE_SECTIONS = tuple(_sections("file.bpf.c"))
NETWORK_SECTIONS = _sections("net.bpf.c")
ID_FIELD = {"anon_inode:bpf-map": "map_id", "anon_inode:bpf-prog": "prog_id", "anon_inode:bpf_link": "link_id"}


def _bpftool(*args: str) -> list[dict]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not Path(bpftool).exists():
        skip_or_fail("bpftool is not installed")
    out = subprocess.run([bpftool, "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def _fd_id(fd: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value)
    except OSError:
        pass
    return None


def _own_bpf_objects() -> dict[str, dict[int, int]]:
    """This process's open BPF descriptors: {"map_id"|"prog_id"|"link_id": {fd: id}}."""
    found: dict[str, dict[int, int]] = {field: {} for field in ID_FIELD.values()}
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
        field = ID_FIELD.get(target)
        if field:
            object_id = _fd_id(int(entry), field)
            if object_id is not None:
                found[field][int(entry)] = object_id
    return found


def _new_ids(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]], field: str) -> set[int]:
    return {object_id for fd, object_id in after[field].items() if before[field].get(fd) != object_id}


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """The kernel frees released programs after an RCU grace period: poll briefly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _remove_cgroup_tree(directory: Path) -> None:
    """rmdir a cgroup directory and everything below it, deepest first."""
    if not directory.is_dir():
        return
    for current, _dirs, _files in os.walk(directory, topdown=False):
        os.rmdir(current)


@pytest.fixture
def sensor(root: None, object_dir: Path, tracefs: None) -> Iterator[loader.Sensor]:
    """A loaded Sensor (small ring buffer), closed after the test even if it failed."""
    with loaded_sensor(object_dir) as loaded:
        yield loaded


@pytest.fixture
def cgroup_dir(root: None) -> Iterator[Path]:
    """A fresh cgroup2 directory under the unified mount, removed afterwards."""
    directory = cgroups.find_unified_mount() / f"hostguard-test-{secrets.token_hex(6)}"
    directory.mkdir()
    try:
        yield directory
    finally:
        _remove_cgroup_tree(directory)


class TestProbeFeatures:
    def test_answers_ok_or_refused(self, root: None, object_dir: Path) -> None:
        """probe_features reports each of lsm and fentry as "ok" or as "refused: <reason>"."""
        features = loader.probe_features(object_dir)
        answers = {"lsm": features.lsm, "fentry": features.fentry}
        assert {"lsm": True, "fentry": True} == {
            name: isinstance(answer, str) and (answer == "ok" or answer.startswith("refused: "))
            for name, answer in answers.items()}

    def test_probing_leaves_nothing_loaded(self, root: None, object_dir: Path) -> None:
        """Probing loads and attaches at most a program at a time and keeps no descriptor open."""
        before = _own_bpf_objects()
        loader.probe_features(object_dir)
        after = _own_bpf_objects()
        assert {"map_id": set(), "prog_id": set(), "link_id": set()} == {
            field: _new_ids(before, after, field) for field in ID_FIELD.values()}


class TestSensorLoad:
    def test_load_attaches_exec_file_and_tagging_hooks(self, sensor: loader.Sensor) -> None:
        """load() attaches the exec, file and tagging programs; network waits for attach_cgroup."""
        expected = {
            "exec": _sections("exec.bpf.c"),
            "file": [section for section in FILE_SECTIONS if section not in sensor.skipped],
            "tagging": _sections("cgroup.bpf.c"),
        }
        assert expected == sensor.hooks
        assert "tracepoint/syscalls/sys_exit_openat" in sensor.hooks["file"]

    def test_only_missing_tracepoints_are_skipped(self, sensor: loader.Sensor) -> None:
        """Every skipped section is a file tracepoint that tracefs does not list."""
        missing = [section for section in FILE_SECTIONS
                   if not (loader.TRACEFS / "events" / section.removeprefix("tracepoint/")).is_dir()]
        assert missing == sensor.skipped

    def test_exposes_every_shared_map(self, sensor: loader.Sensor) -> None:
        """sensor.maps holds the shared maps by name, none of the per-object .bss/.rodata maps."""
        assert sorted(SHARED_MAPS) == sorted(sensor.maps)

    def test_ring_buffer_size_is_applied(self, sensor: loader.Sensor) -> None:
        """The events ring buffer gets the requested size."""
        [events] = [m for m in _bpftool("map", "show") if m["id"] == _fd_id(sensor.maps["events"].fd, "map_id")]
        assert ("ringbuf", 1 << 16) == (events["type"], events["max_entries"])

    def test_attached_programs_are_links_of_this_process(self, root: None, object_dir: Path,
                                                         tracefs: None) -> None:
        """load() opens one link per attached hook, each for a program this process loaded."""
        before = _own_bpf_objects()
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        try:
            sensor.load()
            after = _own_bpf_objects()
            hook_count = sum(len(sections) for sections in sensor.hooks.values())
            programs = _new_ids(before, after, "prog_id")
            links = [link for link in _bpftool("link", "show") if link["id"] in _new_ids(before, after, "link_id")]
            assert (hook_count, set()) == (len(links), {link["prog_id"] for link in links} - programs)
        finally:
            sensor.close()


class TestSharedMaps:
    def test_one_map_of_each_name(self, root: None, object_dir: Path, tracefs: None) -> None:
        """The four objects share maps: this process owns exactly one map named cgroups, one events, etc."""
        before = _own_bpf_objects()
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        try:
            sensor.load()
            own = _new_ids(before, _own_bpf_objects(), "map_id")
            names = collections.Counter(m["name"] for m in _bpftool("map", "show") if m["id"] in own)
            assert {name: 1 for name in SHARED_MAPS} == {name: names[name] for name in SHARED_MAPS}
        finally:
            sensor.close()

    def test_every_object_holds_the_same_map(self, sensor: loader.Sensor) -> None:
        """Each object's copy of a shared map is a descriptor of one map id, the one sensor.maps uses."""
        for name in SHARED_MAPS:
            ids = {_fd_id(bpf_map.fd, "map_id") for obj in sensor._objects for bpf_map in obj.maps()
                   if bpf_map.name == name}
            assert {_fd_id(sensor.maps[name].fd, "map_id")} == ids, name

    def test_every_program_uses_the_shared_cgroups_map(self, root: None, object_dir: Path,
                                                       tracefs: None) -> None:
        """The programs of all four objects reference the same `cgroups` map id."""
        before = _own_bpf_objects()
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        try:
            sensor.load()
            after = _own_bpf_objects()
            programs = _new_ids(before, after, "prog_id")
            maps_by_id = {m["id"]: m["name"] for m in _bpftool("map", "show")}
            used = {map_id for p in _bpftool("prog", "show") if p["id"] in programs
                    for map_id in p.get("map_ids", []) if maps_by_id.get(map_id) == "cgroups"}
            assert {_fd_id(sensor.maps["cgroups"].fd, "map_id")} == used
        finally:
            sensor.close()

    def test_an_entry_written_once_is_seen_through_every_object(self, sensor: loader.Sensor) -> None:
        """A value written through sensor.maps is read back through each object's own map handle."""
        key, value = (424242).to_bytes(8, "little"), (7).to_bytes(4, "little") + bytes(4)
        sensor.maps["cgroups"].update(key, value)
        try:
            seen = [bpf_map.lookup(key) for obj in sensor._objects for bpf_map in obj.maps()
                    if bpf_map.name == "cgroups"]
            assert [value] * len(loader.OBJECTS) == seen
        finally:
            sensor.maps["cgroups"].delete(key)


class TestAttachCgroup:
    def test_adds_the_network_hooks(self, sensor: loader.Sensor, cgroup_dir: Path) -> None:
        """attach_cgroup adds the sock_addr and sock_create programs to hooks["network"]."""
        sensor.attach_cgroup(cgroup_dir)
        assert NETWORK_SECTIONS == sensor.hooks["network"]

    def test_programs_are_attached_to_the_cgroup(self, sensor: loader.Sensor, cgroup_dir: Path) -> None:
        """The kernel lists hostguard's five programs on the cgroup, multi-attached."""
        sensor.attach_cgroup(cgroup_dir)
        attached = sorted((p["name"], p["attach_type"], p["attach_flags"])
                          for p in _bpftool("cgroup", "show", str(cgroup_dir)))
        assert [("hg_connect4", "cgroup_inet4_connect", "multi"), ("hg_connect6", "cgroup_inet6_connect", "multi"),
                ("hg_sendmsg4", "cgroup_udp4_sendmsg", "multi"),
                ("hg_sendmsg6", "cgroup_udp6_sendmsg", "multi"),
                ("hg_sock_create", "cgroup_inet_sock_create", "multi")] == attached

    def test_attaching_twice_does_not_repeat_hooks(self, sensor: loader.Sensor, cgroup_dir: Path) -> None:
        """A second cgroup adds links, not duplicate hook names."""
        child = cgroup_dir / "second"
        child.mkdir()
        sensor.attach_cgroup(cgroup_dir)
        sensor.attach_cgroup(child)
        assert NETWORK_SECTIONS == sensor.hooks["network"]

    def test_missing_directory_raises(self, sensor: loader.Sensor, cgroup_dir: Path) -> None:
        """A cgroup path that does not exist raises FileNotFoundError and attaches nothing."""
        with pytest.raises(FileNotFoundError):
            sensor.attach_cgroup(cgroup_dir / "absent")
        assert "network" not in sensor.hooks


class TestClose:
    def test_close_detaches_and_frees_everything(self, root: None, object_dir: Path, tracefs: None,
                                                 cgroup_dir: Path) -> None:
        """close() detaches every link, frees every program and map of the sensor and empties the cgroup."""
        before = _own_bpf_objects()
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        try:
            sensor.load()
            sensor.attach_cgroup(cgroup_dir)
            loaded = _own_bpf_objects()
        finally:
            sensor.close()
        programs = _new_ids(before, loaded, "prog_id")
        links = _new_ids(before, loaded, "link_id")
        maps = _new_ids(before, loaded, "map_id")
        assert (True, True, True) == (bool(programs), bool(links), bool(maps))
        assert before == _own_bpf_objects()
        assert [] == _bpftool("cgroup", "show", str(cgroup_dir))
        assert _wait_for(lambda: not programs & {p["id"] for p in _bpftool("prog", "show")}), "programs remain"
        assert _wait_for(lambda: not links & {link["id"] for link in _bpftool("link", "show")}), "links remain"
        assert _wait_for(lambda: not maps & {m["id"] for m in _bpftool("map", "show")}), "maps remain"

    def test_close_empties_the_sensor(self, root: None, object_dir: Path, tracefs: None) -> None:
        """After close() the sensor holds no maps (their handles would dangle)."""
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        sensor.load()
        sensor.close()
        assert {} == sensor.maps

    def test_close_twice_is_harmless(self, root: None, object_dir: Path, tracefs: None) -> None:
        """close() may be called again (the runner's shutdown path and a failed start both close)."""
        sensor = loader.Sensor(object_dir, ringbuf_bytes=1 << 16)
        sensor.load()
        sensor.close()
        sensor.close()
        assert {} == sensor.maps
