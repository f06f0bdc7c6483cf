"""Peers for configuration (e) of the syscall-overhead benchmark: other eBPF tools doing comparable
work on the hook points hostguard uses, started and stopped around a measurement.

  bpftrace      one script counting events per comm in a map (one map update per event, nothing
                printed per event) on the syscall exit tracepoints of the open family that
                bpf/file.bpf.c uses, sched:sched_process_exec (hostguard: tp_btf/sched_process_exec)
                and syscalls:sys_enter_connect (hostguard: cgroup connect4/6, which host processes
                never reach).
  bcc-tools     bcc's opensnoop, execsnoop and tcpconnect from Debian's bpfcc-tools, all three at
                once. They compile C with clang at start and need the running kernel's headers.
  libbpf-tools  (EXTRA_PEERS, not in PEERS) the same three tools of bcc in their CO-RE build
                (Debian's libbpf-tools): BTF only, no headers, no compiler at start. tcpconnect
                attaches to kprobes; where it cannot, the other two run and the detail says so, so
                this peer's connect figures then measure no connect tracing.

"Ready" is the tool's own signal (bpftrace: "Attaching N probes...", which it prints *before* it
attaches; bcc tools: their header line) followed by the kernel's word that the programs are
attached: `bpftool perf list` shows the tool's process holding them. startup_s runs from spawn
to that confirmation. On the way out every program the peer attached must be gone from the kernel
and every process it started must have exited, or running() raises.

A peer that cannot run here raises PeerUnavailable with the tool's own first meaningful error
line, never a guess. What was found on the development machine (Debian 12, kernel 6.18 with BTF, no
headers, CONFIG_KPROBES off, fentry refused): bcc 0.26's Python tools have no BTF-only mode; they
need headers under /lib/modules/$(uname -r)/build, $BCC_KERNEL_SOURCE, or the kernel's kheaders
(CONFIG_IKHEADERS, off here). Given Debian's mismatched 6.1 headers through $BCC_KERNEL_SOURCE they
compile, and then fail to attach: execsnoop and tcpconnect use kprobes only, opensnoop tries fentry
(refused: EPERM) and otherwise kprobes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BPFTRACE_SCRIPT",
    "EXTRA_PEERS",
    "PEERS",
    "PeerRun",
    "PeerUnavailable",
    "ensure_installed",
    "leftover_processes",
    "running",
]

PEERS: tuple[str, ...] = ("bpftrace", "bcc-tools")
EXTRA_PEERS: tuple[str, ...] = ("libbpf-tools",)

# The open family is the set bpf/file.bpf.c hooks; one map update per event, as hostguard does one
# lookup per hooked syscall for a process outside a tagged cgroup. Maps are printed once, at exit.
BPFTRACE_SCRIPT = """\
tracepoint:syscalls:sys_exit_open,
tracepoint:syscalls:sys_exit_openat,
tracepoint:syscalls:sys_exit_openat2,
tracepoint:syscalls:sys_exit_creat,
tracepoint:syscalls:sys_exit_open_by_handle_at
{ @open[comm] = count(); }
tracepoint:sched:sched_process_exec { @exec[comm] = count(); }
tracepoint:syscalls:sys_enter_connect { @connect[comm] = count(); }
"""

READY_TIMEOUT = 120.0   # seconds; bcc runs clang over kernel headers at start, slow on a small host
ATTACH_TIMEOUT = 10.0   # seconds from the ready signal until the kernel shows the programs attached
STOP_TIMEOUT = 10.0     # seconds a tool gets to exit after SIGINT before it is killed
DETACH_TIMEOUT = 5.0    # seconds for the kernel to free the programs once their holder has exited
POLL = 0.002            # seconds between looks at a tool's output; startups are tens of milliseconds
MARKER = "HOSTGUARD_BENCH_PEER"  # in every peer process's environment, to find leftovers by

TRACING = Path("/sys/kernel/tracing")
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}  # never restart services


class PeerUnavailable(Exception):
    """This peer cannot run on this machine; str() says why (measured, not guessed)."""


@dataclass(frozen=True)
class PeerRun:
    """A peer that is attached and tracing."""

    name: str                 # e.g. "bpftrace", "bcc-tools"
    startup_s: float          # from spawn to attached/ready (the tool's own "ready" signal)
    detail: str               # versions, what is attached
    pids: tuple[int, ...] = field(default=())  # the peer's processes, gone when the block has ended


@dataclass(frozen=True)
class _Tool:
    """One program a peer runs: its command line and the output line that says it is ready."""

    name: str
    argv: tuple[str, ...]
    ready: re.Pattern[str]
    required: bool = True     # False: the peer runs without it when it cannot start (said in detail)


@dataclass(frozen=True)
class _Peer:
    """What a peer needs installed, the tools it runs side by side, and their extra environment."""

    packages: tuple[str, ...]             # Debian packages; bpftool confirms attachment
    tools: tuple[_Tool, ...]
    env: Mapping[str, str]


_HEADER_OPENSNOOP = re.compile(r"^PID\s+COMM\s+FD\s+ERR\s+PATH", re.MULTILINE)
_HEADER_EXECSNOOP = re.compile(r"^PCOMM\s+PID\s+PPID\s+RET\s+ARGS", re.MULTILINE)
_HEADER_TCPCONNECT = re.compile(r"^PID\s+COMM\s+IP\s+SADDR", re.MULTILINE)
_BPFTRACE_READY = re.compile(r"^Attaching (\d+) probes?\.\.\.$", re.MULTILINE)

_SPECS: dict[str, _Peer] = {
    # -B none: stdout is a file, and the ready line must reach it when printed, not at exit.
    "bpftrace": _Peer(("bpftrace", "bpftool"),
                      (_Tool("bpftrace", ("bpftrace", "-B", "none", "-e", BPFTRACE_SCRIPT), _BPFTRACE_READY),),
                      {}),
    # Python tools: unbuffered, or the header would sit in a buffer until exit.
    "bcc-tools": _Peer(("bpfcc-tools", "bpftool"),
                       (_Tool("opensnoop-bpfcc", ("/usr/sbin/opensnoop-bpfcc",), _HEADER_OPENSNOOP),
                        _Tool("execsnoop-bpfcc", ("/usr/sbin/execsnoop-bpfcc",), _HEADER_EXECSNOOP),
                        _Tool("tcpconnect-bpfcc", ("/usr/sbin/tcpconnect-bpfcc",), _HEADER_TCPCONNECT)),
                       {"PYTHONUNBUFFERED": "1"}),
    # C tools: stdbuf makes stdio line-buffered into the file for the same reason.
    "libbpf-tools": _Peer(("libbpf-tools", "bpftool"),
                          (_Tool("opensnoop", ("stdbuf", "-oL", "/usr/sbin/opensnoop"), _HEADER_OPENSNOOP),
                           _Tool("execsnoop", ("stdbuf", "-oL", "/usr/sbin/execsnoop"), _HEADER_EXECSNOOP),
                           _Tool("tcpconnect", ("stdbuf", "-oL", "/usr/sbin/tcpconnect"), _HEADER_TCPCONNECT,
                                 required=False)),
                          {}),
}


def _spec(peer: str) -> _Peer:
    try:
        return _SPECS[peer]
    except KeyError:
        raise ValueError(f"unknown peer {peer!r}; known: {', '.join(_SPECS)}") from None


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def _version(package: str) -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return result.stdout.strip() or "?"


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    # Others may be installing at the same time: wait for dpkg's lock instead of failing on it.
    return subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", *args], capture_output=True, text=True,
                          env={**os.environ, **_APT_ENV}, timeout=900)


def ensure_installed(peer: str) -> None:
    """apt-get install the peer's Debian packages when missing; PeerUnavailable if that is impossible.

    Only Debian's own packages: the benchmark compares against what an operator of this host would
    install. The package list is refreshed once, and only if the first attempt fails.
    """
    missing = [package for package in _spec(peer).packages if not _installed(package)]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise PeerUnavailable(f"{' '.join(missing)} not installed and there is no apt-get")
    if os.geteuid() != 0:
        raise PeerUnavailable(f"{' '.join(missing)} not installed and installing needs root")
    install = ("install", "-y", "--no-install-recommends", *missing)
    result = _apt(*install)
    if result.returncode != 0:
        _apt("update")
        result = _apt(*install)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        raise PeerUnavailable(f"apt-get install {' '.join(missing)} failed: "
                              f"{errors[0] if errors else result.stderr.strip()[-300:]}")


# Lines that are not the reason a tool failed: traceback frames, bcc's attempt to load the kheaders
# module on a kernel without modules, and bpftrace's warning about RLIMIT_MEMLOCK, which kernels
# since 5.11 do not use for BPF (it goes on and works).
_NOISE = re.compile(r"^(Traceback |sh: \d+: modprobe: not found|.*couldn't set RLIMIT_MEMLOCK)")
_MEANINGFUL = re.compile(r"(?i)\b(error|unable|fail(ed|s|ure)?|cannot|can't|not permitted|no such)\b")


def _reason(stderr: str) -> str:
    """The first line that says what went wrong, and the tool's last line (its exception) if different."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line[:1].isspace() and not _NOISE.match(line)]
    if not lines:
        return "no error output"
    first = next((line for line in lines if _MEANINGFUL.search(line)), lines[0])
    return first if lines[-1] == first else f"{first} [{lines[-1]}]"


