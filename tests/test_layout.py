"""The agent's mirrors of bpf/hostguard.h match the structs compiled into the objects (their BTF)."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import compiler, events

from .support import skip_or_fail

OBJECTS = ("cgroup", "exec", "file", "net", "lsm")


def _btf_structs(object_path: Path) -> dict[str, dict]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not Path(bpftool).exists():
        skip_or_fail("bpftool is not installed")
    dump = subprocess.run([bpftool, "-j", "btf", "dump", "file", str(object_path)],
                          check=True, capture_output=True, text=True).stdout
    types = json.loads(dump)["types"]
    return {t["name"]: t for t in types if t["kind"] == "STRUCT" and t.get("name", "").startswith("hg_")}


@pytest.fixture(scope="module", params=OBJECTS)
def btf(request: pytest.FixtureRequest, object_dir: Path) -> dict[str, dict]:
    return _btf_structs(object_dir / f"{request.param}.bpf.o")


class TestEventMirrors:
    @pytest.mark.parametrize("struct_name", sorted(events.STRUCTS))
    def test_fields_sizes_and_offsets_match_btf(self, btf: dict[str, dict], struct_name: str) -> None:
        """Every event mirror has the C struct's size and its fields in the same order at the same offsets."""
        c_struct = btf[struct_name]
        mirror = events.STRUCTS[struct_name]
        expected = [(m["name"], m["bits_offset"] // 8) for m in c_struct["members"]]
        actual = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
        assert expected == actual
        assert c_struct["size"] == ctypes.sizeof(mirror)

    def test_opcode_is_the_first_byte_of_every_event(self, btf: dict[str, dict]) -> None:
        """Dispatch reads byte 0: the header and the cgroup event both start with the opcode."""
        assert ("opcode", 0) == (btf["hg_event_header"]["members"][0]["name"],
                                 btf["hg_event_header"]["members"][0]["bits_offset"])
        assert ("opcode", 0) == (btf["hg_cgroup_event"]["members"][0]["name"],
                                 btf["hg_cgroup_event"]["members"][0]["bits_offset"])


class TestMapLayouts:
    @pytest.mark.parametrize("struct_name, packer", [
        ("hg_policy", compiler.POLICY),
        ("hg_cgroup", compiler.CGROUP),
        ("hg_path_key", compiler.PATH_KEY),
        ("hg_net4_key", compiler.NET4_KEY),
        ("hg_net6_key", compiler.NET6_KEY),
        ("hg_ports", compiler.PORTS),
        ("hg_pending_key", compiler.PENDING_KEY),
    ])
    def test_packed_size_matches_btf(self, btf: dict[str, dict], struct_name: str, packer) -> None:
        """The compiler packs each map key and value to exactly the C struct's size."""
        assert btf[struct_name]["size"] == packer.size
