"""Loading hostguard's BPF objects as one sensor: shared maps, probed features, attached hooks.

The objects (bpf/*.bpf.c, one per hook family) each declare the same maps. The first object loaded
creates them; every later object reuses their file descriptors, so all programs see one set of
policies. Attach points that this kernel lacks (a syscall tracepoint missing on the architecture) are
skipped and reported, never silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import libbpf

__all__ = ["Features", "Sensor", "default_object_dir", "probe_features"]

OBJECTS = ("cgroup", "exec", "file", "net")
"""Load order: the first object creates the shared maps."""

LSM_OBJECT = "lsm"
"""Loaded too where LSM programs load: exec and open verdicts before the act (EPERM)."""

KNOBS = ".rodata.knobs"
"""exec.bpf.o: `hg_lsm_verdicts` (the LSM object takes exec verdicts; the hold stays);
net.bpf.o: `hg_net_can_signal` (cgroup programs may kill)."""

HOOK_KIND = {"exec": "exec", "file": "file", "net": "network", "cgroup": "tagging", "lsm": "lsm"}
TRACEFS = Path("/sys/kernel/tracing")


def default_object_dir() -> Path:
    """build/bpf next to the package (a source checkout), or $HOSTGUARD_BPF_DIR."""
    override = os.environ.get("HOSTGUARD_BPF_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "build" / "bpf"


@dataclass(frozen=True, slots=True)
class Features:
    """What this kernel lets hostguard load, as probed at start ("ok" or the refusal)."""

    lsm: str
    fentry: str
    net_signal: str          # cgroup programs may call bpf_send_signal (on_violation: kill)


def _try_program(object_path: Path, program_name: str, attach: bool = True) -> str:
    try:
        with libbpf.expected_failures(), libbpf.BpfObject(object_path) as obj:
            for program in obj.programs():
                program.autoload = program.name == program_name
            obj.load()
            program = next(p for p in obj.programs() if p.name == program_name)
            if attach:
                program.attach().destroy()
        return "ok"
    except OSError as error:
        return f"refused: {error.strerror or error}"


def probe_features(object_dir: Path) -> Features:
    """Try an LSM and an fentry program (load and attach, then detach at once), and whether a cgroup
    program may send a signal (loading answers that)."""
    probe = object_dir / "probe.bpf.o"
    return Features(lsm=_try_program(probe, "hg_probe_lsm"), fentry=_try_program(probe, "hg_probe_fentry"),
                    net_signal=_try_program(probe, "hg_probe_net_signal", attach=False))


def _tracepoint_exists(section: str) -> bool:
    category, _, name = section.removeprefix("tracepoint/").partition("/")
    return (TRACEFS / "events" / category / name).is_dir()


@dataclass
class Sensor:
    """hostguard's programs and maps, loaded and attached as one unit."""

    object_dir: Path
    ringbuf_bytes: int = 8 << 20
    lsm: bool = False             # load lsm.bpf.o and leave exec/file verdicts to it
    net_signal: bool = True       # cgroup programs may kill (on_violation: kill); else they only deny
    maps: dict[str, libbpf.BpfMap] = field(default_factory=dict)
    hooks: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    _objects: list[libbpf.BpfObject] = field(default_factory=list)
    _links: list[libbpf.BpfLink] = field(default_factory=list)

    def load(self) -> None:
        """Open, load and attach the non-cgroup programs; cgroup programs attach per cgroup."""
        # With LSM, lsm.bpf.o takes the open verdicts before the act: file.bpf.o is not loaded.
        names = tuple(n for n in OBJECTS if n != "file") + (LSM_OBJECT,) if self.lsm else OBJECTS
        for name in names:
            obj = libbpf.BpfObject(self.object_dir / f"{name}.bpf.o")
            self._objects.append(obj)
            for bpf_map in obj.maps():
                shared = self.maps.get(bpf_map.name)
                if shared is not None and bpf_map.name != KNOBS:
                    bpf_map.reuse_fd(shared.fd)
                elif bpf_map.name == "events":
                    bpf_map.set_max_entries(self.ringbuf_bytes)
                elif bpf_map.name == KNOBS:
                    bpf_map.set_initial_value(bytes([self.net_signal if name == "net" else self.lsm]))
            for program in obj.programs():
                if program.section.startswith("tracepoint/") and not _tracepoint_exists(program.section):
                    program.autoload = False
                    self.skipped.append(program.section)
            obj.load()
            for bpf_map in obj.maps():
                if "." not in bpf_map.name and bpf_map.name not in self.maps:  # not .rodata, .bss, knobs
                    self.maps[bpf_map.name] = bpf_map
            for program in obj.programs():
                if program.autoload and not program.section.startswith("cgroup/"):
                    self._links.append(program.attach())
                    self.hooks.setdefault(HOOK_KIND[name], []).append(program.section)

    @property
    def enforcement(self) -> dict[str, str]:
        """How each kind of violation is answered on this kernel (for agent_ready)."""
        if self.lsm:
            exec_path = "lsm bprm_check_security: EPERM before the program runs"
            file_path = "lsm file_open: EPERM before the file is opened"
        else:
            exec_path = "tp_btf sched_process_exec: SIGKILL before the first instruction"
            file_path = "tracepoint sys_exit_open*: SIGKILL after the open"
        network = "cgroup connect/sendmsg/sock_create: EPERM before any packet"
        if not self.net_signal:
            network += " (on_violation: kill only denies: this kernel's cgroup programs cannot signal)"
        return {"exec": exec_path, "file": file_path, "network": network}

    def attach_cgroup(self, cgroup_dir: Path) -> None:
        """Attach the egress programs to cgroup_dir: every cgroup below it runs them."""
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for obj in self._objects:
                for program in obj.programs():
                    if program.section.startswith("cgroup/"):
                        self._links.append(program.attach_cgroup(fd, str(cgroup_dir)))
                        hooks = self.hooks.setdefault("network", [])
                        if program.section not in hooks:
                            hooks.append(program.section)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Detach everything and free the objects (the maps go with the last reference)."""
        for link in self._links:
            link.destroy()
        self._links.clear()
        for obj in self._objects:
            obj.close()
        self._objects.clear()
        self.maps.clear()