def _attachments() -> dict[int, list[dict[str, object]]]:
    """Per pid, the BPF programs attached through perf events or raw tracepoints it holds (bpftool)."""
    result = subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"bpftool perf list failed: {result.stderr.strip()}")
    held: dict[int, list[dict[str, object]]] = {}
    for entry in json.loads(result.stdout or "[]"):
        held.setdefault(int(entry["pid"]), []).append(entry)
    return held


def _loaded_programs() -> set[int]:
    result = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"bpftool prog show failed: {result.stderr.strip()}")
    return {int(prog["id"]) for prog in json.loads(result.stdout or "[]")}


def _hook_name(entry: Mapping[str, object]) -> str:
    return str(entry.get("tracepoint") or entry.get("func") or entry.get("filename") or entry.get("fd_type"))


def leftover_processes(token: str | None = None) -> list[int]:
    """pids of processes a peer started (all runs, or the run with this token) that are still alive."""
    wanted = f"{MARKER}={token}".encode() if token else f"{MARKER}=".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        if state != "Z" and any(var.startswith(wanted) for var in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


class _Started:
    """One tool's process with its output files."""

    def __init__(self, tool: _Tool, workdir: Path, env: Mapping[str, str]) -> None:
        self.tool = tool
        self.stdout_path = workdir / f"{tool.name}.out"
        self.stderr_path = workdir / f"{tool.name}.err"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            # Own session: a Ctrl-C at the terminal reaches the harness, which stops the tool itself.
            self.process = subprocess.Popen(tool.argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                            env=dict(env), start_new_session=True)
        self.ready_at: float | None = None
        self.ready_match: re.Match[str] | None = None
        self.programs: list[dict[str, object]] = []

    def output(self) -> str:
        with open(self.stdout_path, "rb") as stdout:
            return stdout.read(1 << 16).decode(errors="replace")

    def errors(self) -> str:
        return self.stderr_path.read_bytes()[-(1 << 16):].decode(errors="replace")

    def failure(self) -> str:
        return f"{self.tool.name} exited with status {self.process.returncode} before attaching: " \
               f"{self.reason()}"

    def reason(self) -> str:
        """Why it failed: stdout counts too, bcc prints "Unable to find kernel headers" there."""
        return _reason(self.output() + "\n" + self.errors())

    def stop(self) -> None:
        """SIGINT (the tools detach and print their summary), then SIGKILL to the tool's session."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _kernel_facts() -> str:
    """What this kernel lacks that bcc's Python tools would need even with headers (measured)."""
    facts = []
    if TRACING.joinpath("events").is_dir() and not TRACING.joinpath("kprobe_events").exists():
        facts.append("no kprobes on this kernel (tracefs has no kprobe_events), "
                     "which execsnoop-bpfcc and tcpconnect-bpfcc attach to")
    return "; ".join(facts)


def _wait_ready(started: list[_Started], t0: float, peer: str) -> None:
    """Until every tool printed its ready line or exited; PeerUnavailable if a required tool exited.

    Waits for all of them, so that the reason names every tool that failed, not just the fastest.
    """
    deadline = t0 + READY_TIMEOUT
    while True:
        pending = [s for s in started if s.ready_at is None and s.process.poll() is None]
        for s in pending:
            match = s.tool.ready.search(s.output())
            if match:
                s.ready_at, s.ready_match = time.monotonic(), match
        if not [s for s in pending if s.ready_at is None]:
            break
        if time.monotonic() > deadline:
            names = ", ".join(s.tool.name for s in pending if s.ready_at is None)
            raise TimeoutError(f"{peer}: {names} neither ready nor failed within {READY_TIMEOUT:.0f} s")
        time.sleep(POLL)
    failed = [s for s in started if s.ready_at is None]
    if any(s.tool.required for s in failed):
        by_reason: dict[tuple[int | None, str], list[str]] = {}
        for s in failed:
            by_reason.setdefault((s.process.returncode, s.reason()), []).append(s.tool.name)
        reasons = [f"{', '.join(names)} exited with status {status} before attaching: {reason}"
                   for (status, reason), names in by_reason.items()]
        facts = _kernel_facts() if peer == "bcc-tools" else ""
        raise PeerUnavailable(f"{peer} ({_describe_versions(peer)}): " + "; ".join(reasons)
                              + (f"; also {facts}" if facts else ""))


def _wait_attached(running_tools: list[_Started], peer: str) -> None:
    """Until the kernel shows each tool's process holding its programs (bpftrace: all N of them)."""
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while True:
        held = _attachments()
        waiting = []
        for s in running_tools:
            s.programs = held.get(s.process.pid, [])
            expected = int(s.ready_match.group(1)) if s.ready_match and s.ready_match.groups() else 1
            if len(s.programs) < expected:
                waiting.append(f"{s.tool.name} holds {len(s.programs)} of {expected}")
            if s.process.poll() is not None:
                raise RuntimeError(f"{peer}: {s.tool.name} exited (status {s.process.returncode}) right after "
                                   f"saying it was ready: {_reason(s.errors())}")
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{peer}: not attached within {ATTACH_TIMEOUT:.0f} s of ready: {'; '.join(waiting)}")
        time.sleep(POLL)


def _describe_versions(peer: str) -> str:
    """The versions that ran, for the results: a comparison is only as good as knowing what with."""
    if peer == "bpftrace":
        result = subprocess.run(["bpftrace", "--version"], capture_output=True, text=True)
        return f"{result.stdout.strip() or '?'}, Debian {_version('bpftrace')}"
    package = _spec(peer).packages[0]
    return f"Debian {package} {_version(package)}"


def _detail(peer: str, started: list[_Started], t0: float) -> str:
    """Versions, each tool's ready time and what the kernel shows attached, and any tool not running."""
    parts = [_describe_versions(peer)]
    for s in started:
        if s.ready_at is None:
            parts.append(f"{s.tool.name}: NOT RUNNING, {s.failure()}")
            continue
        hooks = ", ".join(sorted(_hook_name(p) for p in s.programs))
        parts.append(f"{s.tool.name}: ready line at {s.ready_at - t0:.3f} s, {len(s.programs)} attached ({hooks})")
        warnings = [line.strip() for line in s.errors().splitlines() if line.strip()]
        if warnings:
            parts.append(f"{s.tool.name} stderr: {warnings[0][:120]}")
    if peer == "bpftrace":
        parts.append("counts per comm in maps, printed at exit only")
    else:
        parts.append("one output line per event, to a file")
    return "; ".join(parts)


def _stop_all(started: list[_Started], token: str, peer: str) -> None:
    """Stop every tool; RuntimeError if a process or an attached program outlives them."""
    programs = {int(p["prog_id"]) for s in started for p in s.programs}
    for s in started:
        s.stop()
    problems = []
    deadline = time.monotonic() + DETACH_TIMEOUT
    while programs:
        programs &= _loaded_programs()
        if not programs or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if programs:
        problems.append(f"BPF programs still loaded: {sorted(programs)}")
    leftovers = leftover_processes(token)
    if leftovers:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        problems.append(f"processes still running (killed now): {leftovers}")
    if problems:
        raise RuntimeError(f"{peer} did not stop cleanly: {'; '.join(problems)}")


@contextlib.contextmanager
def running(peer: str, output_dir: Path | None = None) -> Iterator[PeerRun]:
    """The peer attached and tracing for the duration of the block; stopped, and checked gone, after it.

    The tools write to files (in output_dir if given, kept; else a temporary directory), never to a
    terminal that would slow the measured loops. Raises PeerUnavailable, with the tool's own error,
    when the peer cannot run on this machine; TimeoutError when it neither runs nor fails in time.
    """
    spec = _spec(peer)
    if not TRACING.joinpath("events", "syscalls").is_dir():
        raise RuntimeError(f"tracefs is not mounted at {TRACING} (dev.sh mounts it); peers trace syscalls there")
    ensure_installed(peer)
    token = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(spec.env)
    env[MARKER] = token
    with contextlib.ExitStack() as stack:
        workdir = output_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"peer-{peer}-")))
        workdir.mkdir(parents=True, exist_ok=True)
        started: list[_Started] = []
        t0 = time.monotonic()
        try:
            for tool in spec.tools:
                started.append(_Started(tool, workdir, env))
            _wait_ready(started, t0, peer)
            ready = [s for s in started if s.ready_at is not None]
            _wait_attached(ready, peer)
            startup = time.monotonic() - t0
            run = PeerRun(peer, startup, _detail(peer, started, t0), tuple(s.process.pid for s in ready))
        except BaseException:
            with contextlib.suppress(Exception):  # the original error says more than a failed clean-up
                _stop_all(started, token, peer)
            raise
        try:
            yield run
            exited = [s for s in ready if s.process.poll() is not None]
            if exited:
                raise RuntimeError(f"{peer}: {', '.join(s.tool.name for s in exited)} exited during the run: "
                                   + "; ".join(_reason(s.errors()) for s in exited))
        finally:
            _stop_all(started, token, peer)
